"""The bridge's server-rendered web UI: sign-in, filters, ack and notes through forms (CSRF), rendered in
headless Debian Chromium with a screenshot kept under test-artifacts/."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import requests

from alert_bridge.testing import ADMIN_TOKEN, alert, base_config, inprocess_bridge, payload, ui_sign_in

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        "/usr/bin/chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium'}",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90)


def _seed(b) -> None:
    b.hook.post(
        "/webhook/alertmanager",
        payload(
            [
                alert("HostDown", host="kvm-01", severity="critical"),
                alert("DiskFull", host="kvm-02", severity="warning"),
                alert("VmCpuHigh", host="kvm-01", severity="warning", vm_id="c0ffee"),
            ],
            group_key="{}:{}",
        ),
    )


def test_ui_forms_ack_and_note_with_csrf(tmp_path):
    with inprocess_bridge(base_config(), f"sqlite:///{tmp_path / 'b.db'}") as b:
        _seed(b)
        browser = requests.Session()
        assert browser.get(f"{b.url}/ui", allow_redirects=False).status_code == 302  # not signed in
        assert ui_sign_in(browser, b.url, "wrong").status_code == 401
        page = ui_sign_in(browser, b.url, ADMIN_TOKEN)
        assert page.status_code == 200 and "HostDown" in page.text and "DiskFull" in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        host_down = next(a for a in b.admin.alerts() if a["alertname"] == "HostDown")

        # No CSRF token: refused, nothing changes.
        resp = browser.post(f"{b.url}/ui/alerts/{host_down['id']}/ack", data={"text": "x"})
        assert resp.status_code == 400
        assert b.admin.get(f"/api/v1/alerts/{host_down['id']}").json()["state"] == "firing"

        browser.post(f"{b.url}/ui/alerts/{host_down['id']}/ack", data={"csrf": csrf, "text": "on it"})
        browser.post(
            f"{b.url}/ui/alerts/{host_down['id']}/note", data={"csrf": csrf, "text": "<script>x</script>"}
        )
        detail = browser.get(f"{b.url}/ui/alerts/{host_down['id']}").text
        assert "acknowledged" in detail and "on it" in detail
        assert "&lt;script&gt;x&lt;/script&gt;" in detail and "<script>x</script>" not in detail  # escaped
        filtered = browser.get(f"{b.url}/ui", params={"state": "firing", "label": "host=kvm-02"}).text
        alerts_table = filtered.split('id="incidents"')[0]
        assert "DiskFull" in alerts_table and "HostDown" not in alerts_table


def test_ui_login_and_logout_need_the_form_token(tmp_path):
    """Another site can neither sign a user in under its own token nor sign them out (login/logout CSRF)."""
    with inprocess_bridge(base_config(), f"sqlite:///{tmp_path / 'b.db'}", worker=False) as b:
        forged = requests.Session()  # a cross-site post: no form token from this session's login page
        resp = forged.post(f"{b.url}/ui/login", data={"token": ADMIN_TOKEN}, allow_redirects=False)
        assert resp.status_code == 400
        assert forged.get(f"{b.url}/ui", allow_redirects=False).status_code == 302  # still signed out

        browser = requests.Session()
        page = ui_sign_in(browser, b.url, ADMIN_TOKEN)
        assert page.status_code == 200 and "Sign out" in page.text
        assert "SameSite=Lax" in page.history[0].headers["Set-Cookie"]
        assert browser.post(f"{b.url}/ui/logout", allow_redirects=False).status_code == 400
        assert browser.get(f"{b.url}/ui", allow_redirects=False).status_code == 200  # still signed in
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        assert (
            browser.post(f"{b.url}/ui/logout", data={"csrf": csrf}, allow_redirects=False).status_code == 302
        )
        assert browser.get(f"{b.url}/ui", allow_redirects=False).status_code == 302  # signed out


def test_ui_in_headless_chromium_with_screenshot(tmp_path):
    with inprocess_bridge(base_config(), f"sqlite:///{tmp_path / 'b.db'}") as b:
        _seed(b)
        first = b.admin.alerts()[-1]
        b.admin.post(f"/api/v1/alerts/{first['id']}/ack", {"reason": "investigating"})
        b.admin.post(f"/api/v1/alerts/{first['id']}/notes", {"text": "hypervisor rebooted"})
        link = b.admin.post("/api/v1/ui-links").json()["url"]

        dom = chromium(["--dump-dom", f"{b.url}{link}"], tmp_path)
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert 'id="alerts"' in dom.stdout and "VmCpuHigh" in dom.stdout and "acknowledged" in dom.stdout

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "bridge-ui-alerts.png"
        shot.unlink(missing_ok=True)
        link = b.admin.post("/api/v1/ui-links").json()["url"]
        result = chromium(["--window-size=1280,800", f"--screenshot={shot}", f"{b.url}{link}"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000

        # The alert page with its notes and history, in a second screenshot.
        detail_shot = ARTIFACTS / "bridge-ui-alert.png"
        detail_shot.unlink(missing_ok=True)  # an earlier run's screenshot must not pass for this one's
        link = b.admin.post("/api/v1/ui-links").json()["url"] + f"?next=/ui/alerts/{first['id']}"
        page = chromium(["--dump-dom", f"{b.url}{link}"], tmp_path)
        assert "hypervisor rebooted" in page.stdout and 'id="history"' in page.stdout
        link = b.admin.post("/api/v1/ui-links").json()["url"] + f"?next=/ui/alerts/{first['id']}"
        result = chromium(
            ["--window-size=1280,900", f"--screenshot={detail_shot}", f"{b.url}{link}"], tmp_path
        )
        assert result.returncode == 0, result.stderr[-2000:]
        detail = detail_shot.read_bytes()
        assert detail[:8] == b"\x89PNG\r\n\x1a\n" and len(detail) > 10_000
        # A sign-in link is short-lived and signed: a forged one is refused.
        assert requests.get(f"{b.url}/ui/link/forged", timeout=5).status_code == 401


def test_ui_form_redirects_only_to_ui_paths(tmp_path):
    with inprocess_bridge(base_config(), f"sqlite:///{tmp_path / 'b.db'}", worker=False) as b:
        _seed(b)
        browser = requests.Session()
        page = ui_sign_in(browser, b.url, ADMIN_TOKEN)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        alert_id = b.admin.alerts()[0]["id"]
        note = f"{b.url}/ui/alerts/{alert_id}/note"
        for away in ("https://evil.example/", "//evil.example/ui", "/\\evil.example"):
            resp = browser.post(note, data={"csrf": csrf, "text": "n", "back": away}, allow_redirects=False)
            assert resp.status_code == 302
            assert resp.headers["Location"].endswith(f"/ui/alerts/{alert_id}"), resp.headers["Location"]
        resp = browser.post(
            note, data={"csrf": csrf, "text": "n", "back": "/ui?state=firing"}, allow_redirects=False
        )
        assert resp.headers["Location"].endswith("/ui?state=firing")
