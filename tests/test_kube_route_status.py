"""What the route status writer writes, decided without I/O (sources.kube_route_status):
our entries for every route (with GRPCRoute-over-HTTPRoute conflicts), merged into the
object keeping the other controllers' entries and unchanged conditions' times; nothing
to write when ours are already as desired; routes parsed again only on a new spec."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from sources.kube_route_status import (
    ParseCache,
    desired_parents,
    keyed,
    merge_parents,
    route_id,
    service_ports,
)
from tests.gateway_objects import route, to
from xds_server.model import Port, Service, ServiceEntry, ServiceKey

SERVICES = {("shop", "web"): frozenset({80}), ("shop", "web-v1"): frozenset({80}),
            ("shop", "web-v2"): frozenset({80})}  # fmt: skip
T1 = datetime(2026, 12, 5, 1, 0, 0, tzinfo=UTC)
T2 = datetime(2026, 12, 5, 2, 0, 0, tzinfo=UTC)
OTHER = {  # another controller's entry: never touched
    "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
    "controllerName": "example.net/gateway",
    "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
}  # fmt: skip


def services(namespace: str, name: str) -> frozenset[int] | None:
    return SERVICES.get((namespace, name))


def desired(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return desired_parents({route_id(obj): obj}, services)[route_id(obj)]


def reasons(entries: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(c["type"], c["status"], c["reason"]) for e in entries for c in e["conditions"]]


def test_good_route_and_missing_backend() -> None:
    assert reasons(desired(route(to("web-v1")))) == [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    ]
    assert reasons(desired(route(to("web-v9")))) == [
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "False", "BackendNotFound"),
    ]


def test_an_httproute_losing_to_a_grpcroute_is_conflicted() -> None:
    http = route(to("web-v1"), name="h")
    grpc = route(to("web-v1"), kind="GRPCRoute", name="g")
    out = desired_parents({route_id(http): http, route_id(grpc): grpc}, services)
    assert reasons(out[route_id(http)])[0] == ("Accepted", "False", "Conflicted")
    assert reasons(out[route_id(grpc)])[0] == ("Accepted", "True", "Accepted")


def test_merge_keeps_other_controllers_entries_and_stamps_ours() -> None:
    obj = route(to("web-v1"))
    obj["status"] = {"parents": [copy.deepcopy(OTHER)]}
    merged = merge_parents(obj, desired(obj), T1)
    assert merged is not None
    assert merged[0] == OTHER
    assert [c["lastTransitionTime"] for c in merged[1]["conditions"]] == [
        "2026-12-05T01:00:00Z",
        "2026-12-05T01:00:00Z",
    ]
    assert merged[1]["controllerName"] == "xds-server.io/mesh"


def test_nothing_to_write_when_ours_are_as_desired() -> None:
    obj = route(to("web-v1"))
    obj["status"] = {"parents": merge_parents(obj, desired(obj), T1)}
    assert merge_parents(obj, desired(obj), T2) is None


def test_an_unchanged_condition_keeps_its_time_a_changed_one_gets_now() -> None:
    obj = route(to("web-v1"))
    obj["status"] = {"parents": [OTHER, *(merge_parents(obj, desired(obj), T1) or [])]}
    broken = copy.deepcopy(obj)
    broken["spec"]["rules"] = [to("web-v9")]
    merged = merge_parents(broken, desired(broken), T2)
    assert merged is not None and merged[0] == OTHER
    times = {c["type"]: (c["status"], c["lastTransitionTime"]) for c in merged[1]["conditions"]}
    assert times == {
        "Accepted": ("True", "2026-12-05T01:00:00Z"),
        "ResolvedRefs": ("False", "2026-12-05T02:00:00Z"),
    }


def test_our_entries_for_parents_no_longer_named_are_removed() -> None:
    obj = route(to("web-v1"))
    stale = merge_parents(obj, desired(obj), T1) or []
    stale[0]["parentRef"] = {**stale[0]["parentRef"], "name": "old"}
    obj["status"] = {"parents": [OTHER, *stale]}
    merged = merge_parents(obj, desired(obj), T2)
    assert merged is not None
    assert [e["parentRef"]["name"] for e in merged] == ["edge", "web"]


def test_routes_are_parsed_again_only_when_the_generation_changes() -> None:
    cache = ParseCache()
    obj = route(to("web-v1"))
    obj["metadata"].update(uid="u1", generation=1, resourceVersion="10")
    rid = route_id(obj)
    first = cache.get(rid, obj)
    obj["metadata"]["resourceVersion"] = "11"  # our own status write
    assert cache.get(rid, obj)[0] is first[0]
    obj["metadata"]["generation"] = 2
    obj["spec"]["rules"] = [to("web-v9")]
    assert cache.get(rid, obj)[0] is not first[0]
    cache.keep_only({})
    assert cache.get(rid, obj)[0] is not first[0]


def test_service_ports_read_the_live_view_and_routes_are_keyed() -> None:
    view: dict[ServiceKey, ServiceEntry] = {}
    ports = service_ports(lambda: view)
    assert ports("shop", "web") is None
    web = Service("web", "shop", ports=(Port("http", 80), Port("grpc", 9000, "grpc")))
    view[web.key] = ServiceEntry(web)
    assert ports("shop", "web") == frozenset({80, 9000})
    obj = route(to("web-v1"))
    assert keyed([obj]) == {("HTTPRoute", "shop", "web"): obj} == keyed(keyed([obj]))
