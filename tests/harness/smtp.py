"""A real SMTP server (aiosmtpd) on loopback that keeps every message it receives."""

from __future__ import annotations

import email
import email.policy
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from stack.processes import free_port


class _Collector:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.envelopes.append(envelope)
        self.messages.append(msg)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


class SmtpSink:
    """`start_smtp()`; optional STARTTLS (`tls_context`) and AUTH (`credentials`)."""

    def __init__(
        self, tls_context: ssl.SSLContext | None = None, credentials: tuple[str, str] | None = None
    ) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self._handler = _Collector()
        self._started = False
        kwargs: dict[str, Any] = {}
        if tls_context is not None:
            kwargs.update(tls_context=tls_context, require_starttls=True)
        if credentials is not None:
            expected = (credentials[0].encode(), credentials[1].encode())

            def authenticator(
                server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
            ) -> AuthResult:
                ok = (
                    isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == expected
                )
                return AuthResult(success=ok)

            kwargs.update(authenticator=authenticator, auth_require_tls=tls_context is not None)
            if tls_context is None:
                kwargs["auth_require_tls"] = False
        self._controller = Controller(self._handler, hostname=self.host, port=self.port, **kwargs)

    @property
    def messages(self) -> list[EmailMessage]:
        return self._handler.messages

    def start(self) -> SmtpSink:
        if not self._started:
            self._controller.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self._controller.stop()
            self._started = False

    def wait_for(
        self, predicate: Callable[[EmailMessage], bool] = lambda m: True, timeout: float = 30.0
    ) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in list(self.messages):
                if predicate(msg):
                    return msg
            time.sleep(0.1)
        raise AssertionError(f"no matching email within {timeout}s; got {len(self.messages)} message(s)")

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_smtp(
    tls_context: ssl.SSLContext | None = None, credentials: tuple[str, str] | None = None
) -> SmtpSink:
    return SmtpSink(tls_context, credentials).start()
