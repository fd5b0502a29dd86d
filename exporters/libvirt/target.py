"""One libvirt target: a kept read-only connection that reconnects, and its gatherer and self-metric counters.

The connection is opened lazily and kept between scrapes. When libvirtd goes away (a call fails with a
connection error, `isAlive()` turns false, or libvirt's close callback fires), the connection is dropped
and the scrape reports `novacron_libvirt_up 0`; the next scrape tries to open it again. Opening also runs
on a worker thread under the scrape deadline, so a libvirtd that accepts but never answers cannot hang a
scrape.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import libvirt

from exporters.libvirt.gather import Deadline, Gatherer, Snapshot
from exporters.libvirt.workers import DaemonPool

log = logging.getLogger(__name__)

Opener = Callable[[str], Any]

_event_loop_lock = threading.Lock()
_event_loop_started = False


def start_event_loop() -> None:
    """Run libvirt's default event loop on a daemon thread (needed for keepalive and close callbacks).

    Call before opening connections; idempotent. Process state by nature: libvirt's event loop is global.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=loop, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


def silence_libvirt_stderr() -> None:
    """libvirt prints every error to stderr by default; the exporter logs what matters itself."""
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def open_read_only(uri: str) -> Any:
    """The default opener: a read-only connection (the exporter never changes anything)."""
    return libvirt.openReadOnly(uri)


@dataclass
class Counters:
    """Cumulative self-metrics of one target."""

    scrapes: int = 0
    errors: int = 0
    reconnects: int = 0
    timed_out_domains: int = 0


class Target:
    """Scrape one libvirt URI under a deadline; thread-safe (concurrent scrapes are serialised)."""

    def __init__(
        self,
        uri: str,
        groups: frozenset[str],
        opener: Opener = open_read_only,
        xml_ttl: float = 300.0,
        keepalive: tuple[int, int] = (5, 3),
        pool: DaemonPool | None = None,
        hostname: str = "",
        parallelism: int = 4,
    ) -> None:
        self.uri = uri
        self.hostname = hostname
        self.opener = opener
        self.keepalive = keepalive
        self.pool = pool or DaemonPool("libvirt-call")
        self.gatherer = Gatherer(groups, xml_ttl=xml_ttl, pool=self.pool, parallelism=parallelism)
        self.counters = Counters()
        self.last_used = time.monotonic()
        self._conn: Any = None
        self._closed_by_libvirt = False
        self._lock = threading.Lock()
        self._opened_once = False
        self._last_error = ""
        self._flight: Future[Snapshot] | None = None
        self._opening: Future[Any] | None = None
        self._flight_lock = threading.Lock()

    def scrape(self, timeout: float) -> Snapshot:
        """A Snapshot within `timeout` seconds; `up` False when libvirt cannot be reached.

        Scrapes that arrive while one is running (a Prometheus HA pair) share its result instead of
        asking libvirt twice.
        """
        started = time.monotonic()
        self.last_used = started
        with self._flight_lock:
            flight = self._flight
            leader = flight is None
            if flight is None:
                flight = self._flight = Future()
        if not leader:
            try:
                shared: Snapshot = flight.result(timeout=timeout)
                return shared
            except TimeoutError:
                return self._failed("the scrape this one joined did not finish in time", started)
        try:
            snapshot = self._scrape(Deadline(timeout), started)
            flight.set_result(snapshot)
            return snapshot
        except BaseException as exc:
            flight.set_exception(exc)
            raise
        finally:
            with self._flight_lock:
                self._flight = None

    def _scrape(self, deadline: Deadline, started: float) -> Snapshot:
        if not self._lock.acquire(timeout=deadline.left()):
            return self._failed("another scrape of this target is still running", started)
        try:
            self.counters.scrapes += 1
            conn = self._connection(deadline)
            snapshot = self.gatherer.gather(conn, deadline)
            if self.hostname:
                snapshot.host.hostname = self.hostname
            self.counters.timed_out_domains += sum(1 for d in snapshot.domains if d.timed_out)
            snapshot.duration = time.monotonic() - started
            if self._last_error:
                log.info("scrape of %s works again", self.uri)
                self._last_error = ""
            return snapshot
        except (libvirt.libvirtError, TimeoutError, OSError) as exc:
            self._drop_if_dead()
            return self._failed(_describe(exc), started)
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            self._drop()
            if self._opening is not None:
                # A connection still being opened must not leak: close it when it arrives.
                self._opening.add_done_callback(_close_late)
                self._opening = None

    # -- connection --------------------------------------------------------------------------------------

    def _connection(self, deadline: Deadline) -> Any:
        if self._conn is not None and not self._closed_by_libvirt:
            return self._conn
        self._drop()
        # An open still hanging from an earlier scrape is waited for again, not started a second time.
        future = self._opening
        if future is None:
            future = self._opening = self.pool.submit(self._open_and_arm)
        try:
            conn = future.result(timeout=deadline.left())
        except TimeoutError:
            raise TimeoutError(f"opening {self.uri} did not finish in time") from None
        finally:
            if future.done():
                self._opening = None
        if self._opened_once:
            self.counters.reconnects += 1
            log.info("reconnected to %s", self.uri)
        self._opened_once = True
        self._conn = conn
        return conn

    def _open_and_arm(self) -> Any:
        conn = self.opener(self.uri)
        self._arm(conn)
        return conn

    def _arm(self, conn: Any) -> None:
        """Keepalive makes a silently dead libvirtd close the connection; the callback notices it."""
        self._closed_by_libvirt = False
        with contextlib.suppress(libvirt.libvirtError, AttributeError):
            conn.setKeepAlive(*self.keepalive)
        with contextlib.suppress(libvirt.libvirtError, AttributeError):
            conn.registerCloseCallback(self._on_close, None)

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt closed the connection to %s (reason %s)", self.uri, reason)
        self._closed_by_libvirt = True

    def _drop_if_dead(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            alive = bool(conn.isAlive())
        except (libvirt.libvirtError, AttributeError):
            alive = False
        if not alive or self._closed_by_libvirt:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError, AttributeError):
                conn.unregisterCloseCallback()
            # close() can block on a hung daemon; do it off the scrape path.
            self.pool.submit(_close_quietly, conn)

    def _failed(self, reason: str, started: float) -> Snapshot:
        self.counters.errors += 1
        # Warn when the target goes down or the reason changes; while it stays down, every scrape at debug.
        level = logging.DEBUG if reason == self._last_error else logging.WARNING
        log.log(level, "scrape of %s failed: %s", self.uri, reason)
        self._last_error = reason
        return Snapshot(up=False, error=reason, duration=time.monotonic() - started)


def _close_late(future: Any) -> None:
    if future.exception() is None:
        _close_quietly(future.result())


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(libvirt.libvirtError, AttributeError):
        conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, libvirt.libvirtError):
        return str(exc.get_error_message() or exc)
    return str(exc) or type(exc).__name__
