"""A throw-away self-signed certificate for 127.0.0.1, for TLS tests of every component."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed_cert(folder: Path, name: str = "tls") -> tuple[Path, Path]:
    """Write `<name>.crt` and `<name>.key` (valid one day, SAN IP:127.0.0.1) and return both paths."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
