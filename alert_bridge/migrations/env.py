"""Alembic environment: runs on the connection the bridge hands over (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from alert_bridge.db import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through alert_bridge.db.upgrade()")
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
