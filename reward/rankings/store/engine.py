"""Opening a store: URL handling, SQLite pragmas, and running the shipped Alembic migrations.

SQLite (the default, a file in the run folder) runs in WAL mode so readers never block the writer,
with a busy timeout so concurrent writers wait instead of failing. Write transactions begin with
`BEGIN IMMEDIATE`: a deferred transaction that reads and then writes can fail with SQLITE_BUSY at
the upgrade, which the busy timeout cannot help with.

Durability. What a `kill -9` of the server can lose: nothing committed, at any setting, on either
backend (a committed SQLite transaction is in the WAL file, i.e. in the OS page cache, before COMMIT
returns; PostgreSQL commits in its own process). What a power loss or OS crash can lose: nothing
acknowledged. SQLite runs at `synchronous=FULL` (the WAL is fsynced at each commit) and its write
transactions go through a group commit (group.py): many requests share one transaction and one fsync,
and each is acknowledged only after it. PostgreSQL waits for its WAL flush on every durable commit;
transactions marked `durable=False` (lease-only work, harmless to lose: a lost lease just expires) run
at `synchronous_commit=off` there. (A SQLite connection opened with `durable=False` outside the group
commit would run at `synchronous=NORMAL`: no fsync, the next durable commit syncs it along.)
"""

from __future__ import annotations

import os
import re

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError

from alignment.common.errors import UserError

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
BUSY_TIMEOUT_S = 30


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***: safe to print, save or show."""
    return _PASSWORD.sub(r"\1***@", str(text))


_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^\s]*@")


def to_url(url_or_path: str, create: bool = True) -> str:
    """A SQLAlchemy URL from a path (SQLite) or a URL; `postgresql://` uses psycopg 3.

    A SQLite path whose folder does not exist is an error unless `create` (a typo must not start a new,
    empty project somewhere else).
    """
    s = str(url_or_path)
    if not s:
        raise UserError("no store given: set `store` to a SQLite file path or a postgresql:// URL")
    if s.startswith(("postgres://", "postgresql://")):
        s = "postgresql+psycopg://" + s.split("://", 1)[1]
    if "://" in s:
        try:
            url = make_url(s)
        except (ArgumentError, ValueError) as e:
            raise UserError(f"store '{redact(s)}' is not a valid database URL ({redact(e)})") from None
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise UserError(f"store '{redact(s)}': only SQLite files and postgresql:// URLs are supported")
        return s
    parent = os.path.dirname(os.path.abspath(s))
    if not os.path.isdir(parent):
        if not create:
            raise UserError(f"store {s}: folder {parent} does not exist")
        os.makedirs(parent, exist_ok=True)
    if os.path.isdir(s):
        raise UserError(f"store {s} is a folder, not a SQLite file")
    return "sqlite:///" + os.path.abspath(s)


def make_engine(url_or_path: str, pool_size: int = 10, create: bool = True) -> Engine:
    url = to_url(url_or_path, create=create)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=2 * pool_size,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # Let SQLAlchemy (the "begin" hook below) own transaction boundaries, not the sqlite3 module.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
            cur.execute("PRAGMA foreign_keys=ON")
            # synchronous=FULL: an acknowledged commit survives power loss, not only a process crash.
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            options = conn.get_execution_options()
            sync = "FULL" if options.get("durable", True) else "NORMAL"
            if conn.info.get("synchronous", "FULL") != sync:
                conn.exec_driver_sql(f"PRAGMA synchronous={sync}")
                conn.info["synchronous"] = sync
            conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if options.get('write') else 'DEFERRED'}")

        return engine
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise UserError("PostgreSQL stores need psycopg: pip install 'rlhf-align[postgres]'") from None
    try:
        # No pre-ping: it is a round trip on every checkout (a second query per request); stale connections
        # are recycled instead, and a dead one fails that request only (clients retry with the same key).
        return create_engine(url, pool_size=pool_size, max_overflow=2 * pool_size, pool_recycle=1800)
    except (ArgumentError, ValueError) as e:
        raise UserError(f"store '{redact(url_or_path)}' is not a valid database URL ({redact(e)})") from None


def _alembic_config(connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest shipped revision; several processes may open the store at once."""
    head = ScriptDirectory(MIGRATIONS).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == head:
        return
    with engine.connect().execution_options(write=True) as conn:
        if engine.dialect.name == "postgresql":
            # One migrator at a time across processes; the others wait, then find the schema current.
            conn.execute(text("SELECT pg_advisory_lock(727274)"))
            conn.commit()
        try:
            command.upgrade(_alembic_config(conn), "head")
            conn.commit()
        finally:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(727274)"))
                conn.commit()
