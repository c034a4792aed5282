"""Opening a store: URL handling, SQLite pragmas, and running the shipped Alembic migrations.

SQLite (the default, a file in the run folder) runs in WAL mode so readers never block the writer,
with a busy timeout so concurrent writers wait instead of failing. Write transactions begin with
`BEGIN IMMEDIATE`: a deferred transaction that reads and then writes can fail with SQLITE_BUSY at
the upgrade, which the busy timeout cannot help with.
"""

from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text

from alignment.config import UserError

MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
BUSY_TIMEOUT_S = 30


def to_url(url_or_path: str) -> str:
    """A SQLAlchemy URL from a path (SQLite) or a URL; `postgresql://` uses psycopg 3."""
    s = str(url_or_path)
    if not s:
        raise UserError("no store given: set `store` to a SQLite file path or a postgresql:// URL")
    if s.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + s.split("://", 1)[1]
    if "://" in s:
        return s
    parent = os.path.dirname(os.path.abspath(s))
    if not os.path.isdir(parent):
        os.makedirs(parent, exist_ok=True)
    return "sqlite:///" + os.path.abspath(s)


def make_engine(url_or_path: str, pool_size: int = 10) -> Engine:
    url = to_url(url_or_path)
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
            mode = "IMMEDIATE" if conn.get_execution_options().get("write") else "DEFERRED"
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise UserError("PostgreSQL stores need psycopg: pip install 'rlhf-align[postgres]'") from None
    return create_engine(url, pool_size=pool_size, max_overflow=2 * pool_size, pool_pre_ping=True)


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
