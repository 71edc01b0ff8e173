"""The three pipelines shipped in config/desksync.example.toml, end to end: pulled from one
simulator, pushed into another, the target's data compared with the source's; a second run
writes nothing; after a source change exactly the affected records are sent."""

from __future__ import annotations

import copy
import re
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from etl.config import parse_config
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.connectors.udesk.knowledge.simulator.store import Sizes as KnowledgeSizes
from etl.connectors.udesk.servicego.simulator.store import Sizes as ServiceGoSizes
from etl.core.config import Config
from etl.core.mirror.db import open_engine
from etl.core.run import jobs
from tests.conftest import (
    API_KEY_ENV,
    UDESK_TOKEN,
    UDESK_TOKEN_ENV,
    connection_settings,
    knowledge_settings,
    servicego_settings,
)

EXAMPLE = tomllib.loads((Path(__file__).parents[2] / "config" / "desksync.example.toml").read_text())
HELPDESK_SIZES = Sizes(tickets=5, users=40, organizations=8, kb_categories=14, kb_articles=30)


def example_connections(helpdesk: Any = None, servicego: Any = None, knowledge: Any = None) -> dict[str, Any]:
    """The simulators as the example's connections, with the example's push sections."""
    example = EXAMPLE["connections"]
    out: dict[str, Any] = {}
    if helpdesk is not None:
        out["helpdesk"] = connection_settings(helpdesk, push=example["helpdesk"]["push"])
    if servicego is not None:
        pushes = {o["name"]: o.get("push") for o in example["servicego"]["objects"]}
        objects = [{"name": name, **({"push": pushes[name]} if pushes.get(name) else {})}
                   for name in ("customer", "contact")]
        out["servicego"] = servicego_settings(servicego, objects=objects)
    if knowledge is not None:
        out["knowledge"] = knowledge_settings(knowledge, push=example["knowledge"]["push"])
    return out


def pipeline_config(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: str,
                    connections: dict[str, Any], settings: dict[str, Any] | None = None) -> Config:
    monkeypatch.setenv(API_KEY_ENV, "sim-api-key")
    monkeypatch.setenv(UDESK_TOKEN_ENV, UDESK_TOKEN)
    config = parse_config({"mirror": {"url": url}, "connections": connections,
                           "pipelines": {pipeline: settings or EXAMPLE["pipelines"][pipeline]}}, base_dir=tmp_path)
    jobs.init(config)
    return config


def writes(*servers: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for server in servers:
        stats = server.stats if isinstance(server.stats, dict) else {"by_endpoint": server.stats.by_endpoint}
        for key, count in stats["by_endpoint"].items():
            # ServiceGo's searches are POSTs to v1/datas/…
            if key.startswith(("POST ", "PUT ", "DELETE ")) and "/datas" not in key:
                out[key.rsplit("/", 1)[0] if key.rsplit("/", 1)[-1].isdigit() else key] += count
    return out


def reset(*servers: Any) -> None:
    for server in servers:
        if isinstance(server.stats, dict):
            server.stats["by_endpoint"].clear()
        else:
            server.stats.by_endpoint.clear()


def links(url: str, step: str) -> dict[str, int]:
    engine = open_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT source_id, target_id FROM pipeline_links WHERE step = :s "
                                    "AND target_id IS NOT NULL"), {"s": step}).all()
    engine.dispose()
    return {source: int(target) for source, target in rows}


# --- 1. EddyDesk knowledge base -> Udesk knowledge ----------------------------------------------------

def _depths(categories: dict[int, dict[str, Any]]) -> dict[int, list[int]]:
    """Each category's ancestors, nearest first."""
    out = {}
    for cid in categories:
        chain, parent = [], categories[cid]["parent_id"]
        while parent:
            chain.append(parent)
            parent = categories[parent]["parent_id"]
        out[cid] = chain
    return out


def assert_knowledge_migrated(url: str, helpdesk: Any, knowledge: Any) -> dict[int, int]:
    """Every category of depth ≤ 4 is a question catalog under its parent's; deeper ones went to their
    4th-level ancestor; every article is a question in its first category's catalog, with its files."""
    categories = {c["id"]: c for c in helpdesk.state.kb_categories.records.values()}
    ancestors = _depths(categories)
    catalog_of = {int(k): v for k, v in links(url, "categories").items()}
    catalogs = knowledge.state.catalogs
    for cid, category in categories.items():
        chain = ancestors[cid]
        home = cid if len(chain) < 4 else chain[len(chain) - 4]  # the 4th-level ancestor
        if home != cid:
            assert cid not in catalog_of, f"category {cid} (depth {len(chain) + 1}) was written"
            continue
        catalog = catalogs[catalog_of[cid]]
        assert catalog["name"] == category["title"].get("en", next(iter(category["title"].values())))
        assert catalog["knowledge_type"] == "question"
        assert catalog["parent_id"] == (catalog_of[category["parent_id"]] if category["parent_id"] else 0)
    question_of = {int(k): v for k, v in links(url, "articles").items()}
    questions = knowledge.state.items["question"]
    assert sorted(question_of) == sorted(helpdesk.state.kb_articles.records)
    assert len(set(question_of.values())) == len(question_of)
    for aid, article in helpdesk.state.kb_articles.records.items():
        question = questions[question_of[aid]]
        first = article["categories"][0]
        chain = ancestors[first]
        home = first if len(chain) < 4 else chain[len(chain) - 4]
        assert question["catalog_id"] == catalog_of[home], f"article {aid} is in the wrong catalog"
        assert question["title"] == article["title"].get("en", next(iter(article["title"].values())))
        assert question["content_type"] == "html"
        assert question["content"].startswith(article["body"]["en"])
        for file in article["files"]:
            assert f'<a href="{file["url"]}">{file["name"]}</a>' in question["content"]
    return question_of


def test_knowledge_base_migrates_into_udesk_knowledge(db_url: str, simulator: Any, knowledge_sim: Any,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helpdesk = simulator(HELPDESK_SIZES)
    knowledge = knowledge_sim(KnowledgeSizes(questions=10, expressions=2, links=2, attachments=2, entities=2))
    config = pipeline_config(db_url, tmp_path, monkeypatch, "kb_to_knowledge",
                             example_connections(helpdesk=helpdesk, knowledge=knowledge))
    assert jobs.sync(config, "helpdesk", ("kb_categories", "kb_articles")).status == "ok"
    assert jobs.sync(config, "knowledge").status == "ok"
    reset(knowledge)

    first = jobs.run_pipeline(config, "kb_to_knowledge")
    categories, articles = first.steps
    deep = {cid for cid, chain in _depths({c["id"]: c for c in helpdesk.state.kb_categories.records.values()}).items()
            if len(chain) >= 4}
    assert deep, "the simulator's tree must be deeper than 4 levels"
    assert {int(s) for s, _ in categories.folded} == deep  # reported
    assert first.held == 0
    assert categories.created == 14 - len(deep) and articles.created == 30
    assert writes(knowledge) == {"POST /open_api_v1/knowledge_catalogs": 14 - len(deep),
                                 "POST /open_api_v1/knowledge_questions": 30}
    assert_knowledge_migrated(db_url, helpdesk, knowledge)

    # a second run (and one after the target was pulled again) writes nothing
    reset(knowledge)
    again = jobs.run_pipeline(config, "kb_to_knowledge")
    assert [s.staged for s in again.steps] == [0, 0] and again.requests == 0
    assert jobs.sync(config, "knowledge").status == "ok"
    assert jobs.run_pipeline(config, "kb_to_knowledge").requests == 0
    assert writes(knowledge) == {}

    # a changed article and a renamed category: exactly those two are sent
    article = next(iter(helpdesk.state.kb_articles.records))
    helpdesk.state.update_article(article, title={"en": "Renamed article"})
    shallow = next(c for c in helpdesk.state.kb_categories.records if c not in deep)
    helpdesk.state.update_category(shallow, title={"en": "Renamed category"})
    assert jobs.sync(config, "helpdesk", ("kb_categories", "kb_articles")).status == "ok"
    changed = jobs.run_pipeline(config, "kb_to_knowledge")
    assert [(s.created, s.updated) for s in changed.steps] == [(0, 1), (0, 1)]
    assert writes(knowledge) == {"PUT /open_api_v1/knowledge_catalogs": 1, "PUT /open_api_v1/knowledge_questions": 1}
    assert_knowledge_migrated(db_url, helpdesk, knowledge)


def test_a_dry_run_reports_without_writing(sqlite_url: str, simulator: Any, knowledge_sim: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    helpdesk = simulator(HELPDESK_SIZES)
    knowledge = knowledge_sim(KnowledgeSizes(questions=4, expressions=1, links=1, attachments=1, entities=1))
    config = pipeline_config(sqlite_url, tmp_path, monkeypatch, "kb_to_knowledge",
                             example_connections(helpdesk=helpdesk, knowledge=knowledge))
    jobs.sync(config, "helpdesk", ("kb_categories", "kb_articles"))
    reset(knowledge)
    dry = jobs.run_pipeline(config, "kb_to_knowledge", dry_run=True)
    assert [s.created for s in dry.steps] == [14 - len(dry.steps[0].folded), 30]
    assert writes(knowledge) == {} and links(sqlite_url, "articles") == {}
    assert jobs.pipeline_status(config, "kb_to_knowledge")["articles"]["linked"] == 0


# --- 2. EddyDesk organizations and users -> ServiceGo customers and contacts --------------------------

def _field(state: Any, obj: str, record_id: int, name: str) -> str:
    return str(state.records[obj][record_id][name]["fieldValue"])


def assert_servicego_fed(helpdesk: Any, servicego: Any) -> None:
    state = servicego.state
    customers = {_field(state, "customer", i, "sysOrganizationNo"): i for i in state.records["customer"]}
    contacts = Counter(_field(state, "contact", i, "weiyibiaoshi") for i in state.records["contact"])
    by_external = {_field(state, "contact", i, "weiyibiaoshi"): i for i in state.records["contact"]}
    for oid, org in helpdesk.state.organizations.records.items():
        assert str(oid) in customers and _field(state, "customer", customers[str(oid)], "name") == org["name"]
    assert sum(1 for n in customers if n.isdigit()) == len(helpdesk.state.organizations.records)
    member_of: dict[int, int] = {}
    for oid, org in helpdesk.state.organizations.records.items():
        for uid in [*org["employees"], *org["managers"]]:
            member_of[uid] = min(member_of.get(uid, oid), oid)
    for uid, user in helpdesk.state.users.records.items():
        assert contacts[str(uid)] == 1, f"user {uid} is {contacts[str(uid)]} contacts"
        contact = by_external[str(uid)]
        assert _field(state, "contact", contact, "youxiang") == user["email"]
        expected = str(customers[str(member_of[uid])]) if uid in member_of else ""
        assert _field(state, "contact", contact, "organization") == expected, f"user {uid}'s customer"


def test_organizations_and_users_feed_servicego_customers_and_contacts(
        db_url: str, simulator: Any, servicego_sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helpdesk = simulator(HELPDESK_SIZES)
    servicego = servicego_sim(ServiceGoSizes(customers=5, contacts=10, cases=2))
    config = pipeline_config(db_url, tmp_path, monkeypatch, "helpdesk_to_servicego",
                             example_connections(helpdesk=helpdesk, servicego=servicego))
    assert jobs.sync(config, "helpdesk", ("users", "organizations")).status == "ok"
    assert jobs.sync(config, "servicego").status == "ok"
    reset(servicego)
    users, orgs = len(helpdesk.state.users.records), len(helpdesk.state.organizations.records)

    first = jobs.run_pipeline(config, "helpdesk_to_servicego")
    assert first.held == 0
    assert [s.created for s in first.steps] == [orgs, users]
    # each create is one lookup by its external unique field (upsert_by), then one POST
    assert writes(servicego) == {"POST /v1/data": orgs + users}
    assert_servicego_fed(helpdesk, servicego)

    reset(servicego)
    assert jobs.run_pipeline(config, "helpdesk_to_servicego").requests == 0
    assert jobs.sync(config, "servicego").status == "ok"
    assert jobs.run_pipeline(config, "helpdesk_to_servicego").requests == 0
    assert writes(servicego) == {}

    # one user's phone and one organization's name change: one contact and one customer update
    uid = next(iter(helpdesk.state.users.records))
    helpdesk.state.update_user(uid, phone="+37120000001")
    oid = next(iter(helpdesk.state.organizations.records))
    helpdesk.state.update_organization(oid, name="Renamed organization")
    assert jobs.sync(config, "helpdesk", ("users", "organizations")).status == "ok"
    changed = jobs.run_pipeline(config, "helpdesk_to_servicego")
    assert [(s.created, s.updated) for s in changed.steps] == [(0, 1), (0, 1)]
    assert writes(servicego) == {"PUT /v1/data": 2}
    assert_servicego_fed(helpdesk, servicego)


# --- 3. ServiceGo contacts -> EddyDesk users --------------------------------------------------------

def assert_users_fed(url: str, helpdesk: Any, servicego: Any) -> None:
    state = servicego.state
    users = {u["email"].lower(): u for u in helpdesk.state.users.records.values()}
    emails = Counter(u["email"].lower() for u in helpdesk.state.users.records.values())
    engine = open_engine(url)
    with engine.connect() as conn:
        mirrored = {int(i) for i in conn.execute(sa.text("SELECT id FROM servicego_contact WHERE NOT is_deleted "
                                                         "AND connection = 'servicego'")).scalars()}
    engine.dispose()
    with_email = [i for i in mirrored if _field(state, "contact", i, "youxiang")]
    assert with_email
    for contact in with_email:
        email = _field(state, "contact", contact, "youxiang").split(",")[0].strip().lower()
        assert emails[email] == 1, f"contact {contact}'s e-mail is {emails[email]} users"
        assert users[email]["name"] == _field(state, "contact", contact, "name")
        assert users[email]["phone"] == _field(state, "contact", contact, "dianhua").split(",")[0].strip()


def test_servicego_contacts_become_eddydesk_users_matched_by_email(
        db_url: str, simulator: Any, servicego_sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helpdesk = simulator(HELPDESK_SIZES)
    servicego = servicego_sim(ServiceGoSizes(customers=4, contacts=16, cases=2))
    # one contact already has a helpdesk user (another case of letters): it is matched, not duplicated
    existing = next(iter(helpdesk.state.users.records.values()))
    contact = next(i for i in servicego.state.records["contact"] if _field(servicego.state, "contact", i, "youxiang"))
    servicego.state.update("contact", contact, {"youxiang": [existing["email"].upper()]})
    config = pipeline_config(db_url, tmp_path, monkeypatch, "contacts_to_helpdesk",
                             example_connections(helpdesk=helpdesk, servicego=servicego))
    assert jobs.sync(config, "servicego").status == "ok"
    assert jobs.sync(config, "helpdesk", ("users",)).status == "ok"
    reset(helpdesk)
    before = len(helpdesk.state.users.records)

    first = jobs.run_pipeline(config, "contacts_to_helpdesk")
    step = first.steps[0]
    assert first.held == 0 and step.updated == 1
    assert len(helpdesk.state.users.records) == before + step.created
    assert writes(helpdesk) == {"POST users": step.created, "PUT users": 1}
    assert_users_fed(db_url, helpdesk, servicego)
    new_user = helpdesk.state.users.records[max(helpdesk.state.users.records)]
    assert new_user["group"]["id"] == 1 and new_user["department"] == [1]  # from the pipeline's on_create

    reset(helpdesk)
    assert jobs.run_pipeline(config, "contacts_to_helpdesk").requests == 0
    assert jobs.sync(config, "helpdesk", ("users",)).status == "ok"
    assert jobs.run_pipeline(config, "contacts_to_helpdesk").requests == 0
    assert writes(helpdesk) == {}

    renamed = next(i for i in servicego.state.records["contact"] if i != contact
                   and _field(servicego.state, "contact", i, "youxiang"))
    servicego.state.update("contact", renamed, {"name": "Renamed contact"})
    assert jobs.sync(config, "servicego").status == "ok"
    changed = jobs.run_pipeline(config, "contacts_to_helpdesk")
    assert (changed.steps[0].created, changed.steps[0].updated) == (0, 1)
    assert writes(helpdesk) == {"PUT users": 1}
    assert_users_fed(db_url, helpdesk, servicego)


# --- errors -----------------------------------------------------------------------------------------

def test_a_record_that_cannot_be_mapped_is_held_and_goes_through_once_fixed(
        sqlite_url: str, simulator: Any, knowledge_sim: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helpdesk = simulator(HELPDESK_SIZES)
    knowledge = knowledge_sim(KnowledgeSizes(questions=4, expressions=1, links=1, attachments=1, entities=1))
    broken, orphan = list(helpdesk.state.kb_articles.records)[:2]
    helpdesk.state.update_article(broken, title={"lv": "Tikai latviski"})  # no English title
    helpdesk.state.update_article(orphan, categories=[999])  # a category the knowledge base does not have
    strict = copy.deepcopy(EXAMPLE["pipelines"]["kb_to_knowledge"])
    strict["steps"][1]["map"]["title"] = "{{ title[language] }}"  # English or nothing
    config = pipeline_config(sqlite_url, tmp_path, monkeypatch, "kb_to_knowledge",
                             example_connections(helpdesk=helpdesk, knowledge=knowledge), strict)
    jobs.sync(config, "helpdesk", ("kb_categories", "kb_articles"))

    run = jobs.run_pipeline(config, "kb_to_knowledge")
    held = dict(run.steps[1].held)
    assert set(held) == {str(broken), str(orphan)} and run.steps[1].created == 28
    assert held[str(broken)] == "title: 'dict object' has no attribute 'en'"
    assert held[str(orphan)] == "catalog_id: categories 999 is not on the target yet"
    assert jobs.pipeline_status(config, "kb_to_knowledge")["articles"]["held"] == held

    helpdesk.state.update_article(broken, title={"en": "Fixed", "lv": "Tikai latviski"})
    helpdesk.state.update_article(orphan, categories=[1])
    jobs.sync(config, "helpdesk", ("kb_categories", "kb_articles"))
    reset(knowledge)
    fixed = jobs.run_pipeline(config, "kb_to_knowledge")
    assert fixed.held == 0 and fixed.steps[1].created == 2
    assert writes(knowledge) == {"POST /open_api_v1/knowledge_questions": 2}
    assert jobs.pipeline_status(config, "kb_to_knowledge")["articles"]["held"] == {}
    assert_knowledge_migrated(sqlite_url, helpdesk, knowledge)


@pytest.mark.parametrize(("change", "message"), [
    (lambda p: p["steps"][1]["map"].update(catalog_id={"lookup": "nowhere", "key": "{{ id }}"}),
     "lookup 'nowhere' is not an earlier step"),
    (lambda p: p["steps"][1]["map"].update(title="{{ title[language }}"), "title: the template does not compile"),
    (lambda p: p["steps"][0].update(target_object="attachments"), "'attachments' cannot be a pipeline target"),
    (lambda p: p.update(target="nowhere"), "pipelines.kb_to_knowledge.target: 'nowhere' is not a connection"),
    (lambda p: p["steps"][0].update(sql="SELECT 1"), "give exactly one of source_table and sql"),
])
def test_a_bad_pipeline_configuration_names_what_is_wrong(change: Any, message: str, tmp_path: Path) -> None:
    from etl.core.errors import ConfigError

    pipeline = copy.deepcopy(EXAMPLE["pipelines"]["kb_to_knowledge"])
    change(pipeline)
    connections = {"helpdesk": {**EXAMPLE["connections"]["helpdesk"]},
                   "knowledge": {**EXAMPLE["connections"]["knowledge"]}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"connections": connections, "pipelines": {"kb_to_knowledge": pipeline}}, base_dir=tmp_path)


def test_a_target_without_write_back_is_refused(tmp_path: Path) -> None:
    from etl.core.errors import ConfigError

    knowledge = {k: v for k, v in EXAMPLE["connections"]["knowledge"].items() if k != "push"}
    with pytest.raises(ConfigError, match="connection 'knowledge' has no push section for 'catalogs'"):
        parse_config({"connections": {"helpdesk": EXAMPLE["connections"]["helpdesk"], "knowledge": knowledge},
                      "pipelines": {"kb_to_knowledge": EXAMPLE["pipelines"]["kb_to_knowledge"]}}, base_dir=tmp_path)
