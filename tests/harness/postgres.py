"""A throw-away PostgreSQL cluster: initdb into a temp dir, pg_ctl start on a free port, trust auth."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from stack.processes import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _run_as_postgres(argv: list[str]) -> subprocess.CompletedProcess[str]:
    # PostgreSQL refuses to run as root; the Debian package creates the `postgres` user.
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


class Postgres:
    """`pg.url` is a SQLAlchemy URL for the psycopg 3 driver; `pg.dsn` a libpq one."""

    def __init__(self, workdir: Path) -> None:
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(
                "PostgreSQL 15 is needed: run `make setup` (installs the Debian package postgresql)"
            )
        self.port = free_port()
        # pytest's temp dirs are private to root; the postgres user needs a directory of its own in /tmp.
        self.workdir = Path(tempfile.mkdtemp(prefix="novacron-pg-"))
        self.datadir = self.workdir / "pgdata"
        self.url = f"postgresql+psycopg://novacron@127.0.0.1:{self.port}/postgres"
        self.dsn = f"postgresql://novacron@127.0.0.1:{self.port}/postgres"

    def start(self) -> Postgres:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        result = _run_as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "novacron",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr}")
        opts = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = _run_as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-o",
                opts,
                "-l",
                str(self.workdir / "pg.log"),
                "-w",
                "start",
            ]
        )
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{self.log_tail()}")
        return self

    def log_tail(self) -> str:
        try:
            return (self.workdir / "pg.log").read_text()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.datadir.exists():
            _run_as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"]
            )
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self if (self.datadir / "postmaster.pid").exists() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(workdir: Path) -> Postgres:
    return Postgres(workdir).start()
