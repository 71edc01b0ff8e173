"""The local relational mirror: models, normalisation, writes, sync state."""
