"""Udesk: two products sharing signing and envelopes (knowledge + KM, ServiceGo)."""
