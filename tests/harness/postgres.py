"""A throw-away PostgreSQL cluster for tests: stack.postgres.PostgresCluster in a temp dir on a free port."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from stack.postgres import PG_BIN, PostgresCluster
from stack.processes import free_port

__all__ = ["PG_BIN", "Postgres", "start_postgres"]


class Postgres(PostgresCluster):
    """`pg.url` is a SQLAlchemy URL for the psycopg 3 driver; `pg.dsn` a libpq one; fsync off."""

    def __init__(self, workdir: Path | None = None) -> None:
        # pytest's temp dirs are private to root; the postgres user needs a directory of its own in /tmp,
        # so `workdir` (kept for the callers' signature) is not used.
        super().__init__(Path(tempfile.mkdtemp(prefix="novacron-pg-")), free_port(), durable=False)

    def stop(self, mode: str = "immediate") -> None:
        """Stop at once (nothing to keep) and remove the cluster's files."""
        super().stop(mode)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(workdir: Path) -> Postgres:
    return Postgres(workdir).start()
