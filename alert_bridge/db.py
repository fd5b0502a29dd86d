"""Storage: the SQLAlchemy schema, engine set-up (SQLite WAL or PostgreSQL) and Alembic migrations."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.dialects import postgresql, sqlite

metadata = MetaData()

# One row per alert episode: a fingerprint's firing period. `open_key` equals the fingerprint while the
# episode is open and is NULL afterwards; its unique index makes "one open episode per fingerprint" hold
# across replicas and threads without any lock.
alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False, index=True),
    Column("open_key", String(64), unique=True),
    Column("state", String(16), nullable=False, index=True),
    Column("alertname", String(256), nullable=False, default=""),
    Column("severity", String(32), nullable=False, default=""),
    Column("labels", Text, nullable=False),
    Column("annotations", Text, nullable=False),
    Column("group_key", Text, nullable=False, default=""),
    Column("generator_url", Text, nullable=False, default=""),
    Column("incident_id", Integer, ForeignKey("incidents.id"), index=True),
    Column("starts_at", Float, nullable=False),
    Column("ends_at", Float),
    Column("lease_until", Float, nullable=False),
    Column("last_seen_at", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False, index=True),
    Column("receipts", Integer, nullable=False, default=1),
    Column("ack_by", String(128)),
    Column("ack_at", Float),
    Column("ack_reason", Text),
    Column("silence_id", String(64)),
    Column("escalation_level", Integer, nullable=False, default=0),
    Column("repeat_count", Integer, nullable=False, default=0),
    Column("next_action_at", Float, index=True),
    Column("stormed", Integer, nullable=False, default=0),
    Column("routes", Text, nullable=False, default="[]"),
)

incidents = Table(
    "incidents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", Text, nullable=False),
    Column("open_key", String(255), unique=True),
    Column("status", String(16), nullable=False, index=True),
    Column("title", Text, nullable=False),
    Column("labels", Text, nullable=False),
    Column("alert_count", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("storm_bucket", Integer),
)

notes = Table(
    "notes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), index=True),
    Column("incident_id", Integer, ForeignKey("incidents.id"), index=True),
    Column("author", String(128), nullable=False),
    Column("text", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Append-only: the code never updates or deletes audit rows; there is no cap.
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("alert_id", Integer, index=True),
    Column("incident_id", Integer),
    Column("fingerprint", String(64)),
    Column("labels", Text, nullable=False, default="{}"),
    Column("detail", Text, nullable=False, default="{}"),
)

# One row per (hook, decision key): which episode last carried the decision and which one was acted on.
# Created by migration 0004; used by alert_bridge/automation.py.
automation_decisions = Table(
    "automation_decisions",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("hook", String(128), nullable=False),
    Column("decision", Text, nullable=False),
    Column("alert_id", Integer, nullable=False),  # newest episode that carried the decision
    Column("acted_alert_id", Integer, nullable=False),  # the episode whose request counts
    Column("acted_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dedup_key", String(255), nullable=False, unique=True),
    Column("channel", String(128), nullable=False),
    Column("recipient", String(255), nullable=False, default=""),
    Column("kind", String(32), nullable=False),
    Column("alert_id", Integer, index=True),
    Column("incident_id", Integer),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("claimed_until", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
    Column("delivered_at", Float),
    Column("last_error", Text),
    Index("ix_outbox_due", "status", "next_attempt_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("outbox_id", Integer, nullable=False, index=True),
    Column("channel", String(128), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", Float, nullable=False, index=True),
    Column("result", String(16), nullable=False),
    Column("latency_seconds", Float, nullable=False),
    Column("error", Text),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("revoked_at", Float),
)

maintenance = Table(
    "maintenance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("matchers", Text, nullable=False),
    Column("starts_at", Float, nullable=False),
    Column("ends_at", Float, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("silence_ids", Text, nullable=False, default="[]"),
)


# Dead man's switch: when a heartbeat alert (Alertmanager's always-firing watchdog) was last seen.
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("last_seen_at", Float, nullable=False),
    Column("alarmed", Integer, nullable=False, default=0),
)


# Self-service overrides of a configured user's preferences (JSON, same keys as `users.<name>` in config).
user_prefs = Table(
    "user_prefs",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("prefs", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(128), nullable=False),
)


class Database:
    """An engine plus a write lock that serialises writers on SQLite (one writer at a time anyway)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.engine = make_engine(url)
        self._write_lock = threading.Lock() if self.is_sqlite else None

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction; commits on success, rolls back on any exception."""
        lock = self._write_lock or contextlib.nullcontext()
        with lock, self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    def migrate(self) -> None:
        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def insert_id(conn: Connection, stmt: Any, params: dict[str, Any] | None = None) -> int:
    """Execute an INSERT and return the new row's integer primary key."""
    key = (conn.execute(stmt, params) if params is not None else conn.execute(stmt)).inserted_primary_key
    if key is None:
        raise RuntimeError("INSERT returned no primary key")
    return int(key[0])


def make_engine(url: str) -> Engine:
    """SQLite gets WAL, a busy timeout and foreign keys; PostgreSQL a pool for worker and HTTP threads."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL survives process crashes (kill -9) in WAL mode; only power loss can lose the tail.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent; safe for replicas on PostgreSQL)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Replicas starting together must not race on CREATE TABLE.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727001)")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def insert_ignoring_conflict(conn: Connection, table: Table, key_column: str) -> Any:
    """INSERT ... ON CONFLICT (key) DO NOTHING in the connection's dialect (idempotent across replicas)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=[key_column])


def insert_if_absent(conn: Connection, table: Table, key_column: str, values: dict[str, Any]) -> bool:
    """True when this call inserted the row (RETURNING: psycopg reports rowcount -1 for this statement)."""
    stmt = insert_ignoring_conflict(conn, table, key_column).returning(table.c[key_column])
    return conn.execute(stmt, values).first() is not None
