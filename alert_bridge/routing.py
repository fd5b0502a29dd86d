"""Routing: which policy an alert follows and which channel/recipient pairs it reaches (user prefs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from alert_bridge.config import BridgeConfig, Policy, UserPrefs, severity_rank


@dataclass(frozen=True)
class Target:
    """One delivery: a channel and, for a person, their address on it ("" = the channel's own recipients)."""

    channel: str
    recipient: str = ""
    user: str = ""

    @property
    def key(self) -> str:
        return f"{self.channel}|{self.recipient}"


def select_policy(config: BridgeConfig, labels: dict[str, str], now: float) -> Policy | None:
    """The first policy whose matchers, minimum severity and hours all hold; None means the defaults."""
    local = datetime.fromtimestamp(now, config.zone).time()
    for policy in config.policies:
        if any(labels.get(k) != v for k, v in policy.match.items()):
            continue
        if any(not p.match(labels.get(k, "")) for k, p in policy.match_re.items()):
            continue
        if policy.min_severity and severity_rank(labels.get("severity")) < severity_rank(policy.min_severity):
            continue
        if policy.hours and not policy.hours.contains(local):
            continue
        return policy
    return None


def user_targets(config: BridgeConfig, user: UserPrefs, severity: str, now: float) -> list[Target]:
    """A person's own channels, unless the alert is below their threshold or it is their quiet time.

    Quiet hours hold back everything below `critical`: a page still wakes people, as on-call expects."""
    if severity_rank(severity) < severity_rank(user.min_severity):
        return []
    local = datetime.fromtimestamp(now, config.zone).time()
    if (
        user.quiet_hours
        and user.quiet_hours.contains(local)
        and severity_rank(severity) < severity_rank("critical")
    ):
        return []
    out = []
    for name in user.channels:
        channel = config.channels[name]
        address = {"email": user.email, "sms": user.phone}.get(channel.type)
        if channel.type in ("email", "sms") and not address:
            continue
        out.append(Target(name, address or "", user.name))
    return out


def targets_for(
    config: BridgeConfig,
    channels: tuple[str, ...],
    users: tuple[str, ...],
    severity: str,
    now: float,
    prefs: Mapping[str, UserPrefs] | None = None,
) -> list[Target]:
    """Channel targets plus each user's personal targets, without duplicates, in a stable order."""
    seen: dict[str, Target] = {}
    for name in channels:
        seen.setdefault(f"{name}|", Target(name))
    for user in users:
        person = (prefs or {}).get(user) or config.users[user]
        for target in user_targets(config, person, severity, now):
            seen.setdefault(target.key, target)
    return list(seen.values())


def initial_targets(
    config: BridgeConfig, labels: dict[str, str], now: float, prefs: Mapping[str, UserPrefs] | None = None
) -> tuple[Policy | None, list[Target]]:
    policy = select_policy(config, labels, now)
    severity = labels.get("severity", "")
    if policy is None:
        return None, targets_for(config, config.default_channels, (), severity, now, prefs)
    return policy, targets_for(config, policy.channels, policy.users, severity, now, prefs)
