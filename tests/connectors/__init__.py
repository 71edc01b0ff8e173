"""Connectors that live only in tests."""
