"""Udesk knowledge base and KM robot entities (seeds 001, 002)."""
