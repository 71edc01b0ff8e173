"""EddyDesk tables a push may write (seed 003).

See `etl.diff.columns` for how local changes are found and merged with a pull.
"""

from __future__ import annotations

from etl.diff.columns import Writable
from etl.mirror import eddydesk as m

WRITABLE = {w.stream: w for w in (
    Writable("tickets", m.Ticket,
             ("title", "status_id", "priority_id", "type_id", "department_id", "owner_id", "user_id", "ticket_lock",
              "sla_date", "freeze_date"),
             ("priority_id", "type_id", "department_id", "owner_id", "user_id"), m.TicketCustomFieldValue, "ticket_id"),
    Writable("users", m.User,
             ("name", "lastname", "email", "phone", "skype", "website", "status", "language", "notifications",
              "group_id", "user_status"),
             ("notifications", "group_id"), m.UserCustomFieldValue, "user_id"),
    Writable("organizations", m.Organization, ("name", "domains", "address", "phone", "email", "web", "minute_limit"),
             ("minute_limit",), m.OrganizationCustomFieldValue, "organization_id"),
    Writable("ticket_posts", m.TicketPost, ("text",)),
    Writable("ticket_comments", m.TicketComment, ("text",)),
)}
