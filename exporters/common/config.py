"""Config errors that name the key, and the exit-2 convention shared by every command."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

EXIT_CONFIG_ERROR = 2


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
