"""Udesk ServiceGo records (seed 004)."""
