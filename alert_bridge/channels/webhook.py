"""JSON webhook signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import requests

from alert_bridge.channels.base import Channel, DeliveryError, Message


def secret_bytes(secret: str) -> bytes:
    """Standard Webhooks secrets are `whsec_<base64>`; any other string is used as raw bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: float = 300) -> bool:
    """Receiver side (used by tests and documented for integrators): signature and timestamp window."""
    msg_id = headers.get("webhook-id", "")
    ts = headers.get("webhook-timestamp", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > tolerance:
        return False
    expected = sign(secret, msg_id, int(ts), body).split(",", 1)[1]
    given = [part.split(",", 1)[1] for part in headers.get("webhook-signature", "").split() if "," in part]
    return any(hmac.compare_digest(expected, g) for g in given)


class WebhookChannel(Channel):
    def send(self, message: Message) -> None:
        opts = self.config.options
        body = json.dumps({"type": message.kind, "subject": message.subject, **message.payload}).encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": message.key,
            "webhook-timestamp": str(ts),
        }
        headers.update(opts["headers"])
        if self.config.secret:
            headers["webhook-signature"] = sign(self.config.secret, message.key, ts, body)
        try:
            resp = self.http.post(
                opts["url"], data=body, headers=headers, timeout=self.config.timeout_seconds
            )
        except requests.RequestException as exc:
            raise DeliveryError(f"webhook: {type(exc).__name__}") from None
        if 200 <= resp.status_code < 300:
            return
        # 4xx other than timeout/rate-limit means the receiver rejects this message: retrying cannot help.
        permanent = 400 <= resp.status_code < 500 and resp.status_code not in (408, 409, 425, 429)
        raise DeliveryError(f"webhook: HTTP {resp.status_code}", permanent=permanent)
