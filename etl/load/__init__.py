"""Loaders: push local changes of the mirror to the remote systems."""
