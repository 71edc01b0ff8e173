"""Simulator of the Udesk knowledge open API (seed 001) and KM robot entities (seed 002)."""
