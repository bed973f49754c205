"""End-to-end: `xds-server --file` (a real subprocess) driving real Envoys.

The registry is a YAML file each test writes and edits; what a user sees is asserted:
real HTTP traffic through Envoy's listener (``--http-listener-port``, Host header =
service name), Envoy's admin API (``/config_dump``, ``/stats``), and `xdsctl` /
the server's admin API. Edits are written atomically (temp file + rename, as editors
do) and picked up within ``--file-interval 0.1``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.backends import HttpBackend, RequestLoop, http_get
from tests.harness.envoy import EnvoyProcess, bootstrap
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for
from tests.test_e2e_envoy import CDS_REJECTED, LDS_REJECTED, outcomes, runs, wait_for_status

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(90)

WAIT = 10.0  # generous but finite wait for anything Envoy or the server must do
NODE = "envoy-file"
TYPE_STATES = ("CDS", "EDS", "LDS", "RDS")

Endpoint = HttpBackend | dict[str, Any]


# --------------------------------------------------------------------------- helpers


def service(name: str, *endpoints: Endpoint, port: int = 80) -> dict[str, Any]:
    """A registry service with one http port; an HttpBackend is a healthy loopback endpoint."""
    return {
        "name": name,
        "ports": [{"port": port}],
        "endpoints": [
            {"address": "127.0.0.1", "port": ep.port} if isinstance(ep, HttpBackend) else ep
            for ep in endpoints
        ],
    }


def write(path: Path, content: str | list[dict[str, Any]]) -> None:
    """Replace the registry file atomically: YAML text, or the list of services."""
    text = content if isinstance(content, str) else yaml.safe_dump({"services": content})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Mesh:
    """An xds-server on a registry file, and the way to reach its Envoys' listener."""

    def __init__(self, server: XdsServerProcess, registry: Path, listener_port: int) -> None:
        self.server = server
        self.registry = registry
        self.listener_port = listener_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}/"

    def edit(self, content: str | list[dict[str, Any]]) -> None:
        write(self.registry, content)

    def source(self) -> dict[str, Any]:
        (file_source,) = self.server.get("/debug/sources")
        return dict(file_source)

    def proxy(self, node: str = NODE) -> dict[str, Any] | None:
        mine = [p for p in self.server.get("/debug/proxies") if p["node_id"] == node]
        return mine[0] if len(mine) == 1 else None

    def envoy(
        self,
        envoy_factory: Callable[..., EnvoyProcess],
        delta: bool = False,
        node: str = NODE,
        metadata: dict[str, Any] | None = None,
    ) -> EnvoyProcess:
        boot = bootstrap(self.server.xds_port, free_port(), node, delta=delta, metadata=metadata)
        return envoy_factory(boot, name=node, wait="ready", timeout=WAIT)


@pytest.fixture
def mesh_factory(
    tmp_path: Path, xds_server_factory: Callable[..., XdsServerProcess]
) -> Callable[[list[dict[str, Any]]], Mesh]:
    """``start(services) -> Mesh``: the registry written, xds-server started on it."""

    def start(services: list[dict[str, Any]]) -> Mesh:
        registry = tmp_path / "registry.yaml"
        write(registry, services)
        port = free_port()
        server = xds_server_factory(
            "--file", str(registry), "--file-interval", "0.1",
            "--http-listener-port", str(port),
        )  # fmt: skip
        return Mesh(server, registry, port)

    return start


def only(loop: RequestLoop, *bodies: str, n: int = 10) -> None:
    """Wait until the last ``n`` answers all come from ``bodies``, then check that the
    next 30 do too (round robin would have mixed in any other backend)."""
    want = set(bodies)
    wait_for(
        lambda: len(loop.last_bodies(n)) == n and set(loop.last_bodies(n)) <= want,
        WAIT,
        message=f"answers only from {sorted(want)}: {loop.last_bodies(n)}",
    )
    mark = loop.mark()
    loop.wait_for_requests(30, WAIT)
    seen = loop.snapshot(mark)
    assert seen.failed == 0 and set(seen.bodies) <= want, seen


def all_synced(mesh: Mesh, node: str = NODE) -> dict[str, Any] | None:
    proxy = mesh.proxy(node)
    states = {t: s["state"] for t, s in proxy["types"].items()} if proxy else {}
    return proxy if len(states) == 4 and set(states.values()) == {"SYNCED"} else None


def wait_synced(mesh: Mesh, node: str = NODE) -> dict[str, Any]:
    proxy: dict[str, Any] = wait_for(
        lambda: all_synced(mesh, node), WAIT, message=f"{node} not synced: {mesh.proxy(node)}"
    )
    return proxy


def xdsctl_table(mesh: Mesh, *args: str) -> list[list[str]]:
    """An `xdsctl` table's lines split into columns (cells hold no spaces here)."""
    return [line.split() for line in mesh.server.xdsctl(*args).stdout.splitlines()]


def proxy_row(mesh: Mesh, node: str) -> dict[str, str]:
    header, *rows = xdsctl_table(mesh, "proxies")
    (row,) = [r for r in rows if r[0] == node]
    return dict(zip(header, row, strict=True))


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_file_edits_move_real_traffic(
    delta: bool, mesh_factory, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1: HttpBackend = http_backend_factory("web-v1")
    v2: HttpBackend = http_backend_factory("web-v2")
    api: HttpBackend = http_backend_factory("api")
    new: HttpBackend = http_backend_factory("newsvc")
    mesh = mesh_factory([service("web", v1), service("api", api)])
    env = mesh.envoy(envoy_factory, delta)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    web.wait_for_body("web-v1", WAIT, since=0)
    api_loop: RequestLoop = request_loop_factory(mesh.url, "api")
    api_loop.wait_for_body("api", WAIT, since=0)

    # Add an endpoint: the new backend starts answering, beside the old one.
    mesh.edit([service("web", v1, v2), service("api", api)])
    web.wait_for_body("web-v2", WAIT)
    web.wait_for_body("web-v1", WAIT)

    # Health: an unhealthy endpoint gets no traffic; healthy again, it gets traffic.
    sick = {"address": "127.0.0.1", "port": v1.port, "health": "unhealthy"}
    mesh.edit([service("web", sick, v2), service("api", api)])
    only(web, "web-v2")
    mesh.edit([service("web", v1, v2), service("api", api)])
    web.wait_for_body("web-v1", WAIT)

    # Remove an endpoint: it stops answering.
    mesh.edit([service("web", v1), service("api", api)])
    only(web, "web-v1")
    assert env.endpoints("web.default:80") == [("127.0.0.1", v1.port)]

    # A new service: its host goes from 404 (no virtual host) to 200, nothing else.
    probe: RequestLoop = request_loop_factory(mesh.url, "newsvc")
    wait_for_status(probe, 404, since=0)
    mark = probe.mark()
    mesh.edit([service("web", v1), service("api", api), service("newsvc", new)])
    first_ok = probe.wait_for_body("newsvc", WAIT, since=mark)
    probe.wait_for_requests(20, WAIT)
    seen = outcomes(probe, mark)
    assert set(seen) <= {200, 404}, runs(seen)
    assert set(outcomes(probe, first_ok)) == {200}, runs(seen)

    # A removed service: 200 until 404, never a 503 (route to a missing cluster).
    mark = api_loop.mark()
    mesh.edit([service("web", v1), service("newsvc", new)])
    first_404 = wait_for_status(api_loop, 404, since=mark)
    api_loop.wait_for_requests(20, WAIT)
    seen = outcomes(api_loop, mark)
    assert set(seen) <= {200, 404}, runs(seen)
    assert set(outcomes(api_loop, first_404)) == {404}, runs(seen)
    wait_for(
        lambda: env.cluster_names(dynamic_only=True) == ["newsvc.default:80", "web.default:80"],
        WAIT,
        message=f"Envoy's clusters never followed: {env.cluster_names(dynamic_only=True)}",
    )

    summary = web.stop()
    assert summary.failed == 0, summary
    assert env.stat(CDS_REJECTED) == 0 and env.stat(LDS_REJECTED) == 0
    wait_synced(mesh)


# The faulty endpoint is on line 5 of each (the unclosed mapping's error surfaces on line 6).
SYNTAX_ERROR = """services:
  - name: web
    ports: [{{port: 80}}]
    endpoints:
      - {{address: 127.0.0.1, port: {port}
  - name: api
    ports: [{{port: 80}}]
"""
WRONG_TYPE = """services:
  - name: web
    ports: [{{port: 80}}]
    endpoints:
      - {{address: 127.0.0.1, port: "{port}"}}
"""


def test_invalid_file_keeps_traffic_on_last_good_state(
    mesh_factory, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1: HttpBackend = http_backend_factory("web-v1")
    v2: HttpBackend = http_backend_factory("web-v2")
    mesh = mesh_factory([service("web", v1)])
    env = mesh.envoy(envoy_factory)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    web.wait_for_body("web-v1", WAIT, since=0)
    path = re.escape(str(mesh.registry))

    for broken, error in [
        (SYNTAX_ERROR, rf"^{path}:6:9: invalid YAML: .*flow mapping at 5:9"),
        (WRONG_TYPE, rf"^{path}:5:36: services\[0\]\.endpoints\[0\]\.port: .*integer"),
    ]:
        mesh.edit(broken.format(port=v2.port))

        def reported(error: str = error) -> dict[str, Any] | None:
            source = mesh.source()
            return source if re.search(error, source["error"] or "") else None

        source = wait_for(reported, WAIT, message=f"source error matching {error!r}")
        assert source["stale"] is True and source["synced"] is True, source
        (row,) = xdsctl_table(mesh, "sources")[1:]
        assert row[:4] == ["file", "file", "yes", "yes"], row
        # For a while: traffic flows on the last good state, the server stays ready.
        mark = web.mark()
        web.wait_for_requests(30, WAIT)
        seen = web.snapshot(mark)
        assert seen.failed == 0 and set(seen.bodies) == {"web-v1"}, seen
        assert mesh.server.ready()

    # Fixed, with a change: the error clears and the change reaches Envoy.
    mesh.edit([service("web", v2)])
    only(web, "web-v2")
    source = mesh.source()
    assert source["error"] is None and source["stale"] is False, source
    summary = web.stop()
    assert summary.failed == 0, summary
    assert env.stat(CDS_REJECTED) == 0 and env.stat(LDS_REJECTED) == 0


def test_bad_entries_are_skipped_and_the_rest_applies(
    mesh_factory, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1: HttpBackend = http_backend_factory("web-v1")
    api: HttpBackend = http_backend_factory("api")
    bad_ip = {"address": "10.0.0.300", "port": 8080}
    mesh = mesh_factory(
        [
            service("web", bad_ip, v1),
            service("bigport", api, port=70000),
            service("", api),
            service("api", api),
        ]
    )
    env = mesh.envoy(envoy_factory)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    only(web, "web-v1")
    assert http_get(mesh.url, host="api") == (200, "api")
    assert env.cluster_names(dynamic_only=True) == ["api.default:80", "web.default:80"]
    assert env.endpoints("web.default:80") == [("127.0.0.1", v1.port)]

    # Nothing reached Envoy that it would refuse.
    assert env.stat(CDS_REJECTED) == 0 and env.stat(LDS_REJECTED) == 0
    wait_synced(mesh)
    assert [proxy_row(mesh, NODE)[t] for t in TYPE_STATES] == ["SYNCED"] * 4

    (source,) = json.loads(mesh.server.xdsctl("sources", "-o", "json").stdout)
    rejected = source["rejected"]
    assert len(rejected) == 3, rejected
    for reason in [
        "web.default endpoint 10.0.0.300:8080: invalid IP address",
        "bigport.default: port 70000 outside 1-65535",
        "empty service name",
    ]:
        assert any(reason in r for r in rejected), (reason, rejected)
    assert source["services"] == 2 and source["error"] is None, source
    assert mesh.server.metrics()['xds_source_rejected_entries{source="file"}'] == 3
    summary = web.stop()
    assert summary.failed == 0, summary


def _version(item: dict[str, Any]) -> str:
    return str(item.get("version_info") or item.get("active_state", {}).get("version_info"))


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_xdsctl_matches_what_envoy_holds(
    delta: bool, mesh_factory, envoy_factory, http_backend_factory
) -> None:
    v1: HttpBackend = http_backend_factory("web-v1")
    api: HttpBackend = http_backend_factory("api")
    mesh = mesh_factory([service("web", v1), service("api", api)])
    env = mesh.envoy(envoy_factory, delta)
    wait_for(lambda: http_get(mesh.url, host="web") == (200, "web-v1"), WAIT)
    wait_synced(mesh)
    group = f"envoy;port={mesh.listener_port}"
    row = proxy_row(mesh, NODE)
    assert row["GROUP"] == group and row["STREAM"] == ("ads-delta" if delta else "ads-sotw")
    assert [row[t] for t in TYPE_STATES] == ["SYNCED"] * 4, row

    snap = json.loads(mesh.server.xdsctl("snapshot", "--node", NODE, "-o", "json").stdout)
    assert snap["group"] == group
    by_type: dict[str, dict[str, str]] = {}
    for r in snap["resources"]:
        by_type.setdefault(r["type"], {})[r["name"]] = r["version"]
    listener = f"http_{mesh.listener_port}"
    assert sorted(by_type["clusters"]) == env.cluster_names(dynamic_only=True)
    assert sorted(by_type["clusters"]) == ["api.default:80", "web.default:80"]
    assert list(by_type["listeners"]) == env.listener_names(dynamic_only=True) == [listener]
    assert list(by_type["routes"]) == env.route_config_names() == [listener]

    # Envoy reports the version it accepted each resource at: in SotW the response's
    # (the type's) version, in delta the resource's own.
    dump = {c["@type"].rsplit(".", 1)[-1]: c for c in env.config_dump()["configs"]}
    held = {
        "clusters": dump["ClustersConfigDump"]["dynamic_active_clusters"],
        "listeners": dump["ListenersConfigDump"]["dynamic_listeners"],
        "routes": dump["RoutesConfigDump"]["dynamic_route_configs"],
    }
    assert dump["ClustersConfigDump"]["version_info"] == snap["versions"]["clusters"]
    for kind, items in held.items():
        name_of = {"clusters": "cluster", "routes": "route_config"}.get(kind)
        versions = {(i[name_of]["name"] if name_of else i["name"]): _version(i) for i in items}
        expected = by_type[kind] if delta else dict.fromkeys(by_type[kind], snap["versions"][kind])
        assert versions == expected, (kind, versions, expected)

    endpoints = yaml.safe_load(
        mesh.server.xdsctl("snapshot", "--type", "endpoints", "-o", "yaml").stdout
    )
    assert {r["type"] for r in endpoints["resources"]} == {"endpoints"}
    ports = {
        lb["endpoint"]["address"]["socket_address"]["port_value"]
        for r in endpoints["resources"]
        for locality in r["resource"]["endpoints"]
        for lb in locality["lb_endpoints"]
    }
    assert ports == {v1.port, api.port}

    head, columns, *rows = xdsctl_table(mesh, "snapshot")
    assert head[:2] == ["GROUP", group] and columns == ["TYPE", "NAME", "VERSION"]
    assert {(r[0], r[1]) for r in rows} >= {("clusters", "web.default:80"), ("routes", listener)}
    assert xdsctl_table(mesh, "sources")[0] == [
        "NAME", "KIND", "SYNCED", "STALE", "SERVICES", "REJECTED", "ERROR"
    ]  # fmt: skip
    assert xdsctl_table(mesh, "proxies")[0] == [
        "NODE", "CLUSTER", "GROUP", "STREAM", "PEER", *TYPE_STATES
    ]  # fmt: skip


def test_node_metadata_picks_the_proxy_group(
    mesh_factory, envoy_factory, http_backend_factory
) -> None:
    v1: HttpBackend = http_backend_factory("web-v1")
    api: HttpBackend = http_backend_factory("api")
    mesh = mesh_factory([service("web", v1), service("api", api)])

    # http_listener_port: the group is envoy;port=N, and Envoy serves on N.
    port = free_port()
    own = mesh.envoy(envoy_factory, node="own-port", metadata={"http_listener_port": port})
    wait_synced(mesh, "own-port")
    assert proxy_row(mesh, "own-port")["GROUP"] == f"envoy;port={port}"
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: http_get(url, host="api") == (200, "api"), WAIT)
    assert own.listener_names(dynamic_only=True) == [f"http_{port}"]

    # dependencies: only those services' clusters and virtual hosts.
    deps = mesh.envoy(envoy_factory, node="web-only", metadata={"dependencies": ["web"]})
    wait_synced(mesh, "web-only")
    group = f"envoy;deps=web;port={mesh.listener_port}"
    assert proxy_row(mesh, "web-only")["GROUP"] == group
    assert deps.cluster_names(dynamic_only=True) == ["web.default:80"]
    wait_for(lambda: http_get(mesh.url, host="web") == (200, "web-v1"), WAIT)
    assert http_get(mesh.url, host="api")[0] == 404
    assert own.cluster_names(dynamic_only=True) == ["api.default:80", "web.default:80"]
