"""Metrics API units: PromQL scoping (with a fuzz test), config validation, JWT auth, cache, rate limits."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import jwt
import promql_parser as pp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer

from exporters.common.config import ConfigError
from metrics_api import formats
from metrics_api.auth import Authenticator, AuthError, ForbiddenError
from metrics_api.config import build_config
from metrics_api.promql import (
    Policy,
    QueryError,
    ScopeError,
    default_selector,
    render,
    scope_query,
    scope_selector,
    selectors,
    tenant_matcher,
)
from metrics_api.protect import RateLimiter, ResultCache

ACME = Policy(enforced=(tenant_matcher("tenant", ["acme"]),), denied_names=("novacron_billing_.*",))
MULTI = Policy(enforced=(tenant_matcher("tenant", ["b.c", "acme"]),), max_range_seconds=86400)
# vm_id mode: a long alternation of ids (above the placeholder threshold), with regex metacharacters.
LONG = Policy(enforced=(("vm_id", "=~", "|".join(f"vm\\.{i:03d}" for i in range(40))),))


def _matchers(sel: pp.VectorSelector) -> set[tuple[str, str, str]]:
    ops = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}
    return {(m.name, ops[str(m.op)], m.value) for m in sel.matchers.matchers}


def assert_scoped(text: str, policy: Policy) -> None:
    for sel in selectors(pp.parse(text)):
        assert set(policy.enforced) <= _matchers(sel), text


# -- scoping ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("up", 'up{tenant="acme"}'),
        ('rate(x{a="b"}[5m])', 'rate(x{a="b",tenant="acme"}[5m])'),
        ("a or b", 'a{tenant="acme"} or b{tenant="acme"}'),
        (
            "sum by (vm_id) (x) / on(vm_id) group_left(host) y",
            'sum by (vm_id) (x{tenant="acme"}) / on(vm_id) group_left(host) y{tenant="acme"}',
        ),
        ("max_over_time(x[5m:1m] offset 1h)", 'max_over_time(x{tenant="acme"}[5m:1m] offset 1h)'),
        ("x[5m:] @ end()", 'x{tenant="acme"}[5m:] @ end()'),
        ("-a ^ 2", '-(a{tenant="acme"} ^ 2.0)'),
        ("vector(1) + time()", "vector(1.0) + time()"),
        ('{__name__=~".+"}', '{__name__=~".+",tenant="acme",__name__!~"(?:novacron_billing_.*)"}'),
    ],
)
def test_scope_query_renders_every_selector_scoped(query: str, expected: str) -> None:
    assert scope_query(query, ACME) == expected


def test_multi_tenant_regex_is_escaped_and_sorted() -> None:
    assert scope_query("up", MULTI) == 'up{tenant=~"acme|b\\\\.c"}'


def test_quotes_in_values_cannot_break_out() -> None:
    # A value holding `"} or other{x="` must stay one value, not become a second, unscoped selector.
    hostile = 'foo{a="\\"} or bar{b=\\""}'
    scoped = scope_query(hostile, ACME)
    assert len(selectors(pp.parse(scoped))) == 1
    assert_scoped(scoped, ACME)


@pytest.mark.parametrize(
    ("query", "error", "reason"),
    [
        ("novacron_billing_cost", ScopeError, "restricted"),
        ('{__name__="novacron_billing_cost"}[5m]', ScopeError, "restricted"),
        ("sum(", QueryError, "invalid PromQL"),
        ('{a="1" or b="2"}', QueryError, "'or'"),
    ],
)
def test_refusals(query: str, error: type[Exception], reason: str) -> None:
    with pytest.raises(error, match=reason):
        scope_query(query, ACME)


@pytest.mark.parametrize(
    "query", ["rate(x[2d])", "max_over_time(x[2d:5m])", "x offset 3d", "x[5m:] offset 2d"]
)
def test_range_limits(query: str) -> None:
    with pytest.raises(QueryError, match="exceeds the limit"):
        scope_query(query, MULTI)


def test_selector_and_default_selector() -> None:
    assert scope_selector('up{job="x"}', ACME) == 'up{job="x",tenant="acme"}'
    with pytest.raises(QueryError, match="series selector"):
        scope_selector("sum(up)", ACME)
    assert default_selector(Policy()) is None
    assert default_selector(MULTI) == '{tenant=~"acme|b\\\\.c"}'


_CORPUS = st.sampled_from(
    [
        "up",
        'x{a="b"}',
        'x{a=~"\\\\d+"}',
        "rate(x[5m])",
        "sum by (a) (x)",
        "a / on(b) group_left(c) d",
        "x offset -5m",
        "x @ 100",
        "topk(3, x)",
        'count_values("v", x)',
        "-x",
        "x > bool 1",
        "x[5m:1m]",
        'label_replace(x, "d", "$1", "s", "(.*)")',
        "quantile(0.9, x)",
        "(a + b) * c",
        "a unless b",
        "1 + 2",
        'x{a="\\n\\"\\\\"}',
        "abs(x) @ start()",
        "sum without () (x)",
        "histogram_quantile(0.9, rate(b[5m]))",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(st.one_of(_CORPUS, st.text(max_size=8)), min_size=1, max_size=4),
    joiners=st.lists(
        st.sampled_from([" or ", " + ", " and on() ", "(", ")", "[5m:]", "", " @ ", "{", '"']),
        min_size=4,
        max_size=4,
    ),
)
def test_fuzz_scope_is_total_and_sound(parts: list[str], joiners: list[str]) -> None:
    """Whatever the text, the result is a clear refusal or a query whose every selector is scoped."""
    query = "".join(p + j for p, j in zip(parts, joiners, strict=False))
    for policy in (MULTI, LONG):
        try:
            scoped = scope_query(query, policy)
        except (QueryError, ScopeError):
            continue
        assert_scoped(scoped, policy)
        assert render(pp.parse(scoped)) == scoped


def test_long_matchers_are_verified_as_placeholders() -> None:
    from metrics_api import promql

    query = 'a{x="1"} or rate(b[5m]) or c{y=~"\\\\d"}'
    scoped = scope_query(query, LONG)
    assert_scoped(scoped, LONG)
    assert len(selectors(pp.parse(scoped))) == len(selectors(pp.parse(query)))
    assert promql._PLACEHOLDER not in scoped
    with pytest.raises(ScopeError):
        scope_query(f'a{{x="{promql._PLACEHOLDER}-0"}}', LONG)


# -- config -------------------------------------------------------------------------------------------------

GOOD_SHA = hashlib.sha256(b"a-long-enough-token-123").hexdigest()


def _config(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "prometheus": {"url": "http://127.0.0.1:9090"},
        "tokens": [{"name": "t", "role": "viewer", "tenants": ["acme"], "sha256": GOOD_SHA}],
    }
    base.update(overrides)
    return base


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"prometheus": {"url": "localhost:9090"}}, "prometheus.url"),
        ({"promethus": {}}, "promethus"),
        ({"tokens": []}, "tokens"),
        ({"tokens": [{"name": "t", "role": "root", "sha256": GOOD_SHA}]}, "tokens[0].role"),
        ({"tokens": [{"name": "t", "role": "viewer", "sha256": GOOD_SHA}]}, "tokens[0].tenants"),
        (
            {"tokens": [{"name": "t", "role": "viewer", "tenants": ['a"b'], "sha256": GOOD_SHA}]},
            "tokens[0].tenants",
        ),
        ({"tokens": [{"name": "t", "role": "admin", "sha256": "abc"}]}, "tokens[0].sha256"),
        (
            {"tokens": [{"name": "t", "role": "admin", "token_env": "NOVACRON_TEST_UNSET_VAR"}]},
            "tokens[0].token_env",
        ),
        ({"limits": {"max_series": 0}}, "limits.max_series"),
        ({"limits": {"query_timeout": "soon"}}, "limits.query_timeout"),
        ({"sensitive_metrics": [{"match": "(", "roles": ["admin"]}]}, "sensitive_metrics[0].match"),
        ({"oidc": {"audience": "x"}}, "oidc"),
        ({"oidc": {"public_key_file": "/nonexistent.pem"}}, "oidc.public_key_file"),
        ({"tenancy": {"label": "bad-label"}}, "tenancy.label"),
        ({"tenancy": {"mode": "magic"}}, "tenancy.mode"),
        ({"rate_limit": {"burst": -1}}, "rate_limit.burst"),
    ],
)
def test_config_errors_name_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config(_config(**overrides))
    assert err.value.key == key


def test_token_from_env_is_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOVACRON_TEST_TOKEN", "a-long-enough-token-123")
    cfg = build_config(_config(tokens=[{"name": "env", "role": "admin", "token_env": "NOVACRON_TEST_TOKEN"}]))
    assert cfg.tokens[0].sha256 == bytes.fromhex(GOOD_SHA)
    principal = Authenticator(cfg).authenticate("Bearer a-long-enough-token-123")
    assert (principal.name, principal.all_tenants) == ("env", True)
    with pytest.raises(AuthError):
        Authenticator(cfg).authenticate("Bearer a-long-enough-token-124")
    with pytest.raises(AuthError):
        Authenticator(cfg).authenticate("Basic dXNlcjpwYXNz")


# -- JWT -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _jwt(key: Any, alg: str = "RS256", **claims: Any) -> str:
    body = {
        "sub": "alice",
        "iss": "https://idp.test",
        "aud": "novacron",
        "exp": time.time() + 300,
        "novacron_role": "viewer",
        "novacron_tenants": ["acme", "globex"],
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": "k1"}
    )


def _oidc_auth(tmp_path: Path, key: rsa.RSAPrivateKey) -> Authenticator:
    pem = tmp_path / "idp.pem"
    pem.write_text(_pem(key))
    cfg = build_config(
        _config(
            oidc={
                "issuer": "https://idp.test",
                "audience": "novacron",
                "public_key_file": str(pem),
                "algorithms": ["RS256"],
            }
        )
    )
    return Authenticator(cfg)


def test_jwt_with_static_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = _oidc_auth(tmp_path, rsa_key)
    principal = auth.authenticate(f"Bearer {_jwt(rsa_key)}")
    assert (principal.name, principal.role, principal.tenants) == ("jwt:alice", "viewer", ("acme", "globex"))
    assert auth.authenticate(f"Bearer {_jwt(rsa_key, novacron_tenants='acme initech')}").tenants == (
        "acme",
        "initech",
    )


@pytest.mark.parametrize(
    ("claims", "error"),
    [
        ({"exp": time.time() - 3600}, AuthError),
        ({"aud": "someone-else"}, AuthError),
        ({"iss": "https://evil.test"}, AuthError),
        ({"novacron_role": "root"}, ForbiddenError),
        ({"novacron_tenants": None}, ForbiddenError),
        ({"novacron_tenants": ['a"b']}, ForbiddenError),
    ],
)
def test_jwt_refusals(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, claims: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        _oidc_auth(tmp_path, rsa_key).authenticate(f"Bearer {_jwt(rsa_key, **claims)}")


def test_jwt_wrong_key_and_algorithm_confusion(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = _oidc_auth(tmp_path, rsa_key)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthError):
        auth.authenticate(f"Bearer {_jwt(other)}")
    # HS256 keyed with the public key text: the classic confusion attack must fail.
    forged = jwt.encode(
        {
            "sub": "x",
            "exp": time.time() + 60,
            "aud": "novacron",
            "iss": "https://idp.test",
            "novacron_role": "admin",
        },
        "not-the-key-but-any-hmac-secret-of-length",
        algorithm="HS256",
    )
    with pytest.raises(AuthError):
        auth.authenticate(f"Bearer {forged}")


def test_jwt_with_jwks_url(httpserver: HTTPServer, rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    httpserver.expect_request("/jwks").respond_with_json({"keys": [{**jwk, "kid": "k1", "use": "sig"}]})
    cfg = build_config(
        _config(
            oidc={
                "jwks_url": httpserver.url_for("/jwks"),
                "audience": "novacron",
                "role_claim": "role",
                "default_role": "admin",
            }
        )
    )
    principal = Authenticator(cfg).authenticate(f"Bearer {_jwt(rsa_key, novacron_role=None)}")
    assert principal.role == "admin" and principal.all_tenants


# -- cache, rate limits, formats -----------------------------------------------------------------------------


def test_cache_ttl_and_lru() -> None:
    now = [0.0]
    cache = ResultCache(10, 2, clock=lambda: now[0])
    cache.put(("a",), 1)
    cache.put(("b",), 2)
    assert cache.get(("a",)) == 1
    cache.put(("c",), 3)  # evicts b, the least recently used
    assert cache.get(("b",)) is None and cache.get(("a",)) == 1
    now[0] = 11
    assert cache.get(("a",)) is None
    assert ResultCache(0, 10).get(("a",)) is None


def test_rate_limiter_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(2.0, 2, clock=lambda: now[0])
    assert [limiter.acquire("t") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("t") == pytest.approx(0.5)
    assert limiter.acquire("other") == 0.0
    now[0] = 0.5
    assert limiter.acquire("t") == 0.0


@pytest.mark.parametrize(
    ("fmt", "accept", "expected"),
    [
        (None, None, "json"),
        ("csv", "application/json", "csv"),
        (None, "text/csv", "csv"),
        (None, "text/plain;version=0.0.4", "exposition"),
        (None, "application/openmetrics-text", "exposition"),
        ("text", None, "exposition"),
        (None, "image/png, */*;q=0.1", "json"),
    ],
)
def test_negotiate(fmt: str | None, accept: str | None, expected: str) -> None:
    assert formats.negotiate(fmt, accept) == expected


def test_exposition_escapes_and_names() -> None:
    data = {
        "resultType": "vector",
        "result": [
            {"metric": {"a": 'x"y\\z\nw'}, "value": [1.5, "NaN"]},
            {"metric": {"__name__": "m", "b": "1"}, "value": [2, "+Inf"]},
        ],
    }
    text = formats.query_exposition(data)
    assert 'novacron_query_result{a="x\\"y\\\\z\\nw"} NaN 1500' in text
    assert 'm{b="1"} +Inf 2000' in text
    with pytest.raises(formats.NotAcceptable):
        formats.query_exposition({"resultType": "string", "result": [1, "s"]})


def test_deploy_example_config_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    data = yaml.safe_load((Path(__file__).parent.parent / "deploy/metrics-api/metrics-api.yml").read_text())
    monkeypatch.setenv("NOVACRON_METRICS_API_NOC_TOKEN", "noc-token-0123456789abcdef")
    token_file = tmp_path / "admin.token"
    token_file.write_text("admin-token-0123456789abcdef\n")
    data["tokens"][2]["token_file"] = str(token_file)
    data["audit"]["file"] = str(tmp_path / "audit.jsonl")
    cfg = build_config(data)
    assert cfg.tenancy_mode == "vm_id" and len(cfg.tokens) == 3 and cfg.oidc is None
    assert Authenticator(cfg).authenticate("Bearer admin-token-0123456789abcdef").role == "admin"


def test_upstream_retries_a_connection_closed_while_idle() -> None:
    """A kept-alive connection the server dropped is replaced transparently (the read is retried once)."""
    import socket
    import threading

    from metrics_api.upstream import Prometheus

    listener = socket.create_server(("127.0.0.1", 0))
    answer = b'{"status":"success","data":{"resultType":"scalar","result":[1,"1"]}}'

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(answer)).encode()
                + b"\r\n\r\n"
                + answer
            )
            conn.close()  # keep-alive announced (HTTP/1.1) but the server closes: the next use finds it dead

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = Prometheus(f"http://127.0.0.1:{listener.getsockname()[1]}", 5)
    assert client.call("/api/v1/query", [("query", "1")])["result"] == [1, "1"]
    assert client.call("/api/v1/query", [("query", "1")])["result"] == [1, "1"]
    thread.join(5)
    listener.close()


def test_rate_limiter_forgets_refilled_buckets() -> None:
    now = [0.0]
    limiter = RateLimiter(1.0, 1, clock=lambda: now[0])
    limiter.max_principals = 3
    for who in ("a", "b", "c"):
        assert limiter.acquire(who) == 0.0
    assert limiter.acquire("a") > 0  # still limited
    now[0] = 5.0  # every bucket has refilled
    assert limiter.acquire("d") == 0.0
    assert len(limiter._buckets) == 1


def test_large_results_are_not_cached() -> None:
    from metrics_api.app import CACHE_MAX_SAMPLES, _cacheable

    small = {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"]] * 10}]}
    big = {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"]] * (CACHE_MAX_SAMPLES + 1)}]}
    assert _cacheable(small) and not _cacheable(big) and _cacheable(["a", "b"])


def test_per_token_rate_limit_overrides_the_default() -> None:
    cfg = build_config(
        _config(
            tokens=[
                {
                    "name": "t",
                    "role": "viewer",
                    "tenants": ["acme"],
                    "sha256": GOOD_SHA,
                    "rate_limit": {"requests_per_second": 1, "burst": 1},
                },
            ]
        )
    )
    principal = Authenticator(cfg).authenticate("Bearer a-long-enough-token-123")
    assert principal.rate_limit is not None and principal.rate_limit.burst == 1
    limiter = RateLimiter(cfg.rate_limit.requests_per_second, cfg.rate_limit.burst, clock=lambda: 0.0)
    assert limiter.acquire("t", 1, 1) == 0.0 and limiter.acquire("t", 1, 1) == pytest.approx(1.0)
    with pytest.raises(ConfigError) as err:
        build_config(
            _config(tokens=[{"name": "t", "role": "admin", "sha256": GOOD_SHA, "rate_limit": {"burst": 0}}])
        )
    assert err.value.key == "tokens[0].rate_limit.burst"


def test_write_demo_config(tmp_path: Path) -> None:
    import stat

    from metrics_api.config import load_config, write_demo_config

    path = write_demo_config(tmp_path / "api", "http://127.0.0.1:9090", ("acme", "globex"))
    cfg = load_config(str(path))
    assert [t.name for t in cfg.tokens] == ["admin", "tenant-acme", "tenant-globex"]
    token = (tmp_path / "api" / "tenant-acme.token").read_text().strip()
    assert token not in path.read_text()
    assert stat.S_IMODE((tmp_path / "api" / "admin.token").stat().st_mode) == 0o600
    assert Authenticator(cfg).authenticate(f"Bearer {token}").tenants == ("acme",)
    write_demo_config(tmp_path / "api", "http://127.0.0.1:9090", ("acme",))  # tokens survive a rewrite
    assert (tmp_path / "api" / "tenant-acme.token").read_text().strip() == token


@pytest.mark.parametrize(
    ("given", "promql"), [("5m", "300s"), (90, "90s"), ("1.5m", "90s"), ("1h30m", "5400s")]
)
def test_rate_interval_is_spelled_as_promql(given: object, promql: str) -> None:
    """It goes into queries verbatim: whatever the config says, the query gets a duration PromQL accepts."""
    assert build_config(_config(aggregation={"rate_interval": given})).rate_interval == promql
