"""End to end: a Gateway API consumer route changes only the traffic of the proxies in its
namespace (GEP-1426). One real `xds-server --file --policy` and two real Envoys (the
policy world of tests/harness/policy.py: one SotW, one delta) whose node metadata says
``NAMESPACE: a`` and ``NAMESPACE: b`` (Istio's key), HTTP backends.

Service web (namespace default) has a producer HTTPRoute sending it to web-v1; a
consumer HTTPRoute in namespace a sends it to web-v2. Envoy a reaches web-v2 only,
Envoy b web-v1 only; with the consumer route gone, Envoy a is back on web-v1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.e2e import WAIT
from tests.harness.policy import Object, PolicyWorld, policy_world, write_atomically
from tests.harness.policy_mesh import policy_text
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.timeout(120)

SERVICES = [(name, [(name, {})]) for name in ("web", "web-v1", "web-v2")]
ENVOY = {"a": "sotw", "b": "delta"}  # namespace → the world's Envoy in it


def route(name: str, namespace: str, backend: str) -> Object:
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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyWorld]:
    metadata = {mode: {"NAMESPACE": ns} for ns, mode in ENVOY.items()}
    with policy_world(tmp_path_factory.mktemp("consumer-routes"), SERVICES, metadata) as w:
        yield w


def bodies(world: PolicyWorld, namespace: str, n: int) -> dict[str, int]:
    client = world.client(ENVOY[namespace])
    try:
        return dict(client.bodies("web", n))
    finally:
        client.close()


def only(world: PolicyWorld, namespace: str, body: str) -> None:
    last: list[Any] = []

    def reached() -> bool:
        last[:] = [bodies(world, namespace, 5)]
        return last[0] == {body: 5}

    wait_for(reached, WAIT, message=lambda: f"Envoy of {namespace} only to {body}: {last}")


def write(world: PolicyWorld, *objects: Object) -> None:
    write_atomically(world.policy_path, policy_text(objects))


def test_a_consumer_route_changes_only_its_namespace_traffic(world: PolicyWorld) -> None:
    write(world, PRODUCER)
    only(world, "a", "web-v1")
    only(world, "b", "web-v1")
    write(world, PRODUCER, CONSUMER)
    only(world, "a", "web-v2")
    assert bodies(world, "b", 50) == {"web-v1": 50}
    assert bodies(world, "a", 50) == {"web-v2": 50}
    # Each Envoy is in the group of its namespace.
    groups = {p["node_id"]: p["group"] for p in world.server.get("/debug/proxies")}
    assert groups["policy-sotw"].endswith(";ns=a"), groups
    assert groups["policy-delta"].endswith(";ns=b"), groups
    table = world.server.xdsctl("policies").stdout
    row = next(x for x in table.splitlines() if x.startswith("HTTPRoute") and "a/to-v2" in x)
    assert row.split()[2:4] == ["ACCEPTED", "file"], table
    write(world, PRODUCER)
    only(world, "a", "web-v1")
    assert bodies(world, "b", 20) == {"web-v1": 20}
    world.check_nothing_rejected()
