import pytest

from etl.connectors.eddydesk.client import basic_auth_header, parse_error, parse_list_page
from etl.core.errors import MalformedResponse
from etl.core.http.retry import Action, Backoff, classify_status
from etl.core.log import redact_secrets, register_secret


def test_basic_auth_matches_the_docs_example():
    # seed 003: base64(email:api_key)
    header = basic_auth_header("nikita.antonov@helpdeskeddy.com", "a32858b4-a65e-49ef-a960-0b7e8d5d1e47")
    assert header == "Basic bmlraXRhLmFudG9ub3ZAaGVscGRlc2tlZGR5LmNvbTphMzI4NThiNC1hNjVlLTQ5ZWYtYTk2MC0wYjdlOGQ1ZDFlNDc="


def test_data_as_object_keyed_by_anything_and_total_as_string():
    page = parse_list_page({"data": {"10": {"id": 10}, "nine": {"id": 9}},
                            "pagination": {"total": "2", "per_page": 30, "current_page": 1, "total_pages": 1}}, "tickets/")
    assert [r["id"] for r in page.records] == [10, 9] and page.total == 2


def test_data_as_array_and_no_pagination():
    page = parse_list_page({"data": [{"id": "open"}]}, "statuses/")
    assert page.total_pages == 1 and page.records == [{"id": "open"}]


@pytest.mark.parametrize("body", [{}, {"data": "x"}, {"data": [{"no": "id"}]}, {"data": [], "pagination": {"total": "many"}}])
def test_shapes_that_break_the_docs_are_named(body):
    with pytest.raises(MalformedResponse):
        parse_list_page(body, "tickets/")


def test_error_bodies_keep_the_apis_code_and_details():
    code, message, details = parse_error({"errors": [
        {"code": "e-411", "title": "Bad request", "details": "Field {owner_id} with id {5} does not exist"}]})
    assert code == "e-411" and "owner_id" in message and details[0]["code"] == "e-411"


@pytest.mark.parametrize(("status", "body", "action"), [
    (200, "", Action.OK), (500, "", Action.RETRY), (502, "<html>", Action.RETRY), (429, "", Action.BLOCKED),
    (403, "Rate limit exceeded", Action.BLOCKED), (401, "", Action.AUTH), (404, "", Action.FAIL), (400, "", Action.FAIL),
])
def test_one_table_decides_what_each_answer_means(status, body, action):
    assert classify_status(status, body) is action


def test_backoff_is_bounded_and_grows():
    backoff = Backoff(attempts=5, base_seconds=1, max_seconds=4)
    assert all(0 <= backoff.delay(n) <= min(4, 2 ** (n - 1)) for n in range(1, 8) for _ in range(50))


def test_logs_never_carry_keys_signs_or_basic_auth():
    register_secret("super-secret-value")
    event = redact_secrets(None, "info", {
        "api_key": "k", "headers": {"Authorization": "Basic abc="}, "msg": "failed with super-secret-value",
        "url": "https://x/y?sign=abcdef&email=a", "note": "Authorization: Basic Zm9vOmJhcg==",
    })
    text = str(event)
    assert "super-secret-value" not in text and "abcdef" not in text and "Zm9vOmJhcg" not in text
    assert event["api_key"] == "***" and event["headers"]["Authorization"] == "***"
