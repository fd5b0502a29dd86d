"""WSGI entry point for another WSGI server (for example `gunicorn -k gthread metrics_api.wsgi:app`).

The config path comes from NOVACRON_METRICS_API_CONFIG; an invalid config exits 2 naming the key, as the
command does. TLS then belongs to that server (or a proxy in front of it).
"""

from __future__ import annotations

import os

from exporters.common.config import ConfigError, exit_config_error
from metrics_api.app import create_app
from metrics_api.config import load_config

try:
    app = create_app(
        load_config(os.environ.get("NOVACRON_METRICS_API_CONFIG", "/etc/novacron/metrics-api.yml"))
    )
except ConfigError as err:
    exit_config_error("novacron-metrics-api (wsgi)", err)
