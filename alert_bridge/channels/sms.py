"""SMS in Twilio's REST API shape: POST /2010-04-01/Accounts/{sid}/Messages.json, basic auth, form."""

from __future__ import annotations

import requests

from alert_bridge.channels.base import Channel, DeliveryError, Message

MAX_BODY = 1600  # Twilio's limit for one message body


class SmsChannel(Channel):
    def send(self, message: Message) -> None:
        opts = self.config.options
        recipients = [message.recipient] if message.recipient else list(opts["to"])
        if not recipients:
            raise DeliveryError("no recipients", permanent=True)
        url = f"{opts['base_url']}/2010-04-01/Accounts/{opts['account_sid']}/Messages.json"
        cause = (message.payload.get("context") or {}).get("summary")
        text = f"{message.subject}\nLikely cause: {cause}" if cause else message.subject
        body = f"{text}\n{message.payload.get('url', '')}".strip()[:MAX_BODY]
        for to in recipients:
            try:
                resp = self.http.post(
                    url,
                    data={"To": to, "From": opts["from"], "Body": body},
                    auth=(opts["account_sid"], self.config.secret or ""),
                    headers={"I-Twilio-Idempotency-Token": f"{message.key}|{to}"[:64]},
                    timeout=self.config.timeout_seconds,
                )
            except requests.RequestException as exc:
                raise DeliveryError(f"sms: {type(exc).__name__}") from None
            if resp.status_code >= 300:
                permanent = 400 <= resp.status_code < 500 and resp.status_code != 429
                raise DeliveryError(f"sms: HTTP {resp.status_code}", permanent=permanent)
