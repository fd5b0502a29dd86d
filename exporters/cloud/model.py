"""The provider interface: discover VMs, fetch metrics, return normalised samples; shared value types."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

# libvirt's state codes, used for every provider (docs/metrics.md).
STATE_RUNNING = 1
STATE_SHUTTING_DOWN = 4
STATE_SHUTOFF = 5
STATE_NOSTATE = 0


@dataclass(frozen=True)
class Target:
    """One unit of refresh, breaker and `up`: a provider account in one region."""

    provider: str
    account: str
    region: str

    def labels(self) -> tuple[str, str, str]:
        return (self.provider, self.account, self.region)


@dataclass(frozen=True)
class VM:
    """A discovered VM with the identity labels of `novacron_vm_info`."""

    vm_id: str
    vm_name: str
    account: str
    region: str
    zone: str = ""
    instance_type: str = ""
    state: int = STATE_RUNNING
    vcpus: float | None = None
    memory_bytes: float | None = None
    tenant: str = ""
    project: str = ""
    group: str = ""  # the `novacron_group` label: the VM's scaling group


@dataclass(frozen=True)
class Sample:
    """One normalised value `metric{vm_id, **labels}` for the provider period ending at `timestamp`."""

    metric: str
    vm_id: str
    value: float
    timestamp: float
    labels: tuple[tuple[str, str], ...] = ()

    def key(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return (self.metric, self.vm_id, self.labels)


@dataclass(frozen=True)
class LatePolicy:
    """Period, delay and window of one metric.

    The query covers [end - window, end) with end = floor((now - delay) / period) * period, so only whole
    periods are asked for; the newest datapoint in that range wins. A provider that publishes a period late
    leaves the previous period's value in place instead of a gap or a NaN, as long as window covers the lag.
    """

    period: int
    delay: int
    window: int

    def query_range(self, now: float) -> tuple[float, float]:
        end = math.floor((now - self.delay) / self.period) * self.period
        return end - math.ceil(self.window / self.period) * self.period, end


@dataclass(frozen=True)
class MetricSpec:
    """How one provider metric becomes one normalised series."""

    source: str  # the provider's own metric name, shown in HELP-side docs and the data-age label
    normalised: str
    statistic: str  # provider statistic / aggregation / aligner
    scale: float = 1.0  # multiply (percent -> ratio: 0.01)
    offset: float = 0.0  # added after scaling ("available %" -> used ratio: 1 - x/100)
    per_period: bool = False  # a sum over the period: divide by the period to get a per-second rate
    labels: tuple[tuple[str, str], ...] = ()
    namespace: str = ""
    policy: LatePolicy = field(default_factory=lambda: LatePolicy(300, 300, 1200))

    def convert(self, raw: float, period: float) -> float:
        value = self.offset + raw * self.scale
        return value / period if self.per_period else value


class ApiCaller(Protocol):
    """Every cloud call goes through this: counted, priced, retried with backoff on throttling."""

    def call(self, operation: str, fn: Callable[[], T], units: int = 1) -> T: ...


class Provider(ABC):
    """A cloud provider plug-in (entry point group `novacron.cloud_providers`).

    `from_config` gets the provider's raw YAML mapping (already without unknown top-level keys checked by the
    provider itself) and the dotted key prefix for error messages; it raises ConfigError.
    """

    name: str = ""
    specs: tuple[MetricSpec, ...] = ()  # what fetch() asks for, exposed as novacron_cloud_metric_info

    @classmethod
    @abstractmethod
    def from_config(cls, raw: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> Provider: ...

    @abstractmethod
    def targets(self) -> Sequence[Target]:
        """The (account, region) units this provider refreshes independently."""

    @abstractmethod
    def discover(self, target: Target, now: float, api: ApiCaller) -> list[VM]:
        """The VMs of one target (running and stopped; terminated ones are left out)."""

    @abstractmethod
    def fetch(self, target: Target, vms: Sequence[VM], now: float, api: ApiCaller) -> list[Sample]:
        """Normalised samples for the given VMs, the newest complete datapoint of each metric."""

    @abstractmethod
    def is_throttled(self, exc: BaseException) -> bool:
        """True when the SDK error means "slow down" (retry with backoff), not a real failure."""

    def default_prices(self) -> Mapping[str, float]:
        """Dollars per billable unit by operation (overridable in config `api_prices`)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release SDK clients."""
