"""The EddyDesk client against its simulator, over real HTTP."""

from __future__ import annotations

import pytest

from etl.config import parse_config
from etl.connectors.eddydesk import client as eddydesk
from etl.connectors.eddydesk.settings import EddyDeskConnection
from etl.connectors.eddydesk.simulator.data import Sizes
from etl.core.errors import ApiError
from tests.conftest import connection_settings


@pytest.fixture
def client(simulator, monkeypatch):
    monkeypatch.setenv("DESKSYNC_TEST_API_KEY", "sim-api-key")
    server = simulator(Sizes(tickets=70, users=35, organizations=3, kb_articles=12))
    config = parse_config({"connections": {"h": connection_settings(server)}})
    settings = config.connection("h")
    assert isinstance(settings, EddyDeskConnection)
    c = eddydesk.connect("h", settings)
    yield c, server
    c.close()


def test_list_pages_in_every_documented_shape(client):
    c, server = client
    tickets = c.list_page("tickets/", {"page": 1})  # "deleted ... The default value is 0": 23, 46, 69 in the trash
    assert tickets.total == 67 and tickets.per_page == 30 and tickets.total_pages == 3
    orgs = c.list_page("organizations/", {})
    assert orgs.total == 3  # sent as the string "3"
    articles = c.list_page("knowledge_base/articles", {"page": 2})
    assert articles.per_page == 10 and len(articles.records) == 2
    statuses = c.list_page("statuses/")
    assert [s["id"] for s in statuses.records] == ["open", "process", "closed"]
    assert c.session.metrics.by_budget == {"main": 3, "knowledge_base": 1}


def test_not_found_carries_the_apis_code_and_details(client):
    c, _ = client
    with pytest.raises(ApiError) as raised:
        c.get("tickets/999999")
    assert raised.value.status == 404 and raised.value.code == "e-404"
    assert "Ticket with id {999999} does not exist" in str(raised.value)


def test_a_bad_filter_is_a_400_that_is_not_retried(client):
    c, server = client
    before = server.stats.requests
    with pytest.raises(ApiError) as raised:
        c.list_page("tickets/", {"from_date_updated": "31.12.2017"})
    assert raised.value.code == "e-411" and "date format" in str(raised.value)
    assert server.stats.requests == before + 1


def test_windowed_listing_is_inclusive_and_ordered_by_date_then_id(client):
    c, server = client
    server.state.update_ticket(5, title="a")
    server.state.update_ticket(3, title="b")
    stamp = server.state.tickets.get(5)["date_updated"]
    page = c.list_page("tickets/", {"from_date_updated": stamp, "to_date_updated": stamp,
                                    "order_by": "date_updated{asc}"})
    ids = [r["id"] for r in page.records]
    assert 5 in ids and ids == sorted(ids)
