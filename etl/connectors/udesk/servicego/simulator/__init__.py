"""Simulator of the Udesk ServiceGo records API (seed 004)."""
