"""Read the configuration file and validate it into frozen models.

The system-neutral models live in etl.core.config; each connection is validated by its
connector's own settings model (etl.core.connector), found by the connection's `system`.
"""

from __future__ import annotations

import functools
import operator
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, create_model

from etl.core.config import Config, format_validation_error
from etl.core.connector import connector, known_systems, load_modules
from etl.core.errors import ConfigError

DEFAULT_CONFIG_PATHS = ("desksync.toml", "config/desksync.toml")


@functools.cache
def _config_model(systems: tuple[str, ...]) -> type[Config]:
    """`Config` whose connections are validated by these systems' settings models."""
    union: Any = functools.reduce(operator.or_, (connector(system).settings for system in systems))
    settings: Any = union if len(systems) == 1 else Annotated[union, Field(discriminator="system")]
    connections: Any = dict[str, settings]  # built at run time, as pydantic reads it
    return create_model("Config", __base__=Config, connections=(connections, ...))


def _systems(data: dict[str, Any], source: str) -> tuple[str, ...]:
    """The systems the file's connections name; a missing or unknown one is an error here."""
    connections = data.get("connections")
    if not isinstance(connections, dict):
        return ()
    problems, systems = [], set()
    known = known_systems()
    for name, settings in connections.items():
        system = settings.get("system") if isinstance(settings, dict) else None
        if system is None:
            problems.append(f"  connections.{name}.system: required key is missing (one of: {', '.join(known)})")
        elif system not in known:
            problems.append(f"  connections.{name}.system: unknown system {system!r} (one of: {', '.join(known)})")
        else:
            systems.add(system)
    if problems:
        raise ConfigError("\n".join([f"{source}: invalid configuration", *problems]))
    return tuple(sorted(systems))


def parse_config(data: dict[str, Any], source: str = "<config>", base_dir: Path = Path(".")) -> Config:
    modules = data.get("connector_modules", [])
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(f"{source}: connector_modules: must be a list of module names")
    load_modules(modules)
    systems = _systems(data, source)
    model = _config_model(systems) if systems else Config
    try:
        return model.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, systems)) from None


def load_config(path: str | Path | None = None) -> Config:
    candidates = [Path(path)] if path else [Path(p) for p in DEFAULT_CONFIG_PATHS]
    for candidate in candidates:
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{candidate}: not valid TOML: {exc}") from None
            return parse_config(data, str(candidate), candidate.resolve().parent)
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"no configuration file found (looked for {tried}); copy config/desksync.example.toml")
