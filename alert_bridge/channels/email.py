"""Email over SMTP: STARTTLS or implicit TLS, AUTH, text+HTML, Message-ID from the idempotency key."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from alert_bridge.channels.base import Channel, DeliveryError, Message


class EmailChannel(Channel):
    def send(self, message: Message) -> None:
        opts = self.config.options
        recipients = [message.recipient] if message.recipient else list(opts["to"])
        if not recipients:
            raise DeliveryError("no recipients", permanent=True)
        mail = EmailMessage()
        mail["From"] = opts["from"]
        mail["To"] = ", ".join(recipients)
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(usegmt=True)
        # A stable Message-ID lets mail systems drop the copy a crash-and-retry may produce.
        mail["Message-ID"] = f"<{hashlib.sha256(message.key.encode()).hexdigest()[:32]}@novacron-bridge>"
        mail["X-NovaCron-Key"] = message.key
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        try:
            self._deliver(mail, recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"recipients refused: {list(exc.recipients)}", permanent=True) from None
        except smtplib.SMTPAuthenticationError:
            raise DeliveryError("SMTP authentication failed", permanent=True) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _deliver(self, mail: EmailMessage, recipients: list[str]) -> None:
        opts = self.config.options
        context = ssl.create_default_context(cafile=opts.get("ca_file"))
        timeout = self.config.timeout_seconds
        smtp: smtplib.SMTP
        if opts["ssl"]:
            smtp = smtplib.SMTP_SSL(opts["host"], opts["port"], timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(opts["host"], opts["port"], timeout=timeout)
        with smtp:
            if opts["starttls"] and not opts["ssl"]:
                smtp.starttls(context=context)
            if opts["username"]:
                smtp.login(opts["username"], self.config.secret or "")
            smtp.send_message(mail, to_addrs=recipients)
