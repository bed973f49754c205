"""A TCP canary through a real Envoy: a VirtualService's weighted `tcp` routes split new
connections across two subsets of a TCP service (SotW and delta)."""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import e2e
from tests.harness.backends import HttpBackend, http_get
from tests.harness.e2e import WAIT, Mesh
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(90)

N = 400  # connections; at 25 % a 8-point tolerance is over 3.5 standard deviations


def policy(v1: int, v2: int) -> str:
    route = [{"destination": {"host": "db", "subset": s}, "weight": w}
             for s, w in (("v1", v1), ("v2", v2))]  # fmt: skip
    return yaml.safe_dump_all([
        {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
         "metadata": {"name": "db"}, "spec": {"hosts": ["db"], "tcp": [{"route": route}]}},
        {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
         "metadata": {"name": "db"},
         "spec": {"host": "db", "subsets": [{"name": v, "labels": {"version": v}}
                                            for v in ("v1", "v2")]}},
    ], sort_keys=False)  # fmt: skip


def write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def split(url: str) -> Counter[str]:
    """Which backend answers each of N new connections (one request each)."""
    return Counter(http_get(url)[1] for _ in range(N))


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_tcp_routes_split_connections_by_weight(
    delta: bool,
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., Any],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    v1, v2 = e2e.backends(http_backend_factory, "db-v1", "db-v2")
    port = free_port()  # the service port: Envoy's TCP listener for it binds 0.0.0.0:<port>
    registry, policy_path = tmp_path / "registry.yaml", tmp_path / "policy.yaml"
    endpoints = [{"address": "127.0.0.1", "port": b.port, "labels": {"version": v}}
                 for b, v in ((v1, "v1"), (v2, "v2"))]  # fmt: skip
    service = {"name": "db", "ports": [{"port": port, "protocol": "tcp"}], "endpoints": endpoints}
    write(registry, yaml.safe_dump({"services": [service]}))
    write(policy_path, policy(75, 25))
    server = xds_server_factory(
        "--file", str(registry), "--policy", str(policy_path), "--file-interval", "0.1",
    )  # fmt: skip
    mesh = Mesh(server, free_port(), "tcp-canary")
    env = mesh.envoy(envoy_factory, delta, metadata={"http_listener_port": mesh.listener_port})
    mesh.wait_synced()
    url = f"http://127.0.0.1:{port}/"
    wait_for(lambda: http_get(url)[0] == 200, WAIT, message="the TCP listener answers")

    seen = split(url)
    assert set(seen) == {"db-v1", "db-v2"}, seen
    assert abs(seen["db-v2"] / N - 0.25) <= 0.08, seen

    # Shift it all to v2: new connections follow, and none fails.
    write(policy_path, policy(0, 100))
    wait_for(lambda: split(url)["db-v1"] == 0, WAIT, message="connections moved to v2")
    assert split(url) == Counter({"db-v2": N})
    assert e2e.rejected(env) == {}, e2e.rejected(env)


def idle_policy(idle: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "db"},
        "spec": {"host": "db", "trafficPolicy": {"connectionPool": {"tcp": {"idleTimeout": idle}}}},
    })  # fmt: skip


def closed_within(port: int, seconds: float) -> bool:
    """Open a connection to Envoy's TCP listener, send nothing: whether Envoy closes it
    within `seconds`."""
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as s:
        try:
            return s.recv(1) == b""
        except TimeoutError:
            return False


def test_tcp_idle_timeout_from_the_destination_rule(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., Any],
    http_backend_factory: Callable[..., HttpBackend],
) -> None:
    """DestinationRule connectionPool.tcp.idleTimeout is the TCP proxy's idle timeout:
    an idle connection through Envoy is closed after 1 s, and kept with 1 h."""
    (backend,) = e2e.backends(http_backend_factory, "db")
    port = free_port()
    registry, policy_path = tmp_path / "registry.yaml", tmp_path / "policy.yaml"
    service = {"name": "db", "ports": [{"port": port, "protocol": "tcp"}],
               "endpoints": [{"address": "127.0.0.1", "port": backend.port}]}  # fmt: skip
    write(registry, yaml.safe_dump({"services": [service]}))
    write(policy_path, idle_policy("1s"))
    server = xds_server_factory(
        "--file", str(registry), "--policy", str(policy_path), "--file-interval", "0.1",
    )  # fmt: skip
    mesh = Mesh(server, free_port(), "tcp-idle")
    env = mesh.envoy(envoy_factory, False, metadata={"http_listener_port": mesh.listener_port})
    mesh.wait_synced()
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/")[0] == 200, WAIT,
             message="the TCP listener answers")  # fmt: skip
    stat = f"tcp.tcp_{port}.idle_timeout"
    assert closed_within(port, 4.0)
    wait_for(lambda: (env.stat(stat) or 0) >= 1, WAIT, message=f"{stat} counted the close")

    write(policy_path, idle_policy("1h"))
    wait_for(lambda: not closed_within(port, 2.5), WAIT, message="an idle connection is kept")
    closes = env.stat(stat)
    assert not closed_within(port, 2.5)
    assert env.stat(stat) == closes
    assert e2e.rejected(env) == {}, e2e.rejected(env)
