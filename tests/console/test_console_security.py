"""The console's security over real HTTP (uvicorn in the collector process, real sockets): every
route refuses the unauthenticated, sessions and CSRF, roles, the login rate limit, bearer keys,
/metrics, HTTPS beyond loopback. The browser tests (test_console_browser.py) drive the same pages."""

from __future__ import annotations

import json
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_proc import CollectorProc
from conftest import cli
from consolekit import PASSWORDS, Client, add_user, api_key, set_cookie
from starlette.routing import Route

from collector.console.app import build_app
from collector.storage import open_store

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CollectorProc]:
    c = CollectorProc(tmp_path_factory.mktemp("console"), "--http", "127.0.0.1:0")
    c.start()
    add_user(c.url, "ann", "admin")
    add_user(c.url, "vic", "viewer")
    yield c
    c.stop()


def app_routes() -> list[tuple[str, str]]:
    """Every (method, path) the console app serves, read from the app itself."""
    with open_store("sqlite:///:memory:") as store:
        app = build_app(store, health=lambda: {"status": "ok"}, metrics=lambda: (b"", "text/plain"))
    out = []
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{[^}]+\}", "x", route.path)
        for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
            out.append((method, path))
    return out


def test_every_route_refuses_the_unauthenticated(console: CollectorProc) -> None:
    routes = app_routes()
    paths = {p for _, p in routes}
    assert {"/", "/hosts", "/findings", "/policy", "/enrollment", "/api/findings", "/metrics"} <= paths
    client = Client(f"http://{console.http}")
    open_ = {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login"), ("GET", "/console.css")}
    for method, path in routes:
        if (method, path) in open_:
            continue
        status, headers, _ = client.request(path, {} if method == "POST" else None, method=method)
        if path.startswith("/api/") or path == "/metrics":
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        else:
            assert status == 303 and headers["Location"].startswith("/login?next="), (method, path, status)
    # Forged credentials are no better than none.
    status, _, _ = client.request("/api/fleet", headers={"Authorization": "Bearer umbra_00000000_forged"})
    assert status == 401
    client.jar.set_cookie(_cookie("umbra_session", "forged"))
    assert client.request("/")[0] == 303
    assert client.request("/healthz")[0] == 200


def _cookie(name: str, value: str) -> object:
    import http.cookiejar

    return http.cookiejar.Cookie(
        0, name, value, None, False, "127.0.0.1", False, False, "/", True, False, None, False, None, None, {}
    )


def test_login_sets_a_strict_session_cookie_and_logout_ends_it(console: CollectorProc) -> None:
    client = Client(f"http://{console.http}")
    token = client.csrf("/login")
    status, headers, _ = client.request(
        "/login", {"csrf": token, "username": "ann", "password": PASSWORDS["admin"], "next": "/hosts"}
    )
    assert status == 303 and headers["Location"] == "/hosts"
    cookie = set_cookie(headers, "umbra_session")
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=strict" in flags
    assert "secure" not in flags, "plain HTTP to a loopback name: Safari would drop a Secure cookie"
    status, headers, body = client.request("/")
    assert status == 200 and "ann (admin)" in body
    assert "script-src 'none'" in headers["Content-Security-Policy"]
    session = re.search(r"umbra_session=([^;]+)", cookie).group(1)  # type: ignore[union-attr]
    assert session not in json.dumps(console.query("SELECT * FROM sessions")), "only its hash is stored"
    # Logging out needs the form's CSRF token; without it nothing happens.
    assert client.request("/logout", {"csrf": "wrong"})[0] == 403
    assert client.request("/")[0] == 200
    status, headers, _ = client.request("/logout", {"csrf": client.csrf("/")})
    assert status == 303 and headers["Location"] == "/login"
    assert re.search(r"max-age=0|expires=thu, 01 jan 1970", set_cookie(headers, "umbra_session").lower())
    again = Client(f"http://{console.http}")  # the old cookie, replayed, opens nothing
    again.jar.set_cookie(_cookie("umbra_session", session))
    assert again.request("/")[0] == 303


def test_cookies_are_secure_unless_the_browser_speaks_http_to_a_loopback_name(console: CollectorProc) -> None:
    """Behind a TLS proxy that forwards plain HTTP to the console on loopback, the browser's Host is
    the public name: the cookies must carry Secure there (only loopback names go without)."""
    client = Client(f"http://{console.http}")
    port = console.http.rsplit(":", 1)[1]
    for host, secure in (
        (f"127.0.0.1:{port}", False), (f"localhost:{port}", False), (f"[::1]:{port}", False),
        ("console.example.com", True), (f"10.0.0.5:{port}", True),
    ):  # fmt: skip
        status, headers, body = client.request("/login", headers={"Host": host})
        assert status == 200
        assert ("; secure" in set_cookie(headers, "umbra_login").lower()) is secure, host
        token = re.search(r'name="csrf" value="([^"]+)"', body).group(1)  # type: ignore[union-attr]
        status, headers, _ = client.request(
            "/login",
            {"csrf": token, "username": "vic", "password": PASSWORDS["viewer"]},
            headers={"Host": host, "Cookie": f"umbra_login={token}"},
        )
        assert status == 303, host
        assert ("; secure" in set_cookie(headers, "umbra_session").lower()) is secure, host


def test_login_needs_its_csrf_token_and_never_redirects_off_site(console: CollectorProc) -> None:
    client = Client(f"http://{console.http}")
    client.csrf("/login")
    status, _, _ = client.request(
        "/login", {"csrf": "guess", "username": "ann", "password": PASSWORDS["admin"]}
    )
    assert status == 403
    token = client.csrf("/login")
    status, headers, _ = client.request(
        "/login",
        {"csrf": token, "username": "ann", "password": PASSWORDS["admin"], "next": "//evil.example/"},
    )
    assert status == 303 and headers["Location"] == "/"


def test_roles_are_enforced_on_the_server(console: CollectorProc) -> None:
    viewer = Client(f"http://{console.http}")
    assert viewer.login("vic", PASSWORDS["viewer"]) == 303
    token = viewer.csrf("/policy")
    status, _, body = viewer.request("/policy", {"csrf": token, "approved_runtimes": "ollama"})
    assert status == 403 and "admin" in body
    assert viewer.request("/enrollment")[0] == 403
    assert viewer.request("/enrollment", {"csrf": token, "action": "mint"})[0] == 403
    assert console.cli_json("policy", "show") == {"policy": None}, "nothing was stored"
    admin = Client(f"http://{console.http}")
    assert admin.login("ann", PASSWORDS["admin"]) == 303
    assert admin.request("/policy", {"csrf": "not-the-token", "approved_runtimes": "ollama"})[0] == 403
    status, _, _ = admin.request(
        "/policy",
        {"csrf": admin.csrf("/policy"), "approved_runtimes": "ollama\nvllm", "min_confidence": "0.4"},
    )
    assert status == 303
    shown = console.cli_json("policy", "show")["policy"]
    assert shown["approved_runtimes"] == ["ollama", "vllm"] and shown["thresholds"] == {"min_confidence": 0.4}
    status, _, body = admin.request(
        "/policy", {"csrf": admin.csrf("/policy"), "approved_model_hashes": "abc"}
    )
    assert status == 400 and "not a SHA-256" in body
    status, _, body = admin.request("/enrollment", {"csrf": admin.csrf("/enrollment"), "action": "mint"})
    assert status == 200
    token_text = re.search(r'id="new-token">([^<]+)<', body).group(1)  # type: ignore[union-attr]
    assert len(console.cli_json("token", "list")["tokens"]) == 1 and "." in token_text


def test_bearer_keys_read_the_api_and_metrics_needs_one(console: CollectorProc) -> None:
    client = Client(f"http://{console.http}")
    key = api_key(console.url, "viewer")
    auth = {"Authorization": f"Bearer {key}"}
    status, _, body = client.request("/api/fleet", headers=auth)
    assert status == 200 and "fleet" in json.loads(body)
    assert client.request("/metrics")[0] == 401
    assert client.request("/metrics", headers=auth)[0] == 200
    key_id = key.split("_")[1]
    assert (
        subprocess.run(
            [cli("umbra-collector"), "apikey", "revoke", key_id, "--db", console.url],
            capture_output=True,
            timeout=60,
        ).returncode
        == 0
    )
    assert client.request("/api/fleet", headers=auth)[0] == 401, "a revoked key opens nothing"


def test_login_is_rate_limited(console: CollectorProc) -> None:
    client = Client(f"http://{console.http}")
    statuses = []
    for _ in range(6):
        token = client.csrf("/login")
        statuses.append(
            client.request("/login", {"csrf": token, "username": "vic", "password": "wrong-guess"})[0]
        )
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    token = client.csrf("/login")
    status, _, _ = client.request(
        "/login", {"csrf": token, "username": "vic", "password": PASSWORDS["viewer"]}
    )
    assert status == 429, "even the right password waits out the limit"


def test_a_forged_forwarded_for_header_does_not_escape_the_login_limit(tmp_path: Path) -> None:
    """The console speaks to browsers directly: a client on loopback naming another address in
    X-Forwarded-For (and a new user name each time) is still one address to the rate limit."""
    c = CollectorProc(tmp_path, "--http", "127.0.0.1:0")
    c.start()
    try:
        client = Client(f"http://{c.http}")
        statuses = []
        for i in range(6):
            token = client.csrf("/login")
            form = {"csrf": token, "username": f"guess{i}", "password": "wrong-guess"}
            statuses.append(client.request("/login", form, {"X-Forwarded-For": f"203.0.113.{i}"})[0])
        assert statuses == [401] * 5 + [429]
    finally:
        c.stop()


def test_metrics_public_and_https_beyond_loopback(tmp_path: Path) -> None:
    c = CollectorProc(tmp_path, "--http", "0.0.0.0:0", "--metrics-public")
    c.start()
    try:
        port = c.http.rsplit(":", 1)[1]
        ctx = ssl.create_default_context(cafile=str(c.pki / "ca.crt"))
        ctx.check_hostname = False  # the certificate names umbra-collector, not 127.0.0.1
        client = Client(f"https://127.0.0.1:{port}", context=ctx)
        assert client.request("/metrics")[0] == 200, "--metrics-public opens /metrics"
        assert client.request("/api/fleet")[0] == 401, "and nothing else"
        add_user(c.url, "ann", "admin")
        token = client.csrf("/login")
        status, headers, _ = client.request(
            "/login", {"csrf": token, "username": "ann", "password": PASSWORDS["admin"]}
        )
        assert status == 303 and "; secure" in set_cookie(headers, "umbra_session").lower()
        assert headers["Strict-Transport-Security"].startswith("max-age=")
        assert client.request("/")[0] == 200
        plain = Client(f"http://127.0.0.1:{port}")
        with pytest.raises(Exception):  # noqa: B017 - plain HTTP gets no answer from a TLS port
            plain.request("/healthz")
    finally:
        c.stop()
