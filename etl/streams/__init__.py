"""What to pull from each system, as typed data (endpoint, table, cursor, children)."""
