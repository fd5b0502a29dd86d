"""Start, watch and stop child processes (Prometheus, Alertmanager, the project's services) cleanly."""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import requests

_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    """Whatever way the parent ends (a failed test, Ctrl-C), no child process group outlives it."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


class ProcessError(RuntimeError):
    """A child process is missing, would not start, or did not become ready."""


_HANDED_OUT: set[int] = set()  # every port free_port_block returned; a few thousand at most per process
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that binds now, below the kernel's ephemeral range (see free_port_block)."""
    return free_port_block(1)


def free_port_block(size: int) -> int:
    """The first of `size` consecutive loopback ports that bind now, below the kernel's ephemeral range.

    A port is picked now and bound later by a child process: an ephemeral one can meanwhile be taken by any
    outgoing connection (a scrape, a gossip dial, even a TCP self-connect); ports under 32768 cannot."""
    rng = random.Random()
    for _ in range(500):
        start = rng.randrange(20000, 32768 - size)
        block = range(start, start + size)
        # Not handed out before in this process: a caller may not have bound its earlier port yet.
        with _HANDED_OUT_LOCK:
            if not _HANDED_OUT.intersection(block) and all(_bindable(p) for p in block):
                _HANDED_OUT.update(block)
                return start
    raise RuntimeError(f"no {size} consecutive free ports between 20000 and 32768")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_in_use(host: str, port: int) -> bool:
    """True when something already accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `check` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except ProcessError:
            raise  # the process died: waiting longer cannot help
        except Exception:  # noqa: S110 (not ready yet: connection refused, bad answer...)
            pass
        time.sleep(interval)
    return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when GET url answers 2xx."""
    try:
        return requests.get(url, timeout=timeout).ok
    except requests.RequestException:
        return False


@dataclass
class ManagedProcess:
    """A child in its own process group, logging to a file, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: Sequence[str]
    log_path: Path
    ready_url: str | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None
    url: str = ""  # where the process serves, for callers; not used to manage it
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self, ready_timeout: float = 30.0) -> Self:
        binary = self.argv[0]
        # A bare name off PATH and a missing absolute path (the Debian binaries) both say how to install.
        missing = not os.access(binary, os.X_OK) if os.sep in binary else not _which(binary)
        if missing:
            raise ProcessError(f"{self.name}: '{binary}' is not installed (run `bash scripts/setup.sh`)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        env = {**os.environ, **(self.env or {})}
        self.proc = subprocess.Popen(
            list(self.argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()
        _LIVE.add(self.proc)
        if self.ready_url and not wait_until(self._ready, ready_timeout):
            tail = self.log_tail()
            self.stop()
            raise ProcessError(
                f"{self.name} did not become ready at {self.ready_url} in {ready_timeout:.0f}s:\n{tail}"
            )
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ProcessError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}")
        return http_ok(self.ready_url or "")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the whole group, then SIGKILL after `timeout`; safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        _LIVE.discard(self.proc)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL at once (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _which(binary: str) -> str | None:
    import shutil

    return shutil.which(binary)
