"""End to end, traffic policy for failures: retries, timeouts, fault injection and
mirroring, through real Envoys (SotW and delta) in front of loopback backends that can be
told to fail first attempts, to sleep, or to answer an error.

One `xds-server --file --policy` and one SotW and one delta Envoy serve the whole module
(tests/harness/policy.py, its fixtures in policy_fixtures.py); each test writes the
policy file it needs and sends HTTP requests through the Envoy of its mode. Every test
ends with Envoy having rejected no update.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests.harness.e2e import WAIT
from tests.harness.policy import (
    Answer,
    PolicyWorld,
    destination,
    destination_rule,
    share,
    subsets,
    virtual_service,
)
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.policy_fixtures"]
pytestmark = pytest.mark.timeout(120)

# Envoy's timers run on libevent's coarse monotonic clock (one kernel tick, at most 10 ms),
# so a delay or timeout can fire up to that much early as the client measures it.
TICK = 0.01

SERVICES = [
    ("flaky", [("flaky", {})]),
    ("slow", [("slow", {})]),
    ("faulty", [("faulty", {})]),
    ("shop", [("shop-v1", {"version": "v1"}), ("shop-v2", {"version": "v2"})]),
]


def attempts_per_request(world: PolicyWorld, backend: str) -> list[int]:
    """How many attempts the backend saw of each request (by x-request-id), in order."""
    counts: Counter[str] = Counter(s.headers["x-request-id"] for s in world.backends[backend].seen)
    return list(counts.values())


def test_retries_turn_failed_first_attempts_into_200(world: PolicyWorld, mode: str) -> None:
    """The backend answers 503 to the first three attempts of every request. With
    `attempts: 3` on 503 the client gets 200 from the fourth attempt; with `attempts: 2`
    (one short) and with `attempts: 0` (no retries, not Istio's default two) it gets the
    503, after exactly 3 and 1 attempts."""
    world.backends["flaky"].fail_attempts = 3

    def five_with(name: str, attempts: int) -> list[Answer]:
        """Five requests (on a new connection) after retries of `attempts` are in force."""
        # Istio refuses retryOn next to attempts 0 ("retries disabled").
        retry = {"attempts": attempts, **({"retryOn": "connect-failure,503"} if attempts else {})}
        rule = {"name": name, "route": [destination("flaky")], "retries": retry}
        world.apply(virtual_service("flaky", ["flaky"], [rule]))
        world.backends["flaky"].seen.clear()
        client = world.client(mode)
        try:
            return [client.get("flaky") for _ in range(5)]
        finally:
            client.close()

    answers = five_with("retry-3", 3)
    assert [(a.status, a.body) for a in answers] == [(200, "flaky")] * 5, answers
    assert attempts_per_request(world, "flaky") == [4] * 5

    answers = five_with("retry-2", 2)
    assert [a.status for a in answers] == [503] * 5, answers
    assert attempts_per_request(world, "flaky") == [3] * 5

    answers = five_with("retry-0", 0)
    assert [a.status for a in answers] == [503] * 5, answers
    assert attempts_per_request(world, "flaky") == [1] * 5


def test_timeout_answers_504_after_half_a_second(world: PolicyWorld, mode: str) -> None:
    """`timeout: 0.5s` in front of a backend that sleeps 2 s: 504 after at least 0.5 s
    (less one tick of Envoy's clock) and well before the backend would have answered."""
    world.backends["slow"].delay = 2.0
    rule = {"name": "half-second", "route": [destination("slow")], "timeout": "0.5s"}
    world.apply(virtual_service("slow", ["slow"], [rule]))
    client = world.client(mode)
    for _ in range(2):
        answer = client.get("slow")
        assert answer.status == 504, answer
        assert 0.5 - TICK <= answer.seconds < 1.5, answer
    client.close()


def test_fault_abort_half_the_requests_with_418(world: PolicyWorld, mode: str) -> None:
    """Abort 50 % with 418: over 500 requests the 418 share is within 10 points of 50
    (binomial standard deviation 2.2 points: 10 points is 4.5 of them, a false failure
    about once in 100,000 runs); the rest reach the backend; only the others did."""
    rule = {"name": "abort-half", "route": [destination("faulty")],
            "fault": {"abort": {"httpStatus": 418, "percentage": {"value": 50}}}}  # fmt: skip
    world.apply(virtual_service("faulty", ["faulty"], [rule]))
    client = world.client(mode)
    counts = client.bodies("faulty", 500)
    client.close()
    assert set(counts) == {"418", "faulty"}, counts
    assert abs(share(counts, "418") - 50) <= 10, counts
    assert world.backends["faulty"].requests == counts["faulty"], counts


def test_fault_delay_every_request_by_300ms(world: PolicyWorld, mode: str) -> None:
    """A 300 ms delay at 100 %: every request takes at least 300 ms (less one tick of
    Envoy's clock) and is answered by the backend."""
    rule = {"name": "delay-all", "route": [destination("faulty")],
            "fault": {"delay": {"fixedDelay": "300ms", "percentage": {"value": 100}}}}  # fmt: skip
    world.apply(virtual_service("faulty", ["faulty"], [rule]))
    client = world.client(mode)
    answers = [client.get("faulty") for _ in range(5)]
    client.close()
    assert [(a.status, a.body) for a in answers] == [(200, "faulty")] * 5, answers
    assert min(a.seconds for a in answers) >= 0.3 - TICK, [a.seconds for a in answers]


def test_mirror_copies_requests_and_answers_only_from_primary(
    world: PolicyWorld, mode: str
) -> None:
    """Route to subset v1 and mirror to v2 (which answers 500): the client sees only
    v1's answers; v2 receives a copy of every request (same x-request-id and path, Host
    with Envoy's ``-shadow`` suffix)."""
    shadow = world.backends["shop-v2"]
    shadow.status = 500
    rule = {"name": "mirror-v2", "route": [destination("shop", "v1")],
            "mirror": {"host": "shop", "subset": "v2"}}  # fmt: skip
    world.apply(
        virtual_service("shop", ["shop"], [rule]),
        destination_rule("shop", "shop", subsets("v1", "v2")),
    )
    client = world.client(mode)
    answers = [client.get("shop", f"/item/{i}") for i in range(20)]
    client.close()
    assert [(a.status, a.body) for a in answers] == [(200, "shop-v1")] * 20, answers
    primary = world.backends["shop-v1"].seen
    assert len(primary) == 20
    # Mirrored requests are sent without waiting for them: they may trail the answers.
    wait_for(lambda: len(shadow.seen) >= 20, WAIT, message=lambda: f"mirrored: {shadow.seen}")
    time.sleep(0.2)  # a 21st copy would be a bug; give it the time to show
    copies = {(s.headers["x-request-id"], s.path, s.host) for s in shadow.seen}
    assert copies == {(s.headers["x-request-id"], s.path, "shop-shadow") for s in primary}
    assert len(shadow.seen) == 20
