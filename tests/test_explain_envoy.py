"""`xdsctl explain` against real Envoys (one SotW, one delta) under a header-matched
canary: for the same request, the rule, subset and endpoint explain names are the ones
Envoy actually uses, which the test sees by sending that request through Envoy and
reading which backend answered; for the matching and the non-matching request.

The world (server, backends, Envoys) is tests/harness/policy.py's, shared by the module.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.e2e import WAIT
from tests.harness.policy import (
    PolicyWorld,
    destination,
    destination_rule,
    routes,
    subsets,
    virtual_service,
)
from tests.harness.waiting import wait_for

pytest_plugins = ["tests.harness.policy_fixtures"]
pytestmark = pytest.mark.timeout(120)

V1, V2 = {"version": "v1"}, {"version": "v2"}
V3 = {"version": "v3"}
SERVICES = [("web", [("web-v1", V1), ("web-v2", V2), ("web-v3", V3)]), ("api", [("api", {})])]

JASON = {"name": "jason", "match": [{"headers": {"end-user": {"exact": "jason"}}}],
         "route": [destination("web", "v2")]}  # fmt: skip
REST = {"name": "everyone-else", "route": [destination("web", "v1")]}
CANARY = virtual_service("web", ["web"], [JASON, REST])
SUBSETS = destination_rule("web", "web", subsets("v1", "v2"))


def explain(world: PolicyWorld, mode: str, *headers: str) -> dict[str, Any]:
    """`xdsctl explain -o json` for host web, once the proxy has ACKed what it explains
    (so that the answer is what the Envoy runs)."""
    args = ["explain", "--node", f"policy-{mode}", "--host", "web", "-o", "json"]
    for h in headers:
        args += ["--header", h]
    last: list[Any] = []

    def synced() -> dict[str, Any] | None:
        doc: dict[str, Any] = json.loads(world.server.xdsctl(*args).stdout)
        last[:] = [doc.get("sync")]
        states = {s["state"] for s in doc["sync"].values()}
        return doc if states == {"SYNCED"} else None

    return wait_for(synced, WAIT, message=lambda: f"proxy policy-{mode} never SYNCED: {last}")


def backend_at(world: PolicyWorld, address: str) -> str:
    """The backend listening at `address` (``127.0.0.1:<port>``)."""
    (name,) = [n for n, b in world.backends.items() if f"127.0.0.1:{b.port}" == address]
    return name


@pytest.mark.parametrize(
    ("headers", "rule", "subset", "not_matched"),
    [
        (["end-user=jason"], "VirtualService default/web http[0] (jason)", "v2", []),
        (["end-user=bob"], "VirtualService default/web http[1] (everyone-else)", "v1",
         ["header end-user 'bob' does not match exact 'jason'"]),
        ([], "VirtualService default/web http[1] (everyone-else)", "v1",
         ["header end-user is absent"]),
    ],
)  # fmt: skip
def test_explained_rule_and_subset_are_what_envoy_does(
    world: PolicyWorld,
    mode: str,
    headers: list[str],
    rule: str,
    subset: str,
    not_matched: list[str],
) -> None:
    statuses = world.apply(CANARY, SUBSETS)
    doc = explain(world, mode, *headers)
    route = doc["route"]
    assert route["policy"]["rule"] == rule, route
    vs = next(s for s in statuses if s["kind"] == "VirtualService")
    assert (route["policy"]["origin"], route["policy"]["state"]) == (vs["origin"], "ACCEPTED")
    assert route["policy"]["source"] == "file"  # the registry it came from (a policy file)
    assert [why for nm in doc["not_matched"] for why in nm["why"]] == not_matched
    (cluster,) = doc["clusters"]
    assert (cluster["subset"], cluster["name"]) == (subset, f"web.default:80|{subset}")
    assert cluster["destination_policy"]["name"] == "web"
    assert cluster["subset_labels"] == {"version": subset}  # the DestinationRule's, as written
    (endpoint,) = cluster["endpoints"]
    explained = backend_at(world, endpoint["address"])
    assert explained == f"web-{subset}"
    # The same request through this Envoy reaches that endpoint, every time.
    client = world.client(mode)
    sent = dict(h.split("=", 1) for h in headers)
    assert client.bodies("web", 10, sent) == {explained: 10}
    client.close()


# Rules that exercise each matcher; the catch-all goes to v1.
MATCHERS = virtual_service("web", ["web"], [
    {"name": "numbered", "match": [{"uri": {"regex": "/v2/[0-9]+"}}],
     "route": [destination("web", "v2")]},
    {"name": "opted-in", "match": [{"headers": {"x-canary": {"regex": "on|yes"}},
                                    "withoutHeaders": {"x-opt-out": {"exact": "1"}}}],
     "route": [destination("web", "v3")]},
    {"name": "beta", "match": [{"uri": {"prefix": "/Beta"}, "ignoreUriCase": True}],
     "route": [destination("web", "v2")]},
    {"name": "query", "match": [{"queryParams": {"q": {"prefix": "x"}}}],
     "route": [destination("web", "v3")]},
    REST,
])  # fmt: skip
REQUESTS = [
    ("/v2/12", {}),
    ("/v2/12x", {}),  # the regex must match the whole path
    ("/v2/12?q=x", {}),  # the regex sees the path without its query
    ("/", {"x-canary": "yes"}),
    ("/", {"x-canary": "yes-please"}),
    ("/", {"x-canary": "on", "x-opt-out": "1"}),
    ("/", {"x-canary": "on", "x-opt-out": "0"}),
    ("/beta/page", {}),
    ("/BETA", {}),
    ("/bet", {}),
    ("/?q=xyz", {}),
    ("/?q=yz", {}),
    ("/?q=", {}),
]


def test_explain_agrees_with_envoy_request_by_request(world: PolicyWorld, mode: str) -> None:
    """For requests that exercise regex, inverted headers, case-insensitive prefixes and
    query parameters, the endpoint explain names is the one Envoy sends each to."""
    world.apply(MATCHERS, destination_rule("web", "web", subsets("v1", "v2", "v3")))
    client = world.client(mode)
    disagreements, seen = [], set()
    for path, headers in REQUESTS:
        args = ["explain", "--node", f"policy-{mode}", "--host", "web", "--path", path]
        for name, value in headers.items():
            args += ["--header", f"{name}={value}"]
        doc = json.loads(world.server.xdsctl(*args, "-o", "json").stdout)
        (cluster,) = doc["clusters"]
        (endpoint,) = cluster["endpoints"]
        explained = backend_at(world, endpoint["address"])
        answer = client.get("web", path, headers)
        seen.add(answer.body)
        if answer.body != explained:
            rule = doc["route"]["name"]
            disagreements.append(
                f"{path} {headers}: explain {explained} ({rule}), Envoy {answer.body}"
            )
    client.close()
    assert disagreements == []
    assert seen == {"web-v1", "web-v2", "web-v3"}  # every rule kind was taken somewhere


def http_route(name: str, rule: dict[str, Any]) -> dict[str, Any]:
    """A Gateway API HTTPRoute attached to Service web (mesh, GAMMA)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "web"}], "rules": [rule]},
    }


def test_merged_gateway_routes_name_the_route_object_that_wrote_the_rule(
    world: PolicyWorld, mode: str
) -> None:
    """Two HTTPRoutes on Service web merge into one routing policy whose routes are named
    after the Service; explain still names the HTTPRoute (and its origin) behind each."""
    canary = http_route("web-canary", {
        "matches": [{"headers": [{"name": "x-canary", "value": "1"}]}],
        "backendRefs": [{"name": "api", "port": 80}],
    })  # fmt: skip
    main = http_route("web-main", {"backendRefs": [{"name": "web", "port": 80}]})
    merged = {"Service default/web http[0]", "Service default/web http[1]"}
    statuses = world.apply(
        canary, main, until=lambda env: merged <= {r.get("name") for r in routes(env)}
    )
    origins = {s["name"]: s["origin"] for s in statuses}
    client = world.client(mode)
    for headers, writer, backends in [
        (["x-canary=1"], "web-canary", {"api"}),
        ([], "web-main", {"web-v1", "web-v2", "web-v3"}),
    ]:
        doc = explain(world, mode, *headers)
        policy = doc["route"]["policy"]
        assert (policy["kind"], policy["name"]) == ("HTTPRoute", writer), policy
        assert policy["origin"] == origins[writer]
        (cluster,) = doc["clusters"]
        explained = {backend_at(world, e["address"]) for e in cluster["endpoints"]}
        assert explained == backends
        sent = dict(h.split("=", 1) for h in headers)
        assert set(client.bodies("web", 10, sent)) <= explained
    client.close()
