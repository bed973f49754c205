"""End to end, issue 10 test 12: a bad policy object loses nothing.

A real `xds-server` (registry file + policy file) drives a real Envoy, in SotW and in
delta. ``web`` has a good 90/10 canary (VirtualService + DestinationRule); ``api`` has
no policy. Then, each in turn:

- a bad VirtualService for ``api`` (an invalid regex, a subset no DestinationRule defines,
  a zero total weight) is written next to the good objects: `xdsctl policies` shows it
  REJECTED with its reason (``file:line:col`` for what the parser refuses), Envoy
  rejects no update of any type, and traffic on ``web`` keeps its 90/10 split with no
  failed request (``api`` keeps answering too);
- the good ``web`` VirtualService is edited into a bad one (the same three defects): it
  is REJECTED "serving its last valid version", and ``web``'s traffic is unchanged.

Failing any of it would show as: the good split turning 50/50 (the good VirtualService
dropped with the bad one, or its last valid version dropped: ``web`` is round robin over
v1 and v2 without it), a non-2xx or an Envoy NACK (the bad object sent out).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import e2e
from tests.harness.backends import HttpBackend, RequestLoop
from tests.harness.e2e import WAIT
from tests.harness.policy_mesh import (
    PolicyMesh,
    destination_rule,
    key_of,
    split,
    start_policy_mesh,
    virtual_service,
)

Policies = dict[tuple[str, str], dict[str, Any]]

pytest_plugins = ["tests.harness.fixtures"]

pytestmark = pytest.mark.timeout(120)

WINDOW = 300  # requests per look at the split: 90/10 puts 30 ± 5 on v2, 50/50 puts 150
V2_BOUNDS = (8, 60)  # far from both 0 (all on v1) and 150 (round robin): > 4 sigma
REGEX_REASON = "invalid RE2 regex: missing ): a("
SUBSET_REASON = "subset 'v9' of service {svc}.default is not defined by a DestinationRule"
WEIGHT_REASON = "route: total weight is zero (give at least one destination a weight)"

API_REASONS = {
    "regex": REGEX_REASON,
    "subset": SUBSET_REASON.format(svc="api"),
    "weight": WEIGHT_REASON,
}
EDIT_REASONS = {
    "regex": REGEX_REASON,
    "subset": SUBSET_REASON.format(svc="web"),
    "weight": WEIGHT_REASON,
}

WEB_DR = destination_rule("web", "web", {"v1": {"version": "v1"}, "v2": {"version": "v2"}})


def web_vs(**change: Any) -> dict[str, Any]:
    """The good 90/10 canary on web, or a broken edit of it."""
    rule: dict[str, Any] = {"name": "canary", "route": split("web", {"v1": 90, "v2": 10})}
    rule.update(change)
    return virtual_service("web", ["web"], [rule])


def bad_rules(host: str) -> dict[str, dict[str, Any]]:
    """The three defects, each as one HTTP rule for ``host``."""
    return {
        "regex": {"match": [{"uri": {"regex": "a("}}], "route": [{"destination": {"host": host}}]},
        "subset": {"route": [{"destination": {"host": host, "subset": "v9"}}]},
        "weight": {
            "route": [
                {"destination": {"host": host}, "weight": 0},
                {"destination": {"host": "web"}, "weight": 0},
            ]
        },
    }


def position(text: str, *needles: str) -> str:
    """``line:col`` (1-based) where the last of ``needles`` starts in ``text``, each
    found on a line after the one before it."""
    lines = text.splitlines()
    number = 0
    for needle in needles:
        number = next(i for i in range(number, len(lines)) if needle in lines[i])
        found = number
        number += 1
    return f"{found + 1}:{lines[found].index(needles[-1]) + 1}"


def rejected(key: tuple[str, str], reason: str) -> Callable[[Policies], bool]:
    """Whether the server reports ``key`` REJECTED for ``reason`` (so this very edit was
    read: each edit is rejected for a different reason)."""

    def check(policies: Policies) -> bool:
        doc = policies[key]
        return doc["state"] == "REJECTED" and any(reason in r for r in doc["reasons"])

    return check


def look(loop: RequestLoop, api: RequestLoop) -> dict[str, int]:
    """The next WINDOW requests on web: all 2xx, from v1 and v2, v2 near 10 %; and api
    answered by its own backend meanwhile. Returns web's counts."""
    mark, api_mark = loop.mark(), api.mark()
    loop.wait_for_requests(WINDOW, WAIT * 3)
    seen = loop.snapshot(mark)
    assert seen.failed == 0 and set(seen.bodies) <= {"web-v1", "web-v2"}, seen
    v2 = seen.bodies["web-v2"]
    assert V2_BOUNDS[0] <= v2 <= V2_BOUNDS[1], f"web is no longer split 90/10: {seen}"
    api_seen = api.snapshot(api_mark)
    assert api_seen.total > 0 and api_seen.failed == 0, api_seen
    assert set(api_seen.bodies) == {"api"}, api_seen
    return dict(seen.bodies)


def reason_of(mesh: PolicyMesh, key: tuple[str, str]) -> tuple[str, list[str]]:
    """The object's state and reasons as `xdsctl policies` prints them."""
    table = mesh.xdsctl_policies()
    assert key in table, table
    return table[key]


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_bad_objects_are_rejected_and_lose_nothing(
    delta: bool,
    tmp_path: Path,
    xds_server_factory: Callable[..., Any],
    envoy_factory: Callable[..., Any],
    http_backend_factory: Callable[..., HttpBackend],
    request_loop_factory: Callable[..., RequestLoop],
) -> None:
    v1, v2, api_backend = e2e.backends(http_backend_factory, "web-v1", "web-v2", "api")
    services = [
        {
            "name": "web",
            "ports": [{"port": 80, "protocol": "http"}],
            "endpoints": [
                {"address": "127.0.0.1", "port": b.port, "labels": {"version": name}}
                for b, name in ((v1, "v1"), (v2, "v2"))
            ],
        },
        {
            "name": "api",
            "ports": [{"port": 80, "protocol": "http"}],
            "endpoints": [{"address": "127.0.0.1", "port": api_backend.port}],
        },
    ]
    good = [WEB_DR, web_vs()]
    mesh = start_policy_mesh(xds_server_factory, tmp_path, services, good)
    env = mesh.envoy(envoy_factory, delta)
    web = request_loop_factory(mesh.url, "web", interval=0.002)
    api = request_loop_factory(mesh.url, "api", interval=0.02)
    initial = mesh.wait_policies(
        map(key_of, good), lambda p: all(d["state"] == "ACCEPTED" for d in p.values())
    )
    mesh.wait_synced()
    web.wait_for_body("web-v2", WAIT, since=0)
    start = web.mark()
    look(web, api)
    web_key = ("VirtualService", "web")
    updates = e2e.xds_updates(env)
    assert any(k.endswith("update_success") and v for k, v in updates.items()), updates

    # A new bad object for api, next to the good ones: rejected, nothing else changes.
    api_key = ("VirtualService", "api")
    for defect, rule in bad_rules("api").items():
        text = mesh.write_policies(*good, virtual_service("api", ["api"], [rule]))
        mesh.wait_policies([*map(key_of, good), api_key], rejected(api_key, API_REASONS[defect]))
        mesh.wait_synced()
        state, reasons = reason_of(mesh, api_key)
        assert state == "REJECTED", (defect, reasons)
        if defect == "regex":
            where = f"{mesh.policy}:{position(text, 'a(')}"
            want = f"{where}: VirtualService default/api: spec.http[0].match[0].uri.regex: "
            assert reasons == [want + REGEX_REASON], reasons
        else:
            # The route list starts at its first "-", on the line after "route:".
            where = f"{mesh.policy}:{position(text, 'name: api', 'route:', '- destination:')}"
            want = f"{where}: VirtualService default/api: spec.http[0]."
            reason = (
                f"route: {SUBSET_REASON.format(svc='api')}"
                if defect == "subset"
                else (WEIGHT_REASON)
            )
            assert reasons == [want + reason], reasons
        for key in map(key_of, good):
            assert reason_of(mesh, key) == ("ACCEPTED", []), key
        assert e2e.rejected(env) == {}, (defect, e2e.rejected(env))
        look(web, api)

    # The good web VirtualService edited into a bad one: its last valid version stays.
    broken = bad_rules("web")
    edits = {
        "regex": web_vs(match=broken["regex"]["match"]),
        "subset": web_vs(route=split("web", {"v1": 90, "v9": 10})),
        "weight": web_vs(route=split("web", {"v1": 0, "v2": 0})),
    }
    for defect, edited in edits.items():
        mesh.write_policies(WEB_DR, edited)
        mesh.wait_policies(map(key_of, good), rejected(web_key, EDIT_REASONS[defect]))
        mesh.wait_synced()
        state, reasons = reason_of(mesh, web_key)
        assert state == "REJECTED", (defect, reasons)
        assert len(reasons) == 2, reasons
        origin = initial[web_key]["origin"]
        assert reasons[1] == f"serving its last valid version ({origin})", reasons
        assert EDIT_REASONS[defect] in reasons[0], (defect, reasons)
        assert e2e.rejected(env) == {}, (defect, e2e.rejected(env))
        look(web, api)

    # Over the whole run (>= 2,000 requests) the split is 90/10 within 5 points.
    total = web.snapshot(start)
    assert total.total >= 2000 and total.failed == 0, total
    share = total.bodies["web-v2"] / total.total
    assert abs(share - 0.10) <= 0.05, total
    e2e.finish(env, web, api)
