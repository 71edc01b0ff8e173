"""What the `desksync` commands share: loading the configuration, and failing in one line."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from etl.config import load_config
from etl.core import log
from etl.core.config import Config
from etl.core.errors import ConfigError, DesksyncError


def load(ctx: click.Context) -> Config:
    """The configuration the command line names, with logging set up as it asks."""
    try:
        config = load_config(ctx.obj["config_path"])
    except ConfigError as exc:
        fail(exc)
    try:
        ctx.obj["mirror_url"] = config.mirror.resolved_url(config.base_dir)
    except ConfigError as exc:
        fail(exc)
    level = "debug" if ctx.obj["verbose"] else config.log.level
    log.configure(level, config.log.json_output)
    return config


def fail(exc: DesksyncError) -> NoReturn:
    """One `error:` line; exit 2 for a configuration error, 1 for any other."""
    click.echo(f"error: {exc}", err=True)
    sys.exit(2 if isinstance(exc, ConfigError) else 1)
