"""Base, local and remote versions of records: field changes and conflict policies."""
