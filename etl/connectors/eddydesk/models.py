"""Mirror tables for EddyDesk (seed 003): one per stream, typed columns for documented fields.

Conventions: the primary key is (connection, id) so several accounts live side by side;
multi-language members are kept whole (JSON) plus a `*_display` text in the configured language;
dates are UTC timestamps. Child tables hold what reporting needs as rows (tags, custom field
values, participants, departments, organization members, article categories).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from etl.core.mirror.base import Base, InsertableRecord, JSONType, MirroredRecord, display_of, src

BigId = sa.BigInteger


# --- reference lists ---------------------------------------------------------------------------

class Department(MirroredRecord, Base):
    __tablename__ = "eddydesk_departments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))


class TicketStatus(MirroredRecord, Base):
    __tablename__ = "eddydesk_statuses"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))


class Priority(MirroredRecord, Base):
    __tablename__ = "eddydesk_priorities"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))


class TicketType(MirroredRecord, Base):
    __tablename__ = "eddydesk_types"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))


class Group(MirroredRecord, Base):
    __tablename__ = "eddydesk_groups"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    type: Mapped[str | None] = mapped_column(sa.String(32))
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))
    disable: Mapped[bool | None]


class UserStatus(MirroredRecord, Base):
    __tablename__ = "eddydesk_user_statuses"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))
    color: Mapped[str | None] = mapped_column(sa.String(32))


class CustomField(MirroredRecord, Base):
    """Ticket, user and organization fields in one table, told apart by `scope`."""

    __tablename__ = "eddydesk_custom_fields"
    scope: Mapped[str] = mapped_column(sa.String(16), primary_key=True, info={"meta": True})
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))
    field_type: Mapped[str | None] = mapped_column(sa.String(32))
    permissions: Mapped[dict[str, Any] | None]


class CustomFieldOption(InsertableRecord, Base):
    __tablename__ = "eddydesk_custom_field_options"
    scope: Mapped[str] = mapped_column(sa.String(16), primary_key=True, info={"meta": True})
    field_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False, info={"meta": True})
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    pid: Mapped[int | None] = mapped_column(BigId)
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))


# --- tickets and their children ------------------------------------------------------------------

class Ticket(InsertableRecord, Base):
    __tablename__ = "eddydesk_tickets"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    pid: Mapped[int | None] = mapped_column(BigId)
    unique_id: Mapped[str | None] = mapped_column(sa.String(64))
    date_created: Mapped[datetime | None]
    date_updated: Mapped[datetime | None] = mapped_column(index=True)
    title: Mapped[str | None] = mapped_column(sa.Text)
    source: Mapped[str | None] = mapped_column(sa.String(64))
    status_id: Mapped[str | None] = mapped_column(sa.String(64))
    priority_id: Mapped[int | None] = mapped_column(BigId)
    type_id: Mapped[int | None] = mapped_column(BigId)
    department_id: Mapped[int | None] = mapped_column(BigId)
    department_name: Mapped[str | None] = mapped_column(sa.Text)
    owner_id: Mapped[int | None] = mapped_column(BigId)
    owner_name: Mapped[str | None] = mapped_column(sa.Text)
    owner_lastname: Mapped[str | None] = mapped_column(sa.Text)
    owner_email: Mapped[str | None] = mapped_column(sa.Text)
    user_id: Mapped[int | None] = mapped_column(BigId)
    # the list endpoint says "username", the single-ticket endpoint "user_name" (seed 003)
    user_name: Mapped[str | None] = mapped_column(sa.Text, info={"src": ("user_name", "username")})
    user_lastname: Mapped[str | None] = mapped_column(sa.Text)
    user_email: Mapped[str | None] = mapped_column(sa.Text)
    ticket_lock: Mapped[bool | None]
    sla_date: Mapped[datetime | None]
    freeze_date: Mapped[datetime | None]
    freeze: Mapped[bool | None]
    deleted: Mapped[bool | None]
    viewed_by_staff: Mapped[bool | None]
    viewed_by_client: Mapped[bool | None]
    rate: Mapped[str | None] = mapped_column(sa.String(32))
    rate_comment: Mapped[str | None] = mapped_column(sa.Text)
    rate_date: Mapped[datetime | None]
    jira_issues: Mapped[list[Any] | None]


class TicketCustomFieldValue(Base):
    __tablename__ = "eddydesk_ticket_custom_field_values"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    field_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    field_type: Mapped[str | None] = mapped_column(sa.String(32))
    value_text: Mapped[str | None] = mapped_column(sa.Text)
    value: Mapped[Any | None] = mapped_column(JSONType)


class TicketTag(Base):
    __tablename__ = "eddydesk_ticket_tags"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    tag: Mapped[str] = mapped_column(sa.Text, index=True)


class TicketParticipant(Base):
    """cc and bcc mailboxes and followers (user ids) of a ticket."""

    __tablename__ = "eddydesk_ticket_participants"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    ticket_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    role: Mapped[str] = mapped_column(sa.String(16), primary_key=True)  # cc | bcc | follower
    position: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    email: Mapped[str | None] = mapped_column(sa.Text)
    user_id: Mapped[int | None] = mapped_column(BigId)


class TicketPost(InsertableRecord, Base):
    __tablename__ = "eddydesk_ticket_posts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    ticket_id: Mapped[int] = mapped_column(BigId, index=True)
    user_id: Mapped[int | None] = mapped_column(BigId)
    text: Mapped[str | None] = mapped_column(sa.Text)
    date_created: Mapped[datetime | None]
    date_updated: Mapped[datetime | None]
    files: Mapped[list[Any] | None]


class TicketComment(InsertableRecord, Base):
    """Internal notes."""

    __tablename__ = "eddydesk_ticket_comments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    ticket_id: Mapped[int] = mapped_column(BigId, index=True)
    user_id: Mapped[int | None] = mapped_column(BigId)
    text: Mapped[str | None] = mapped_column(sa.Text)
    date_created: Mapped[datetime | None]
    visible: Mapped[str | None] = mapped_column(sa.String(32))
    files: Mapped[list[Any] | None]


class TicketAudit(MirroredRecord, Base):
    __tablename__ = "eddydesk_ticket_audit"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    ticket_id: Mapped[int] = mapped_column(BigId, index=True, info={"meta": True})
    event: Mapped[str | None] = mapped_column(sa.String(64))
    text: Mapped[dict[str, Any] | None]
    text_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("text"))
    user_id: Mapped[int | None] = mapped_column(BigId)
    user_name: Mapped[str | None] = mapped_column(sa.Text)
    date_created: Mapped[datetime | None]


class TicketBilling(MirroredRecord, Base):
    __tablename__ = "eddydesk_ticket_billing"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    ticket_id: Mapped[int] = mapped_column(BigId, index=True, info={"meta": True})
    action: Mapped[str | None] = mapped_column(sa.String(64))
    comment: Mapped[str | None] = mapped_column(sa.Text)
    spent_seconds: Mapped[int | None] = mapped_column(BigId)
    paid_seconds: Mapped[int | None] = mapped_column(BigId)
    staff_id: Mapped[int | None] = mapped_column(BigId)
    staff_name: Mapped[str | None] = mapped_column(sa.Text)
    billing_date: Mapped[datetime | None]
    creator_id: Mapped[int | None] = mapped_column(BigId)
    creator_name: Mapped[str | None] = mapped_column(sa.Text)
    date_created: Mapped[datetime | None]


# --- users and organizations -----------------------------------------------------------------------

class User(InsertableRecord, Base):
    __tablename__ = "eddydesk_users"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    date_created: Mapped[datetime | None]
    date_updated: Mapped[datetime | None] = mapped_column(index=True)
    name: Mapped[str | None] = mapped_column(sa.Text)
    lastname: Mapped[str | None] = mapped_column(sa.Text)
    email: Mapped[str | None] = mapped_column(sa.Text, index=True)
    phone: Mapped[str | None] = mapped_column(sa.Text)
    skype: Mapped[str | None] = mapped_column(sa.Text)
    website: Mapped[str | None] = mapped_column(sa.Text)
    organization: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str | None] = mapped_column(sa.String(32))
    language: Mapped[str | None] = mapped_column(sa.String(16))
    notifications: Mapped[int | None]
    group_id: Mapped[int | None] = mapped_column(BigId, info=src("group.id"))
    group_type: Mapped[str | None] = mapped_column(sa.String(32), info=src("group.type"))
    group_name: Mapped[dict[str, Any] | None] = mapped_column(info=src("group.name"))
    group_name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("group_name"))
    ldap_username: Mapped[str | None] = mapped_column(sa.Text)
    user_status: Mapped[str | None] = mapped_column(sa.String(64))
    # Only filled when the connection sets store_api_keys = true; otherwise never stored.
    api_key: Mapped[str | None] = mapped_column(sa.Text)


class UserDepartment(Base):
    __tablename__ = "eddydesk_user_departments"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    department_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)


class UserCustomFieldValue(Base):
    __tablename__ = "eddydesk_user_custom_field_values"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    field_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    field_type: Mapped[str | None] = mapped_column(sa.String(32))
    value_text: Mapped[str | None] = mapped_column(sa.Text)
    value: Mapped[Any | None] = mapped_column(JSONType)


class UserNote(MirroredRecord, Base):
    __tablename__ = "eddydesk_user_notes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigId, index=True)
    creator_id: Mapped[int | None] = mapped_column(BigId)
    text: Mapped[str | None] = mapped_column(sa.Text)
    date_created: Mapped[datetime | None]
    date_updated: Mapped[datetime | None]
    file: Mapped[Any | None] = mapped_column(JSONType)


class UserStatusChange(MirroredRecord, Base):
    """One entry of a user's status history (GET /users/{user_id}/statuses_log/): read from the
    newest one mirrored on, never deleted (a history is appended to)."""

    __tablename__ = "eddydesk_user_status_log"
    user_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False, info={"meta": True})
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)  # counted per user in the docs' example
    status_id: Mapped[str | None] = mapped_column(sa.String(64))
    name: Mapped[dict[str, Any] | None]
    name_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("name"))
    date_created: Mapped[datetime | None]


class Organization(InsertableRecord, Base):
    __tablename__ = "eddydesk_organizations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    date_created: Mapped[datetime | None]
    date_updated: Mapped[datetime | None] = mapped_column(index=True)
    name: Mapped[str | None] = mapped_column(sa.Text, index=True)
    domains: Mapped[str | None] = mapped_column(sa.Text)
    address: Mapped[str | None] = mapped_column(sa.Text)
    phone: Mapped[str | None] = mapped_column(sa.Text)
    email: Mapped[str | None] = mapped_column(sa.Text)
    web: Mapped[str | None] = mapped_column(sa.Text)
    minute_limit: Mapped[int | None] = mapped_column(BigId)


class OrganizationMember(Base):
    __tablename__ = "eddydesk_organization_members"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    role: Mapped[str] = mapped_column(sa.String(16), primary_key=True)  # employee | manager
    user_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)


class OrganizationCustomFieldValue(Base):
    __tablename__ = "eddydesk_organization_custom_field_values"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    field_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    field_type: Mapped[str | None] = mapped_column(sa.String(32))
    value_text: Mapped[str | None] = mapped_column(sa.Text)
    value: Mapped[Any | None] = mapped_column(JSONType)


class OrganizationNote(MirroredRecord, Base):
    __tablename__ = "eddydesk_organization_notes"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    organization_id: Mapped[int] = mapped_column(BigId, index=True, info=src("organiz_id"))
    creator_id: Mapped[int | None] = mapped_column(BigId)
    text: Mapped[str | None] = mapped_column(sa.Text)
    date_created: Mapped[datetime | None]
    date_updated: Mapped[datetime | None]
    file: Mapped[Any | None] = mapped_column(JSONType)


# --- knowledge base ------------------------------------------------------------------------------

class KbCategory(MirroredRecord, Base):
    __tablename__ = "eddydesk_kb_categories"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    parent_id: Mapped[int | None] = mapped_column(BigId)
    position: Mapped[int | None]
    date_created: Mapped[datetime | None]
    date_updated: Mapped[datetime | None]
    access: Mapped[str | None] = mapped_column(sa.String(32))
    access_by_groups: Mapped[list[Any] | None]
    title: Mapped[dict[str, Any] | None]
    title_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("title"))


class KbArticle(MirroredRecord, Base):
    __tablename__ = "eddydesk_kb_articles"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    date_created: Mapped[datetime | None]
    date_updated: Mapped[datetime | None]
    show_me_only: Mapped[bool | None]
    access: Mapped[str | None] = mapped_column(sa.String(32))
    pin: Mapped[bool | None]
    views_count: Mapped[int | None] = mapped_column(BigId)
    categories: Mapped[list[Any] | None]
    title: Mapped[dict[str, Any] | None]
    title_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("title"))
    tags: Mapped[dict[str, Any] | None]
    body: Mapped[dict[str, Any] | None]
    body_display: Mapped[str | None] = mapped_column(sa.Text, info=display_of("body"))
    files: Mapped[list[Any] | None]


class KbArticleCategory(Base):
    __tablename__ = "eddydesk_kb_article_categories"
    connection: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    article_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    category_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    position: Mapped[int]
