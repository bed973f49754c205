"""`/debug/explain` and `xdsctl explain` over a live admin server (tests/harness/
admin_state.py): the proxy's group snapshot is walked, its ACK state shown, bad queries
answered `where: what: why` with a 4xx, and repeated --header flags all reach the server."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.admin_state import GROUP, NACK_ERROR, AdminState, serving
from tests.harness.server_proc import run_xdsctl
from xds_server import types
from xds_server.status import ProxyStatus

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """An admin server over the harness state, its proxies connected."""
    state = AdminState()
    state.connect()
    with serving(state) as base:
        yield base
    state.disconnect()


def get(url: str, query: list[tuple[str, str]]) -> tuple[int, Any]:
    full = f"{url}/debug/explain?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(full, timeout=10) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_explain_a_node_walks_its_group_and_shows_its_ack_state(url: str) -> None:
    status, doc = get(url, [("node", "envoy-1"), ("host", "Anything.example"), ("path", "/x")])
    assert status == 200, doc
    assert (doc["node"], doc["group"]) == ("envoy-1", GROUP)
    assert doc["listener"]["name"] == "http"
    assert doc["virtual_host"] == {"name": "all", "matched_by": "default domain *"}
    assert [c["name"] for c in doc["clusters"]] == ["backend"]
    assert doc["clusters"][0]["endpoints"][0]["address"] == "10.0.0.1:8080"
    # envoy-1 rejected the listeners it was sent: explain says so, with Envoy's error.
    assert doc["sync"]["listeners"]["state"] == "NACKED"
    assert doc["sync"]["listeners"]["last_error"] == NACK_ERROR
    assert doc["sync"]["clusters"]["state"] == "SYNCED"


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ([("host", "web")], 400, "explain: query: give node=ID (or group=KEY)"),
        ([("node", "envoy-1")], 400, "explain: query: give host=H (Envoy) or target="),
        ([("node", "ghost"), ("host", "web")], 404,
         "explain: node 'ghost': no connected proxy with this node id"),
        ([("node", "envoy-1"), ("target", "xds:///web")], 400,
         "explain: group web: an Envoy proxy: give host=H, not a target"),
        ([("node", "envoy-1"), ("host", "web"), ("port", "9")], 404,
         "listener: port 9: the proxy has no listener there (http on 10000)"),
        ([("node", "envoy-1"), ("host", "web"), ("header", "novalue")], 400,
         "header: 'novalue': give K=V"),
        ([("group", "nope"), ("host", "web")], 400, "explain: group 'nope': unknown proxy group"),
    ],
)  # fmt: skip
def test_bad_queries_say_where_what_why(
    url: str, query: list[tuple[str, str]], status: int, error: str
) -> None:
    got, doc = get(url, query)
    assert (got, doc["error"][: len(error)]) == (status, error), doc


def test_xdsctl_explain_text_and_json(url: str) -> None:
    args = ("--server", url, "explain", "--node", "envoy-1", "--host", "web")
    text = run_xdsctl(*args, "--header", "a=1", "--header", "b=2")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"NODE envoy-1  GROUP {GROUP}  CLIENT envoy"
    assert lines[1] == "request: GET web/  a=1 b=2"
    assert "the proxy has ACKed this configuration: no" in lines[2]
    assert f"listeners NACKED: {NACK_ERROR}" in text.stdout
    assert "virtual host all: default domain *" in text.stdout
    assert "  cluster backend" in text.stdout
    as_json = run_xdsctl(*args, "--header", "a=1", "--header", "b=2", "-o", "json")
    assert json.loads(as_json.stdout)["request"]["headers"] == {"a": "1", "b": "2"}
    bad = run_xdsctl("--server", url, "explain", "--node", "ghost", "--host", "web", check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "xdsctl: explain: node 'ghost': no connected proxy with this node id"
    )


def test_a_node_with_several_streams_reports_each_type_from_the_stream_carrying_it() -> None:
    """Envoy without ADS opens one stream per type: each type's ACK state comes from the
    newest stream that carries it, not only from the newest stream."""
    state = AdminState()
    rds = ProxyStatus(kind="rds-sotw", node_id="envoy-1")
    rds.group = GROUP
    routes = rds.type_status(types.ROUTE)
    routes.subscribed, routes.names = 1, frozenset({"local"})
    routes.sent_version = "0123456789abcdef"  # sent, not yet ACKed
    state.proxies.append(rds)
    state.connect()
    try:
        with serving(state) as base:
            status, doc = get(base, [("node", "envoy-1"), ("host", "web")])
    finally:
        state.disconnect()  # the connected-proxies gauge is process-wide
    assert status == 200, doc
    assert {t: s["state"] for t, s in doc["sync"].items()} == {
        "clusters": "SYNCED", "endpoints": "SYNCED", "listeners": "NACKED", "routes": "STALE"
    }  # fmt: skip
