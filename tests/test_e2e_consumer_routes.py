"""End to end: a Gateway API consumer route changes only the traffic of the proxies in its
namespace (GEP-1426). One real `xds-server --file --policy`, two real Envoys whose node
metadata says ``NAMESPACE: a`` and ``NAMESPACE: b`` (Istio's key), HTTP backends.

Service web (namespace default) has a producer HTTPRoute sending it to web-v1; a
consumer HTTPRoute in namespace a sends it to web-v2. Envoy a reaches web-v2 only,
Envoy b web-v1 only; with the consumer route gone, Envoy a is back on web-v1."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.backends import HttpBackend, http_get
from tests.harness.e2e import WAIT, rejected
from tests.harness.envoy import EnvoyProcess, bootstrap
from tests.harness.policy import write_atomically
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

NAMES = ("web", "web-v1", "web-v2")


def route(name: str, namespace: str, backend: str) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web",
                            "namespace": "default", "port": 80}],
            "rules": [{"backendRefs": [{"name": backend, "namespace": "default", "port": 80}]}],
        },
    }  # fmt: skip


PRODUCER = route("to-v1", "default", "web-v1")
CONSUMER = route("to-v2", "a", "web-v2")


@dataclass
class Mesh:
    server: XdsServerProcess
    policy: Path
    envoys: dict[str, EnvoyProcess]
    ports: dict[str, int]

    def write(self, *objects: dict[str, Any]) -> None:
        write_atomically(self.policy, yaml.safe_dump_all(list(objects)) if objects else "")

    def bodies(self, namespace: str, n: int = 20) -> Counter[str]:
        out: Counter[str] = Counter()
        for _ in range(n):
            try:
                status, text = http_get(f"http://127.0.0.1:{self.ports[namespace]}/", "web")
            except OSError as exc:
                out[f"error: {exc}"] += 1
                continue
            out[text if status == 200 else str(status)] += 1
        return out

    def only(self, namespace: str, body: str) -> None:
        last: list[Counter[str]] = []

        def reached() -> bool:
            last[:] = [self.bodies(namespace, 5)]
            return last[0] == Counter({body: 5})

        wait_for(reached, WAIT, message=lambda: f"Envoy {namespace} only to {body}: {last}")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    directory = tmp_path_factory.mktemp("consumer-routes")
    with contextlib.ExitStack() as stack:
        backends = {}
        for name in NAMES:
            backends[name] = HttpBackend(name).start()
            stack.callback(backends[name].stop)
        registry = {"services": [
            {"name": n, "ports": [{"name": "http", "port": 80, "protocol": "http"}],
             "endpoints": [{"address": "127.0.0.1", "port": backends[n].port}]}
            for n in NAMES
        ]}  # fmt: skip
        write_atomically(directory / "registry.yaml", yaml.safe_dump(registry))
        policy = directory / "policy.yaml"
        write_atomically(policy, "")
        server = XdsServerProcess(
            "--file", str(directory / "registry.yaml"), "--policy", str(policy),
            "--file-interval", "0.1", log_path=directory / "xds-server.log",
        )  # fmt: skip
        stack.callback(server.stop)
        server.start()
        envoys, ports = {}, {}
        for ns in ("a", "b"):
            ports[ns] = free_port()
            metadata = {"http_listener_port": ports[ns], "NAMESPACE": ns}
            boot = bootstrap(server.xds_port, free_port(), f"envoy-{ns}", metadata=metadata)
            envoys[ns] = EnvoyProcess()
            stack.callback(envoys[ns].stop)
            envoys[ns].start(boot, directory / f"envoy-{ns}.log")
        for env in envoys.values():
            env.wait_ready(WAIT)
        yield Mesh(server, policy, envoys, ports)


def test_a_consumer_route_changes_only_its_namespace_traffic(mesh: Mesh) -> None:
    mesh.write(PRODUCER)
    mesh.only("a", "web-v1")
    mesh.only("b", "web-v1")
    mesh.write(PRODUCER, CONSUMER)
    mesh.only("a", "web-v2")
    assert mesh.bodies("b", 50) == {"web-v1": 50}
    assert mesh.bodies("a", 50) == {"web-v2": 50}
    # Each Envoy is in its own group, named by its namespace.
    groups = {p["node_id"]: p["group"] for p in mesh.server.get("/debug/proxies")}
    assert groups["envoy-a"].endswith(";ns=a") and groups["envoy-b"].endswith(";ns=b"), groups
    table = mesh.server.xdsctl("policies").stdout
    row = next(
        line for line in table.splitlines() if line.startswith("HTTPRoute") and "a/to-v2" in line
    )
    assert row.split()[2:4] == ["ACCEPTED", "file"], table
    mesh.write(PRODUCER)
    mesh.only("a", "web-v1")
    assert mesh.bodies("b", 20) == {"web-v1": 20}
    for ns, env in mesh.envoys.items():
        assert rejected(env) == {}, (ns, rejected(env))
