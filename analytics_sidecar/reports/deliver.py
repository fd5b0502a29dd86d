"""Deliver a rendered report: HTML e-mail over SMTP (STARTTLS, AUTH) and an archive with retention."""

from __future__ import annotations

import calendar
import logging
import shutil
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from analytics_sidecar.reports.config import ArchiveConfig, SmtpConfig

log = logging.getLogger(__name__)
RUN_DIR_FORMAT = "%Y%m%dT%H%M%SZ"
MIME = {"pdf": ("application", "pdf"), "csv": ("text", "csv"), "html": ("text", "html")}


def build_message(
    sender: str,
    to: tuple[str, ...],
    subject: str,
    html: str,
    images: dict[str, bytes],
    cids: dict[str, str],
    attachments: dict[str, bytes],
) -> EmailMessage:
    """multipart/mixed( multipart/related( text/plain | text/html, inline PNGs ), attachments )."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, ", ".join(to), subject
    msg.set_content("This report is HTML; the PDF and CSV are attached.")
    msg.add_alternative(html, subtype="html")
    html_part = msg.get_payload()[1]  # type: ignore[index]
    assert isinstance(html_part, EmailMessage)
    for key, png in images.items():
        html_part.add_related(png, "image", "png", cid=f"<{cids[key]}>", filename=f"chart-{len(cids)}.png")
    for name, payload in attachments.items():
        maintype, subtype = MIME[name.rsplit(".", 1)[-1]]
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return msg


def new_cid() -> str:
    return make_msgid(domain="novacron.reports")[1:-1]


def send(config: SmtpConfig, msg: EmailMessage) -> None:
    """Send one message; raises OSError/SMTPException for the caller to count and log."""
    with smtplib.SMTP(config.host, config.port, timeout=config.timeout) as smtp:
        if config.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if config.username and config.password is not None:
            smtp.login(config.username, config.password)
        smtp.send_message(msg)


def archive(config: ArchiveConfig, report: str, end: float, files: dict[str, bytes]) -> Path:
    """Store one run under `<dir>/<report>/<UTC time>/`, atomically (write to a temp dir, then rename)."""
    base = config.directory / report
    base.mkdir(parents=True, exist_ok=True)
    final = base / time.strftime(RUN_DIR_FORMAT, time.gmtime(end))
    tmp = base / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, payload in files.items():
        (tmp / name).write_bytes(payload)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def prune(config: ArchiveConfig, report: str, now: float) -> list[Path]:
    """Delete runs past the retention or beyond `max_runs` (oldest first); returns what was removed."""
    base = config.directory / report
    runs = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        try:
            runs.append((calendar.timegm(time.strptime(path.name, RUN_DIR_FORMAT)), path))
        except ValueError:
            continue  # not ours (or a temp dir): leave it alone
    removed = []
    keep_from = max(0, len(runs) - config.max_runs) if config.max_runs else 0
    for index, (ts, path) in enumerate(runs):
        if now - ts > config.retention_days * 86400 or index < keep_from:
            shutil.rmtree(path)
            removed.append(path)
    return removed
