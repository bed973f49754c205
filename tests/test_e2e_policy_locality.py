"""Locality load balancing through a real Envoy: a DestinationRule's `localityLbSetting`
gives each proxy its own endpoint priorities (its zone first, then the rest of its
region), failover to another zone costs no request beyond the health change, `distribute`
weights split traffic across localities and a `failover` rule names the next region."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import e2e
from tests.harness.backends import HttpBackend, RequestLoop
from tests.harness.e2e import WAIT, Mesh
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(90)

POLICY = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    loadBalancer:
      localityLbSetting: {enabled: true}
"""


def endpoint(backend: HttpBackend, zone: str, health: str = "healthy") -> dict[str, Any]:
    return located(backend, "r1", zone, health)


def located(
    backend: HttpBackend, region: str, zone: str, health: str = "healthy"
) -> dict[str, Any]:
    return {"address": "127.0.0.1", "port": backend.port, "region": region, "zone": zone,
            "health": health}  # fmt: skip


def write(path: Path, endpoints: list[dict[str, Any]]) -> None:
    doc = {"services": [{"name": "web", "ports": [{"port": 80}], "endpoints": endpoints}]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    os.replace(tmp, path)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_zone_first_then_failover_to_the_other_zone_without_errors(
    delta: bool,
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., Any],
    http_backend_factory: Callable[..., HttpBackend],
    request_loop_factory: Callable[..., RequestLoop],
) -> None:
    a, b = e2e.backends(http_backend_factory, "zone-a", "zone-b")
    server, port, registry = started(
        tmp_path, xds_server_factory, [endpoint(a, "a"), endpoint(b, "b")], {}
    )
    mesh = Mesh(server, port, "in-zone-a")
    env = mesh.envoy(envoy_factory, delta, locality={"region": "r1", "zone": "a"})
    mesh.wait_synced()
    proxy = next(p for p in mesh.proxies() if p["node_id"] == "in-zone-a")
    assert proxy["group"] == f"envoy;port={port};locality=r1/a/"

    # Priorities as Envoy holds them: its own zone 0, the other zone of its region 1.
    dump = env.config_dump("dynamic_endpoint_configs", include_eds=True)
    (cla,) = [c["endpoint_config"] for c in dump["configs"]]
    priorities = {g["locality"]["zone"]: g.get("priority", 0) for g in cla["endpoints"]}
    assert priorities == {"a": 0, "b": 1}

    loop: RequestLoop = request_loop_factory(mesh.url, "web")
    e2e.only(loop, "zone-a", n=50)  # all of it in zone a, none across zones

    # Zone a's only endpoint turns unhealthy: zone b takes over, no request fails.
    mark = loop.mark()
    write(registry, [endpoint(a, "a", "unhealthy"), endpoint(b, "b")])
    loop.wait_for_body("zone-b", WAIT, since=mark)
    e2e.only(loop, "zone-b", n=50)
    # Healthy again: traffic comes back to zone a.
    write(registry, [endpoint(a, "a"), endpoint(b, "b")])
    loop.wait_for_body("zone-a", WAIT)
    e2e.only(loop, "zone-a", n=50)
    e2e.stop_served(loop)  # not one request failed, through both switches
    assert e2e.rejected(env) == {}, e2e.rejected(env)


def test_without_a_locality_setting_every_zone_shares_priority_0(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
) -> None:
    """The control: no DestinationRule, the same proxy locality, one priority."""
    registry = tmp_path / "registry.yaml"
    write(registry, [{"address": "10.0.0.1", "port": 80, "region": "r1", "zone": "a"},
                     {"address": "10.0.0.2", "port": 80, "region": "r1", "zone": "b"}])  # fmt: skip
    server = xds_server_factory("--file", str(registry))
    with_policy = tmp_path / "policy.yaml"
    with_policy.write_text(POLICY)
    other = xds_server_factory("--file", str(registry), "--policy", str(with_policy))
    group = "envoy;locality=r1/a/"

    def priorities(s: XdsServerProcess) -> dict[str, int]:
        doc = s.get(f"/debug/snapshot?group={group}&type=endpoints")
        (cla,) = [r["resource"] for r in doc["resources"]]
        return {g["locality"]["zone"]: g.get("priority", 0) for g in cla["endpoints"]}

    assert priorities(server) == {"a": 0, "b": 0}
    assert priorities(other) == {"a": 0, "b": 1}


def locality_policy(setting: dict[str, Any]) -> str:
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "web"},
        "spec": {"host": "web", "trafficPolicy": {"loadBalancer": {
            "localityLbSetting": {"enabled": True, **setting}}}},
    })  # fmt: skip


def started(
    tmp_path: Path,
    factory: Callable[..., XdsServerProcess],
    endpoints: list[dict[str, Any]],
    setting: dict[str, Any],
) -> tuple[XdsServerProcess, int, Path]:
    registry, policy = tmp_path / "registry.yaml", tmp_path / "policy.yaml"
    write(registry, endpoints)
    policy.write_text(locality_policy(setting))
    port = free_port()
    server = factory(
        "--file", str(registry), "--policy", str(policy), "--file-interval", "0.1",
        "--http-listener-port", str(port),
    )  # fmt: skip
    return server, port, registry


def test_distribute_splits_traffic_by_locality_weight(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., Any],
    http_backend_factory: Callable[..., HttpBackend],
    request_loop_factory: Callable[..., RequestLoop],
) -> None:
    """`distribute` from r1/a: 80 % to its own zone, 20 % to zone b, seen in traffic."""
    a, b = e2e.backends(http_backend_factory, "zone-a", "zone-b")
    setting = {"distribute": [{"from": "r1/a/*", "to": {"r1/a/*": 80, "r1/b/*": 20}}]}
    server, port, _ = started(
        tmp_path, xds_server_factory, [located(a, "r1", "a"), located(b, "r1", "b")], setting
    )
    mesh = Mesh(server, port, "distribute-a")
    env = mesh.envoy(envoy_factory, True, locality={"region": "r1", "zone": "a"})
    mesh.wait_synced()
    loop: RequestLoop = request_loop_factory(mesh.url, "web")
    loop.wait_for_requests(20, WAIT)
    mark = loop.mark()
    loop.wait_for_requests(600, 60)
    seen = loop.snapshot(mark).bodies
    e2e.stop_served(loop)
    share = seen["zone-b"] / (seen["zone-a"] + seen["zone-b"])
    # 600 requests at p = 0.2: 0.08 is over 4.8 standard deviations.
    assert abs(share - 0.2) <= 0.08, seen
    assert e2e.rejected(env) == {}, e2e.rejected(env)


def test_failover_goes_to_the_named_region_not_the_nearest_other(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., Any],
    http_backend_factory: Callable[..., HttpBackend],
    request_loop_factory: Callable[..., RequestLoop],
) -> None:
    """`failover: r1 → r3`: when r1 has no healthy endpoint, traffic goes to r3, not r2,
    with no failed request."""
    a, r2, r3 = e2e.backends(http_backend_factory, "r1", "r2", "r3")
    setting = {"failover": [{"from": "r1", "to": "r3"}]}
    endpoints = [located(a, "r1", "a"), located(r2, "r2", "a"), located(r3, "r3", "a")]
    server, port, registry = started(tmp_path, xds_server_factory, endpoints, setting)
    mesh = Mesh(server, port, "failover-r1")
    env = mesh.envoy(envoy_factory, False, locality={"region": "r1", "zone": "a"})
    mesh.wait_synced()
    loop: RequestLoop = request_loop_factory(mesh.url, "web")
    e2e.only(loop, "r1", n=30)
    mark = loop.mark()
    write(registry, [located(a, "r1", "a", "unhealthy"), *endpoints[1:]])
    loop.wait_for_body("r3", WAIT, since=mark)
    e2e.only(loop, "r3", n=50)
    assert "r2" not in loop.snapshot(mark).bodies, loop.snapshot(mark)
    e2e.stop_served(loop)
    assert e2e.rejected(env) == {}, e2e.rejected(env)
