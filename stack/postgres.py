"""A private PostgreSQL 15 cluster (initdb + pg_ctl) for the scale profile's bridges and the test harness."""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
from pathlib import Path
from typing import Self

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def postgres_dir(state: Path) -> Path:
    """A folder for PostgreSQL's files: `state`/postgres, unless the `postgres` user cannot reach it."""
    if os.geteuid() != 0:
        return state / "postgres"
    # Root's folders (a private home, pytest's 0700 temp dirs) are closed to the postgres user.
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:10]
    return Path("/var/lib/novacron") / f"postgres-{digest}"


class PostgresCluster:
    """One cluster in `workdir`/`data` on 127.0.0.1:`port`, trust auth for the `novacron` role.

    `url` is a SQLAlchemy URL for the psycopg 3 driver, `dsn` a libpq one. As root, every PostgreSQL
    command runs as the `postgres` user (PostgreSQL refuses to run as root) and `workdir` is handed to it.
    """

    def __init__(self, workdir: Path, port: int, durable: bool = True) -> None:
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.port = port
        self.durable = durable  # False: fsync off, for throw-away test clusters
        self.url = f"postgresql+psycopg://novacron@127.0.0.1:{port}/postgres"
        self.dsn = f"postgresql://novacron@127.0.0.1:{port}/postgres"

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> Self:
        """initdb on first use, then pg_ctl start (waits until the server accepts connections)."""
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(
                "PostgreSQL 15 is needed: run `bash scripts/setup.sh` (Debian package postgresql)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.workdir, user.pw_uid, user.pw_gid)
        if not (self.datadir / "PG_VERSION").exists():
            init = [str(PG_BIN / "initdb"), "-D", str(self.datadir), "-U", "novacron", "--auth=trust"]
            done = self._run([*init, "-E", "UTF8", "--no-sync"])
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        opts = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1"
        if not self.durable:
            opts += " -c fsync=off"
        done = self._run(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-o",
                opts,
                "-l",
                str(self.log_path),
                "-w",
                "start",
            ]
        )
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{self.log_tail()}")
        return self

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop (`fast`: roll back open transactions; `immediate`: no shutdown checkpoint)."""
        if (self.datadir / "postmaster.pid").exists():
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"])

    def __enter__(self) -> Self:
        return self if (self.datadir / "postmaster.pid").exists() else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
