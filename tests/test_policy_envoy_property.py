"""Property, issue 10 test 13: generated VirtualServices and DestinationRules, valid and
invalid, go through the real server to real Envoys and proxyless gRPC clients, and nothing
is NACKed: every invalid object is reported REJECTED (with its reason) and kept from the
proxies, and no valid one is rejected.

One `xds-server` (registry file + policy file), two Envoys (ADS SotW and delta, in
locality r1/a) and three grpcio clients (``xds:///web``, ``xds:///api`` and
``xds:///api:8080``) serve the whole test. Each example rewrites the policy file with the
generated objects (`tests.policy_strategies`) and, in turn, one more object with the next
of every defect there is, all named for that example (so none has a last valid version
from an earlier one). It waits until ``/debug/policies`` reports exactly them and the
rebuild they caused is installed, then until every proxy has ACKed it (``/debug/proxies``
SYNCED) and each gRPC client has subscribed to the clusters of its routes, and asserts:

- both Envoys' ``update_rejected`` counters (CDS, LDS, every RDS and EDS) are 0, and the
  server saw no NACK from any proxy;
- each object with a defect is REJECTED for that reason, or for naming a subset its
  rejected DestinationRule would have defined; no other object is REJECTED.

Hypothesis runs ``derandomize=True`` (the same examples on every run, for CI) without a
shrink phase (a failing example is reported as generated, with its policy file as a
note), and no example database.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings

from tests.harness import e2e
from tests.harness.e2e import WAIT
from tests.harness.envoy import EnvoyProcess, bootstrap
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.policy_mesh import PolicyMesh, start_policy_mesh
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import GiveUp, wait_for
from tests.policy_strategies import (
    DEFECT_WORDS,
    EVERY_DEFECT,
    SUBSET_LABELS,
    Scenario,
    every_defect_in_turn,
    scenarios,
)

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(180)

EXAMPLES = 100
assert EXAMPLES >= len(EVERY_DEFECT)  # each example adds the next defect in turn
SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ENVOYS = {"envoy-property-sotw": False, "envoy-property-delta": True}  # node: delta
GRPC_TARGETS = {
    "grpc-property-web": "xds:///web",
    "grpc-property-api": "xds:///api",
    "grpc-property-api-8080": "xds:///api:8080",
}
NODES = (*ENVOYS, *GRPC_TARGETS)
LOCALITY = {"region": "r1", "zone": "a", "sub_zone": ""}
TRANSLATIONS = "xds_translate_seconds_count"


def registry(tcp_port: int) -> list[dict[str, Any]]:
    """web (http 80), api (http 80, 8080), db (tcp): endpoints in r1/a and r2/b with the
    labels of subsets v1, v2 and canary. Nothing listens on them: no traffic is sent."""
    localities = [("r1", "a"), ("r2", "b")]

    def endpoints(*labels: dict[str, str]) -> list[dict[str, Any]]:
        return [
            {"address": "127.0.0.1", "port": 20000 + i, "region": r, "zone": z, "labels": lab}
            for i, (lab, (r, z)) in enumerate(zip(labels, localities, strict=True))
        ]

    v1, v2, canary = SUBSET_LABELS["v1"], SUBSET_LABELS["v2"], SUBSET_LABELS["canary"]
    return [
        {
            "name": "web",
            "ports": [{"port": 80, "protocol": "http"}],
            "endpoints": endpoints(v1, v2),
        },
        {
            "name": "api",
            "ports": [
                {"name": "http", "port": 80, "protocol": "http"},
                {"name": "alt", "port": 8080, "protocol": "http"},
            ],
            "endpoints": endpoints(v1, {**v2, **canary}),
        },
        {
            "name": "db",
            "ports": [{"port": tcp_port, "protocol": "tcp"}],
            "endpoints": endpoints(v1, v2),
        },
    ]


def nacks_of(proxies: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every (node, type, status) the server has seen NACKed on a connected stream."""
    return [
        (p["node_id"], short, status)
        for p in proxies
        for short, status in p["types"].items()
        if status["nacks"] or status["state"] == "NACKED"
    ]


def push(mesh: PolicyMesh, scenario: Scenario, n: int) -> dict[tuple[str, str], Any]:
    """Write the scenario's objects as example ``n``; wait until the server reports them
    and has installed the rebuild they caused, and every proxy has ACKed it. Returns
    what ``/debug/policies`` says of each."""
    objects = scenario.named(n)
    before = mesh.server.metrics().get(TRANSLATIONS, 0.0)
    unchanged = mesh.policy.read_text()
    text = mesh.write_policies(*(d.obj for d in objects))
    note(text)
    reported = mesh.wait_policies(scenario.expected())
    # /debug/policies changes while the rebuild runs; the translation is counted just
    # before its snapshots are installed (no await between the two). Names differ in
    # every example, so only an empty file can leave the file (and all else) as it was.
    if text != unchanged:
        wait_for(
            lambda: mesh.server.metrics().get(TRANSLATIONS, 0.0) > before,
            WAIT,
            message="the policy change was never translated",
        )
    wait_synced(mesh)
    return reported


def wait_synced(mesh: PolicyMesh) -> None:
    """Until every proxy has ACKed all it was sent and each gRPC client has subscribed to
    every cluster its routes name; at once if a proxy NACKed something."""

    def synced() -> bool:
        proxies = mesh.proxies()
        nacked = nacks_of(proxies)
        if nacked:
            raise GiveUp(f"NACKed: {nacked}")
        if not all(e2e.all_synced(proxies, node) for node in NODES):
            return False
        routed = grpc_routed_clusters(mesh)
        for node, target in GRPC_TARGETS.items():
            types = e2e.proxy_types(proxies, node) or {}
            want = len(routed[target.removeprefix("xds:///")])
            if {types[t]["subscribed"] for t in ("clusters", "endpoints")} != {want}:
                return False
        return True

    def status() -> str:
        proxies = mesh.proxies()
        states = {
            p["node_id"]: {t: (s["state"], s["subscribed"]) for t, s in p["types"].items()}
            for p in proxies
        }
        return f"proxies not synced: {states}; gRPC routes name {grpc_routed_clusters(mesh)}"

    wait_for(synced, WAIT, message=status)


def grpc_routed_clusters(mesh: PolicyMesh) -> dict[str, set[str]]:
    """Per gRPC route configuration (named as the target), the clusters of the routes a
    gRPC client keeps.

    A gRPC client subscribes to those clusters (and their endpoints) only once it has the
    routes, after it ACKed them: until its subscriptions match, it may yet NACK one."""
    doc = mesh.server.get("/debug/snapshot?group=grpc&type=routes")
    out: dict[str, set[str]] = {}
    for r in doc["resources"]:
        names = out.setdefault(r["name"], set())
        for vh in r["resource"].get("virtual_hosts", []):
            for route in vh.get("routes", []):
                action = route.get("route", {})
                if not grpc_can_match(route["match"]):
                    continue
                if "cluster" in action:
                    names.add(action["cluster"])
                names.update(
                    c["name"] for c in action.get("weighted_clusters", {}).get("clusters", [])
                )
    return out


def grpc_can_match(match: dict[str, Any]) -> bool:
    """Whether gRPC keeps a route: it ignores one whose path or prefix no gRPC method path
    (``/service/method``) can match (grpc-core's xds_route_config_parser)."""
    if "path" in match:
        parts = match["path"].split("/")
        return len(parts) == 3 and parts[0] == "" and all(parts[1:])
    prefix = match.get("prefix", "")
    if not prefix:
        return True
    parts = prefix.split("/")
    return parts[0] == "" and len(parts) <= 3 and not (len(parts) == 3 and not parts[1])


def test_generated_policies_are_never_nacked_and_invalid_ones_are_rejected(
    tmp_path: Path,
    xds_server_factory: Callable[..., XdsServerProcess],
    envoy_factory: Callable[..., EnvoyProcess],
    grpc_xds_client_factory: Callable[..., GrpcXdsClient],
) -> None:
    tcp_port = free_port()
    mesh = start_policy_mesh(xds_server_factory, tmp_path, registry(tcp_port))
    envoys = []
    for node, delta in ENVOYS.items():
        # Each its own HTTP listener port; the TCP listener's port is shared (reuse_port).
        port = {"http_listener_port": free_port()}
        boot = bootstrap(mesh.server.xds_port, free_port(), node, delta=delta, metadata=port)
        boot["node"]["locality"] = dict(LOCALITY)
        envoys.append(envoy_factory(boot, name=node, wait="ready", timeout=WAIT))
    for node, target in GRPC_TARGETS.items():
        client = grpc_bootstrap(mesh.server.xds_port, node, locality=LOCALITY)
        grpc_xds_client_factory(client, target, interval=0.2, timeout=0.5)
    wait_synced(mesh)
    print(f"hypothesis: max_examples={EXAMPLES} derandomize=True database=None, no shrinking")

    numbers: dict[str, int] = {}
    outcomes: Counter[tuple[str, str, bool]] = Counter()
    defects: set[str] = set()

    @SETTINGS
    @given(scenarios(tcp_port))
    def check(scenario: Scenario) -> None:
        # The same scenario gets the same number (names, defect in turn) when hypothesis
        # runs it again to report it.
        n = numbers.setdefault(repr(scenario), len(numbers) + 1)
        scenario.objects.append(every_defect_in_turn(n))
        reported = push(mesh, scenario, n)
        assert [e2e.rejected(env) for env in envoys] == [{}, {}]
        assert nacks_of(mesh.proxies()) == []
        for key, words in scenario.expected().items():
            doc = reported[key]
            outcomes[(key[0], doc["state"], bool(words))] += 1
            seen = (key, doc["state"], doc["reasons"])
            if words:
                defects.update(words)
                assert doc["state"] == "REJECTED", (*seen, "expected REJECTED for", words)
                assert any(w in r for w in words for r in doc["reasons"]), (*seen, words)
            else:
                assert doc["state"] != "REJECTED", seen

    check()
    print(f"objects by (kind, state, has a defect): {dict(outcomes)}")
    print(f"defects seen: {len(defects)}: {sorted(defects)}")
    # Every defect was met, both kinds of object were valid and invalid, and Envoy took
    # updates throughout.
    assert DEFECT_WORDS <= defects, sorted(DEFECT_WORDS - defects)
    for kind in ("VirtualService", "DestinationRule"):
        assert outcomes[(kind, "REJECTED", True)] >= 5, outcomes
        assert sum(v for (k, s, bad), v in outcomes.items() if k == kind and not bad) >= 10
    for env in envoys:
        updates = e2e.xds_updates(env)
        assert sum(v for k, v in updates.items() if k.endswith("update_success")) > EXAMPLES
    assert [e2e.rejected(env) for env in envoys] == [{}, {}]
    assert nacks_of(mesh.proxies()) == []
