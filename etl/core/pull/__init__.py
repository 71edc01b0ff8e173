"""Pull records page by page into the mirror; cursors move only with committed rows."""
