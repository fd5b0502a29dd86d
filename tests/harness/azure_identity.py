"""A local Azure managed-identity endpoint, so a real exporter process authenticates to the Azure fake.

The exporter takes Azure credentials from azure-identity's default chain; with `IDENTITY_ENDPOINT` and
`IDENTITY_HEADER` in its environment, that chain asks the managed-identity endpoint (the App Service
protocol: `GET ?api-version=2019-08-01&resource=...` with an `X-IDENTITY-HEADER`) for a token. This serves
that endpoint on loopback and hands out the fake's token: no code path of the exporter is bypassed.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


class ManagedIdentityEndpoint:
    """Serves `token` to requests carrying the right identity header; `.env` is the client environment."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.header = secrets.token_hex(8)
        self.requests = 0
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self.url = f"http://127.0.0.1:{self._server.server_port}/msi/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def env(self) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header}

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        self.requests += 1
        if request.headers.get("X-IDENTITY-HEADER") != self.header or not request.args.get("resource"):
            response = Response('{"error": "invalid_request"}', status=400, content_type="application/json")
        else:
            body = {
                "access_token": self.token,
                "expires_on": str(int(time.time()) + 3600),
                "resource": request.args["resource"],
                "token_type": "Bearer",
            }
            response = Response(json.dumps(body), content_type="application/json")
        return response(environ, start_response)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ManagedIdentityEndpoint:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
