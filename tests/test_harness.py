"""The harness itself: each real component starts, answers and stops without leaving a process."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

import boto3
import libvirt
import psycopg
import pytest

from tests.harness import start_alertmanager, start_prometheus, test_driver_fleet

pytestmark = pytest.mark.slow


def test_prometheus_and_alertmanager_start_and_stop(tmp_path: Path) -> None:
    am = start_alertmanager(tmp_path, {"route": {"receiver": "null"}, "receivers": [{"name": "null"}]})
    with am:
        prom = start_prometheus(
            tmp_path,
            [{"job_name": "am", "static_configs": [{"targets": [am.url.removeprefix("http://")]}]}],
            alertmanagers=[am.url.removeprefix("http://")],
        )
        with prom:
            result = prom.wait_for('up{job="am"} == 1', timeout=30)
            assert result[0]["metric"]["job"] == "am"
            assert am.alerts() == []
        assert not prom.alive()
    assert not am.alive()


def test_test_driver_fleet_has_the_requested_domains(tmp_path: Path) -> None:
    uri = test_driver_fleet(tmp_path, n_domains=25, shutoff_every=5)
    conn = libvirt.openReadOnly(uri)
    states = [dom.state()[0] for dom in conn.listAllDomains()]
    assert len(states) == 25
    assert states.count(libvirt.VIR_DOMAIN_SHUTOFF) == 5


def test_moto_smtp_and_postgres_answer(moto_server, smtp_server, postgres) -> None:
    ec2 = boto3.client(
        "ec2",
        region_name="eu-west-1",
        endpoint_url=moto_server.url,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    assert isinstance(ec2.describe_instances()["Reservations"], list)  # the session server is shared
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.test", "b@example.test", "hello"
    msg.set_content("body")
    with smtplib.SMTP(smtp_server.host, smtp_server.port) as client:
        client.send_message(msg)
    assert smtp_server.wait_for(lambda m: m["Subject"] == "hello", timeout=10)["To"] == "b@example.test"
    with psycopg.connect(postgres.dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_qemu_guest_runs_and_stops(qemu_guest) -> None:
    assert qemu_guest.state() == libvirt.VIR_DOMAIN_RUNNING
    qemu_guest.shutoff()
    assert qemu_guest.state() == libvirt.VIR_DOMAIN_SHUTOFF
    qemu_guest.start()
    assert qemu_guest.state() == libvirt.VIR_DOMAIN_RUNNING
