"""End-to-end: `xds-server --file` (a real subprocess) driving real Envoys; and, for every
registry alike (file, Consul, Kubernetes), external services and combining with the file.

The registry is a YAML file each test writes and edits; what a user sees is asserted:
real HTTP traffic through Envoy's listener (``--http-listener-port``, Host header =
service name), Envoy's admin API (``/config_dump``, ``/stats``), and `xdsctl` /
the server's admin API. Edits are written atomically (temp file + rename, as editors
do) and seen by the server's file watch: ``--file-interval 1h`` leaves no polling to
pick them up otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import consul
import pytest
import yaml

from tests.consul_emulator import ConsulEmulator
from tests.harness import e2e
from tests.harness.backends import HttpBackend, RequestLoop, http_get
from tests.harness.e2e import WAIT, Mesh
from tests.harness.kubeapi import KubeApi, endpoint, endpoint_slice
from tests.harness.kubeapi import service as kube_service
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess, snapshot_endpoints
from tests.harness.waiting import wait_for
from tests.test_file_watch import configmap

pytest_plugins = ["tests.harness.fixtures", "tests.harness.kube_fixtures"]

pytestmark = pytest.mark.timeout(90)

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


class FileMesh(Mesh):
    """An xds-server on a registry file, and the way to reach its Envoys' listener."""

    def __init__(self, server: XdsServerProcess, registry: Path, listener_port: int) -> None:
        super().__init__(server, listener_port, NODE)
        self.registry = registry

    def edit(self, content: str | list[dict[str, Any]]) -> None:
        write(self.registry, content)


@pytest.fixture
def mesh_factory(
    tmp_path: Path, xds_server_factory: Callable[..., XdsServerProcess]
) -> Callable[[list[dict[str, Any]]], FileMesh]:
    """``start(services) -> FileMesh``: the registry written, xds-server started on it."""

    def start(services: list[dict[str, Any]]) -> FileMesh:
        registry = tmp_path / "registry.yaml"
        write(registry, services)
        port = free_port()
        server = xds_server_factory(
            "--file", str(registry), "--file-interval", "1h",
            "--http-listener-port", str(port),
        )  # fmt: skip
        return FileMesh(server, registry, port)

    return start


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
    v1, v2, api, new = e2e.backends(http_backend_factory, "web-v1", "web-v2", "api", "newsvc")
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
    e2e.only(web, "web-v2")
    mesh.edit([service("web", v1, v2), service("api", api)])
    web.wait_for_body("web-v1", WAIT)

    # Remove an endpoint: it stops answering.
    mesh.edit([service("web", v1), service("api", api)])
    e2e.only(web, "web-v1")
    assert env.endpoints("web.default:80") == [("127.0.0.1", v1.port)]

    # A new service: its host goes from 404 (no virtual host) to 200, nothing else.
    probe: RequestLoop = request_loop_factory(mesh.url, "newsvc")
    e2e.wait_for_status(probe, 404, since=0)
    mark = probe.mark()
    mesh.edit([service("web", v1), service("api", api), service("newsvc", new)])
    first_ok = e2e.wait_for_switch(probe, mark, 404, 200)
    assert probe.snapshot(first_ok).bodies.keys() == {"newsvc"}, probe.snapshot(first_ok)

    # A removed service: 200 until 404, never a 503 (route to a missing cluster).
    mark = api_loop.mark()
    mesh.edit([service("web", v1), service("newsvc", new)])
    e2e.wait_for_switch(api_loop, mark, 200, 404)
    wait_for(
        lambda: env.cluster_names(dynamic_only=True) == ["newsvc.default:80", "web.default:80"],
        WAIT,
        message=f"Envoy's clusters never followed: {env.cluster_names(dynamic_only=True)}",
    )

    e2e.finish(env, web)
    mesh.wait_synced()


def test_a_configmap_swap_moves_real_traffic(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory,
    http_backend_factory,
    request_loop_factory,
) -> None:
    """The registry mounted from a ConfigMap: the kubelet swaps the ``..data`` symlink, the
    server's watch sees it (no polling: ``--file-interval 1h``) and traffic moves."""
    v1, v2 = e2e.backends(http_backend_factory, "web-v1", "web-v2")
    mounted = tmp_path / "config"
    mounted.mkdir()
    configmap(mounted, {"registry.yaml": yaml.safe_dump({"services": [service("web", v1)]})}, 1)
    port = free_port()
    server = xds_server_factory(
        "--file", str(mounted / "registry.yaml"), "--file-interval", "1h",
        "--http-listener-port", str(port),
    )  # fmt: skip
    mesh = FileMesh(server, mounted / "registry.yaml", port)
    env = mesh.envoy(envoy_factory, False)
    web: RequestLoop = request_loop_factory(mesh.url, "web")
    web.wait_for_body("web-v1", WAIT, since=0)
    configmap(mounted, {"registry.yaml": yaml.safe_dump({"services": [service("web", v2)]})}, 2)
    e2e.only(web, "web-v2")
    e2e.finish(env, web)


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
    v1, v2 = e2e.backends(http_backend_factory, "web-v1", "web-v2")
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
        assert row[:5] == ["file", "file", "STALE", "yes", "yes"], row
        # For a while: traffic flows on the last good state, the server stays ready.
        mark = web.mark()
        web.wait_for_requests(30, WAIT)
        seen = web.snapshot(mark)
        assert seen.failed == 0 and set(seen.bodies) == {"web-v1"}, seen
        assert mesh.server.ready()

    # Fixed, with a change: the error clears and the change reaches Envoy.
    mesh.edit([service("web", v2)])
    e2e.only(web, "web-v2")
    source = mesh.source()
    assert source["error"] is None and source["stale"] is False, source
    e2e.finish(env, web)


def test_bad_entries_are_skipped_and_the_rest_applies(
    mesh_factory, envoy_factory, http_backend_factory, request_loop_factory
) -> None:
    v1, api = e2e.backends(http_backend_factory, "web-v1", "api")
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
    e2e.only(web, "web-v1")
    assert http_get(mesh.url, host="api") == (200, "api")
    assert env.cluster_names(dynamic_only=True) == ["api.default:80", "web.default:80"]
    assert env.endpoints("web.default:80") == [("127.0.0.1", v1.port)]

    # Nothing reached Envoy that it would refuse.
    assert e2e.rejected(env) == {}
    mesh.wait_synced()
    assert [proxy_row(mesh, NODE)[t] for t in TYPE_STATES] == ["SYNCED"] * 4

    (source,) = json.loads(mesh.server.xdsctl("sources", "-o", "json").stdout)
    skipped = source["rejected"]
    assert len(skipped) == 3, skipped
    for reason in [
        "web.default endpoint 10.0.0.300:8080: invalid IP address",
        "bigport.default: port 70000 outside 1-65535",
        "empty service name",
    ]:
        assert any(reason in r for r in skipped), (reason, skipped)
    assert source["services"] == 2 and source["error"] is None, source
    assert mesh.server.metrics()['xds_source_rejected_entries{source="file"}'] == 3
    e2e.stop_served(web)


def _version(item: dict[str, Any]) -> str:
    return str(item.get("version_info") or item.get("active_state", {}).get("version_info"))


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_xdsctl_matches_what_envoy_holds(
    delta: bool, mesh_factory, envoy_factory, http_backend_factory
) -> None:
    v1, api = e2e.backends(http_backend_factory, "web-v1", "api")
    mesh = mesh_factory([service("web", v1), service("api", api)])
    env = mesh.envoy(envoy_factory, delta)
    wait_for(lambda: http_get(mesh.url, host="web") == (200, "web-v1"), WAIT)
    mesh.wait_synced()
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
    assert snapshot_endpoints(endpoints) == {
        "api.default:80": [("127.0.0.1", api.port)],
        "web.default:80": [("127.0.0.1", v1.port)],
    }

    head, columns, *rows = xdsctl_table(mesh, "snapshot")
    assert head[:2] == ["GROUP", group] and columns == ["TYPE", "NAME", "VERSION"]
    assert {(r[0], r[1]) for r in rows} >= {("clusters", "web.default:80"), ("routes", listener)}
    assert xdsctl_table(mesh, "sources")[0] == [
        "NAME", "KIND", "STATE", "SYNCED", "STALE", "SERVICES", "REJECTED", "ERROR"
    ]  # fmt: skip
    assert xdsctl_table(mesh, "proxies")[0] == [
        "NODE", "CLUSTER", "GROUP", "STREAM", "PEER", *TYPE_STATES
    ]  # fmt: skip


def test_node_metadata_picks_the_proxy_group(
    mesh_factory, envoy_factory, http_backend_factory
) -> None:
    v1, api = e2e.backends(http_backend_factory, "web-v1", "api")
    mesh = mesh_factory([service("web", v1), service("api", api)])

    # http_listener_port: the group is envoy;port=N, and Envoy serves on N.
    port = free_port()
    own = mesh.envoy(envoy_factory, node="own-port", metadata={"http_listener_port": port})
    mesh.wait_synced("own-port")
    assert proxy_row(mesh, "own-port")["GROUP"] == f"envoy;port={port}"
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: http_get(url, host="api") == (200, "api"), WAIT)
    assert own.listener_names(dynamic_only=True) == [f"http_{port}"]

    # dependencies: only those services' clusters and virtual hosts.
    deps = mesh.envoy(envoy_factory, node="web-only", metadata={"dependencies": ["web"]})
    mesh.wait_synced("web-only")
    group = f"envoy;deps=web;port={mesh.listener_port}"
    assert proxy_row(mesh, "web-only")["GROUP"] == group
    assert deps.cluster_names(dynamic_only=True) == ["web.default:80"]
    wait_for(lambda: http_get(mesh.url, host="web") == (200, "web-v1"), WAIT)
    assert http_get(mesh.url, host="api")[0] == 404
    assert own.cluster_names(dynamic_only=True) == ["api.default:80", "web.default:80"]


# ------------------------------------------- what every registry shares, and combining them


class ConsulRegistry:
    """Consul (the emulator), written to through its agent and catalog APIs."""

    name = "consul"
    host_suffix = ".service.consul"  # Consul DNS

    def __init__(self, emu: ConsulEmulator) -> None:
        self.agent = consul.Consul(host="127.0.0.1", port=emu.port)
        self.args = ["--consul", "--consul-address", emu.url]

    def add_service(self, name: str, ip: str, port: int) -> None:
        self.agent.agent.service.register(name, service_id=name, address=ip, port=port)

    def add_external(self, name: str, host: str, port: int) -> None:
        # As consul-esm registers it: a node whose address is a DNS name.
        self.agent.catalog.register(f"{name}-node", host, service={"Service": name, "Port": port})


class KubeRegistry:
    """Kubernetes (kmock): a Service and an EndpointSlice, or an ExternalName Service."""

    name = "kubernetes"
    host_suffix = ".default.svc.cluster.local"

    def __init__(self, api: KubeApi, kubeconfig: Path) -> None:
        self.api = api
        self.args = ["--kubernetes", "--kubeconfig", str(kubeconfig)]

    def add_service(self, name: str, ip: str, port: int) -> None:
        self.api.create(kube_service(name, [{"name": "http", "port": port}]))
        self.api.create(endpoint_slice(f"{name}-1", name, [endpoint(ip)], [("http", port)]))

    def add_external(self, name: str, host: str, port: int) -> None:
        ports = [{"name": "http", "port": port}]
        self.api.create(kube_service(name, ports, type="ExternalName", externalName=host))


class FileRegistry:
    """The registry file itself, as a registry among the others."""

    name = "file"
    host_suffix = ""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.services: list[dict[str, Any]] = []
        self.args = ["--file", str(path)]
        write(path, self.services)

    def add_service(self, name: str, ip: str, port: int) -> None:
        self.services.append(service(name, {"address": ip, "port": port}, port=port))
        write(self.path, self.services)

    def add_external(self, name: str, host: str, port: int) -> None:
        self.services.append({"name": name, "ports": [{"port": port}], "external_name": host})
        write(self.path, self.services)


Registry = ConsulRegistry | KubeRegistry | FileRegistry


@pytest.fixture
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """The registry named by the test's ``registry`` parameter, empty and running."""
    kind = request.param
    if kind == "consul":
        with ConsulEmulator() as emu:
            yield ConsulRegistry(emu)
    elif kind == "kubernetes":
        api: KubeApi = request.getfixturevalue("kube_api")
        yield KubeRegistry(api, api.kubeconfig(tmp_path / "kubeconfig"))
    else:
        yield FileRegistry(tmp_path / "own-registry.yaml")


@pytest.mark.parametrize("registry", ["consul", "kubernetes"], indirect=True)
def test_combines_with_the_file_registry(
    registry: Registry, tmp_path: Path, xds_server_factory: Callable[..., XdsServerProcess]
) -> None:
    registry.add_service("web", "10.0.0.1", 8080)
    path = tmp_path / "registry.yaml"
    write(
        path,
        [
            service("web", {"address": "10.0.0.2", "port": 9090}, port=8080),
            service("api", {"address": "10.0.0.3", "port": 9090}),
        ],
    )
    mesh = Mesh(xds_server_factory("--file", str(path), *registry.args), 0, NODE)
    # Consul's config entries and Kubernetes' policy CRDs are sources of their own.
    policy = ("consul-config", "kubernetes-policies")
    sources = {k: v for k, v in mesh.sources().items() if k not in policy}
    assert {name: (s["synced"], s["error"], s["services"]) for name, s in sources.items()} == {
        "file": (True, None, 2),
        registry.name: (True, None, 1),
    }, sources
    doc = json.loads(mesh.server.xdsctl("snapshot", "--type", "endpoints", "-o", "json").stdout)
    # One service "web" with the endpoints of both registries; "api" the file's alone.
    assert snapshot_endpoints(doc) == {
        "web.default:8080": [("10.0.0.1", 8080), ("10.0.0.2", 9090)],
        "api.default:80": [("10.0.0.3", 9090)],
    }


@pytest.mark.parametrize("registry", ["file", "consul", "kubernetes"], indirect=True)
def test_an_external_service_is_resolved_by_envoy(
    registry: Registry,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory,
    http_backend_factory,
    request_loop_factory,
) -> None:
    # `localhost` keeps the traffic on loopback; Envoy resolves it itself (LOGICAL_DNS).
    backend: HttpBackend = http_backend_factory("outside")
    registry.add_external("outside", "localhost", backend.port)
    port = free_port()
    mesh = Mesh(xds_server_factory(*registry.args, "--http-listener-port", str(port)), port, NODE)
    cluster = f"outside.default:{backend.port}"
    assert mesh.server.cluster_names() == [cluster]
    env = mesh.envoy(envoy_factory)
    loop: RequestLoop = request_loop_factory(mesh.url, f"outside{registry.host_suffix}")
    loop.wait_for_body("outside", WAIT, since=0)
    (held,) = [c["cluster"] for c in env.config_dump("dynamic_active_clusters")["configs"]]
    assert (held["name"], held["type"]) == (cluster, "LOGICAL_DNS"), held
    e2e.stop_served(loop)
