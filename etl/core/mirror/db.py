"""Open the mirror database and bring its schema up to date (only ever through Alembic)."""

from __future__ import annotations

from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from etl.core.errors import MirrorError
from etl.core.mirror.normalize import JsonText

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# The newest migration (migrations/versions/). A run checks the mirror against it by a plain
# query, so that it does not import Alembic (README, Benchmarks); tests/unit/test_migrations.py
# holds it equal to Alembic's own head.
SCHEMA_HEAD = "0012"


def _json_dumps(value: Any) -> str:
    if isinstance(value, JsonText):  # serialised once already, for the content hash
        return value
    return orjson.dumps(value).decode()


def _json_loads(value: Any) -> Any:
    # SQLite gives a column declared JSON numeric affinity: a stored "1" comes back as 1.
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    cursor = dbapi_conn.cursor()
    # For a new file only (SQLite keeps an existing file's page size). A mirrored record with its
    # raw JSON takes 1.5 to 3 KB: in 4 KB pages a ServiceGo case row took a page of its own
    # (100,000 records: 378 MB in 4 KB pages, 274 MB in 8 KB pages, and a sixth less writer time).
    cursor.execute("PRAGMA page_size=8192")
    # WAL lets readers (status, reporting) work during a sync; NORMAL is durable at each
    # checkpoint and loses nothing committed on a process kill.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # checkpoints every 80 MB of WAL (8 KB pages) instead of 8 MB spare most of the fsyncs of a
    # long run; measured at 20 MB the writer process did more work than the end of a run saved
    cursor.execute("PRAGMA wal_autocheckpoint=10000")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()


def open_engine(url: str, *, sqlite_cache_mb: int | None = None) -> sa.Engine:
    """`sqlite_cache_mb`: a page cache this large per SQLite connection instead of SQLite's 2 MB."""
    try:
        engine = sa.create_engine(
            url, json_serializer=_json_dumps, json_deserializer=_json_loads, pool_pre_ping=True
        )
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise MirrorError(f"mirror.url is not usable: {exc}") from None
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        if sqlite_cache_mb:
            sa.event.listen(engine, "connect", partial(_sqlite_cache, sqlite_cache_mb))
    return engine


def _sqlite_cache(megabytes: int, dbapi_conn: Any, _: Any) -> None:
    dbapi_conn.execute(f"PRAGMA cache_size=-{int(megabytes) * 1024}")  # negative: KiB


def migrations_dir() -> Path:
    """The Alembic scripts: top-level migrations/ in a checkout, desksync_migrations when installed."""
    source_tree = Path(__file__).resolve().parents[2] / "migrations"
    if (source_tree / "env.py").is_file():
        return source_tree
    return Path(str(resources.files("desksync_migrations")))


def _alembic_config(engine: sa.Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["engine"] = engine
    return cfg


# SQLite's words for what can be wrong with the file, and what the user can do about it
_SQLITE_FAULTS = (
    ("file is not a database", "is not a SQLite database (a corrupt file, or another kind of file): restore it "
                               "from a backup, or point mirror.url at another file"),
    ("malformed", "is corrupt (\"database disk image is malformed\"): restore it from a backup, or point "
                  "mirror.url at another file"),
    ("readonly", "is read-only: desksync writes to it and, for its write-ahead log, to its directory"),
    ("unable to open database file", "cannot be opened: does its directory exist, and may desksync write there?"),
)


def mirror_error(url: sa.engine.URL, exc: sa.exc.DBAPIError, doing: str) -> MirrorError:
    """One line naming the mirror and what is wrong with it (the password of a URL hidden)."""
    reason = str(exc.orig).strip() or type(exc.orig).__name__
    if url.get_backend_name() == "sqlite":
        where = f"the mirror database {url.database or ':memory:'}"
        advice = next((text for words, text in _SQLITE_FAULTS if words in reason.lower()), None)
        if advice is not None:
            return MirrorError(f"{where} {advice} (SQLite: {reason})")
    else:
        where = f"the mirror database {url.render_as_string(hide_password=True)}"
    return MirrorError(f"cannot {doing} {where}: {reason}")


def upgrade(engine: sa.Engine) -> str:
    """Run every pending migration; returns the head revision."""
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(engine)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except sa.exc.DBAPIError as exc:
        raise mirror_error(engine.url, exc, "migrate") from None
    return ScriptDirectory.from_config(cfg).get_current_head() or ""


def ensure_current(engine: sa.Engine) -> None:
    """Refuse to sync into a database whose schema is missing or behind."""
    head = SCHEMA_HEAD
    try:
        with engine.connect() as conn:
            current = current_revision(conn)
    except sa.exc.DBAPIError as exc:
        raise mirror_error(engine.url, exc, "open") from None
    if current != head:
        state = "has no desksync schema" if current is None else f"is at revision {current}, not {head}"
        raise MirrorError(f"the mirror database {state}; run `desksync init` first")


def current_revision(conn: sa.Connection) -> str | None:
    """The mirror's schema revision (Alembic's version table), None for a database without one."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
