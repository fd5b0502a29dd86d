"""A small pool of daemon threads for libvirt calls that may never return.

concurrent.futures.ThreadPoolExecutor joins its threads at interpreter exit, so one libvirt call stuck on
a hung domain would keep the exporter from ever exiting; these threads are daemons. A stuck call pins one
worker, so the pool grows (up to `max_workers`) instead of starving the calls queued behind it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

_STOP = object()


class DaemonPool:
    """Run callables on daemon threads; `submit` returns a concurrent.futures.Future."""

    def __init__(self, name: str, min_workers: int = 4, max_workers: int = 64) -> None:
        self._name = name
        self._min = min_workers
        self._max = max_workers
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("pool is closed")
            self._queue.put((future, fn, args))
            self._grow_locked()
        return future

    def busy(self) -> int:
        """Threads currently running a call (stuck ones included)."""
        with self._lock:
            return len(self._threads) - self._idle

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)

    def _grow_locked(self) -> None:
        alive = [t for t in self._threads if t.is_alive()]
        self._threads = alive
        # Grow while every thread is busy (stuck calls hold theirs), or to the minimum.
        if len(alive) < self._min or (self._idle == 0 and len(alive) < self._max):
            thread = threading.Thread(target=self._run, name=f"{self._name}-{len(alive)}", daemon=True)
            self._threads.append(thread)
            self._idle += 1
            thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, args = item
            with self._lock:
                self._idle -= 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:  # handed to the waiter, who decides what it means
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1
