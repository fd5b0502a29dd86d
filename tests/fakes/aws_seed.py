"""Seed moto with tagged EC2 instances and CloudWatch history (PutMetricData) for the cloud tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config

CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
CREDS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def session() -> Any:
    return boto3.session.Session(**CREDS)


def launch(
    endpoint: str, region: str, count: int, tags: dict[str, str], itype: str = "t3.micro"
) -> list[str]:
    """Run `count` instances with the given tags (plus Name=<tag name>-<n>); return their ids."""
    ec2 = session().client("ec2", region_name=region, endpoint_url=endpoint)
    image = _image(ec2)
    ids: list[str] = []
    while len(ids) < count:
        n = min(500, count - len(ids))
        out = ec2.run_instances(
            ImageId=image,
            MinCount=n,
            MaxCount=n,
            InstanceType=itype,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            ],
        )
        ids.extend(i["InstanceId"] for i in out["Instances"])
    for i, vm in enumerate(ids):
        ec2.create_tags(Resources=[vm], Tags=[{"Key": "Name", "Value": f"{tags.get('env', 'vm')}-{i}"}])
    return ids


def _image(ec2: Any) -> str:
    return str(ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


def put(
    endpoint: str,
    region: str,
    points: Iterable[tuple[str, str, float, float]],
    namespace: str = "AWS/EC2",
    dimension: str = "InstanceId",
) -> None:
    """points: (instance id, metric name, unix timestamp, value), sent 500 per PutMetricData call."""
    # Uncompressed bodies: older moto servers mis-handle botocore's gzip request compression.
    cw = session().client(
        "cloudwatch",
        region_name=region,
        endpoint_url=endpoint,
        config=Config(disable_request_compression=True),
    )
    batch: list[dict[str, Any]] = []
    for vm, metric, ts, value in points:
        batch.append(
            {
                "MetricName": metric,
                "Dimensions": [{"Name": dimension, "Value": vm}],
                "Timestamp": datetime.fromtimestamp(ts, UTC),
                "Value": value,
            }
        )
        if len(batch) == 500:
            cw.put_metric_data(Namespace=namespace, MetricData=batch)
            batch = []
    if batch:
        cw.put_metric_data(Namespace=namespace, MetricData=batch)


def history(
    ids: Sequence[str], metrics: dict[str, float], start: float, end: float, step: float
) -> list[tuple[str, str, float, float]]:
    """One datapoint per (instance, metric) every `step` seconds in [start, end)."""
    out = []
    t = start
    while t < end:
        out.extend((vm, name, t, value) for vm in ids for name, value in metrics.items())
        t += step
    return out


def endpoint_of(proc: Any) -> str:
    """moto's endpoint URL from the harness process (its `url`, or derived from its readiness URL)."""
    url = getattr(proc, "url", "") or str(proc.ready_url).split("/moto-api", 1)[0]
    return str(url)
