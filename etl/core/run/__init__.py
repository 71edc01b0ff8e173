"""Runs: sync, push, pipeline and status, the account lease, the scheduler."""
