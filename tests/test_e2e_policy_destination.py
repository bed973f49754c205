"""End to end, DestinationRule traffic policy: circuit breaking, outlier detection and
consistent-hash load balancing, through real Envoys (SotW and delta), seen in the
traffic and in Envoy's own admin API (`/stats`, `/clusters`).

One `xds-server --file --policy` and one SotW and one delta Envoy serve the whole module
(tests/harness/policy.py, its fixtures in policy_fixtures.py); each test writes the
policy file it needs. Every test ends with Envoy having rejected no update.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from tests.harness import e2e
from tests.harness.e2e import WAIT
from tests.harness.policy import (
    Answer,
    PolicyWorld,
    cluster,
    destination_rule,
    host_flags,
)
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.policy_fixtures"]
pytestmark = pytest.mark.timeout(120)

STICKY = [f"sticky-{i}" for i in range(4)]
SERVICES = [
    ("narrow", [("narrow", {})]),
    ("od", [("od-good", {}), ("od-bad", {})]),
    ("sticky", [(name, {}) for name in STICKY]),
]


def has(field: str, name: str) -> Any:
    """An `until` for `PolicyWorld.apply`: Envoy's cluster `name` has `field`."""
    return lambda env: field in (cluster(env, name) or {})


def concurrently(world: PolicyWorld, mode: str, host: str, n: int) -> list[Answer]:
    """`n` requests at once, each on its own connection, released together."""
    start = threading.Barrier(n)
    answers: list[Answer | BaseException] = [RuntimeError("not run")] * n

    def one(i: int) -> None:
        client = world.client(mode)
        try:
            start.wait(WAIT)
            answers[i] = client.get(host)
        except BaseException as exc:  # reported below
            answers[i] = exc
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT * 2)
    errors = [a for a in answers if not isinstance(a, Answer)]
    assert not errors, errors
    return [a for a in answers if isinstance(a, Answer)]


# Envoy 1.40 counts a request refused by max_requests as upstream_rq_active_overflow, one
# refused by max_pending_requests as upstream_rq_pending_overflow.
OVERFLOW = ("upstream_rq_pending_overflow", "upstream_rq_active_overflow")


def stat(cluster_name: str, name: str) -> str:
    """Envoy's name of a cluster stat (it writes ``:`` as ``_`` in stat names)."""
    return f"cluster.{cluster_name.replace(':', '_')}.{name}"


def test_circuit_breaker_overflows_with_503(world: PolicyWorld, mode: str) -> None:
    """`http2MaxRequests: 1` and `http1MaxPendingRequests: 1` in front of a backend that
    takes 1 s: of ten concurrent requests some are served and the rest get Envoy's
    overflow 503 (``x-envoy-overloaded``) at once; Envoy's overflow counters (active and
    pending requests) count exactly those."""
    world.backends["narrow"].delay = 1.0
    pool = {"http": {"http2MaxRequests": 1, "http1MaxPendingRequests": 1}}
    world.apply(
        destination_rule("narrow", "narrow", traffic_policy={"connectionPool": pool}),
        until=has("circuit_breakers", "narrow.default:80"),
    )
    env = world.envoy(mode)
    names = [stat("narrow.default:80", c) for c in OVERFLOW]
    before = e2e.counters(env, *names)
    answers = concurrently(world, mode, "narrow", 10)
    statuses = Counter(a.status for a in answers)
    overflowed = [a for a in answers if a.status == 503]
    assert set(statuses) == {200, 503} and statuses[200] <= 2, statuses
    assert all(a.headers.get("x-envoy-overloaded") == "true" for a in overflowed), overflowed
    after = e2e.counters(env, *names)
    moved = sum((after[n] or 0) - (before[n] or 0) for n in names)
    assert moved == len(overflowed), (before, after, statuses)


def test_outlier_detection_ejects_the_failing_backend(world: PolicyWorld, mode: str) -> None:
    """One of two backends answers 500 to everything. After three consecutive 5xx it is
    ejected: Envoy's `/clusters` flags it failed_outlier_check, and all traffic goes to
    the healthy one."""
    good, bad = world.backends["od-good"], world.backends["od-bad"]
    bad.status = 500
    outlier = {"consecutive5xxErrors": 3, "interval": "1s", "baseEjectionTime": "60s",
               "maxEjectionPercent": 100}  # fmt: skip
    world.apply(
        destination_rule("od", "od", traffic_policy={"outlierDetection": outlier}),
        until=has("outlier_detection", "od.default:80"),
    )
    env = world.envoy(mode)
    assert host_flags(env, "od.default:80") == {good.port: "healthy", bad.port: "healthy"}
    loop = world.loop(mode, "od", interval=0.005)
    try:
        wait_for(
            lambda: "failed_outlier_check" in host_flags(env, "od.default:80")[bad.port],
            WAIT,
            message=lambda: f"not ejected: {host_flags(env, 'od.default:80')}",
        )
        assert host_flags(env, "od.default:80")[good.port] == "healthy"
        e2e.only(loop, "od-good", n=20)
    finally:
        summary = loop.stop()
    # Before the ejection some requests met the bad backend: exactly the 5xx it caused.
    assert set(summary.statuses) == {200, 500}, summary
    assert summary.statuses[500] >= 3, summary
    assert env.stat(stat("od.default:80", "outlier_detection.ejections_enforced_consecutive_5xx"))


def test_consistent_hash_keeps_each_user_on_one_backend(world: PolicyWorld, mode: str) -> None:
    """Ring hash on `x-user` over four backends: every request of a user reaches the
    same backend; twenty users land on at least three of the four (all on two or fewer
    has a probability around 1e-5 for a fair ring), where round robin would spread each
    user's own requests."""
    lb = {"consistentHash": {"httpHeaderName": "x-user"}}
    world.apply(
        destination_rule("sticky", "sticky", traffic_policy={"loadBalancer": lb}),
        until=lambda env: (cluster(env, "sticky.default:80") or {}).get("lb_policy") == "RING_HASH",
    )
    client = world.client(mode)
    seen = {
        user: client.bodies("sticky", 6, {"x-user": user}) for user in (f"u{i}" for i in range(20))
    }
    client.close()
    assert all(len(backends) == 1 for backends in seen.values()), seen
    placed = {next(iter(backends)) for backends in seen.values()}
    assert placed <= set(STICKY) and len(placed) >= 3, seen
