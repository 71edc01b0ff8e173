"""Writes to the simulated helpdesk: seed 003's POST, PUT and DELETE endpoints.

Readings of the docs (also in the README's simulator section):
- creates are form-encoded, as every create example's curl is (`custom_fields[6]=value`,
  `department[0]=1`); updates of tickets, users and organizations take JSON, updates of post and
  comment text are form-encoded — again as the examples send them. Values may come as strings
  ("owner_id": "1" in the update example) and are read as numbers where the docs say number.
- a create or update answers {"data": record} exactly as the single-record GET would; a DELETE
  answers HTTP 200 with the docs' body {"errors": [{"code": "s-204", "title": "No content",
  "details": "Ticket with id {9} successfully deleted"}]} (printed for tickets, replies, notes,
  users, organizations, options and user and organization notes).
- DELETE /tickets/{id} moves the ticket to the trash (deleted = 1, listed with deleted=1);
  `?delete=true` removes it outright ("true – complete removal of the order. Default value is
  false"). Users, organizations, replies, notes and user/organization notes are removed.
- refusals are e-411 errors, titled and worded as the docs print them: a missing required field
  is "Required {name} field" / "Required field {name} is missing or empty" (users), a missing
  reply text "Required {text} request" / "Required field is missing or empty"; others name the
  field ("Field {owner_id} with id {5} does not exist", "Organization name {X} already exists",
  "User with email {x} already exists": the docs match users by e-mail) under "Bad request".
  All errors of one request are answered together. Missing records are e-404 "Not found" in the
  docs' words ("Post with id {15} in ticket with id {9} does not exist"); a missing note under a
  user or organization answers the code the docs print there, "s-204".
- a ticket's description becomes its first reply, on behalf of the ticket's client unless
  create_from_user = 0 ("The first response ... on behalf of the employee is 0, on behalf of the
  user 1, by default 1"); a reply or note's user_id names its owner, else the API user ("if not
  specified, the owner will be the API user"). Reply text is stored as HTML: plain text comes
  back wrapped in <p> (the docs send text=Problem with email and answer "<p>Problem with email</p>").
- freeze_date set on a create or update freezes the ticket (freeze = 1, listed under freeze=1).
- a user_email without user_id finds that user or creates a client, as the docs say.
- custom-field options (POST …/custom_fields/{id}/options): more than 100 entries, an entry
  without a name object, an unknown option id, a pid that is no option of the field, or a pid
  that moves an existing option are refused (e-411), the whole request with them. The answer
  lists the affected options in the order they were sent (as the docs' example does); new ones
  go to the end of the field's list. Deleting an option answers the docs' own body: HTTP 200
  with {"errors": [{"code": "s-204", ...}]}.
"""

from __future__ import annotations

from datetime import datetime

from etl.connectors.eddydesk.simulator import data
from etl.connectors.eddydesk.simulator.forms import (
    Problem,
    Record,
    Refused,
    as_html,
    number_of,
    required,
    values_of,
)
from etl.connectors.eddydesk.simulator.store import HelpdeskState


class HelpdeskWrites:
    """Validates and applies one write; raises Refused with every problem found."""

    def write_options(self, scope: str, field_id: int, body: Record) -> list[Record]:
        items = body.get("options")
        if not isinstance(items, list) or not items:
            raise Refused(["Field {options} is required"])
        if len(items) > 100:
            raise Refused([f"Field {{options}} holds {len(items)} entries, at most 100 are allowed"])
        options = self.state.options[scope][field_id]
        by_id = {o["id"]: o for o in options}
        problems: list[Problem] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("name"), dict) or not item["name"]:
                problems.append("Field {name} is required")
                continue
            option_id, pid = number_of(item.get("id")), number_of(item.get("pid"))
            if item.get("id") is not None and option_id not in by_id:
                problems.append(f"Option with id {{{item.get('id')}}} does not exist")
            elif option_id is not None and pid is not None and pid != by_id[option_id]["pid"]:
                problems.append(f"Option with id {{{option_id}}} cannot be moved across levels")
            elif option_id is None and pid not in (None, 0) and pid not in by_id:
                problems.append(f"Option with id {{{pid}}} does not exist")
        if problems:
            raise Refused(problems)
        answer = []
        next_id = max((o["id"] for by_field in self.state.options.values() for opts in by_field.values() for o in opts),
                      default=0) + 1
        for item in items:
            option_id = number_of(item.get("id"))
            if option_id is not None:
                by_id[option_id]["name"] = dict(item["name"])
                answer.append(by_id[option_id])
            else:
                option = {"id": next_id, "pid": number_of(item.get("pid")) or 0, "name": dict(item["name"])}
                next_id += 1
                options.append(option)
                answer.append(option)
        return answer

    def __init__(self, state: HelpdeskState) -> None:
        self.state = state
        ref = state.reference
        self.known = {
            "status_id": {str(r["id"]) for r in ref["statuses"]},
            "priority_id": {str(r["id"]) for r in ref["priorities"]},
            "type_id": {str(r["id"]) for r in ref["types"]},
            "department_id": {str(r["id"]) for r in ref["departments"]},
            "group_id": {str(r["id"]) for r in ref["groups"]},
        }

    # -- checks -------------------------------------------------------------------------------
    def _reference(self, body: Record, name: str, problems: list[Problem]) -> None:
        if name in body and str(body[name]) not in self.known[name]:
            problems.append(f"Field {{{name}}} value is incorrect or empty")

    def _user(self, body: Record, name: str, problems: list[Problem], staff: bool = False) -> Record | None:
        if name not in body or body[name] in (None, ""):
            return None
        uid = number_of(body[name])
        user = self.state.users.get(uid) if uid is not None else None
        if user is None:
            problems.append(f"Field {{{name}}} with id {{{body[name]}}} does not exist")
        elif staff and user["group"]["type"] != "staff":
            problems.append(f"Field {{{name}}} value is incorrect, user must be with staff permissions")
        return user

    @staticmethod
    def _date(body: Record, name: str, problems: list[Problem]) -> None:
        value = body.get(name)
        if value in (None, "", "null"):
            return
        try:
            datetime.strptime(str(value), data.SLA)
        except ValueError:
            problems.append(f"Field {{{name}}} value is incorrect or empty (date format 01.01.1970 00:00)")

    def _custom_fields(self, scope: str, body: Record, current: list[Record], problems: list[Problem]) -> list[Record]:
        sent = body.get("custom_fields")
        if sent in (None, ""):
            return current
        if not isinstance(sent, dict):
            problems.append("Field {custom_fields} value is incorrect")
            return current
        fields = {str(f["id"]): f for f in self.state.fields[scope]}
        values = {str(cf["id"]): cf for cf in current}
        for fid, value in sent.items():
            spec = fields.get(str(fid))
            if spec is None:
                problems.append(f"Field {{custom_fields[{fid}]}} does not exist")
                continue
            kind = spec["field_type"]
            if kind == "hierarchy":
                value = [number_of(v) for v in values_of(value)]
            elif kind in ("select", "checkbox"):
                number = number_of(value)
                options = {o["id"] for o in self.state.options[scope].get(spec["id"], [])}
                if number is None or (kind == "select" and number not in options) or (kind == "checkbox" and number not in (0, 1)):
                    problems.append(f"Field {{custom_fields[{fid}]}} value is incorrect")
                    continue
                value = number
            else:
                value = "" if value is None else str(value)
            values[str(fid)] = {"id": spec["id"], "field_type": kind, "field_value": value}
        return list(values.values())

    @staticmethod
    def _required(body: Record, names: tuple[str, ...], problems: list[Problem]) -> None:
        for name in names:
            if body.get(name) in (None, "", {}, []):
                problems.append(required(name))

    # -- tickets ------------------------------------------------------------------------------
    def _ticket_changes(self, body: Record, current: Record, problems: list[Problem]) -> Record:
        for name in ("status_id", "priority_id", "type_id", "department_id"):
            self._reference(body, name, problems)
        owner = self._user(body, "owner_id", problems, staff=True)
        client = self._user(body, "user_id", problems)
        for name in ("sla_date", "freeze_date"):
            self._date(body, name, problems)
        changes: Record = {}
        if "title" in body:
            if not str(body["title"]).strip():
                problems.append(required("title"))
            changes["title"] = str(body["title"])
        if "status_id" in body:
            changes["status_id"] = str(body["status_id"])
        for name in ("priority_id", "type_id", "department_id"):
            if name in body:
                changes[name] = number_of(body[name])
        if "department_id" in body:
            dep = next((d for d in self.state.reference["departments"] if str(d["id"]) == str(body["department_id"])), None)
            changes["department_name"] = dep["name"].get("en", "") if dep else ""
        if owner is not None:
            changes.update(owner_id=owner["id"], owner_name=owner["name"], owner_lastname=owner["lastname"],
                           owner_email=owner["email"])
        if client is not None:
            changes.update(user_id=client["id"], username=client["name"], user_lastname=client["lastname"],
                           user_email=client["email"])
        if "ticket_lock" in body:
            changes["ticket_lock"] = 1 if str(body["ticket_lock"]).lower() in ("1", "true") else 0
        for name in ("sla_date", "freeze_date"):
            if name in body:
                changes[name] = "null" if body[name] in (None, "", "null") else str(body[name])
        if "freeze_date" in body:
            changes["freeze"] = 0 if changes["freeze_date"] == "null" else 1
        for name, key in (("cc", "cc"), ("bcc", "bcc"), ("followers", "followers")):
            if name in body:
                items = values_of(body[name])
                changes[key] = [number_of(i) for i in items] if key == "followers" else [str(i) for i in items]
        changes["custom_fields"] = self._custom_fields("ticket", body, current.get("custom_fields") or [], problems)
        return changes

    def create_ticket(self, body: Record) -> Record:
        problems: list[Problem] = []
        self._required(body, ("title", "description"), problems)
        changes = self._ticket_changes(body, {}, problems)
        if "user_id" not in changes and body.get("user_email"):
            email = str(body["user_email"])
            with self.state.lock:
                client = next((u for u in self.state.users.records.values() if u["email"].lower() == email.lower()), None)
            if client is None and not problems:
                client = self.state.create_user(name=email.split("@")[0], lastname="", email=email, custom_fields=[])
            if client is not None:
                changes.update(user_id=client["id"], username=client["name"], user_lastname=client["lastname"],
                               user_email=client["email"])
        if problems:
            raise Refused(problems)
        admin = self.state.users.records[1]
        defaults: Record = {
            "source": "api", "status_id": "open", "priority_id": 2, "type_id": 0, "department_id": 1,
            "department_name": "Support Department", "owner_id": 0, "owner_name": "", "owner_lastname": "",
            "owner_email": "", "user_id": admin["id"], "username": admin["name"], "user_lastname": admin["lastname"],
            "user_email": admin["email"], "tags": [], "cc": [], "bcc": [], "followers": [], "ticket_lock": 0,
            "sla_date": "null", "freeze_date": "null", "freeze": 0, "deleted": 0, "viewed_by_staff": 0,
            "viewed_by_client": 0, "rate": "", "rate_comment": "", "rate_date": "", "jira_issues": [], "pid": 0,
        }
        changes = {**defaults, **changes}
        on_behalf_of_client = str(body.get("create_from_user", "1")) != "0"
        with self.state.lock:
            ticket = self.state.create_ticket(**changes)
            author = ticket["user_id"] if on_behalf_of_client else admin["id"]
            self.state.add_post(ticket["id"], as_html(str(body["description"])), user_id=author)
            return self.state.tickets.records[ticket["id"]]

    def update_ticket(self, ticket_id: int, body: Record) -> Record:
        problems: list[Problem] = []
        current = self.state.tickets.records[ticket_id]
        changes = self._ticket_changes(body, current, problems)
        if problems:
            raise Refused(problems)
        return self.state.update_ticket(ticket_id, **changes)

    # -- users --------------------------------------------------------------------------------
    def _email_taken(self, email: str, other_than: int | None) -> bool:
        with self.state.lock:
            return any(u["email"].lower() == email.lower() and u["id"] != other_than
                       for u in self.state.users.records.values())

    def _user_changes(self, body: Record, current: Record, problems: list[Problem], user_id: int | None) -> Record:
        self._reference(body, "group_id", problems)
        changes: Record = {}
        for name in ("name", "lastname", "phone", "skype", "website", "status", "language", "user_status"):
            if name in body:
                changes[name] = "" if body[name] is None else str(body[name])
        if "status" in body and changes["status"] not in ("active", "inactive", "disabled", "fired"):
            problems.append("Field {status} value is incorrect")
        if "name" in body and not changes["name"].strip():
            problems.append(required("name"))
        if "email" in body:
            email = str(body["email"] or "")
            if "@" not in email:
                problems.append("Field {email} value is incorrect")
            elif self._email_taken(email, user_id):
                problems.append(f"User with email {{{email}}} already exists")
            changes["email"] = email
        if "notifications" in body:
            changes["notifications"] = 1 if str(body["notifications"]) == "1" else 0
        if "group_id" in body:
            group = next((g for g in self.state.reference["groups"] if str(g["id"]) == str(body["group_id"])), None)
            if group is not None:
                changes["group"] = group
        if "department" in body:
            departments = [number_of(d) for d in values_of(body["department"])]
            if any(str(d) not in self.known["department_id"] for d in departments):
                problems.append("Field {department} value is incorrect")
            changes["department"] = sorted(d for d in departments if d is not None)
        if body.get("organization"):
            changes["organization"] = str(body["organization"])
        elif body.get("organiz_id"):
            org = self.state.organizations.get(number_of(body["organiz_id"]) or 0)
            if org is None:
                problems.append(f"Field {{organiz_id}} with id {{{body['organiz_id']}}} does not exist")
            else:
                changes["organization"] = org["name"]
        changes["custom_fields"] = self._custom_fields("user", body, current.get("custom_fields") or [], problems)
        return changes

    def create_user(self, body: Record) -> Record:
        problems: list[Problem] = []
        self._required(body, ("name", "email", "group_id", "department", "password"), problems)
        changes = self._user_changes(body, {}, problems, None)
        if problems:
            raise Refused(problems)
        defaults = {"lastname": "", "phone": "", "skype": "", "website": "", "organization": "", "status": "active",
                    "language": "en", "notifications": 1, "user_status": "offline", "ldap_username": ""}
        return self.state.create_user(**{**defaults, **changes})

    def update_user(self, user_id: int, body: Record) -> Record:
        problems: list[Problem] = []
        changes = self._user_changes(body, self.state.users.records[user_id], problems, user_id)
        if problems:
            raise Refused(problems)
        return self.state.update_user(user_id, **changes)

    # -- organizations ------------------------------------------------------------------------
    def _organization_changes(self, body: Record, current: Record, problems: list[Problem], org_id: int | None) -> Record:
        changes: Record = {}
        for name in ("name", "domains", "address", "phone", "email", "web"):
            if name in body:
                changes[name] = "" if body[name] is None else str(body[name])
        if "name" in body:
            with self.state.lock:
                taken = any(o["name"] == changes["name"] and o["id"] != org_id
                            for o in self.state.organizations.records.values())
            if not changes["name"].strip():
                problems.append(required("name"))
            elif taken:
                problems.append(f"Organization name {{{changes['name']}}} already exists")
        if "minute_limit" in body:
            changes["minute_limit"] = number_of(body["minute_limit"]) or 0
        for name in ("employees", "managers"):
            if name in body:
                changes[name] = [u for u in (number_of(v) for v in values_of(body[name])) if u is not None]
        changes["custom_fields"] = self._custom_fields("organization", body, current.get("custom_fields") or [], problems)
        return changes

    def create_organization(self, body: Record) -> Record:
        problems: list[Problem] = []
        self._required(body, ("name",), problems)
        changes = self._organization_changes(body, {}, problems, None)
        if problems:
            raise Refused(problems)
        return self.state.create_organization(**changes)

    def update_organization(self, org_id: int, body: Record) -> Record:
        problems: list[Problem] = []
        changes = self._organization_changes(body, self.state.organizations.records[org_id], problems, org_id)
        if problems:
            raise Refused(problems)
        return self.state.update_organization(org_id, **changes)

    # -- replies and internal notes -----------------------------------------------------------
    def child_text(self, body: Record) -> str:
        text = body.get("text")
        if text in (None, ""):
            raise Refused([("Required {text} request", "Required field is missing or empty")])
        return as_html(str(text))

    def owner(self, body: Record) -> int:
        """A reply or note's owner: user_id when given (an existing user), else the API user."""
        if body.get("user_id") in (None, ""):
            return 1
        uid = number_of(body["user_id"])
        if uid is None or self.state.users.get(uid) is None:
            raise Refused([f"Field {{user_id}} with id {{{body['user_id']}}} does not exist"])
        return uid






