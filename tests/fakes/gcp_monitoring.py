"""An in-process gRPC fake of Cloud Monitoring's `MetricService.ListTimeSeries` (real protobuf messages).

The real `google-cloud-monitoring` client talks to it over a plaintext channel. It understands the filter
subset the exporter sends (metric.type, resource.type, zone starts_with, user label one_of, metric label),
checks the aligner against the metric kind, pages with `page_size`/`page_token`, and can answer
RESOURCE_EXHAUSTED to test throttling.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import monitoring_v3

from stack.processes import free_port

_GAUGE_TYPES = ("cpu/utilization", "memory/percent_used")


@dataclass
class _Stored:
    instance_id: str
    name: str
    zone: str
    machine_type: str
    user_labels: dict[str, str]
    metric_labels: dict[str, str]
    points: dict[int, float] = field(default_factory=dict)


class GcpMonitoringFake:
    """A grpc server on 127.0.0.1 (`endpoint` = "grpc://127.0.0.1:PORT")."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.series: dict[tuple[str, str, tuple[tuple[str, str], ...]], _Stored] = {}
        self.requests: list[monitoring_v3.ListTimeSeriesRequest] = []
        self.throttle_next = 0
        self.port = free_port()
        self.endpoint = f"grpc://127.0.0.1:{self.port}"
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler(
            "google.monitoring.v3.MetricService",
            {
                "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                    self._list,
                    request_deserializer=monitoring_v3.ListTimeSeriesRequest.deserialize,
                    response_serializer=monitoring_v3.ListTimeSeriesResponse.serialize,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        self._server.start()

    def __enter__(self) -> GcpMonitoringFake:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.stop(grace=None)

    def put(
        self,
        instance_id: str,
        metric_type: str,
        end_time: int,
        value: float,
        *,
        name: str = "",
        zone: str = "europe-west1-b",
        machine_type: str = "e2-standard-2",
        user_labels: dict[str, str] | None = None,
        metric_labels: dict[str, str] | None = None,
    ) -> None:
        """An already-aligned point whose interval ends at `end_time`."""
        mlabels = dict(metric_labels or {})
        key = (instance_id, metric_type, tuple(sorted(mlabels.items())))
        stored = self.series.setdefault(
            key,
            _Stored(
                instance_id,
                name or f"inst-{instance_id}",
                zone,
                machine_type,
                dict(user_labels or {}),
                mlabels,
            ),
        )
        stored.points[end_time] = value

    def _list(self, request: monitoring_v3.ListTimeSeriesRequest, context: grpc.ServicerContext) -> Any:
        self.requests.append(request)
        if self.throttle_next > 0:
            self.throttle_next -= 1
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "Quota exceeded for quota metric 'Time series queries'"
            )
        if request.name != f"projects/{self.project}":
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown project {request.name}")
        filt = _parse_filter(request.filter)
        if filt is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot parse filter: {request.filter}")
        assert filt is not None
        kind = "gauge" if filt["type"].endswith(_GAUGE_TYPES) else "delta"
        aligner = monitoring_v3.Aggregation.Aligner(request.aggregation.per_series_aligner).name
        if (kind == "delta" and aligner != "ALIGN_RATE") or (kind == "gauge" and aligner != "ALIGN_MEAN"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"aligner {aligner} does not suit {filt['type']}")
        start = request.interval.start_time.timestamp()
        end = request.interval.end_time.timestamp()
        matching = list(self._matching(filt, start, end))
        offset = int(request.page_token or 0)
        size = request.page_size or 100000
        page = matching[offset : offset + size]
        token = str(offset + size) if offset + size < len(matching) else ""
        return monitoring_v3.ListTimeSeriesResponse(time_series=page, next_page_token=token)

    def _matching(self, filt: dict[str, Any], start: float, end: float) -> Iterator[monitoring_v3.TimeSeries]:
        for (iid, mtype, _), s in sorted(self.series.items()):
            if mtype != filt["type"] or not s.zone.startswith(filt.get("zone", "")):
                continue
            if any(s.user_labels.get(k) not in v for k, v in filt["user"].items()):
                continue
            if any(s.metric_labels.get(k) != v for k, v in filt["metric"].items()):
                continue
            points = [
                monitoring_v3.Point(
                    interval=monitoring_v3.TimeInterval(
                        start_time={"seconds": t - 60}, end_time={"seconds": t}
                    ),
                    value=monitoring_v3.TypedValue(double_value=v),
                )
                for t, v in sorted(s.points.items(), reverse=True)
                if start < t <= end
            ]
            if not points:
                continue
            yield monitoring_v3.TimeSeries(
                metric={"type": mtype, "labels": {"instance_name": s.name, **s.metric_labels}},
                resource={
                    "type": "gce_instance",
                    "labels": {"project_id": self.project, "instance_id": iid, "zone": s.zone},
                },
                metadata={
                    "system_labels": {"machine_type": s.machine_type},
                    "user_labels": s.user_labels,
                },
                metric_kind=1,  # GAUGE: an aligned delta is a gauge of rates
                value_type=3,  # DOUBLE
                points=points,
            )


_CLAUSE = re.compile(r'\s*(?P<lhs>[\w."]+)\s*=\s*(?P<rhs>"[^"]*"|starts_with\("[^"]*"\)|one_of\([^)]*\))\s*')


def _parse_filter(text: str) -> dict[str, Any] | None:
    out: dict[str, Any] = {"user": {}, "metric": {}}
    for clause in text.split(" AND "):
        m = _CLAUSE.fullmatch(clause)
        if not m:
            return None
        lhs, rhs = m.group("lhs"), m.group("rhs")
        values = re.findall(r'"([^"]*)"', rhs)
        if lhs == "metric.type":
            out["type"] = values[0]
        elif lhs == "resource.type":
            if values[0] != "gce_instance":
                return None
        elif lhs == "resource.labels.zone" and rhs.startswith("starts_with"):
            out["zone"] = values[0]
        elif lhs.startswith("metadata.user_labels."):
            out["user"][lhs.split(".", 2)[2].strip('"')] = set(values)
        elif lhs.startswith("metric.labels."):
            out["metric"][lhs.split(".", 2)[2]] = values[0]
        else:
            return None
    return out if "type" in out else None
