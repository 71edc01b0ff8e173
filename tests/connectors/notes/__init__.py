"""A fourth system, only for tests: "Notes", a paged JSON list of notes with an updated-between
filter and one create and one update endpoint (its API is described in simulator.py).

It shows that a system is a folder and nothing else: it uses the engine as the three built-in
connectors do (windowed scan, mirror writer, push journal) and edits no file of theirs or of
the core. A configuration loads it with `connector_modules = ["tests.connectors.notes.connector"]`.
"""
