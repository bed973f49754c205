"""End to end, Gateway API routes in a `--policy` file (mesh mode: `parentRefs` naming a
Service): an HTTPRoute splitting traffic across two Services by backendRef weights and
shifting it with no failed request, a route naming a missing backend Service reported by
`xdsctl policies` and changing nothing else, and a PathPrefix rule with URLRewrite
ReplacePrefixMatch reaching its backend with the rewritten path.

One `xds-server --file --policy` and one SotW and one delta Envoy serve the whole module
(tests/harness/policy.py); every test runs through both and ends with Envoy having
rejected no update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import e2e
from tests.harness.e2e import WAIT
from tests.harness.envoy import EnvoyProcess
from tests.harness.policy import NAMESPACE, Object, PolicyWorld, routes, share, write_atomically
from tests.harness.policy_mesh import PolicyMesh, policy_text
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.policy_fixtures"]
pytestmark = pytest.mark.timeout(120)

SERVICES = [(name, [(name, {})]) for name in ("web", "web-v1", "web-v2", "api")]


def http_route(name: str, *rules: Object) -> Object:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web", "port": 80}],
            "rules": list(rules),
        },
    }


def backends(**weights: int) -> Object:
    return {"backendRefs": [{"name": n.replace("_", "-"), "port": 80, "weight": w}
                            for n, w in weights.items()]}  # fmt: skip


def clusters_of(route: dict[str, Any]) -> set[str]:
    action = route.get("route", {})
    weighted = action.get("weighted_clusters", {}).get("clusters", [])
    if weighted:
        return {c["name"] for c in weighted if c.get("weight", 0) > 0}
    return {action["cluster"]} if "cluster" in action else set()


def routes_to(*services: str) -> Callable[[EnvoyProcess], bool]:
    """Envoy has a route sending traffic to exactly these Services' clusters."""
    want = {f"{s}.{NAMESPACE}:80" for s in services}
    return lambda env: any(clusters_of(r) == want for r in routes(env))


def test_backend_weights_split_then_shift_without_errors(world: PolicyWorld, mode: str) -> None:
    """90/10 between Services web-v1 and web-v2 over 1,000 requests (each share within 5
    points, over 5 binomial standard deviations); then 0/100 under a request loop: all
    traffic moves to web-v2 and not one request fails."""
    world.apply(http_route("split", backends(web_v1=90, web_v2=10)),
                until=routes_to("web-v1", "web-v2"))  # fmt: skip
    client = world.client(mode)
    counts = client.bodies("web", 1000)
    client.close()
    assert set(counts) == {"web-v1", "web-v2"}, counts
    assert abs(share(counts, "web-v1") - 90) <= 5, counts

    loop = world.loop(mode, "web", interval=0.002)
    try:
        loop.wait_for_requests(50, WAIT)
        world.apply(http_route("split", backends(web_v1=0, web_v2=100)), until=routes_to("web-v2"))
        e2e.only(loop, "web-v2", n=50)
    finally:
        summary = loop.stop()
    assert summary.failed == 0, summary
    assert summary.bodies["web-v1"] > 0, summary  # it did run before the shift


def xdsctl_rows(world: PolicyWorld) -> dict[tuple[str, str], tuple[str, list[str]]]:
    """`xdsctl policies` (the real CLI) as printed: per (kind, name), its STATE and the
    reason lines under its row. The parser is PolicyMesh's; it needs only `.server`."""
    return PolicyMesh.xdsctl_policies(world)  # type: ignore[arg-type]


def test_a_missing_backend_service_is_reported_and_changes_nothing(
    world: PolicyWorld, mode: str
) -> None:
    """A second route (for /broken) naming Service `nosuch`: `xdsctl policies` shows it
    REJECTED with the BackendNotFound reason; the first route still splits, and /broken
    goes where it went before (the catch-all), not to a 500."""
    split = http_route("split", backends(web_v1=50, web_v2=50))
    world.apply(split, until=routes_to("web-v1", "web-v2"))
    broken = http_route("broken", {
        "matches": [{"path": {"type": "PathPrefix", "value": "/broken"}}],
        **backends(nosuch=1),
    })  # fmt: skip
    write_atomically(world.policy_path, policy_text([split, broken]))
    last: list[object] = []

    def reported() -> bool:
        rows = xdsctl_rows(world)
        last[:] = [rows]
        state, reasons = rows.get(("HTTPRoute", "broken"), ("", []))
        return state == "REJECTED" and "backend Service default/nosuch not found" in " ".join(
            reasons
        )

    wait_for(reported, WAIT, message=lambda: f"xdsctl policies: {last}")
    rows = xdsctl_rows(world)
    assert any("(BackendNotFound)" in r for r in rows[("HTTPRoute", "broken")][1]), rows
    assert rows[("HTTPRoute", "split")] == ("ACCEPTED", []), rows
    client = world.client(mode)
    counts = client.bodies("web", 200)
    answer = client.get("web", "/broken/x")
    client.close()
    assert set(counts) == {"web-v1", "web-v2"}, counts
    assert answer.status == 200 and answer.body in ("web-v1", "web-v2"), answer
    assert routes_to("web-v1", "web-v2")(world.envoy(mode))
    write_atomically(world.policy_path, "")


def test_path_prefix_rewrite_reaches_the_backend_rewritten(world: PolicyWorld, mode: str) -> None:
    """`/api` (whole segments) goes to Service api with the prefix replaced by
    `/internal`; `/apix` is not under `/api` and stays on web."""
    to_api = {
        "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
        "filters": [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/internal"}}}],
        **backends(api=1),
    }  # fmt: skip
    world.apply(http_route("api", to_api, backends(web=1)), until=routes_to("api"))
    client = world.client(mode)
    other = client.get("web", "/apix")
    assert (other.status, other.body) == (200, "web"), other
    answer = client.get("web", "/api/items?id=7")
    client.close()
    assert (answer.status, answer.body) == (200, "api"), answer
    (seen,) = world.backends["api"].seen_since(0)  # one request: /apix did not come here
    assert seen.path == "/internal/items?id=7", seen
