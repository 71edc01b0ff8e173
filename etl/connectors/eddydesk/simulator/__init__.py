"""EddyDesk helpdesk API v2 simulator (seed 003), served over real HTTP on 127.0.0.1.

Readings of the documentation where it is silent or ambiguous (also listed in the README):
- Rate limits: a fixed window per clock minute per account, separately for the knowledge base;
  the request over the limit is refused with HTTP 429 and blocks that budget for 20 minutes
  (1 hour for the knowledge base); refused requests do not count. X-Rate-Limit and
  X-Rate-Limit-Remaining are on every answer. A `minute_seconds` time scale shortens it all.
- Unknown credentials: HTTP 401 with {"errors": [{"code": "e-401", ...}]}.
- from_/to_date_* filters are inclusive; sorting ties are broken by id; pages are 30 records
  (50 for options, 10 for articles, as in the examples); a page past the end is empty.
- An empty keyed "data" is sent as [] (PHP's encoding of an empty array).
- Adding, editing or deleting a ticket's post or comment, and soft-deleting the ticket, set the
  ticket's date_updated; a user's or organization's note sets theirs. A hard delete removes the
  record and its children from every list.
- The ticket list spells the client's first name "username", the single ticket "user_name",
  exactly as the two examples do.
- Only the read endpoints are served so far; writes answer 405 until the write-back issue.
"""
