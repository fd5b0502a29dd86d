"""`push` / `pull` contract-tested against a local fake of Grafana's dashboard and folder HTTP API."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from dashboards.catalog import build_all
from dashboards.cli import main
from dashboards.grafana_sync import connect, folder_uid, pull, push

TOKEN = "glsa_test_token"


class FakeGrafana:
    """The parts of Grafana's HTTP API that push/pull use, with Grafana's status codes and bodies."""

    def __init__(self) -> None:
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self._next_id = 1

    def install(self, server: HTTPServer) -> None:
        server.expect_request(re.compile(r"^/api/.*")).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        self.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _json({"message": "Unauthorized"}, 401)
        route = (request.method, request.path)
        if route == ("GET", "/api/folders"):
            return _json(
                [{"id": f["id"], "uid": uid, "title": f["title"]} for uid, f in self.folders.items()]
            )
        if route == ("POST", "/api/folders"):
            return self._create_folder(request.get_json())
        if route == ("POST", "/api/dashboards/db"):
            return self._save(request.get_json())
        match = re.fullmatch(r"/api/dashboards/uid/([^/]+)", request.path)
        if request.method == "GET" and match:
            saved = self.dashboards.get(match.group(1))
            if saved is None:
                return _json({"message": "Dashboard not found"}, 404)
            return _json(saved)
        return _json({"message": "Not found"}, 404)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _create_folder(self, body: dict[str, Any]) -> Response:
        uid = body.get("uid") or f"auto{self._id()}"
        if uid in self.folders or any(f["title"] == body.get("title") for f in self.folders.values()):
            return _json({"message": "a folder with the same name already exists"}, 409)
        self.folders[uid] = {"id": self._id(), "title": body["title"]}
        return _json({"id": self.folders[uid]["id"], "uid": uid, "title": body["title"]})

    def _save(self, body: dict[str, Any]) -> Response:
        model = copy.deepcopy(body.get("dashboard") or {})
        if not model.get("title"):
            return _json({"message": "Dashboard title cannot be empty"}, 400)
        folder = body.get("folderUid", "")
        if folder and folder not in self.folders:
            return _json({"message": "folder not found"}, 400)
        uid = model["uid"]
        previous = self.dashboards.get(uid)
        if (
            previous
            and not body.get("overwrite")
            and model.get("version") != previous["dashboard"]["version"]
        ):
            return _json(
                {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"},
                412,
            )
        model["id"] = previous["dashboard"]["id"] if previous else self._id()
        model["version"] = previous["dashboard"]["version"] + 1 if previous else 1
        self.dashboards[uid] = {
            "dashboard": model,
            "meta": {"folderUid": folder, "slug": uid, "provisioned": False},
        }
        return _json(
            {
                "id": model["id"],
                "uid": uid,
                "status": "success",
                "version": model["version"],
                "url": f"/d/{uid}/{uid}",
            }
        )


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


@pytest.fixture
def grafana(httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeGrafana, str]]:
    fake = FakeGrafana()
    fake.install(httpserver)
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    yield fake, httpserver.url_for("/").rstrip("/")


def test_push_creates_folders_and_dashboards_then_pull_shows_no_drift(grafana, capsys) -> None:  # type: ignore[no-untyped-def]
    fake, url = grafana
    assert main(["push", "--url", url]) == 0
    assert set(fake.folders) == {"novacron"} and fake.folders["novacron"]["title"] == "NovaCron"
    assert {d["meta"]["folderUid"] for d in fake.dashboards.values()} == {"novacron"}
    assert set(fake.dashboards) == {b.model["uid"] for b in build_all()}
    assert main(["pull", "--url", url]) == 0
    # A second push updates in place: same folder, version bumped, nothing duplicated.
    assert main(["push", "--url", url]) == 0
    assert len(fake.folders) == 1
    assert {d["dashboard"]["version"] for d in fake.dashboards.values()} == {2}
    assert "pushed novacron-fleet-overview" in capsys.readouterr().out


def test_pull_reports_edits_and_missing_dashboards(grafana, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    fake, url = grafana
    api = connect(url)
    built = build_all()
    push(api, built)
    fake.dashboards["novacron-slo"]["dashboard"]["title"] = "Edited in the UI"
    del fake.dashboards["novacron-topology"]
    drifts, remote = pull(api, built)
    by_uid = {d.uid: d for d in drifts}
    assert set(by_uid) == {"novacron-slo", "novacron-topology"}
    assert by_uid["novacron-topology"].missing
    assert '-  "title": "NovaCron / SLOs"' in by_uid["novacron-slo"].diff
    assert '+  "title": "Edited in the UI"' in by_uid["novacron-slo"].diff
    capsys.readouterr()
    assert main(["pull", "--url", url, "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "novacron-topology: missing in Grafana" in out and "Edited in the UI" in out
    assert json.loads((tmp_path / "novacron-slo.json").read_text())["title"] == "Edited in the UI"


def test_tenant_copies_go_to_their_own_folder(grafana) -> None:  # type: ignore[no-untyped-def]
    fake, url = grafana
    assert main(["push", "--url", url, "--tenant", "acme", "--tenant", "globex"]) == 0
    assert set(fake.folders) == {folder_uid("NovaCron tenant acme"), folder_uid("NovaCron tenant globex")}
    assert (
        "novacron-fleet-overview-acme" in fake.dashboards and "novacron-vm-detail-globex" in fake.dashboards
    )
    assert "novacron-self-acme" not in fake.dashboards  # stack dashboards are not tenant-scoped


def test_bad_credentials_fail_cleanly(grafana, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    fake, url = grafana
    monkeypatch.setenv("GRAFANA_TOKEN", "wrong")
    assert main(["push", "--url", url]) == 3
    err = capsys.readouterr().err
    assert "Grafana request failed" in err and "Traceback" not in err and "wrong" not in err
    assert fake.dashboards == {}


def test_unreachable_grafana_fails_cleanly(capsys) -> None:  # type: ignore[no-untyped-def]
    from stack.processes import free_port

    assert main(["pull", "--url", f"http://127.0.0.1:{free_port()}"]) == 3
    assert "Grafana request failed" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["push", "--url", "grafana:3000"],
        ["pull", "--url", "ftp://grafana"],
        ["check", "--prometheus-url", "localhost:9090"],
        [
            "provision",
            "--out",
            "/nonexistent",
            "--prometheus-url",
            "http://p:9090",
            "--alertmanager-url",
            "am",
        ],
    ],
)
def test_bad_url_flags_exit_2_naming_the_flag(argv, capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[-2]}" in err and "is not an http:// or https:// URL" in err
    assert not Path("/nonexistent").exists()


def test_pull_ignores_what_grafana_stamps_on_save(grafana) -> None:  # type: ignore[no-untyped-def]
    fake, url = grafana
    api = connect(url)
    built = build_all()
    push(api, built)
    for saved in fake.dashboards.values():
        for panel in saved["dashboard"]["panels"]:
            panel["pluginVersion"] = "11.6.0"
    assert pull(api, built)[0] == []


def test_lint_without_schemas_exits_2(monkeypatch, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NOVACRON_GRAFANA_SCHEMAS", str(tmp_path))
    assert main(["lint"]) == 2
    assert "NOVACRON_GRAFANA_SCHEMAS" in capsys.readouterr().err
    assert main(["lint", "--no-schema"]) == 0
