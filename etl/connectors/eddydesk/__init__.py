"""EddyDesk helpdesk API v2 (seed 003)."""
