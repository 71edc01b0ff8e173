"""Configuration errors name the key and what is wrong with it."""

from pathlib import Path
from typing import Any

import pytest

from etl.config import load_config, parse_config
from etl.connectors.eddydesk.settings import EddyDeskConnection
from etl.connectors.udesk.knowledge.settings import UdeskKnowledgeConnection
from etl.connectors.udesk.servicego.settings import ServiceGoConnection
from etl.core.errors import ConfigError

GOOD = {
    "system": "eddydesk",
    "base_url": "https://acme.eddydesk.com/api/v2",
    "email": "api@acme.com",
    "api_key_env": "ACME_KEY",
}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config(data, "desksync.toml")
    return str(raised.value)


def test_a_good_config_loads_with_documented_defaults():
    config = parse_config({"connections": {"helpdesk": GOOD}})
    conn = config.connection("helpdesk")
    assert isinstance(conn, EddyDeskConnection)
    assert conn.rate_limit.per_minute == 300 and conn.rate_limit.knowledge_base_per_minute == 60
    assert conn.base_url == "https://acme.eddydesk.com/api/v2" and conn.store_api_keys is False


def test_a_missing_key_is_named():
    message = _error({"connections": {"helpdesk": {k: v for k, v in GOOD.items() if k != "base_url"}}})
    assert "connections.helpdesk.base_url: required key is missing" in message


@pytest.mark.parametrize("url", ["acme.eddydesk.com", "ftp://acme.eddydesk.com", "https://", "not a url"])
def test_a_bad_url_is_named(url):
    message = _error({"connections": {"helpdesk": {**GOOD, "base_url": url}}})
    assert "connections.helpdesk.base_url" in message and "http(s) URL" in message or "not a URL" in message


def test_unknown_keys_bad_zones_and_bad_numbers_are_named():
    message = _error({"connections": {"helpdesk": {**GOOD, "time_zone": "UTC", "timezone": "Mars/Olympus",
                                                   "rate_limit": {"per_minute": 0}}}})
    assert "connections.helpdesk.time_zone: unknown key" in message
    assert "connections.helpdesk.timezone: unknown time zone 'Mars/Olympus'" in message
    assert "connections.helpdesk.rate_limit.per_minute" in message


def test_a_missing_secret_names_the_variable_not_a_value(monkeypatch):
    monkeypatch.delenv("ACME_KEY", raising=False)
    config = parse_config({"connections": {"helpdesk": GOOD}})
    with pytest.raises(ConfigError, match="connections.helpdesk.api_key_env: environment variable ACME_KEY is not set"):
        settings = config.connection("helpdesk")
        assert isinstance(settings, EddyDeskConnection)
        settings.api_key("helpdesk")


def test_an_unknown_connection_lists_the_known_ones():
    config = parse_config({"connections": {"helpdesk": GOOD}})
    with pytest.raises(ConfigError, match="known: helpdesk"):
        config.connection("other")


def test_files_that_are_missing_or_not_toml(tmp_path: Path):
    with pytest.raises(ConfigError, match="no configuration file found"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[mirror\nurl = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_relative_sqlite_paths_are_relative_to_the_config_file(tmp_path: Path):
    path = tmp_path / "conf" / "desksync.toml"
    path.parent.mkdir()
    path.write_text('[mirror]\nurl = "sqlite:///data/m.sqlite"\n[connections.h]\nsystem = "eddydesk"\n'
                    'base_url = "http://127.0.0.1:1/api/v2"\nemail = "a@b.c"\napi_key_env = "K"\n')
    config = load_config(path)
    assert config.mirror.resolved_url(config.base_dir) == f"sqlite:///{tmp_path / 'conf' / 'data' / 'm.sqlite'}"


SERVICEGO = {
    "system": "servicego",
    "base_url": "https://servicego.udesk.cn/api",
    "email": "admin@udesk.cn",
    "api_token_env": "SG_TOKEN",
    "objects": [{"name": "contact"}],
}


def test_udesk_connections_default_to_the_vendor_limit():
    config = parse_config({"connections": {"sg": SERVICEGO, "kn": {
        "system": "udesk_knowledge", "base_url": "https://demo.udesk.cn/open_api_v1", "email": "admin@udesk.cn",
        "api_token_env": "KN_TOKEN"}}})
    assert config.connection("sg").rate_limit.per_minute == 60
    knowledge = config.connection("kn")
    assert isinstance(knowledge, UdeskKnowledgeConnection) and knowledge.sign_version == "v2"


def test_udesk_config_errors_are_named():
    assert "connections.sg.objects: required key is missing" in _error(
        {"connections": {"sg": {k: v for k, v in SERVICEGO.items() if k != "objects"}}})
    assert "custom_judge_logic is required" in _error(
        {"connections": {"sg": {**SERVICEGO, "objects": [{"name": "contact", "judge_strategy": 3}]}}})
    assert "robot_ids needs km_base_url" in _error({"connections": {"kn": {
        "system": "udesk_knowledge", "base_url": "https://demo.udesk.cn/open_api_v1", "email": "admin@udesk.cn",
        "api_token_env": "KN_TOKEN", "robot_ids": [83]}}})
    assert "connections.sg.sign_hash" in _error({"connections": {"sg": {**SERVICEGO, "sign_hash": "md5"}}})
    assert "connections.x" in _error({"connections": {"x": {**SERVICEGO, "system": "zendesk"}}})


def test_a_missing_udesk_token_names_the_variable(monkeypatch):
    monkeypatch.delenv("SG_TOKEN", raising=False)
    settings = parse_config({"connections": {"sg": SERVICEGO}}).connection("sg")
    assert isinstance(settings, ServiceGoConnection)
    with pytest.raises(ConfigError, match="connections.sg.api_token_env: environment variable SG_TOKEN"):
        settings.api_token("sg")
