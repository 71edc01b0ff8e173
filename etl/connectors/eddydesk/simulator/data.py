"""Deterministic sample data with consistent references, shaped like seed 003's examples.

Sizes are parameters; the same seed gives the same data. Child lists (posts, comments, notes,
audit, billing) are generated from their parent's id when first asked for, so 100,000 tickets
start in seconds; once changed they are stored.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

Record = dict[str, Any]

ISO = "%Y-%m-%d %H:%M:%S"  # tickets, users, organizations, knowledge base
POST = "%H:%M:%S %d.%m.%Y"  # posts, comments, notes, audit, billing
SLA = "%d.%m.%Y %H:%M"  # sla_date, freeze_date

EPOCH = datetime(2023, 1, 1)
SPAN_SECONDS = 3 * 365 * 24 * 3600  # generated history: three years before the simulator starts

WORDS = [
    "printer", "email", "login", "invoice", "refund", "password", "access", "delivery", "update", "error",
    "crash", "slow", "report", "export", "import", "account", "billing", "contract", "renewal", "setup",
    "install", "network", "vpn",
]
LANGS = ("en", "ru", "ua")


@dataclass(frozen=True)
class Sizes:
    tickets: int = 200
    users: int = 60
    organizations: int = 10
    kb_categories: int = 12
    kb_articles: int = 30
    posts_per_ticket: int = 3  # upper bound; 0..n each
    comments_per_ticket: int = 2
    notes_per_parent: int = 2


DEFAULT_SIZES = Sizes()


def _lang(rng: random.Random, text: str, langs: int = 2) -> dict[str, str]:
    return {lang: f"{text}" if lang == "en" else f"{text} ({lang})" for lang in LANGS[: max(1, langs)]}


def _title(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))).capitalize()


def _stamp(rng: random.Random, after: datetime | None = None) -> datetime:
    base = after or EPOCH
    limit = EPOCH + timedelta(seconds=SPAN_SECONDS)
    room = max(1, int((limit - base).total_seconds()))
    return base + timedelta(seconds=rng.randint(0, room))


def reference_lists() -> dict[str, list[Record]]:
    return _reference_lists()


def _reference_lists() -> dict[str, list[Record]]:
    return {
        "departments": [
            {"id": 1, "name": {"en": "Support Department"}},
            {"id": 2, "name": {"en": "Test department"}},
            {"id": 3, "name": {"en": "Billing", "ru": "Бухгалтерия"}},
        ],
        "statuses": [
            {"id": "open", "name": {"en": "Open"}},
            {"id": "process", "name": {"en": "In progress"}},
            {"id": "closed", "name": {"en": "Closed"}},
        ],
        "priorities": [
            {"id": 2, "name": {"en": "Standard"}},
            {"id": 3, "name": {"en": "Medium"}},
            {"id": 1, "name": {"en": "Very urgent"}},
        ],
        "types": [
            {"id": 0, "name": {"en": "Without type"}},
            {"id": 1, "name": {"en": "Problem"}},
            {"id": 2, "name": {"en": "Task"}},
            {"id": 3, "name": {"en": "Bug"}},
        ],
        "groups": [
            {"id": 1, "type": "user", "name": {"ru": "Клиент", "en": "Client", "ua": "Клиент"}, "disable": 0},
            {"id": 2, "type": "staff", "name": {"ru": "Администратор", "en": "Administrator", "ua": "Администратор"}, "disable": 0},
            {"id": 3, "type": "staff", "name": {"ru": "Сотрудник", "en": "Employee", "ua": "Сотрудник"}, "disable": 0},
        ],
        "user_statuses": [
            {"id": "online", "name": {"en": "Online"}, "color": "#67c23a"},
            {"id": "on-hold", "name": {"en": "On hold"}, "color": "#e6a23c"},
            {"id": "obed", "name": {"en": "Lunch break"}, "color": "#28D611"},
            {"id": "offline", "name": {"en": "Offline"}, "color": "#f56c6c"},
        ],
    }


_REFERENCE = _reference_lists()


def _permissions(ticket_scope: bool) -> Record:
    if ticket_scope:
        one = {"view": True, "edit": True, "required_to_create_ticket": False, "required_to_close_ticket": False}
    else:
        one = {"view": True, "edit": True, "required": False}
    return {"staff": dict(one), "user": dict(one)}


def custom_fields(scope: str, first_id: int) -> tuple[list[Record], dict[int, list[Record]]]:
    """The field types of the docs' examples; one name only in French, the hierarchy nested."""
    ticket_scope = scope == "ticket"
    kinds = ["select", "date", "checkbox", "text", "textarea", "number", "hierarchy"]
    fields: list[Record] = []
    options: dict[int, list[Record]] = {}
    option_id = first_id * 100
    for offset, kind in enumerate(kinds):
        fid = first_id + offset
        name: Record = {"en": kind.capitalize()}
        if kind == "checkbox":
            name = {"fr": "Checkbox"}
        if kind == "hierarchy":
            name = {str(level): {"en": f"Related {level}"} for level in range(1, 4)}
        fields.append({"id": fid, "name": name, "field_type": kind, "permissions": _permissions(ticket_scope)})
        if kind == "select":
            opts = []
            for n in range(1, 5):
                option_id += 1
                opts.append({"id": option_id, "pid": 0, "name": {"en": str(n)}})
            options[fid] = opts
        if kind == "hierarchy":
            opts = []
            for top in range(3):
                option_id += 1
                parent = option_id
                opts.append({"id": parent, "pid": 0, "name": {"en": f"Level 1 / {top}"}})
                for sub in range(2):
                    option_id += 1
                    opts.append({"id": option_id, "pid": parent, "name": {"en": f"Level 2 / {top}.{sub}"}})
            options[fid] = opts
    return fields, options


def field_value(rng: random.Random, field: Record, options: dict[int, list[Record]]) -> Any:
    kind = field["field_type"]
    if kind == "select":
        return rng.choice(options[field["id"]])["id"]
    if kind == "date":
        return (EPOCH + timedelta(days=rng.randint(0, 900))).strftime("%d.%m.%Y")
    if kind == "checkbox":
        return rng.randint(0, 1)
    if kind == "number":
        return str(rng.randint(0, 10_000))
    if kind == "hierarchy":
        top = [o for o in options[field["id"]] if o["pid"] == 0]
        first = rng.choice(top)
        subs = [o for o in options[field["id"]] if o["pid"] == first["id"]]
        return [first["id"], rng.choice(subs)["id"]] if subs else [first["id"]]
    return _title(rng)


def make_user(rng: random.Random, uid: int, staff: bool, org_name: str, user_fields: list[Record],
              options: dict[int, list[Record]], email: str | None = None, api_key: str | None = None) -> Record:
    created = _stamp(rng)
    updated = _stamp(rng, created)
    group = _REFERENCE["groups"][rng.choice((1, 2)) if staff else 0]
    first = rng.choice(("Anna", "Ivan", "John", "Maria", "Peter", "Olga", "Liga", "Janis"))
    return {
        "id": uid,
        "date_created": created.strftime(ISO),
        "date_updated": updated.strftime(ISO),
        "name": first,
        "lastname": rng.choice(("Doe", "Petrov", "Ozola", "Smith", "")),
        "email": email or f"user{uid}@example.com",
        "phone": f"+371{rng.randint(20000000, 29999999)}" if rng.random() < 0.7 else "",
        "skype": "",
        "website": "",
        "organization": org_name,
        "status": "active",
        "language": rng.choice(("en", "ru")),
        "notifications": rng.randint(0, 1),
        "api_key": api_key or str(uuid.UUID(int=rng.getrandbits(128))),
        "group": group,
        "department": sorted(rng.sample((1, 2, 3), rng.randint(0, 2))) if staff else [],
        "ldap_username": "",
        "user_status": rng.choice(("online", "offline", "on-hold")) if staff else "offline",
        "custom_fields": [
            {"id": f["id"], "field_type": f["field_type"], "field_value": field_value(rng, f, options)}
            for f in user_fields[:3]
        ],
    }


def make_organization(rng: random.Random, oid: int, employees: list[int], managers: list[int],
                      org_fields: list[Record], options: dict[int, list[Record]]) -> Record:
    created = _stamp(rng)
    return {
        "id": oid,
        "date_created": created.strftime(ISO),
        "date_updated": _stamp(rng, created).strftime(ISO),
        "name": f"Organization {oid}",
        "domains": f"@org{oid}.example.com",
        "address": "",
        "phone": "",
        "email": f"office@org{oid}.example.com" if rng.random() < 0.5 else "",
        "web": "",
        "minute_limit": rng.choice((0, 0, 10000)),
        "employees": employees,
        "managers": managers,
        "custom_fields": [
            {"id": f["id"], "field_type": f["field_type"], "field_value": field_value(rng, f, options)}
            for f in org_fields[:2]
        ],
    }


def make_ticket(rng: random.Random, tid: int, client: Record, staff: Record, ticket_fields: list[Record],
                options: dict[int, list[Record]], staff_ids: list[int]) -> Record:
    created = _stamp(rng)
    updated = _stamp(rng, created)
    departments = _REFERENCE["departments"]
    dep = rng.choice(departments)
    rated = rng.random() < 0.3
    return {
        "id": tid,
        "pid": 0,
        "unique_id": f"{''.join(rng.choice('ABCDEFGHIJKLMNOPQRSTUVWXYZ') for _ in range(3))}-{rng.randint(10000, 99999)}",
        "date_created": created.strftime(ISO),
        "date_updated": updated.strftime(ISO),
        "title": _title(rng),
        "source": rng.choice(("email", "web", "api", "phone")),
        "status_id": rng.choice(("open", "process", "closed")),
        "priority_id": rng.choice((1, 2, 3)),
        "type_id": rng.choice((0, 1, 2, 3)),
        "department_id": dep["id"],
        "department_name": dep["name"]["en"],
        "owner_id": staff["id"],
        "owner_name": staff["name"],
        "owner_lastname": staff["lastname"],
        "owner_email": staff["email"],
        "user_id": client["id"],
        "username": client["name"],  # the list example spells it "username" (seed 003)
        "user_lastname": client["lastname"],
        "user_email": client["email"],
        "cc": [f"cc{rng.randint(1, 99)}@example.com"] if rng.random() < 0.2 else [],
        "bcc": [f"bcc{rng.randint(1, 99)}@example.com"] if rng.random() < 0.05 else [],
        "followers": rng.sample(staff_ids, min(len(staff_ids), rng.randint(0, 2))) if rng.random() < 0.2 else [],
        "ticket_lock": 0,
        "sla_date": (updated + timedelta(hours=8)).strftime(SLA),
        "freeze_date": "null",
        "freeze": 0,
        "deleted": 0,
        "viewed_by_staff": rng.randint(0, 1),
        "viewed_by_client": rng.randint(0, 1),
        "rate": rng.choice(("like", "dislike")) if rated else "",
        "rate_comment": "Nice" if rated else "",
        "rate_date": (updated - timedelta(minutes=3)).strftime(ISO) if rated else "",
        "custom_fields": [
            {"id": f["id"], "field_type": f["field_type"], "field_value": field_value(rng, f, options)}
            for f in ticket_fields
            if rng.random() < 0.6
        ],
        "tags": rng.sample(WORDS, rng.randint(0, 3)),
        "jira_issues": [],
    }


def child_rng(kind: str, parent_id: int, seed: int) -> random.Random:
    return random.Random(f"{seed}:{kind}:{parent_id}")


def make_posts(seed: int, ticket: Record, staff_ids: list[int], limit: int, first_id: int) -> list[Record]:
    rng = child_rng("posts", ticket["id"], seed)
    created = datetime.strptime(ticket["date_created"], ISO)
    posts = []
    for n in range(rng.randint(0, limit)):
        stamp = created + timedelta(minutes=5 * (n + 1))
        posts.append({
            "ticket_id": ticket["id"],
            "id": first_id + n,
            "user_id": rng.choice((ticket["user_id"], rng.choice(staff_ids))),
            "text": f"<p>{_title(rng)}</p>",
            "date_created": stamp.strftime(POST),
            "date_updated": stamp.strftime(POST),
            "files": [] if rng.random() < 0.8 else [
                {"name": "test.png", "url": f"https://system_domain/en/file/download/{rng.getrandbits(64):016x}", "data_type": "png"}
            ],
        })
    return sorted(posts, key=lambda p: -p["id"])


def make_comments(seed: int, ticket: Record, staff_ids: list[int], limit: int, first_id: int) -> list[Record]:
    rng = child_rng("comments", ticket["id"], seed)
    created = datetime.strptime(ticket["date_created"], ISO)
    return sorted(
        (
            {
                "ticket_id": ticket["id"],
                "id": first_id + n,
                "user_id": rng.choice(staff_ids),
                "text": _title(rng),
                "date_created": (created + timedelta(minutes=7 * (n + 1))).strftime(POST),
                "visible": "staff",
                "files": [],
            }
            for n in range(rng.randint(0, limit))
        ),
        key=lambda c: -c["id"],
    )


def make_notes(seed: int, kind: str, parent_key: str, parent_id: int, limit: int, first_id: int) -> list[Record]:
    rng = child_rng(kind, parent_id, seed)
    notes = []
    for n in range(rng.randint(0, limit)):
        stamp = _stamp(rng)
        notes.append({
            "id": first_id + n,
            "creator_id": 1,
            parent_key: parent_id,
            "text": _title(rng),
            "date_created": stamp.strftime(POST),
            "date_updated": stamp.strftime(POST),
            # the docs show "file" as an object when there is one and [] when there is none
            "file": [] if rng.random() < 0.7 else {
                "name": "note.png", "url": f"https://system_domain/en/file/download/{rng.getrandbits(64):016x}", "data_type": "png"
            },
        })
    return sorted(notes, key=lambda x: -x["id"])


def make_status_log(seed: int, user_id: int, limit: int) -> list[Record]:
    """A staff user's status history (GET /users/{id}/statuses_log/): ids counted per user,
    newest first, as in the docs' example ({"id": 2, "status_id": "on-hold", ...}, then id 1)."""
    rng = child_rng("status_log", user_id, seed)
    statuses = _REFERENCE["user_statuses"]
    stamps = sorted(_stamp(rng) for _ in range(rng.randint(0, limit)))
    entries = []
    for n, stamp in enumerate(stamps, start=1):
        status = rng.choice(statuses)
        entries.append({"id": n, "status_id": status["id"], "name": dict(status["name"]),
                        "date_created": stamp.strftime(ISO)})
    return entries[::-1]


def make_audit(seed: int, ticket: Record) -> list[Record]:
    rng = child_rng("audit", ticket["id"], seed)
    created = datetime.strptime(ticket["date_created"], ISO)
    events = []
    for n in range(rng.randint(1, 4)):
        event = rng.choice(("ticket_view", "ticket_answer", "status_update", "owner_update"))
        events.append({
            "id": ticket["id"] * 10 + n,
            "event": event,
            "text": _lang(rng, event.replace("_", " ").capitalize(), 3),
            "user_id": 1,
            "user_name": "Admin",
            "date_created": (created + timedelta(minutes=n)).strftime(POST),
        })
    return events


def make_billing(seed: int, ticket: Record) -> list[Record]:
    rng = child_rng("billing", ticket["id"], seed)
    created = datetime.strptime(ticket["date_created"], ISO)
    return [
        {
            "id": ticket["id"] * 10 + n,
            "action": rng.choice(("create-post", None)),
            "comment": _title(rng),
            "spent_seconds": rng.randint(10, 7200),
            "paid_seconds": rng.randint(10, 7200),
            "staff_id": 1,
            "staff_name": "Administrator",
            "billing_date": (created + timedelta(minutes=n)).strftime(POST),
            "creator_id": -1,
            "creator_name": "System",
            "date_created": (created + timedelta(minutes=n)).strftime(POST),
        }
        for n in range(rng.randint(0, 2))
    ]


def make_categories(rng: random.Random, count: int) -> list[Record]:
    """A tree up to six levels deep (deeper than Udesk's four, on purpose)."""
    cats: list[Record] = []
    depth: dict[int, int] = {0: 0}
    for cid in range(1, count + 1):
        candidates = [c["id"] for c in cats if depth[c["id"]] < 6]
        parent = 0 if not candidates or rng.random() < 0.25 else rng.choice(candidates)
        deepest = max(cats, key=lambda c: depth[c["id"]])["id"] if cats else 0
        if cid > count - 5 and depth[deepest] < 6:
            parent = deepest  # the last ones continue the deepest branch: six levels are always reached
        depth[cid] = depth[parent] + 1
        created = _stamp(rng)
        cats.append({
            "id": cid,
            "parent_id": parent,
            "position": cid,
            "date_created": created.strftime(ISO),
            "date_updated": _stamp(rng, created).strftime(ISO),
            "access": rng.choice(("public", "staff", "user")),
            "access_by_groups": [1, 2, 3],
            "title": _lang(rng, f"Category {cid}", rng.randint(1, 2)),
        })
    return cats


def make_article(rng: random.Random, aid: int, category_ids: list[int]) -> Record:
    created = _stamp(rng)
    title = _title(rng)
    cats = rng.sample(category_ids, min(len(category_ids), rng.randint(1, 2))) if category_ids else []
    return {
        "id": aid,
        "date_created": created.strftime(ISO),
        "date_updated": _stamp(rng, created).strftime(ISO),
        "show_me_only": False,
        "access": rng.choice(("public", "staff", "user")),
        "pin": rng.random() < 0.1,
        "views_count": rng.randint(0, 500),
        "categories": cats,
        "title": _lang(rng, title, rng.randint(1, 2)),
        "tags": {"en": rng.sample(WORDS, rng.randint(0, 2))},
        "body": {"en": f"<p>{title}: {' '.join(rng.choice(WORDS) for _ in range(30))}</p>"},
        "files": [] if rng.random() < 0.8 else [
            {"name": "guide.pdf", "url": f"https://system_domain/en/knowledge_base/download/{aid}/file/{rng.getrandbits(64):016x}", "data_type": "pdf"}
        ],
    }
