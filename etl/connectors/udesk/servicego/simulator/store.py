"""ServiceGo records in memory: deterministic data, mutations as other users would make them,
and the indexes and JSON cache that let the simulator answer 100,000-record scrolls quickly.

Readings of seed 004 kept here:
- ids grow with every create and are never reused; scroll order is ascending id.
- updateTime is set to the current minute (account time zone) by every change to a record.
- foreignDataName is the looked-up record's name when the lookup was set (a later rename of
  that record does not touch this record or its updateTime).
- a field added to an object shows up in every record's fieldDataList, empty ("") on the
  existing records, without changing their updateTime.
"""

from __future__ import annotations

import bisect
import random
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from etl.connectors.udesk.servicego.simulator.schema import FieldDef, ObjectDef, default_objects
from etl.core.simulators.kept_json import kept_json

Entry = dict[str, Any]
Record = dict[str, Entry]  # fieldApiName -> fieldDataList entry

MINUTE_FORMAT = "%Y-%m-%d %H:%M"


@dataclass(frozen=True)
class Sizes:
    customers: int = 300
    contacts: int = 1200
    cases: int = 1500


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str


class ServiceGoState:
    def __init__(self, sizes: Sizes = Sizes(), seed: int = 1, timezone: str = "Asia/Shanghai",
                 email: str = "admin@udesk.cn", api_token: str = "221b368d7f5f597867f525971f28ff75",
                 hash_name: str = "sha1", type_names: dict[str, str] | None = None) -> None:
        self.email, self.api_token, self.hash_name = email, api_token, hash_name
        # the fieldTypeApiName each type goes by on the wire: seed 004 prints only four names, so
        # tests try the engine with other plausible spellings (field_type_datetime, ...)
        self.type_names = type_names or {}
        self.tz = ZoneInfo(timezone)
        self.objects: dict[str, ObjectDef] = default_objects()
        self.users = [User(i, f"agent{i}", f"agent{i}@example.cn") for i in range(1, 21)]
        self.records: dict[str, dict[int, Record]] = {name: {} for name in self.objects}
        self.ids: dict[str, list[int]] = {name: [] for name in self.objects}
        self.versions: dict[str, int] = {name: 0 for name in self.objects}
        self.lock = threading.RLock()
        self._json: dict[tuple[str, int], bytes] = {}
        self._next_id = 1000
        self._rng = random.Random(seed)
        self.relation_types = {8: "Partner", 9: "Duplicate"}
        # record relations (selfObjectRelationData): major id -> [(related id, relation type id)]
        self.relations: dict[int, list[tuple[int, int]]] = {}
        self._generate(sizes)
        self._generate_relations()

    # --- reading -------------------------------------------------------------------------------

    def now_minute(self) -> str:
        return datetime.now(self.tz).strftime(MINUTE_FORMAT)

    def entries(self, obj: str, record_id: int) -> list[Entry]:
        record = self.records[obj][record_id]
        return [record[f.api_name] for f in self.objects[obj].fields]

    def json(self, obj: str, record_id: int) -> bytes:
        key = (obj, record_id)
        cached = self._json.get(key)
        if cached is None:
            cached = kept_json({"id": record_id, "fieldDataList": self.entries(obj, record_id)})
            self._json[key] = cached
        return cached

    def value(self, obj: str, record_id: int, field_name: str) -> str:
        return str(self.records[obj][record_id][field_name]["fieldValue"])

    def find_unique(self, obj: str, field_name: str, value: str) -> int | None:
        for record_id, record in self.records[obj].items():
            if record[field_name]["fieldValue"] == value:
                return record_id
        return None

    # --- building entries ----------------------------------------------------------------------

    def entry(self, f: FieldDef, value: Any) -> Entry:
        """The fieldDataList entry for `value` (a plain value; lists for multi-values)."""
        out: Entry = {"fieldApiName": f.api_name, "fieldTypeApiName": self.type_names.get(f.type, f.type),
                      "fieldValue": ""}
        if value in (None, "", []):
            return out
        kind = f.type
        if kind in ("field_type_single_select", "field_type_multi_select"):
            values = value if isinstance(value, list) else [value]
            names = dict(f.options)
            out["fieldValue"] = ",".join(values)
            out["optionNameList"] = [names[v] for v in values]
        elif kind in ("field_type_phone", "field_type_email"):
            values = value if isinstance(value, list) else [value]
            out["fieldValue"] = ",".join(values)
            out["tagValueList"] = [{"tagName": "work" if n == 0 else "other", "tagValue": v} for n, v in enumerate(values)]
        elif kind == "field_type_lookup":
            target = self.records[f.lookup_object or ""].get(int(value))
            out["fieldValue"] = str(value)
            out["foreignDataName"] = target["name"]["fieldValue"] if target else ""
        elif kind in ("field_type_lookup_user", "field_type_owner"):
            user = self.users[(int(value) - 1) % len(self.users)]
            out["fieldValue"] = str(user.id)
            if kind == "field_type_owner":
                out["ownerResult"] = {"ownerType": 1, "ownerName": user.name}
            else:
                out["userEmail"] = user.email
        elif kind == "field_type_rich_text":
            content, attachments = value if isinstance(value, tuple) else (value, [])
            out["fieldValue"] = content
            out["richText"] = {"content": content, "attachmentList": attachments}
        else:
            out["fieldValue"] = str(value)
        return out

    # --- data ----------------------------------------------------------------------------------

    def _generate(self, sizes: Sizes) -> None:
        now = datetime.now(self.tz).replace(second=0, microsecond=0)
        for obj, count in (("customer", sizes.customers), ("contact", sizes.contacts), ("case", sizes.cases)):
            for _ in range(count):
                created = now - timedelta(minutes=self._rng.randint(2 * 24 * 60, 2 * 365 * 24 * 60))
                updated = created + timedelta(minutes=self._rng.randint(0, int((now - created).total_seconds() // 60) - 24 * 60))
                self._insert(obj, self._values(obj), created.strftime(MINUTE_FORMAT), updated.strftime(MINUTE_FORMAT))

    def _values(self, obj: str, n: int | None = None) -> dict[str, Any]:
        rng = self._rng
        n = self._next_id if n is None else n
        user = rng.randint(1, len(self.users))
        common: dict[str, Any] = {"owner": user, "createUser": user, "updateUser": rng.randint(1, len(self.users))}
        if obj == "customer":
            return {**common, "name": f"Customer {n}", "sysOrganizationNo": f"ORG-{n}",
                    "level": rng.choice(["opt_1", "opt_2", "opt_3"]),
                    "dianhua": [f"+86 10 {rng.randint(1000000, 9999999)}"] * rng.randint(0, 1),
                    "annualRevenue": f"{rng.randint(0, 10_000_000) / 100:.2f}",
                    "description": (f"<p>Customer {n} notes</p>", [{"name": f"contract-{n}.pdf", "docAddress":
                                    f"https://files.example.cn/{n}.pdf", "size": rng.randint(1000, 90000)}]
                                    if rng.random() < 0.2 else []),
                    "coordinate": ""}
        if obj == "contact":
            customers = self.ids["customer"]
            return {**common, "name": f"Contact {n}", "externalId": f"EXT-{n}", "weiyibiaoshi": f"WY-{n}",
                    "youxiang": [f"contact{n}@example.cn"] if rng.random() < 0.9 else [],
                    "dianhua": [f"+86 139{rng.randint(10000000, 99999999)}"],
                    "organization": rng.choice(customers) if customers and rng.random() < 0.9 else None,
                    "tags": rng.sample(["t_vip", "t_new", "t_partner", "t_churn"], rng.randint(0, 2)),
                    "birthday": f"{rng.randint(1960, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "calcFormula": f"{rng.randint(0, 9999) / 100:.2f}"}
        contacts = self.ids["contact"]
        return {**common, "name": f"Case {n}", "caseNo": f"C-{n:07d}",
                "contact": rng.choice(contacts) if contacts else None,
                "status": rng.choice(["open", "pending", "solved", "closed"]),
                "priority": rng.choice(["low", "normal", "high", "urgent"]),
                "assignee": rng.randint(1, len(self.users)) if rng.random() < 0.8 else None,
                "content": f"<p>Problem report {n}</p>",
                "dueTime": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:00",
                "remark": "line one\nline two" if rng.random() < 0.3 else ""}

    def _insert(self, obj: str, values: dict[str, Any], created: str, updated: str) -> int:
        record_id = self._next_id
        self._next_id += 1
        values = {**values, "createTime": created, "updateTime": updated}
        self.records[obj][record_id] = {f.api_name: self.entry(f, values.get(f.api_name)) for f in self.objects[obj].fields}
        self.ids[obj].append(record_id)  # ids only grow: the list stays sorted
        self.versions[obj] += 1
        return record_id

    def object_of(self, record_id: int) -> str | None:
        for name, records in self.records.items():
            if record_id in records:
                return name
        return None

    def related_ids(self, parent_obj: str, parent_id: int, child_obj: str) -> list[int]:
        """Records of `child_obj` whose lookup to `parent_obj` holds `parent_id` (relatedDatas)."""
        lookups = [f.api_name for f in self.objects[child_obj].fields
                   if f.type == "field_type_lookup" and f.lookup_object == parent_obj]
        wanted = str(parent_id)
        return [i for i in self.ids[child_obj] if any(self.records[child_obj][i][name]["fieldValue"] == wanted
                                                      for name in lookups)]

    def _generate_relations(self) -> None:
        cases = self.ids["case"]
        for major in cases[::7]:
            others = self._rng.sample(cases, min(len(cases), self._rng.randint(1, 2)))
            self.relations[major] = [(o, self._rng.choice([8, 9])) for o in others if o != major]

    # --- changes (other users' work; tests call these) ------------------------------------------

    def relate(self, major: int, related: list[int], relation_id: int) -> None:
        """Reading: a relation change sets the major record's updateTime, as an edit of it would."""
        with self.lock:
            links = self.relations.setdefault(major, [])
            links.extend((r, relation_id) for r in related if (r, relation_id) not in links)
            self._touch(major)

    def unrelate(self, major: int, related: int) -> None:
        with self.lock:
            self.relations[major] = [(r, t) for r, t in self.relations.get(major, []) if r != related]
            self._touch(major)

    def _touch(self, record_id: int) -> None:
        obj = self.object_of(record_id)
        if obj is not None:
            self.update(obj, record_id, {})

    def create(self, obj: str, values: dict[str, Any] | None = None) -> int:
        with self.lock:
            now = self.now_minute()
            return self._insert(obj, values if values is not None else self._values(obj), now, now)

    def update(self, obj: str, record_id: int, values: dict[str, Any]) -> None:
        with self.lock:
            record = self.records[obj][record_id]
            for name, value in values.items():
                f = self.objects[obj].field(name)
                assert f is not None, name
                record[name] = self.entry(f, value)
            record["updateTime"] = self.entry(self.objects[obj].field("updateTime"), self.now_minute())  # type: ignore[arg-type]
            self._json.pop((obj, record_id), None)
            self.versions[obj] += 1

    def delete(self, obj: str, record_id: int) -> None:
        with self.lock:
            del self.records[obj][record_id]
            self.relations.pop(record_id, None)
            ids = self.ids[obj]
            ids.pop(bisect.bisect_left(ids, record_id))
            self._json.pop((obj, record_id), None)
            self.versions[obj] += 1

    def add_field(self, obj: str, api_name: str, kind: str = "field_type_single_line") -> None:
        with self.lock:
            f = FieldDef(api_name, kind)
            self.objects[obj].fields.append(f)
            for record_id, record in self.records[obj].items():
                record[api_name] = self.entry(f, None)
                self._json.pop((obj, record_id), None)
            self.versions[obj] += 1

    def random_changes(self, seed: int, updates: int, creates: int, deletes: int) -> dict[str, list[tuple[str, int]]]:
        """Spread changes over the objects; returns what changed as (object, id) pairs."""
        rng = random.Random(seed)
        out: dict[str, list[tuple[str, int]]] = {"updated": [], "created": [], "deleted": []}
        objects = list(self.objects)
        with self.lock:
            for _ in range(updates):
                obj = rng.choice(objects)
                record_id = rng.choice(self.ids[obj])
                self.update(obj, record_id, {"name": f"Renamed {record_id} #{rng.randint(1, 10**6)}"} if rng.random() < 0.5
                            else {k: v for k, v in self._values(obj, record_id).items() if k != "name"})
                out["updated"].append((obj, record_id))
            for _ in range(creates):
                obj = rng.choice(objects)
                out["created"].append((obj, self.create(obj)))
            for _ in range(deletes):
                obj = rng.choice(objects)
                record_id = rng.choice(self.ids[obj])
                self.delete(obj, record_id)
                out["deleted"].append((obj, record_id))
        return out
