"""Shared pytest fixtures (real components on loopback) and the rule that CI never skips a test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.harness import (
    Alertmanager,
    ManagedProcess,
    Postgres,
    Prometheus,
    QemuGuest,
    SmtpSink,
    free_port,
    remove_stale_guests,
    start_alertmanager,
    start_moto,
    start_postgres,
    start_prometheus,
    start_smtp,
)


def pytest_sessionstart(session: pytest.Session) -> None:
    remove_stale_guests()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Every test that boots a QEMU guest is marked, so `-m "not libvirtd"` leaves them out of a local run.
    for item in items:
        if "qemu_guest" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.libvirtd)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # In CI nothing may be skipped: a skip there hides a missing component, so it fails the run.
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (a skip is an error here): {report.longrepr}"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    with start_moto(tmp_path_factory.mktemp("moto")) as proc:
        yield proc


@pytest.fixture(scope="module")
def moto(moto_server: ManagedProcess) -> Iterator[ManagedProcess]:
    """The session's moto server with credentials in the env for the AWS SDK's chain (moto accepts any key).

    Each module uses regions no other module seeds, so the shared server needs no reset."""
    from tests.fakes import aws_seed

    with pytest.MonkeyPatch.context() as mp:
        for k, v in aws_seed.CREDS_ENV.items():
            mp.setenv(k, v)
        yield moto_server


@pytest.fixture(scope="module")
def webhook() -> Iterator[HTTPServer]:
    """An HTTP receiver standing in for the alert bridge's Alertmanager webhook (answers every POST "ok")."""
    server = HTTPServer(host="127.0.0.1", port=free_port())
    server.expect_request("/webhook/alertmanager", method="POST").respond_with_data("ok")
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    with start_smtp() as sink:
        yield sink


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    with start_postgres(tmp_path_factory.mktemp("pg")) as pg:
        yield pg


@pytest.fixture
def qemu_guest() -> Iterator[QemuGuest]:
    with QemuGuest() as guest:
        yield guest


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    started: list[Prometheus] = []

    def factory(*args: Any, **kwargs: Any) -> Prometheus:
        prom = start_prometheus(tmp_path, *args, **kwargs)
        started.append(prom)
        return prom

    yield factory
    for prom in started:
        prom.stop()


@pytest.fixture
def alertmanager_factory(tmp_path: Path) -> Iterator[Callable[..., Alertmanager]]:
    started: list[Alertmanager] = []

    def factory(*args: Any, **kwargs: Any) -> Alertmanager:
        am = start_alertmanager(tmp_path, *args, **kwargs)
        started.append(am)
        return am

    yield factory
    for am in started:
        am.stop()
