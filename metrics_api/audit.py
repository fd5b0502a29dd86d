"""The audit log: one JSON line per request saying who asked what, how it was scoped, and the outcome."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, TextIO


class AuditLog:
    """Append-only JSON lines to a file (or stderr); never holds a credential."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.Lock()
        self._stream: TextIO = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stderr  # noqa: SIM115
        self._owned = path is not None
        self.records_written = 0

    def write(self, **record: Any) -> None:
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "audit": True, **record}
        line = json.dumps(record, sort_keys=True, default=str)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self.records_written += 1
            except (OSError, ValueError):
                logging.getLogger(__name__).error("cannot write the audit log")

    def close(self) -> None:
        if self._owned:
            self._stream.close()
