"""Cloud provider plug-ins and the small helpers they share (metric selection, batching, settings)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from exporters.cloud.config import (
    parse_late_policy,
    parse_mapping,
    parse_metric_overrides,
    parse_positive_int,
    parse_str_list,
)
from exporters.cloud.model import LatePolicy, MetricSpec, Sample
from exporters.common.config import ConfigError

T = TypeVar("T")

# A listing that pages more than this is a server bug or a runaway filter: stop rather than burn quota.
MAX_LIST_PAGES = 1000

# Keys every provider section accepts besides its own.
COMMON_KEYS = {"metrics", "defaults", "tenant_tag", "project_tag", "endpoint_url", "concurrency"}


@dataclass(frozen=True)
class CommonSettings:
    """Settings shared by every provider section."""

    specs: tuple[MetricSpec, ...]
    tenant_tag: str
    project_tag: str
    endpoint_url: str | None
    concurrency: int


def parse_common(
    raw: Mapping[str, Any],
    key: str,
    catalogue: Mapping[str, MetricSpec],
    default_metrics: Sequence[str],
    default_policy: LatePolicy,
) -> CommonSettings:
    """Metric selection with per-metric late policy, tag names for tenant/project, endpoint override."""
    defaults = parse_mapping(raw.get("defaults"), f"{key}.defaults")
    from exporters.common.config import check_keys

    check_keys(defaults, {"period", "delay", "window"}, f"{key}.defaults")
    policy = parse_late_policy(defaults, f"{key}.defaults", default_policy)
    chosen = parse_metric_overrides(raw.get("metrics"), f"{key}.metrics", catalogue, policy)
    if chosen is None:
        chosen = {name: policy for name in default_metrics}
    specs = tuple(dataclasses.replace(catalogue[name], policy=p) for name, p in chosen.items())
    endpoint = raw.get("endpoint_url")
    if endpoint is not None and (not isinstance(endpoint, str) or not endpoint):
        raise ConfigError(f"{key}.endpoint_url", "must be a URL string")
    return CommonSettings(
        specs=specs,
        tenant_tag=_str(raw.get("tenant_tag", "tenant"), f"{key}.tenant_tag"),
        project_tag=_str(raw.get("project_tag", "project"), f"{key}.project_tag"),
        endpoint_url=endpoint,
        concurrency=parse_positive_int(raw.get("concurrency", 4), f"{key}.concurrency"),
    )


# Tag keys naming a VM's scaling group, first found wins: AWS and Azure allow the colon, GCP labels do not.
GROUP_TAGS = ("novacron:group", "novacron_group")


def group_of(tags: Mapping[str, Any], prefix: str = "") -> str:
    """The VM's scaling group from its tags (`prefix` for GCP's `user:` label keys), else ""."""
    for name in GROUP_TAGS:
        value = tags.get(prefix + name)
        if value:
            return str(value)
    return ""


def parse_tags(raw: Any, key: str) -> dict[str, tuple[str, ...]]:
    """`tags: {env: prod, team: [a, b]}`: a VM matches when every key has one of the values."""
    tags: dict[str, tuple[str, ...]] = {}
    for name, value in parse_mapping(raw, key).items():
        values = (value,) if isinstance(value, str) else parse_str_list(value, f"{key}.{name}", required=True)
        tags[str(name)] = values
    return tags


def tags_match(want: Mapping[str, tuple[str, ...]], have: Mapping[str, str]) -> bool:
    return all(have.get(k) in values for k, values in want.items())


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(key, "must be a string")
    return value


class TooManyPages(RuntimeError):
    """A paginated API kept returning continuation tokens past MAX_LIST_PAGES."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"{operation} still paging after {MAX_LIST_PAGES} pages")


def chunked(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def merge_samples(samples: Sequence[Sample]) -> list[Sample]:
    """Sum samples with the same series key (several sources of one concept, e.g. instance store + EBS)."""
    merged: dict[tuple[str, str, tuple[tuple[str, str], ...]], Sample] = {}
    for s in samples:
        prev = merged.get(s.key())
        if prev is None:
            merged[s.key()] = s
        else:
            merged[s.key()] = dataclasses.replace(
                prev, value=prev.value + s.value, timestamp=min(prev.timestamp, s.timestamp)
            )
    return list(merged.values())
