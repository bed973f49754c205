"""Admin access: a real `xds-server` with --admin-token, read over HTTP and with `xdsctl`."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess, run_xdsctl, script
from xds_server.admin_auth import is_loopback, valid_token
from xds_server.settings import SettingsError, load

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(60)
EXAMPLE = Path(__file__).parent.parent / "examples" / "registry.yaml"
TOKEN = "s3cr3t-Adm1n-t0ken"
Start = Callable[..., XdsServerProcess]


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], str]:
    """GET `url` (with `Authorization: Bearer token` if given): status, headers, body."""
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status), dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        (None, False),
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("fe80::1%eth0", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback(host: str | None, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_valid_token_never_quotes_it() -> None:
    assert valid_token(TOKEN) is None
    for bad in ("", "two words", "tab\there", "naïve"):
        why = valid_token(bad)
        assert why is not None and (not bad or bad not in why)


@pytest.fixture
def exposed(tmp_path: Path, xds_server_factory: Start) -> XdsServerProcess:
    """A server whose admin API listens on every interface, its token from a file (as a
    Kubernetes Secret is mounted: with a trailing newline). Probed on 127.0.0.1 only."""
    registry = tmp_path / "registry.yaml"
    registry.write_text(EXAMPLE.read_text())
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    return xds_server_factory(
        *("--file", str(registry)),
        *("--admin-address", f"0.0.0.0:{port}", "--admin-token-file", str(token_file)),
        admin_port=port,
    )


def test_token_guards_all_but_probes_and_metrics(exposed: XdsServerProcess) -> None:
    base = exposed.admin_url
    for path in ("/debug/proxies", "/debug/snapshot", "/debug/sources", "/debug/diff", "/"):
        status, headers, body = get(base + path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer "), path
        assert body.count("\n") == 1 and "XDSCTL_TOKEN" in body, body
        status, headers, body = get(base + path, "wrong-token")
        assert status == 401, path
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
        assert body == "401 Unauthorized: wrong bearer token\n"
    for path in ("/debug/proxies", "/debug/snapshot", "/debug/sources"):
        assert get(base + path, TOKEN)[0] == 200, path
    for path in ("/healthz", "/readyz", "/metrics"):
        assert get(base + path)[0] == 200, path
    exposed.stop()
    assert TOKEN not in exposed.log()


def test_xdsctl_sends_xdsctl_token(exposed: XdsServerProcess) -> None:
    url = exposed.admin_url
    ok = run_xdsctl("snapshot", "--type", "clusters", server=url, env={"XDSCTL_TOKEN": TOKEN})
    assert ok.returncode == 0, ok.stderr
    assert "clusters  web" in ok.stdout
    ok = run_xdsctl("--token", TOKEN, "proxies", server=url)
    assert ok.returncode == 0, ok.stderr
    denied = run_xdsctl("proxies", server=url, env={"XDSCTL_TOKEN": ""})
    assert (denied.returncode, denied.stdout) == (2, "")
    assert denied.stderr == (
        f"xdsctl: {url} requires a bearer token (HTTP 401): set XDSCTL_TOKEN (or --token)"
        " to the server's --admin-token\n"
    )
    wrong = run_xdsctl("proxies", server=url, env={"XDSCTL_TOKEN": "nope"})
    assert wrong.returncode == 2
    assert "rejected the token (HTTP 401)" in wrong.stderr and "nope" not in wrong.stderr


def test_a_token_on_loopback_is_required_too(tmp_path: Path, xds_server_factory: Start) -> None:
    server = xds_server_factory(env={"XDS_SERVER_ADMIN_TOKEN": TOKEN})
    assert get(server.admin_url + "/debug/proxies")[0] == 401
    assert get(server.admin_url + "/debug/proxies", TOKEN)[0] == 200
    assert get(server.admin_url + "/readyz")[0] == 200


def test_help_documents_the_token() -> None:
    out = subprocess.run(
        [script("xds-server"), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    assert "--admin-token TOKEN" in out and "--admin-token-file PATH" in out
    assert "XDSCTL_TOKEN" in out
    out = run_xdsctl("--help").stdout
    assert "--token" in out and "XDSCTL_TOKEN" in out


def test_a_bad_token_value_is_never_quoted(tmp_path: Path) -> None:
    cfg = tmp_path / "xds-server.yaml"
    cfg.write_text("admin_token: [s3cr3t-one, s3cr3t-two]\n")
    with pytest.raises(SettingsError) as err:
        load({}, environ={}, config=cfg)
    assert str(err.value).startswith(f"invalid admin_token from config file {cfg}: ")
    assert "s3cr3t" not in str(err.value)


def request(
    url: str, method: str = "GET", body: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """One request, redirects not followed: status, headers, body."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        conn.request(method, parts.path or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def test_a_browser_signs_in_with_a_cookie_that_is_not_the_token(
    exposed: XdsServerProcess,
) -> None:
    """A browser cannot send the bearer header: the status page offers a sign-in form; the
    right token sets an HttpOnly, SameSite=Strict cookie (an HMAC, not the token) that then
    opens the page and the API; a wrong token or a forged cookie does not."""
    base = exposed.admin_url
    html = {"Accept": "text/html"}
    status, headers, body = request(base + "/", headers=html)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer ")
    assert 'action="/login"' in body and 'type="password"' in body
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, body = request(base + "/login", "POST", "token=wrong-token", form)
    assert status == 401 and "Set-Cookie" not in headers and "Wrong token." in body
    status, headers, _ = request(base + "/login", "POST", f"token={TOKEN}", form)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
    assert TOKEN not in cookie and all(TOKEN not in v for v in headers.values())
    session = cookie.split(";", 1)[0]
    status, _, body = request(base + "/", headers={**html, "Cookie": session})
    assert status == 200 and "<html" in body
    assert request(base + "/debug/proxies", headers={"Cookie": session})[0] == 200
    name = session.split("=", 1)[0]
    for forged in ("0" * 64, TOKEN):  # a made-up session, and the token itself as cookie
        assert request(base + "/debug/proxies", headers={"Cookie": f"{name}={forged}"})[0] == 401
