"""End to end through proxyless gRPC: Istio policy applied by grpcio clients themselves.

One real `xds-server` (registry file + policy file) for the module; each test starts a
grpcio client (its own process, node user agent "gRPC Python", so the server renders
the gRPC variant of every resource) calling ``xds:///<service>``, and real gRPC
backends that say who they are and can be told to sleep or to fail attempts.

The services and what their policy makes them do:

- ``echo``: 90/10 across subsets v1/v2 of its endpoints, plus a mirror gRPC cannot
  apply (so `xdsctl policies` warns "not applied to gRPC clients");
- ``users``: ``end-user: jason`` → echo v2, everything else → echo v1;
- ``slow``: ``timeout: 2.5s`` in front of a backend that sleeps 4 s;
- ``flaky`` / ``flaky-noretry``: a backend failing the first 3 attempts of every call
  with UNAVAILABLE, behind ``retries {attempts: 3, retryOn: unavailable}`` / no retries;
- ``fault-grpc`` / ``fault-http``: abort with grpcStatus RESOURCE_EXHAUSTED at 50 % /
  httpStatus 404 (gRPC's mapping: UNIMPLEMENTED) at 100 %;
- ``sticky``: consistentHash on header ``x-user`` (no VirtualService) over 4 backends.

Every test ends with the client's proxy status showing no NACK.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness.backends import GrpcBackend
from tests.harness.grpc_xds import GrpcXdsClient, grpc_bootstrap
from tests.harness.policy_mesh import (
    PolicyMesh,
    destination_rule,
    key_of,
    split,
    start_policy_mesh,
    virtual_service,
)
from tests.harness.server_proc import XdsServerProcess

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(90)

REACH = 20.0  # first answer: gRPC's xDS start-up, generous
GRPC_PORT = 50051
_nodes = itertools.count(1)
ClientFactory = Callable[..., GrpcXdsClient]


def grpc_service(name: str, *backends: tuple[GrpcBackend, Mapping[str, str]]) -> dict[str, Any]:
    return {
        "name": name,
        "ports": [{"name": "grpc", "port": GRPC_PORT, "protocol": "grpc"}],
        "endpoints": [
            {"address": "127.0.0.1", "port": b.port, "labels": dict(labels)}
            for b, labels in backends
        ],
    }


def to(host: str, subset: str = "") -> list[dict[str, Any]]:
    """A route to one destination."""
    dest = {"host": host, **({"subset": subset} if subset else {})}
    return [{"destination": dest}]


VERSIONS = {"v1": {"version": "v1"}, "v2": {"version": "v2"}}
POLICIES = [
    destination_rule("echo", "echo", VERSIONS),
    virtual_service(
        "echo",
        ["echo"],
        [
            {
                "route": split("echo", {"v1": 90, "v2": 10}),
                "mirror": {"host": "echo", "subset": "v2"},
            }
        ],
    ),
    virtual_service(
        "users",
        ["users"],
        [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": to("echo", "v2")},
            {"route": to("echo", "v1")},
        ],
    ),
    virtual_service("slow", ["slow"], [{"route": to("slow"), "timeout": "2.5s"}]),
    virtual_service(
        "flaky",
        ["flaky"],
        [{"route": to("flaky"), "retries": {"attempts": 3, "retryOn": "unavailable"}}],
    ),
    virtual_service(
        "flaky-noretry", ["flaky-noretry"], [{"route": to("flaky"), "retries": {"attempts": 0}}]
    ),
    virtual_service(
        "fault-grpc",
        ["fault-grpc"],
        [
            {
                "route": to("echo", "v1"),
                "fault": {
                    "abort": {"grpcStatus": "RESOURCE_EXHAUSTED", "percentage": {"value": 50}}
                },
            }
        ],
    ),
    virtual_service(
        "fault-http",
        ["fault-http"],
        [
            {
                "route": to("echo", "v1"),
                "fault": {"abort": {"httpStatus": 404, "percentage": {"value": 100}}},
            }
        ],
    ),
    destination_rule(
        "sticky",
        "sticky",
        traffic={"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
    ),
]


@dataclass
class GrpcPolicyMesh:
    mesh: PolicyMesh
    backends: dict[str, GrpcBackend]

    def client(
        self,
        factory: ClientFactory,
        service: str,
        *,
        interval: float = 0.01,
        timeout: float = 2.0,
        metadata: Sequence[Mapping[str, str]] = (),
    ) -> GrpcXdsClient:
        node = f"grpc-policy-{service}-{next(_nodes)}"
        boot = grpc_bootstrap(self.mesh.server.xds_port, node)
        return factory(
            boot, f"xds:///{service}", interval=interval, timeout=timeout, metadata=metadata
        )

    def no_nacks(self, client: GrpcXdsClient) -> None:
        """The server saw the client ACK everything it was sent, NACK nothing."""
        node = client.bootstrap["node"]["id"]
        (proxy,) = [p for p in self.mesh.proxies() if p["node_id"] == node]
        assert "grpc" in proxy["group"], proxy
        for short, status in proxy["types"].items():
            assert status["nacks"] == 0 and status["state"] != "NACKED", (short, status)


@pytest.fixture(scope="module")
def grpc_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcPolicyMesh]:
    """The backends and the server, shared by every test of the module."""
    with contextlib.ExitStack() as stack:

        def backend(name: str, **kwargs: Any) -> GrpcBackend:
            b = GrpcBackend(name, **kwargs)
            stack.callback(b.stop)
            return b.start()

        v1, v2, own = backend("echo-v1"), backend("echo-v2"), backend("users-own")
        slow = backend("slow", delay=4.0, workers=16)
        flaky = backend("flaky", fail_attempts=3)
        hashed = [backend(f"h{i}") for i in range(4)]
        echo = ((v1, VERSIONS["v1"]), (v2, VERSIONS["v2"]))
        services = [
            grpc_service("echo", *echo),
            grpc_service("users", (own, {})),
            grpc_service("slow", (slow, {})),
            grpc_service("flaky", (flaky, {})),
            *(grpc_service(n, (own, {})) for n in ("flaky-noretry", "fault-grpc", "fault-http")),
            grpc_service("sticky", *((h, {}) for h in hashed)),
        ]
        directory = tmp_path_factory.mktemp("grpc-policy")

        def start(*args: str, **kwargs: Any) -> XdsServerProcess:
            server = XdsServerProcess(*args, log_path=directory / "xds-server.log", **kwargs)
            stack.callback(server.stop)
            return server.start()

        mesh = start_policy_mesh(start, directory, services, POLICIES)
        mesh.wait_policies(map(key_of, POLICIES))
        all_backends = {b.name: b for b in (v1, v2, own, slow, flaky, *hashed)}
        yield GrpcPolicyMesh(mesh, all_backends)


# ----------------------------------------------------------------------------- tests


def test_weighted_split_across_subsets(
    grpc_mesh: GrpcPolicyMesh, grpc_xds_client_factory: ClientFactory
) -> None:
    client = grpc_mesh.client(grpc_xds_client_factory, "echo", interval=0)
    first = client.wait_for_body("echo-v2", REACH)
    client.wait_for_calls(1000, timeout=60)
    calls = client.results_since(first + 1)
    seen = client.bodies_since(first + 1)
    assert len(calls) >= 1000 and sum(seen.values()) == len(calls), client.codes_since(first)
    share = seen["echo-v2"] / len(calls)
    assert abs(share - 0.10) <= 0.05 and set(seen) == {"echo-v1", "echo-v2"}, seen
    grpc_mesh.no_nacks(client)


def test_mirror_is_reported_as_not_applied_to_grpc(grpc_mesh: GrpcPolicyMesh) -> None:
    table = grpc_mesh.mesh.xdsctl_policies()
    state, reasons = table[("VirtualService", "echo")]
    assert state == "WARNING", (state, reasons)
    assert reasons == [
        "VirtualService default/echo http[0]: mirror: not applied to gRPC clients"
    ], reasons
    # Everything gRPC can apply is applied in full: no other object is warned about.
    others = {k: v for k, v in table.items() if k != ("VirtualService", "echo")}
    assert all(state == "ACCEPTED" for state, _ in others.values()), others


@pytest.mark.parametrize(("user", "backend"), [("jason", "echo-v2"), ("maria", "echo-v1")])
def test_header_match(
    grpc_mesh: GrpcPolicyMesh, grpc_xds_client_factory: ClientFactory, user: str, backend: str
) -> None:
    client = grpc_mesh.client(grpc_xds_client_factory, "users", metadata=[{"end-user": user}])
    first = client.wait_for_body(backend, REACH)
    client.wait_for_calls(50, timeout=30)
    results = client.results_since(first)
    assert client.bodies_since(first) == {backend: len(results)}, client.codes_since(first)
    seen = grpc_mesh.backends[backend].metadata[-1]
    assert seen.get("end-user") == user, seen
    grpc_mesh.no_nacks(client)


def test_timeout_gives_deadline_exceeded(
    grpc_mesh: GrpcPolicyMesh, grpc_xds_client_factory: ClientFactory
) -> None:
    """The route's 2.5 s timeout ends calls to a backend that answers after 4 s.

    grpcio starts a timeout it gets from xDS (or a service config) 1 to 2 s early: it
    dates the call's start from a cycle counter whose epoch is 1-2 s after its clock's
    (grpc/grpc#34547, #40633; ``InitTime`` in src/core/util/time.cc rounds the clock's
    epoch down to a whole second and subtracts one). So the calls end after 0.5-1.5 s,
    never after more than 2.5 s; a route timeout below 2 s ends them at once.
    """
    # The client's own deadline (10 s) is far above both the route's 2.5 s and the
    # backend's 4 s: only the route timeout can end the calls early.
    client = grpc_mesh.client(grpc_xds_client_factory, "slow", interval=0, timeout=10.0)
    client.wait_for_calls(4, timeout=REACH + 10)
    results = client.results_since(0)
    assert {r.get("code") for r in results} == {"DEADLINE_EXCEEDED"}, results
    assert all(0.45 <= r["dt"] <= 2.6 for r in results[1:]), results
    assert grpc_mesh.backends["slow"].requests >= len(results) - 1
    grpc_mesh.no_nacks(client)


def test_retries_turn_unavailable_into_ok(
    grpc_mesh: GrpcPolicyMesh, grpc_xds_client_factory: ClientFactory
) -> None:
    flaky = grpc_mesh.backends["flaky"]
    with_retries = grpc_mesh.client(grpc_xds_client_factory, "flaky", interval=0.02)
    without = grpc_mesh.client(grpc_xds_client_factory, "flaky-noretry", interval=0.02)
    first = with_retries.wait_for_body("flaky", REACH)
    with_retries.wait_for_calls(20, timeout=30)
    assert with_retries.codes_since(first) == {"OK": len(with_retries.results_since(first))}
    # Each call took 4 attempts: 3 failed, the 4th answered.
    assert {1, 2, 3, 4} <= set(flaky.attempts) and 5 not in flaky.attempts, flaky.attempts

    without.wait_for_calls(20, timeout=REACH + 10)
    codes = without.codes_since(0)
    assert codes["UNAVAILABLE"] >= 20 and codes["OK"] == 0, codes
    failed = [r["error"] for r in without.errors_since(0)]
    assert any("flaky fails attempt 1 of 3" in e for e in failed), failed[:3]
    grpc_mesh.no_nacks(with_retries)
    grpc_mesh.no_nacks(without)


def test_fault_abort_with_the_chosen_status(
    grpc_mesh: GrpcPolicyMesh, grpc_xds_client_factory: ClientFactory
) -> None:
    half = grpc_mesh.client(grpc_xds_client_factory, "fault-grpc", interval=0)
    full = grpc_mesh.client(grpc_xds_client_factory, "fault-http", interval=0)
    first = half.wait_for_body("echo-v1", REACH)
    half.wait_for_calls(400, timeout=30)
    codes = half.codes_since(first + 1)
    assert set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes
    aborted = codes["RESOURCE_EXHAUSTED"] / codes.total()
    assert 0.40 <= aborted <= 0.60, codes
    assert any("fault" in e["error"].lower() for e in half.errors_since(first)), half.errors_since(
        first
    )[:3]

    full.wait_for_calls(50, timeout=REACH + 10)
    settled = full.codes_since(full.mark() - 30)
    assert settled == {"UNIMPLEMENTED": 30}, full.codes_since(0)
    grpc_mesh.no_nacks(half)
    grpc_mesh.no_nacks(full)


def test_ring_hash_keeps_each_user_on_one_backend(
    grpc_mesh: GrpcPolicyMesh, grpc_xds_client_factory: ClientFactory
) -> None:
    users = [{"x-user": f"user-{i}"} for i in range(12)]
    client = grpc_mesh.client(grpc_xds_client_factory, "sticky", interval=0, metadata=users)
    client.wait_for_calls(len(users), timeout=REACH + 10)
    client.wait_for_calls(len(users) * 20, timeout=30)
    by_user: dict[str, Counter[str]] = {}
    for r in client.results_since(0):
        assert r.get("ok"), r
        by_user.setdefault(r["md"]["x-user"], Counter())[r["body"]] += 1
    assert len(by_user) == len(users), by_user
    assert all(len(backends) == 1 for backends in by_user.values()), by_user
    chosen = {next(iter(b)) for b in by_user.values()}
    assert len(chosen) >= 2, by_user  # 12 users on one of 4 backends: p = 4^-11
    grpc_mesh.no_nacks(client)
