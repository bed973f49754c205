"""End to end, traffic policy that routes: weighted splits across subsets, header and URI
matches with a rewrite, make-before-break when a subset comes and goes, and Istio's
no-timeout default for services without a VirtualService.

One `xds-server --file --policy` and one SotW and one delta Envoy serve the whole module
(tests/harness/policy.py, its fixtures in policy_fixtures.py); each test writes the
policy file it needs (one atomic write) and sends real HTTP traffic through the Envoy of
its mode. Every test ends with Envoy having rejected no update.
"""

from __future__ import annotations

import threading

import pytest

from tests.harness import e2e
from tests.harness.e2e import WAIT
from tests.harness.policy import (
    MODES,
    PolicyWorld,
    destination,
    destination_rule,
    share,
    subsets,
    virtual_hosts,
    virtual_service,
)

pytest_plugins = ["tests.harness.policy_fixtures"]
pytestmark = pytest.mark.timeout(120)

V1, V2 = {"version": "v1"}, {"version": "v2"}
SERVICES = [
    ("web", [("web-v1", V1), ("web-v2", V2)]),
    ("api", [("api", {})]),
    ("patient", [("patient", {})]),
]


def web_rule(name: str, v1: int, v2: int) -> dict[str, object]:
    return {"name": name, "route": [destination("web", "v1", v1), destination("web", "v2", v2)]}


WEB_SUBSETS = destination_rule("web", "web", subsets("v1", "v2"))


def test_weighted_split_then_shift_without_errors(world: PolicyWorld, mode: str) -> None:
    """90/10 over 1,000 requests: each share within 5 points (a binomial standard
    deviation is under 1 point: 5 points is over 5 of them). Then 0/100 while a request
    loop runs: all traffic moves to v2 and no request fails on the way."""
    world.apply(virtual_service("web", ["web"], [web_rule("split-90-10", 90, 10)]), WEB_SUBSETS)
    client = world.client(mode)
    counts = client.bodies("web", 1000)
    client.close()
    assert set(counts) == {"web-v1", "web-v2"}, counts
    assert abs(share(counts, "web-v1") - 90) <= 5, counts
    assert abs(share(counts, "web-v2") - 10) <= 5, counts

    loop = world.loop(mode, "web", interval=0.002)
    try:
        loop.wait_for_requests(50, WAIT)
        world.apply(virtual_service("web", ["web"], [web_rule("shift-0-100", 0, 100)]), WEB_SUBSETS)
        e2e.only(loop, "web-v2", n=50)
    finally:
        summary = loop.stop()
    assert summary.failed == 0, summary
    assert summary.bodies["web-v1"] > 0, summary  # it did run before the shift


def test_header_match_sends_jason_to_v2(world: PolicyWorld, mode: str) -> None:
    """`end-user: jason` reaches v2; other users, and requests without the header, v1."""
    jason = {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [destination("web", "v2")]}  # fmt: skip
    rest = {"name": "everyone-else", "route": [destination("web", "v1")]}
    world.apply(virtual_service("web", ["web"], [jason, rest]), WEB_SUBSETS)
    client = world.client(mode)
    assert client.bodies("web", 20, {"end-user": "jason"}) == {"web-v2": 20}
    assert client.bodies("web", 20, {"end-user": "jasonx"}) == {"web-v1": 20}
    assert client.bodies("web", 20) == {"web-v1": 20}
    client.close()


def test_uri_prefix_routes_to_another_service_with_rewrite(world: PolicyWorld, mode: str) -> None:
    """`/api` on host web goes to service api with the prefix rewritten to `/internal`
    and the authority to `api.internal` (what the api backend sees); other paths stay
    on web."""
    to_api = {
        "name": "api-prefix",
        "match": [{"uri": {"prefix": "/api"}}],
        "rewrite": {"uri": "/internal", "authority": "api.internal"},
        "route": [destination("api")],
    }
    rest = {"name": "web-rest", "route": [destination("web")]}
    world.apply(virtual_service("web", ["web"], [to_api, rest]))
    api = world.backends["api"]
    client = world.client(mode)
    answer = client.get("web", "/api/items?id=7")
    assert (answer.status, answer.body) == (200, "api"), answer
    (seen,) = api.seen_since(0)
    assert seen.path == "/internal/items?id=7", seen
    assert seen.host == "api.internal", seen
    other = client.get("web", "/shop")
    assert (other.status, other.body[:3]) == (200, "web"), other
    assert len(api.seen_since(0)) == 1
    client.close()


def test_make_before_break_adding_and_removing_a_subset(world: PolicyWorld, mode: str) -> None:
    """A VirtualService and a DestinationRule written together (one file write) that add
    subset clusters and send 50 % to v2: not one non-2xx under a fast request loop, and
    none either when both are removed again (routes leave before their clusters do).
    Five rounds, to give a race its chances (a server that sends the routes first fails
    this in most runs; one that drops the clusters first, in every run)."""
    world.apply()
    loop = world.loop(mode, "web", interval=0.001)
    adding, removing = [], []
    try:
        loop.wait_for_requests(20, WAIT)
        for rnd in range(5):
            mark = loop.mark()
            world.apply(
                virtual_service("web", ["web"], [web_rule(f"half-{rnd}", 50, 50)]), WEB_SUBSETS
            )
            loop.wait_for_requests(50, WAIT)
            adding.append(loop.snapshot(mark))
            mark = loop.mark()
            world.apply()
            loop.wait_for_requests(50, WAIT)
            removing.append(loop.snapshot(mark))
    finally:
        summary = loop.stop()
    assert [s.failed for s in adding] == [0] * 5, [str(s) for s in adding if s.failed]
    assert [s.failed for s in removing] == [0] * 5, [str(s) for s in removing if s.failed]
    assert summary.failed == 0, summary
    assert set(summary.bodies) == {"web-v1", "web-v2"}, summary


def test_no_virtual_service_means_no_route_timeout(world: PolicyWorld, mode: str) -> None:
    """README: routes of a service without a VirtualService get Istio's defaults, not
    Envoy's. Envoy's own route timeout is 15 s when unset; the default route carries
    an explicit 0 s (off), and its virtual host Istio's default retry policy (which the
    route, carrying none, inherits)."""
    world.apply()
    (vhost,) = [
        v for v in virtual_hosts(world.envoy(mode))
        if [r["route"].get("cluster") for r in v["routes"]] == ["web.default:80"]
    ]  # fmt: skip
    (default,) = vhost["routes"]
    assert default["name"] == "default", default
    assert default["route"]["timeout"] == "0s", default
    assert "retry_policy" not in default["route"], default
    retry = vhost["retry_policy"]
    assert retry["num_retries"] == 2, retry
    assert set(retry["retry_on"].split(",")) == {
        "connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"
    }, retry  # fmt: skip


def test_no_virtual_service_waits_past_envoys_15s_default(world: PolicyWorld) -> None:
    """The same through traffic: a backend that takes 16 s (Envoy's own route timeout is
    15 s) still answers 200 through both Envoys (one request each, sent together)."""
    world.reset_backends()
    world.apply()
    world.backends["patient"].delay = 16.0
    answers: dict[str, object] = {}

    def one(mode: str) -> None:
        client = world.client(mode, timeout=25.0)
        try:
            answers[mode] = client.get("patient")
        except Exception as exc:  # reported below
            answers[mode] = exc
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(mode,)) for mode in MODES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    world.reset_backends()
    assert {m: (getattr(a, "status", a), getattr(a, "body", "")) for m, a in answers.items()} == {
        m: (200, "patient") for m in MODES
    }, answers
    world.check_nothing_rejected()
