"""The simulated helpdesk's data and the changes tests make to it.

Readings of the docs that the engine relies on (also in the package docstring and README):
- a change to a ticket's posts or comments, and soft deletion, set the ticket's date_updated;
  a change to a user's or organization's notes sets theirs;
- a hard delete removes the record and its children; nothing lists it afterwards.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from etl.connectors.eddydesk.simulator import data
from etl.connectors.eddydesk.simulator.collection import Collection

Record = dict[str, Any]


class HelpdeskState:
    def __init__(self, sizes: data.Sizes = data.DEFAULT_SIZES, seed: int = 1, timezone: str = "Europe/Riga",
                 admin_email: str = "admin@example.com", admin_api_key: str = "sim-api-key") -> None:
        self.lock = threading.RLock()
        self.seed = seed
        self.sizes = sizes
        self.tz: tzinfo = ZoneInfo(timezone)
        self.admin_email = admin_email
        self.admin_api_key = admin_api_key
        self.reference = data.reference_lists()
        self.fields: dict[str, list[Record]] = {}
        self.options: dict[str, dict[int, list[Record]]] = {}
        for scope, first in (("ticket", 2), ("user", 20), ("organization", 40)):
            self.fields[scope], self.options[scope] = data.custom_fields(scope, first)
        self.tickets = Collection(partition=lambda r: int(r.get("deleted") or 0))
        self.users = Collection()
        self.organizations = Collection()
        self.kb_categories = Collection()
        self.kb_articles = Collection()
        # child lists that were changed (or read once); others are generated from the parent id
        self._posts: dict[int, list[Record]] = {}
        self._comments: dict[int, list[Record]] = {}
        self._user_notes: dict[int, list[Record]] = {}
        self._org_notes: dict[int, list[Record]] = {}
        self._status_logs: dict[int, list[Record]] = {}
        self._next_child_id = 10_000_000
        self._generate()

    # -- generation ---------------------------------------------------------------------------
    def _generate(self) -> None:
        rng = random.Random(self.seed)
        s = self.sizes
        n_staff = max(2, s.users // 20)
        org_names = {oid: f"Organization {oid}" for oid in range(1, s.organizations + 1)}
        users = []
        for uid in range(1, s.users + 1):
            staff = uid <= n_staff
            org = "" if staff or not org_names else org_names[1 + (uid % len(org_names))]
            email = self.admin_email if uid == 1 else None
            key = self.admin_api_key if uid == 1 else None
            users.append(data.make_user(rng, uid, staff, org, self.fields["user"], self.options["user"], email, key))
        self.users.put_many(users)
        staff_ids = list(range(1, n_staff + 1))
        self.staff_ids = staff_ids
        clients = users[n_staff:] or users
        members: dict[int, list[int]] = {oid: [] for oid in org_names}
        for user in clients:
            if user["organization"]:
                members[int(user["organization"].split()[-1])].append(user["id"])
        self.organizations.put_many(
            data.make_organization(rng, oid, members[oid], members[oid][:1], self.fields["organization"], self.options["organization"])
            for oid in org_names
        )
        tickets = [data.make_ticket(rng, tid, rng.choice(clients), users[rng.randrange(n_staff)], self.fields["ticket"],
                                    self.options["ticket"], staff_ids) for tid in range(1, s.tickets + 1)]
        for ticket in tickets:  # some frozen, some in the trash, as a live helpdesk has (seed 003's filters)
            if ticket["id"] % 17 == 0:
                ticket.update(freeze=1, freeze_date=ticket["sla_date"])
            if ticket["id"] % 23 == 0:
                ticket["deleted"] = 1
        self.tickets.put_many(tickets)
        cats = data.make_categories(rng, s.kb_categories)
        self.kb_categories.put_many(cats)
        cat_ids = [c["id"] for c in cats]
        self.kb_articles.put_many(data.make_article(rng, aid, cat_ids) for aid in range(1, s.kb_articles + 1))

    # -- time ---------------------------------------------------------------------------------
    def now(self) -> str:
        """The account's local time, as the API writes dates."""
        return datetime.now(self.tz).strftime(data.ISO)

    def now_post(self) -> str:
        return datetime.now(self.tz).strftime(data.POST)

    # -- child lists --------------------------------------------------------------------------
    def posts(self, ticket_id: int) -> list[Record]:
        with self.lock:
            if ticket_id not in self._posts:
                ticket = self.tickets.get(ticket_id)
                if ticket is None:
                    return []
                return data.make_posts(self.seed, ticket, self.staff_ids, self.sizes.posts_per_ticket, ticket_id * 10)
            return self._posts[ticket_id]

    def comments(self, ticket_id: int) -> list[Record]:
        with self.lock:
            if ticket_id not in self._comments:
                ticket = self.tickets.get(ticket_id)
                if ticket is None:
                    return []
                return data.make_comments(self.seed, ticket, self.staff_ids, self.sizes.comments_per_ticket, ticket_id * 10)
            return self._comments[ticket_id]

    def user_notes(self, user_id: int) -> list[Record]:
        with self.lock:
            if user_id not in self._user_notes:
                return data.make_notes(self.seed, "user_notes", "user_id", user_id, self.sizes.notes_per_parent, user_id * 10)
            return self._user_notes[user_id]

    def organization_notes(self, org_id: int) -> list[Record]:
        with self.lock:
            if org_id not in self._org_notes:
                return data.make_notes(self.seed, "org_notes", "organiz_id", org_id, self.sizes.notes_per_parent, org_id * 10)
            return self._org_notes[org_id]

    def status_log(self, user_id: int) -> list[Record]:
        """A staff user's status changes, newest first (clients have none)."""
        with self.lock:
            if user_id not in self._status_logs:
                user = self.users.records[user_id]
                staff = user.get("group", {}).get("type") == "staff"
                return data.make_status_log(self.seed, user_id, 12) if staff else []
            return self._status_logs[user_id]

    def audit(self, ticket_id: int) -> list[Record]:
        ticket = self.tickets.get(ticket_id)
        return data.make_audit(self.seed, ticket) if ticket else []

    def billing(self, ticket_id: int) -> list[Record]:
        ticket = self.tickets.get(ticket_id)
        return data.make_billing(self.seed, ticket) if ticket else []

    def _child_id(self) -> int:
        self._next_child_id += 1
        return self._next_child_id

    # -- changes ------------------------------------------------------------------------------
    def _touch(self, collection: Collection, record_id: int, **changes: Any) -> Record:
        record = dict(collection.records[record_id])
        record.update(changes)
        record["date_updated"] = self.now()
        collection.put(record)
        return record

    def update_ticket(self, ticket_id: int, **changes: Any) -> Record:
        with self.lock:
            return self._touch(self.tickets, ticket_id, **changes)

    def create_ticket(self, **changes: Any) -> Record:
        with self.lock:
            rng = random.Random(f"{self.seed}:create:{len(self.tickets)}:{self.tickets.version}")
            tid = max(self.tickets.records, default=0) + 1
            users = self.users.records
            client = users[rng.choice([u for u in users if u not in self.staff_ids] or list(users))]
            ticket = data.make_ticket(rng, tid, client, users[self.staff_ids[0]], self.fields["ticket"],
                                      self.options["ticket"], self.staff_ids)
            ticket.update(changes, date_created=self.now(), date_updated=self.now())
            self.tickets.put(ticket)
            self._posts[tid] = []
            self._comments[tid] = []
            return ticket

    def soft_delete_ticket(self, ticket_id: int) -> Record:
        with self.lock:
            return self._touch(self.tickets, ticket_id, deleted=1)

    def hard_delete_ticket(self, ticket_id: int) -> None:
        with self.lock:
            self.tickets.remove(ticket_id)
            self._posts.pop(ticket_id, None)
            self._comments.pop(ticket_id, None)

    def add_post(self, ticket_id: int, text: str, user_id: int = 1) -> Record:
        with self.lock:
            posts = list(self.posts(ticket_id))
            post = {"ticket_id": ticket_id, "id": self._child_id(), "user_id": user_id, "text": text,
                    "date_created": self.now_post(), "date_updated": self.now_post(), "files": []}
            self._posts[ticket_id] = [post, *posts]
            self._touch(self.tickets, ticket_id)
            return post

    def edit_post(self, ticket_id: int, post_id: int, text: str) -> None:
        with self.lock:
            self._posts[ticket_id] = [
                {**p, "text": text, "date_updated": self.now_post()} if p["id"] == post_id else p for p in self.posts(ticket_id)
            ]
            self._touch(self.tickets, ticket_id)

    def delete_post(self, ticket_id: int, post_id: int) -> None:
        with self.lock:
            self._posts[ticket_id] = [p for p in self.posts(ticket_id) if p["id"] != post_id]
            self._touch(self.tickets, ticket_id)

    def add_comment(self, ticket_id: int, text: str, user_id: int = 1) -> Record:
        with self.lock:
            comment = {"ticket_id": ticket_id, "id": self._child_id(), "user_id": user_id, "text": text,
                       "date_created": self.now_post(), "visible": "staff", "files": []}
            self._comments[ticket_id] = [comment, *self.comments(ticket_id)]
            self._touch(self.tickets, ticket_id)
            return comment

    def edit_comment(self, ticket_id: int, comment_id: int, text: str) -> None:
        with self.lock:
            self._comments[ticket_id] = [{**c, "text": text} if c["id"] == comment_id else c
                                         for c in self.comments(ticket_id)]
            self._touch(self.tickets, ticket_id)

    def delete_comment(self, ticket_id: int, comment_id: int) -> None:
        with self.lock:
            self._comments[ticket_id] = [c for c in self.comments(ticket_id) if c["id"] != comment_id]
            self._touch(self.tickets, ticket_id)

    def update_user(self, user_id: int, **changes: Any) -> Record:
        with self.lock:
            before = self.users.records[user_id].get("user_status")
            user = self._touch(self.users, user_id, **changes)
            if "user_status" in changes and changes["user_status"] != before:
                log = list(self.status_log(user_id))
                status = next((s for s in self.reference["user_statuses"] if s["id"] == changes["user_status"]),
                              {"id": changes["user_status"], "name": {"en": str(changes["user_status"])}})
                entry = {"id": max((e["id"] for e in log), default=0) + 1, "status_id": status["id"],
                         "name": dict(status["name"]), "date_created": self.now()}
                self._status_logs[user_id] = [entry, *log]
            return user

    def create_user(self, **changes: Any) -> Record:
        with self.lock:
            rng = random.Random(f"{self.seed}:user:{self.users.version}")
            uid = max(self.users.records, default=0) + 1
            user = data.make_user(rng, uid, False, "", self.fields["user"], self.options["user"])
            user.update(changes, date_created=self.now(), date_updated=self.now())
            self.users.put(user)
            self._user_notes[uid] = []
            return user

    def hard_delete_user(self, user_id: int) -> None:
        with self.lock:
            self.users.remove(user_id)
            self._user_notes.pop(user_id, None)
            self._status_logs.pop(user_id, None)

    def add_user_note(self, user_id: int, text: str) -> Record:
        with self.lock:
            note = {"id": self._child_id(), "creator_id": 1, "user_id": user_id, "text": text,
                    "date_created": self.now_post(), "date_updated": self.now_post(), "file": []}
            self._user_notes[user_id] = [note, *self.user_notes(user_id)]
            self._touch(self.users, user_id)
            return note

    def delete_user_note(self, user_id: int, note_id: int) -> None:
        with self.lock:
            self._user_notes[user_id] = [n for n in self.user_notes(user_id) if n["id"] != note_id]
            self._touch(self.users, user_id)

    def update_organization(self, org_id: int, **changes: Any) -> Record:
        with self.lock:
            return self._touch(self.organizations, org_id, **changes)

    def create_organization(self, **changes: Any) -> Record:
        with self.lock:
            oid = max(self.organizations.records, default=0) + 1
            org: Record = {"id": oid, "domains": "", "address": "", "phone": "", "email": "", "web": "",
                           "minute_limit": 0, "employees": [], "managers": [], "custom_fields": []}
            org.update(changes, date_created=self.now(), date_updated=self.now())
            self.organizations.put(org)
            self._org_notes[oid] = []
            return org

    def hard_delete_organization(self, org_id: int) -> None:
        with self.lock:
            self.organizations.remove(org_id)
            self._org_notes.pop(org_id, None)

    def add_organization_note(self, org_id: int, text: str) -> Record:
        with self.lock:
            note = {"id": self._child_id(), "creator_id": 1, "organiz_id": org_id, "text": text,
                    "date_created": self.now_post(), "date_updated": self.now_post(), "file": []}
            self._org_notes[org_id] = [note, *self.organization_notes(org_id)]
            self._touch(self.organizations, org_id)
            return note

    def delete_organization_note(self, org_id: int, note_id: int) -> None:
        with self.lock:
            self._org_notes[org_id] = [n for n in self.organization_notes(org_id) if n["id"] != note_id]
            self._touch(self.organizations, org_id)

    def update_article(self, article_id: int, **changes: Any) -> Record:
        with self.lock:
            return self._touch(self.kb_articles, article_id, **changes)

    def update_category(self, category_id: int, **changes: Any) -> Record:
        with self.lock:
            return self._touch(self.kb_categories, category_id, **changes)

    def hard_delete_article(self, article_id: int) -> None:
        with self.lock:
            self.kb_articles.remove(article_id)

    def random_changes(self, seed: int, updates: int = 0, creates: int = 0, soft_deletes: int = 0,
                       hard_deletes: int = 0) -> dict[str, list[int]]:
        """Random changes across tickets (and their posts), users, organizations and articles."""
        rng = random.Random(seed)
        done: dict[str, list[int]] = {"updated": [], "created": [], "soft_deleted": [], "hard_deleted": []}
        with self.lock:
            live = sorted(i for i, t in self.tickets.records.items() if not t["deleted"])
            picks = rng.sample(live, min(len(live), updates + soft_deletes + hard_deletes))
            for n, tid in enumerate(picks):
                if n < updates:
                    action: Callable[[], Any] = rng.choice((
                        lambda t=tid: self.update_ticket(t, title=data._title(rng), status_id=rng.choice(("open", "closed"))),
                        lambda t=tid: self.add_post(t, f"<p>reply {rng.random():.6f}</p>"),
                        lambda t=tid: self.add_comment(t, f"note {rng.random():.6f}"),
                    ))
                    action()
                    done["updated"].append(tid)
                elif n < updates + soft_deletes:
                    self.soft_delete_ticket(tid)
                    done["soft_deleted"].append(tid)
                else:
                    self.hard_delete_ticket(tid)
                    done["hard_deleted"].append(tid)
            for _ in range(creates):
                done["created"].append(self.create_ticket()["id"])
            for uid in rng.sample(sorted(self.users.records)[1:], min(len(self.users) - 1, max(1, updates // 10))):
                self.update_user(uid, phone=f"+371{rng.randint(20000000, 29999999)}")
            if self.organizations.records:
                oid = rng.choice(sorted(self.organizations.records))
                self.add_organization_note(oid, "changed")
            if self.kb_articles.records:
                aid = rng.choice(sorted(self.kb_articles.records))
                self.update_article(aid, views_count=rng.randint(0, 10_000))
        return done
