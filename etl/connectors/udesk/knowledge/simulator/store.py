"""Udesk knowledge (seed 001) and KM entities (seed 002) in memory, with deterministic data.

Rules kept (seed 001's notes and error table):
- catalogs belong to one knowledge type and one owner (agent_id; 0 = administrator);
- at most four levels; sibling names are unique; a parent must be of the same type;
- a catalog that holds content (items) cannot get subcategories ("Cannot create a category as
  there is content under the parent category"), so content lives in leaf catalogs.
Readings: list order is ascending id; questions' updated_at is ISO 8601 with the +08:00 offset
as in the seed's example; last_min/last_max are dates ("2018-03-31").
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

Record = dict[str, Any]
TYPES = ("question", "useful_expression", "useful_link", "attachment")
CST = timezone(timedelta(hours=8))


class Invalid(Exception):
    """A documented validation failure (code 2000) or a missing resource (code 2005)."""

    def __init__(self, message: str, code: int = 2000) -> None:
        self.message, self.code = message, code


@dataclass(frozen=True)
class Sizes:
    questions: int = 200
    expressions: int = 60
    links: int = 40
    attachments: int = 30
    entities: int = 25
    agents: tuple[int, ...] = (0, 12)


class KnowledgeState:
    def __init__(self, sizes: Sizes = Sizes(), seed: int = 1, email: str = "admin@udesk.cn",
                 api_token: str = "221b368d7f5f597867f525971f28ff75") -> None:
        self.email, self.api_token = email, api_token
        self.lock = threading.RLock()
        self.catalogs: dict[int, Record] = {}  # with knowledge_type and agent_id kept beside
        self.items: dict[str, dict[int, Record]] = {t: {} for t in TYPES}
        self.owners: dict[tuple[str, int], int] = {}  # (type, item id) -> agent_id
        self.entities: dict[int, Record] = {}
        self._next = 100
        self._rng = random.Random(seed)
        self._generate(sizes)

    def _id(self) -> int:
        self._next += 1
        return self._next

    # --- catalogs ------------------------------------------------------------------------------

    def depth(self, catalog_id: int) -> int:
        depth, node = 1, self.catalogs[catalog_id]
        while node["parent_id"]:
            depth, node = depth + 1, self.catalogs[node["parent_id"]]
        return depth

    def add_catalog(self, knowledge_type: str, agent_id: int, name: str, parent_id: int | None) -> Record:
        if knowledge_type not in TYPES:
            raise Invalid("knowledge_type_name value is incorrect")
        if not name:
            raise Invalid("Verification failed: Name cannot be an empty string")
        if parent_id:
            parent = self.catalogs.get(parent_id)
            if parent is None:
                raise Invalid(f"The administrator's existing category does not have a subcategory with id {parent_id}")
            if parent["knowledge_type"] != knowledge_type:
                raise Invalid("Verification failed: Parent does not belong to the same category")
            if parent["agent_id"] != agent_id:
                raise Invalid("The category does not exist under the agent's name")
            if self.depth(parent_id) >= 4:
                raise Invalid("A maximum of four levels of categories can be created")
            if any(i["catalog_id"] == parent_id for i in self.items[knowledge_type].values()):
                raise Invalid("Cannot create a category as there is content under the parent category")
        siblings = [c for c in self.catalogs.values() if c["parent_id"] == (parent_id or 0)
                    and c["knowledge_type"] == knowledge_type and c["agent_id"] == agent_id]
        if any(c["name"] == name for c in siblings):
            raise Invalid("Verification failed: Name is already in use")
        catalog_id = self._id()
        record = {"id": catalog_id, "parent_id": parent_id or 0, "name": name, "knowledge_type": knowledge_type,
                  "agent_id": agent_id}
        self.catalogs[catalog_id] = record
        return record

    def tree(self, knowledge_type: str, agent_id: int) -> list[Record]:
        nodes = {i: {"id": c["id"], "parent_id": c["parent_id"], "name": c["name"]} for i, c in sorted(self.catalogs.items())
                 if c["knowledge_type"] == knowledge_type and c["agent_id"] == agent_id}
        roots: list[Record] = []
        for node in nodes.values():
            parent = nodes.get(node["parent_id"])
            if parent is None:
                roots.append(node)
            else:
                parent.setdefault("children", []).append(node)
        return roots

    def leaves(self, knowledge_type: str, agent_id: int) -> list[int]:
        parents = {c["parent_id"] for c in self.catalogs.values()}
        return [i for i, c in self.catalogs.items() if c["knowledge_type"] == knowledge_type
                and c["agent_id"] == agent_id and i not in parents]

    # --- items ---------------------------------------------------------------------------------

    def listing(self, knowledge_type: str, agent_id: int, catalog_id: int) -> list[Record]:
        return [r for i, r in sorted(self.items[knowledge_type].items()) if self.owners[(knowledge_type, i)] == agent_id
                and (catalog_id == 0 or (catalog_id == -1 and r["catalog_id"] is None) or r["catalog_id"] == catalog_id)]

    def add_item(self, knowledge_type: str, agent_id: int, record: Record) -> Record:
        record = {"id": self._id(), **record}
        self.items[knowledge_type][record["id"]] = record
        self.owners[(knowledge_type, record["id"])] = agent_id
        return record

    def _item(self, knowledge_type: str, agent_id: int, catalog_id: int | None) -> Record:
        rng, n = self._rng, self._next + 1
        if knowledge_type == "question":
            lasts = rng.random() < 0.7
            updated = datetime(2025, 1, 1, tzinfo=CST) + timedelta(seconds=rng.randint(0, 300 * 86400))
            return {"title": f"How do I fix problem {n}?", "content": f"<p>Answer {n}</p>",
                    "content_type": rng.choice(["text", "html"]), "lasts": lasts, "catalog_id": catalog_id,
                    "updated_at": updated.isoformat(timespec="milliseconds"),
                    "last_min": None if lasts else "2026-01-01", "last_max": None if lasts else "2026-12-31"}
        if knowledge_type == "useful_expression":
            return {"content": f"Thank you for waiting ({n})", "catalog_id": catalog_id}
        if knowledge_type == "useful_link":
            return {"name": f"Link {n}", "url": f"https://help.example.cn/{n}", "catalog_id": catalog_id}
        return {"catalog_id": catalog_id, "file_name": f"guide-{n}.pdf", "file_type": "application/pdf",
                "file_size": rng.choice([None, str(rng.randint(1000, 90000)), rng.randint(1000, 90000)]),
                "file_url": f"https://files.example.cn/{n}.pdf"}

    def new_entity(self, robot_id: int) -> Record:
        rng, n = self._rng, self._next + 1
        system = rng.random() < 0.1
        values = None if system else [
            {"id": self._id(), "originalValue": f"value {v}", "similarValueList": [f"syn {v}a", f"syn {v}b"][: rng.randint(0, 2)]}
            for v in range(rng.randint(1, 4))]
        entity_id = self._id()
        record = {"id": entity_id, "robotId": robot_id, "name": f"Entity {n}", "apiName": f"entity_{n}",
                  "type": 2 if system else 1, "status": rng.choice([0, 1]), "regex": None,
                  "sysEntityIdentifier": "All cities and counties in China" if system else None,
                  "remark": None, "orders": rng.randint(1, 50), "valueList": values}
        self.entities[entity_id] = record
        return record

    # --- KM entity writes (seed 002) -------------------------------------------------------------

    def _check_entity(self, spec: Record, entity_id: int | None) -> None:
        if not spec.get("name"):
            raise Invalid("name must not be empty", 400)
        api_name = str(spec.get("apiName") or "")
        if not re.fullmatch(r"[A-Za-z0-9_]+", api_name):
            raise Invalid("apiName can only be letters, numbers, or underscores", 400)
        if len(str(spec.get("remark") or "")) > 255:
            raise Invalid("remark cannot exceed 255 characters", 400)
        robot = spec.get("robotId")
        if not isinstance(robot, int):
            raise Invalid("robotId must be an integer", 400)
        if any(e["apiName"] == api_name and e["robotId"] == robot and e["id"] != entity_id for e in self.entities.values()):
            raise Invalid(f"apiName {api_name} already exists", 400)

    def create_entity(self, spec: Record) -> Record:
        self._check_entity(spec, None)
        entity_id = self._id()
        record = {"id": entity_id, "robotId": spec["robotId"], "name": spec["name"], "apiName": spec["apiName"],
                  "type": 1, "status": None, "regex": spec.get("regex"), "sysEntityIdentifier": None,
                  "remark": spec.get("remark"), "orders": None, "valueList": None}
        self.entities[entity_id] = record
        return record

    def update_entity(self, entity_id: int, spec: Record) -> Record:
        """valueList items: changeType 0 unchanged, 1 added, 2 modified, 3 deleted (seed 002)."""
        entity = self.entities.get(entity_id)
        if entity is None:
            raise Invalid("Entity not exists", 400)
        self._check_entity(spec, entity_id)
        values = {v["id"]: v for v in entity["valueList"] or []}
        for item in spec.get("valueList") or []:
            change = item.get("changeType", 0)
            if change == 1:
                new_id = self._id()
                values[new_id] = {"id": new_id, "originalValue": item.get("originalValue"),
                                  "similarValueList": list(item.get("similarValueList") or [])}
            elif change in (2, 3):
                if item.get("id") not in values:
                    raise Invalid(f"entity value {item.get('id')} does not exist", 400)
                if change == 3:
                    del values[item["id"]]
                else:
                    values[item["id"]] = {"id": item["id"], "originalValue": item.get("originalValue"),
                                          "similarValueList": list(item.get("similarValueList") or [])}
            elif change != 0:
                raise Invalid(f"changeType {change} is not 0, 1, 2 or 3", 400)
        entity.update({k: spec.get(k) for k in ("name", "apiName", "regex", "remark")})
        entity["robotId"] = spec["robotId"]
        entity["valueList"] = list(values.values()) if values or entity["valueList"] is not None else None
        return entity

    def _generate(self, sizes: Sizes) -> None:
        for knowledge_type in TYPES:
            for agent in sizes.agents:
                self._tree(knowledge_type, agent)
        counts = {"question": sizes.questions, "useful_expression": sizes.expressions, "useful_link": sizes.links,
                  "attachment": sizes.attachments}
        for knowledge_type, count in counts.items():
            for n in range(count):
                agent = sizes.agents[n % len(sizes.agents)]
                leaves = self.leaves(knowledge_type, agent)
                catalog = None if knowledge_type == "question" and n % 50 == 0 else self._rng.choice(leaves)
                self.add_item(knowledge_type, agent, self._item(knowledge_type, agent, catalog))
        for _ in range(sizes.entities):
            self.new_entity(83)

    def _tree(self, knowledge_type: str, agent: int) -> None:
        """Four levels, a few branches each."""
        def grow(parent: int | None, level: int) -> None:
            for n in range(2 if level > 1 else 3):
                node = self.add_catalog(knowledge_type, agent, f"{knowledge_type} L{level}-{n}", parent)
                if level < 4 and self._rng.random() < 0.8:
                    grow(node["id"], level + 1)

        grow(None, 1)

    # --- other users' changes --------------------------------------------------------------------

    def random_changes(self, seed: int, updates: int, creates: int, deletes: int) -> dict[str, int]:
        rng = random.Random(seed)
        with self.lock:
            for _ in range(updates):
                knowledge_type = rng.choice(TYPES)
                record_id = rng.choice(sorted(self.items[knowledge_type]))
                record = self.items[knowledge_type][record_id]
                key = {"question": "title", "useful_expression": "content", "useful_link": "name",
                       "attachment": "file_name"}[knowledge_type]
                record[key] = f"{record[key]} (edited {rng.randint(1, 10**6)})"
                if knowledge_type == "question":
                    record["updated_at"] = datetime.now(CST).isoformat(timespec="milliseconds")
            for _ in range(creates):
                knowledge_type = rng.choice(TYPES)
                agent = rng.choice(sorted({a for (_, _), a in self.owners.items()}))
                catalog = rng.choice(self.leaves(knowledge_type, agent))
                self.add_item(knowledge_type, agent, self._item(knowledge_type, agent, catalog))
            for _ in range(deletes):
                knowledge_type = rng.choice(TYPES)
                record_id = rng.choice(sorted(self.items[knowledge_type]))
                del self.items[knowledge_type][record_id]
                del self.owners[(knowledge_type, record_id)]
            entity = self.entities[rng.choice(sorted(self.entities))]
            if entity["valueList"]:
                entity["valueList"][0]["similarValueList"] = [*entity["valueList"][0]["similarValueList"], "new synonym"]
            self.new_entity(83)
            leaf = self.leaves("question", 0)[0]
            parent = self.catalogs[leaf]["parent_id"] or None
            if parent is None or self.depth(parent) < 4:
                self.add_catalog("question", 0, f"New catalog {rng.randint(1, 10**6)}", parent)
        return {"updates": updates, "creates": creates, "deletes": deletes}
