"""Real HTTP simulators of the remote APIs, built from the seeds' documentation only.

They import nothing from the engine, so they cannot share its mistakes.
"""
