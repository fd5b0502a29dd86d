"""Config errors that name the key, and the exit-2 convention shared by every command."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

EXIT_CONFIG_ERROR = 2

_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)"
_DURATION = re.compile(rf"(?:{_DURATION_PART})+")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; `key` is its dotted path."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def exit_config_error(command: str, err: ConfigError) -> NoReturn:
    """Print the error the same way for every command and exit 2."""
    print(f"{command}: invalid configuration: {err}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)


def load_yaml_mapping(path: str | Path, key: str = "config.file") -> Mapping[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is an empty mapping)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(key, f"{path} must hold a mapping at the top level")
    return data


def parse_number(value: Any, key: str, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite number in [low, high]; YAML's `true` is not 1, and a typo names the key, not a traceback."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not low <= value <= high:
        if high == math.inf:
            span = f"at least {low:g}" if low > -math.inf else "finite"
        else:
            span = f"from {low:g} to {high:g}"
        raise ConfigError(key, f"must be a number {span}, got {value!r}")
    return float(value)


def parse_duration(value: Any, key: str, minimum: float = 0.0, *, zero_ok: bool = False) -> float:
    """Seconds from a number or a Prometheus-style duration (`500ms`, `90s`, `1h30m`, `7d`, `2w`).

    Positive unless `zero_ok`, and at least `minimum`: one parser so every config file reads alike.
    """
    if isinstance(value, bool):
        raise ConfigError(
            key, f"must be a duration such as 30s, 5m, 1h30m or a number of seconds, got {value!r}"
        )
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            if not _DURATION.fullmatch(text):
                shown = repr(value)[:80]
                raise ConfigError(
                    key, f"must be a duration such as 30s, 5m, 1h30m or a number of seconds, got {shown}"
                ) from None
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(_DURATION_PART, text))
    if not math.isfinite(seconds) or seconds < minimum or (seconds == 0 and not zero_ok):
        least = f"at least {minimum:g}s" if minimum > 0 else ("0 or more" if zero_ok else "greater than zero")
        raise ConfigError(key, f"must be {least}, got {value!r}")
    return seconds


def check_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Refuse unknown keys so a typo is an error, not a silently ignored setting."""
    for name in section:
        if name not in allowed:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"{prefix}{name}", f"unknown key (allowed: {', '.join(sorted(allowed))})")


def read_secret(env: str | None = None, file: str | None = None, key: str = "secret") -> str | None:
    """A secret comes from an environment variable or a file, never from the config file itself."""
    import os

    if env and os.environ.get(env):
        return os.environ[env]
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError(key, f"cannot read secret file {file}: {exc.strerror}") from None
    return None


def ensure_secret_file(path: Path) -> Path:
    """A random token in `path`, created once with mode 0600 (its folder 0700) and kept across restarts."""
    import os
    import secrets

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path
