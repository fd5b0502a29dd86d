"""A local HTTP fake of Azure Resource Manager (VM list, VM sizes) and Azure Monitor's `metrics:getBatch`.

It speaks the real REST shapes (api-version, bearer token, `nextLink` paging, `{"resourceids": [...]}` bodies,
the batch response with `values[].value[].timeseries[].data[]`, the "Virtual Machine Sizes - List" answer
`{"value": [{"name", "numberOfCores", "osDiskSizeInMB", "resourceDiskSizeInMB", "memoryInMB",
"maxDataDiskCount"}]}` per location), so the real `azure-monitor-querymetrics` MetricsClient and azure-core
pipeline talk to it unchanged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import isodate
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from stack.processes import free_port

TOKEN = "fake-azure-token"
NAMESPACE = "Microsoft.Compute/virtualMachines"
# (name, cores, memory MiB, resource disk MiB, max data disks) as Azure lists them for a location.
SIZES = [
    ("Standard_B1s", 1, 1024, 4096, 2),
    ("Standard_B2ms", 2, 8192, 16384, 4),
    ("Standard_D2s_v3", 2, 8192, 16384, 4),
    ("Standard_D4s_v3", 4, 16384, 32768, 8),
    ("Standard_D2s_v5", 2, 8192, 0, 4),
    ("Standard_D4s_v5", 4, 16384, 0, 8),
    ("Standard_E4s_v5", 4, 32768, 0, 8),
    ("Standard_F2s_v2", 2, 4096, 16384, 4),
]


def size_entry(name: str, cores: int, memory_mb: int, disk_mb: int = 0, disks: int = 4) -> dict[str, Any]:
    """One VirtualMachineSize as the REST API returns it."""
    return {
        "name": name,
        "numberOfCores": cores,
        "osDiskSizeInMB": 1047552,
        "resourceDiskSizeInMB": disk_mb,
        "memoryInMB": memory_mb,
        "maxDataDiskCount": disks,
    }


class StaticTokenCredential:
    """A TokenCredential that hands out one static token (the SDK boundary for tests)."""

    def get_token(self, *scopes: str, **_kw: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(TOKEN, int(datetime.now(UTC).timestamp()) + 3600)


@dataclass
class AzureFake:
    """ARM + Azure Monitor on 127.0.0.1; add VMs and datapoints, read `calls`, inject 429s."""

    page_size: int = 2
    vms: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    points: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)
    throttle_next: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    # The sizes every location lists; `fail_sizes` answers that many size listings with a 500.
    sizes: list[dict[str, Any]] = field(default_factory=lambda: [size_entry(*s) for s in SIZES])
    fail_sizes: int = 0

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = make_server("127.0.0.1", self.port, self._app, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def __enter__(self) -> AzureFake:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- seeding -----------------------------------------------------------------------------------------

    def add_vm(
        self,
        sub: str,
        rg: str,
        name: str,
        location: str = "westeurope",
        size: str = "Standard_D2s_v3",
        power: str = "running",
        tags: dict[str, str] | None = None,
        zone: str | None = "1",
    ) -> str:
        rid = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{NAMESPACE}/{name}"
        vm = {
            "id": rid,
            "name": name,
            "type": NAMESPACE,
            "location": location,
            "tags": tags or {},
            "properties": {
                "vmId": f"{abs(hash(rid)):032x}"[:32],
                "hardwareProfile": {"vmSize": size},
                "instanceView": {
                    "statuses": [
                        {"code": "ProvisioningState/succeeded", "level": "Info"},
                        {"code": f"PowerState/{power}", "level": "Info"},
                    ]
                },
            },
        }
        if zone:
            vm["zones"] = [zone]
        self.vms.setdefault(sub, []).append(vm)
        return rid

    def put(self, resource_id: str, metric: str, ts: float, value: float) -> None:
        self.points.setdefault((resource_id.lower(), metric), {})[ts] = value

    # -- HTTP --------------------------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.calls.append((request.method, request.path))
        return self._handle(request)(environ, start_response)

    def _handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _error(401, "InvalidAuthenticationToken", "missing or wrong bearer token")
        if not request.args.get("api-version"):
            return _error(400, "MissingApiVersionParameter", "The api-version query parameter is required")
        if self.throttle_next > 0:
            self.throttle_next -= 1
            resp = _error(429, "TooManyRequests", "Rate limit exceeded, retry later")
            resp.headers["Retry-After"] = "1"
            return resp
        parts = request.path.strip("/").split("/")
        if request.method == "POST" and request.path.endswith("/metrics:getBatch"):
            return self._batch(request, parts[1])
        if request.method == "GET" and request.path.endswith("/vmSizes") and len(parts) == 7:
            return self._sizes(parts[5])
        if request.method == "GET" and request.path.endswith(f"/providers/{NAMESPACE}"):
            rg = parts[3] if len(parts) > 3 and parts[2].lower() == "resourcegroups" else None
            return self._list(request, parts[1], rg)
        return _error(404, "NotFound", f"no route {request.method} {request.path}")

    def _list(self, request: Request, sub: str, rg: str | None) -> Response:
        if rg is None and request.args.get("statusOnly") != "true":
            return _error(400, "InvalidParameter", "this fake needs statusOnly=true to return instance views")
        vms = [
            v
            for v in self.vms.get(sub, [])
            if rg is None or f"/resourcegroups/{rg.lower()}/" in v["id"].lower()
        ]
        skip = int(request.args.get("$skiptoken", "0"))
        body: dict[str, Any] = {"value": vms[skip : skip + self.page_size]}
        if skip + self.page_size < len(vms):
            args = dict(request.args)
            args["$skiptoken"] = str(skip + self.page_size)
            query = "&".join(f"{k}={v}" for k, v in args.items())
            body["nextLink"] = f"{request.host_url.rstrip('/')}{request.path}?{query}"
        return Response(json.dumps(body), content_type="application/json")

    def size_calls(self) -> list[str]:
        """Paths of the size listings received so far."""
        return [path for method, path in self.calls if path.endswith("/vmSizes")]

    def _sizes(self, location: str) -> Response:
        if self.fail_sizes > 0:
            self.fail_sizes -= 1
            return _error(500, "InternalServerError", "size listing failed")
        if not location or location != location.lower() or " " in location:
            return _error(400, "InvalidParameter", f"location {location!r} is not a region name")
        # One page: the real API returns a location's whole list without nextLink.
        return Response(json.dumps({"value": self.sizes}), content_type="application/json")

    def _batch(self, request: Request, sub: str) -> Response:
        try:
            ids = list(json.loads(request.get_data())["resourceids"])
            start = datetime.fromisoformat(request.args["starttime"])
            end = datetime.fromisoformat(request.args["endtime"])
            interval = isodate.parse_duration(request.args.get("interval", "PT1M"))
            names = [n.replace("%2", ",") for n in request.args["metricnames"].split(",")]
            aggs = [a.strip().lower() for a in request.args.get("aggregation", "average").split(",")]
        except (KeyError, ValueError, TypeError) as exc:
            return _error(400, "BadRequest", f"malformed batch request: {exc}")
        if request.args.get("metricnamespace", "").lower() != NAMESPACE.lower():
            return _error(400, "BadRequest", "unknown metricnamespace")
        if not ids or len(ids) > 50:
            return _error(400, "BadRequest", f"between 1 and 50 resource ids per batch, got {len(ids)}")
        if any(f"/subscriptions/{sub}/".lower() not in r.lower() for r in ids):
            return _error(400, "BadRequest", "all resources must be in the subscription of the URL")
        self.batch_sizes.append(len(ids))
        values = [self._resource_values(r, names, aggs, start, end, interval) for r in ids]
        return Response(json.dumps({"values": values}), content_type="application/json")

    def _resource_values(
        self, rid: str, names: list[str], aggs: list[str], start: datetime, end: datetime, interval: timedelta
    ) -> dict[str, Any]:
        metrics = []
        for name in names:
            stored = self.points.get((rid.lower(), name), {})
            data = []
            for ts in _grid(start, end, interval):
                point: dict[str, Any] = {"timeStamp": ts.isoformat().replace("+00:00", "Z")}
                if ts.timestamp() in stored:
                    point.update({a: stored[ts.timestamp()] for a in aggs})
                data.append(point)
            metrics.append(
                {
                    "id": f"{rid}/providers/Microsoft.Insights/metrics/{name}",
                    "type": "Microsoft.Insights/metrics",
                    "name": {"value": name, "localizedValue": name},
                    "displayDescription": "",
                    "unit": "Unspecified",
                    "timeseries": [{"metadatavalues": [], "data": data}],
                    "errorCode": "Success",
                }
            )
        return {
            "starttime": start.isoformat(),
            "endtime": end.isoformat(),
            "interval": isodate.duration_isoformat(interval),
            "namespace": NAMESPACE,
            "resourceregion": "westeurope",
            "resourceid": rid,
            "value": metrics,
        }


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """No access log: the tests read `calls` instead."""


def _grid(start: datetime, end: datetime, step: timedelta) -> Iterator[datetime]:
    t = start
    while t < end:
        yield t
        t += step


def _error(status: int, code: str, message: str) -> Response:
    return Response(
        json.dumps({"error": {"code": code, "message": message}}),
        status=status,
        content_type="application/json",
    )
