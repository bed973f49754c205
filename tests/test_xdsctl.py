"""`xdsctl` as an operator runs it: a subprocess talking to a live admin server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import yaml

from tests.harness import admin_state
from tests.harness.admin_state import (
    GROUP,
    NACK_ERROR,
    OTHER,
    POLICIES,
    AdminState,
    serving,
)
from tests.harness.ports import free_port
from tests.harness.server_proc import run_xdsctl
from xds_server import types
from xds_server.admin import envoy_json

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def fx() -> Iterator[AdminState]:
    f = AdminState()
    f.connect()
    yield f
    f.disconnect()


@pytest.fixture(scope="module")
def url(fx: AdminState) -> Iterator[str]:
    with serving(fx) as base:
        yield base


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    proc = run_xdsctl(*args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return proc.stdout


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_snapshot_table(fx: AdminState, url: str) -> None:
    lines = rows(ok("--server", url, "snapshot"))
    assert lines[0][:2] == ["GROUP", GROUP]
    assert f"clusters={fx.version(types.CLUSTER)[:12]}" in lines[0]
    assert lines[1] == ["TYPE", "NAME", "VERSION"]
    backend = fx.snap.get(types.CLUSTER).resources["backend"]
    assert lines[2:] == [
        ["clusters", "api", fx.snap.get(types.CLUSTER).resources["api"].version[:12]],
        ["clusters", "backend", backend.version[:12]],
        ["endpoints", "api", fx.snap.get(types.ENDPOINT).resources["api"].version[:12]],
        ["endpoints", "backend", fx.snap.get(types.ENDPOINT).resources["backend"].version[:12]],
        ["listeners", "http", fx.snap.get(types.LISTENER).resources["http"].version[:12]],
        ["routes", "local", fx.snap.get(types.ROUTE).resources["local"].version[:12]],
    ]


def test_snapshot_json_and_yaml_carry_envoy_json(fx: AdminState, url: str) -> None:
    backend = fx.snap.get(types.CLUSTER).resources["backend"]
    for fmt, parse in (("json", json.loads), ("yaml", yaml.safe_load)):
        doc = parse(ok("--server", url, "snapshot", "--group", GROUP, "-o", fmt))
        assert doc["group"] == GROUP
        assert doc["versions"]["routes"] == fx.version(types.ROUTE)
        assert len(doc["resources"]) == 6
        item = doc["resources"][1]
        assert (item["type"], item["name"], item["version"]) == (
            "clusters",
            "backend",
            backend.version,
        )
        assert item["resource"] == envoy_json(backend)
        assert item["resource"]["@type"] == types.CLUSTER


def test_snapshot_type_filter_and_node(url: str) -> None:
    out = rows(ok("--server", url, "snapshot", "--type", "routes"))
    assert [r[:2] for r in out[2:]] == [["routes", "local"]]
    out = rows(ok("--server", url, "snapshot", "--node", "envoy-2"))
    assert out[0][:2] == ["GROUP", OTHER]
    assert [r[:2] for r in out[2:]] == [["clusters", "jobs"]]
    out = rows(ok("--server", url, "snapshot", "--node", "envoy-2", "--type", "listeners"))
    assert out[1] == ["no", "resources"]


def test_snapshot_errors(url: str) -> None:
    proc = run_xdsctl("--server", url, "snapshot", "--node", "ghost")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "xdsctl: no connected proxy with node id 'ghost'\n"
    proc = run_xdsctl("--server", url, "snapshot", "--group", "nope")
    assert proc.returncode == 2
    assert proc.stderr == "xdsctl: unknown proxy group 'nope'\n"
    proc = run_xdsctl("--server", url, "snapshot", "--node", "a", "--group", "b")
    assert proc.returncode == 2
    assert "--node and --group are mutually exclusive" in proc.stderr
    proc = run_xdsctl("--server", url, "snapshot", "--type", "secrets")
    assert proc.returncode == 2
    assert "Invalid value for '--type'" in proc.stderr


def test_proxies_table_shows_states_and_nack(url: str) -> None:
    lines = ok("--server", url, "proxies").splitlines()
    header = "NODE CLUSTER GROUP STREAM PEER CDS EDS LDS RDS".split()
    assert lines[0].split() == header
    assert lines[1].split() == [
        "envoy-1", "web-cluster", GROUP, "ads-sotw", "ipv4:127.0.0.1:40001",
        "SYNCED", "SYNCED", "NACKED", "NOT_SENT",
    ]  # fmt: skip
    assert lines[2].startswith("    LDS NACKED ")
    assert lines[2].endswith(NACK_ERROR)
    assert lines[3].split() == [
        "envoy-2", "batch-cluster", OTHER, "ads-delta", "ipv4:127.0.0.1:40002",
        "STALE", "NOT_SENT", "NOT_SENT", "NOT_SENT",
    ]  # fmt: skip
    assert len(lines) == 4
    # Columns line up under the header.
    col = lines[0].index("LDS")
    assert lines[1][col:].startswith("NACKED") and lines[3][col:].startswith("NOT_SENT")


def test_proxies_json_and_empty(url: str) -> None:
    doc = json.loads(ok("--server", url, "proxies", "-o", "json"))
    assert [p["node_id"] for p in doc] == ["envoy-1", "envoy-2"]
    assert doc[0]["types"]["listeners"]["last_error"] == NACK_ERROR
    fx2 = AdminState()  # nothing connected
    with serving(fx2) as other:
        assert ok("--server", other, "proxies") == "no proxies connected\n"


def test_sources(url: str) -> None:
    lines = rows(ok("--server", url, "sources"))
    header = ["NAME", "KIND", "STATE", "SYNCED", "STALE", "SERVICES", "REJECTED", "ERROR"]
    assert lines[0] == header
    assert lines[1] == ["consul", "consul", "SYNCED", "yes", "no", "2", "0", "-"]
    want = "k8s kubernetes STALE no yes 1 1 watch failed: connection reset".split()
    assert lines[2] == want
    assert json.loads(ok("--server", url, "sources", "-o", "json"))[1]["name"] == "k8s"


def test_sources_shows_a_hold_and_why(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    reason = "3 of 4 services would be removed at once (more than 50%); serving ..."
    holding = {**admin_state.SOURCES[0], "holding": True, "hold_reason": reason, "held_removals": 3}
    monkeypatch.setattr(admin_state, "SOURCES", [holding])
    lines = ok("--server", url, "sources").splitlines()
    assert lines[1].split()[:3] == ["consul", "consul", "HOLDING"], lines
    assert lines[2] == f"    HOLDING 3 removals: {reason}"


def test_policies_table_json_and_yaml(url: str) -> None:
    lines = ok("--server", url, "policies").splitlines()
    assert rows("\n".join(lines[:2])) == [
        ["KIND", "NAME", "STATE", "SERVICES", "ORIGIN"],
        ["DestinationRule", "default/web", "ACCEPTED", "web.default", "p.yaml:19:1"],
    ]
    assert lines[2].split() == [
        "VirtualService",
        "shop/api",
        "REJECTED",
        "api.shop,api2.shop",
        "p.yaml:30:1",
    ]
    # Each reason on its own line under its object.
    assert lines[3:] == [f"    {r}" for r in POLICIES[1]["reasons"]]  # type: ignore[union-attr]
    assert json.loads(ok("--server", url, "policies", "-o", "json")) == POLICIES
    assert yaml.safe_load(ok("--server", url, "policies", "-o", "yaml")) == POLICIES


def test_server_from_environment(url: str) -> None:
    out = ok("snapshot", "--type", "clusters", env={"XDSCTL_SERVER": url})
    assert rows(out)[0][:2] == ["GROUP", GROUP]
    # --server wins over the environment; a URL without a scheme is fine.
    out = ok("--server", url.removeprefix("http://"), "proxies", env={"XDSCTL_SERVER": "x:1"})
    assert out.startswith("NODE")


def test_unreachable_server_one_line_exit_2() -> None:
    port = free_port()  # nothing listens there
    server = f"http://127.0.0.1:{port}"
    for env in ({}, {"XDSCTL_SERVER": server}):
        args = () if env else ("--server", server)
        proc = run_xdsctl(*args, "proxies", env=env)
        assert proc.returncode == 2
        assert proc.stdout == ""
        assert proc.stderr == f"xdsctl: cannot reach xds-server at {server}: Connection refused\n"


def test_default_server_address() -> None:
    proc = run_xdsctl("--help")
    assert proc.returncode == 0
    assert "http://127.0.0.1:19000" in proc.stdout
    assert "XDSCTL_SERVER" in proc.stdout
