"""The controller: catalog changes become group snapshots, rebuilding only what changed."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from tests.harness.controller_world import controller_world
from tests.harness.waiting import async_wait_for
from xds_server import controller as controller_module
from xds_server import types
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.model import Endpoint, Port, Service, ServiceEntry


def entry(name: str, *ips: str, protocol: str = "http", port: int = 80) -> ServiceEntry:
    return ServiceEntry(
        Service(name, ports=(Port(protocol, port, protocol),)),  # type: ignore[arg-type]
        tuple(Endpoint(ip, 8080, protocol) for ip in ips),
    )


def node(node_id: str, agent: str = "envoy", **metadata: object) -> base_pb2.Node:
    md = struct_pb2.Struct()
    md.update(metadata)
    return base_pb2.Node(id=node_id, user_agent_name=agent, metadata=md)


@pytest.fixture
def setup() -> tuple[Catalog, SnapshotCache, Controller]:
    return controller_world(("f", "file"))


async def wait_group(cache: SnapshotCache, key: str) -> None:
    await async_wait_for(lambda: key in cache.groups(), timeout=5, message=f"group {key}")


async def test_endpoint_change_reencodes_only_that_load_assignment(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    catalog, cache, controller = setup
    assert controller.not_ready() == ["resources not built yet"]
    assert cache.group_of(node("e1")) == "envoy"
    catalog.replace("f", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    assert controller.not_ready() == []
    before = cache.get("envoy")
    assert sorted(before.get(types.CLUSTER).resources) == ["api.default:80", "web.default:80"]
    assert sorted(before.get(types.LISTENER).resources) == ["http_10000"]

    catalog.replace("f", [entry("web", "10.0.0.1", "10.0.0.3"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    after = cache.get("envoy")
    assert after.changed_at is not None
    for t in (types.CLUSTER, types.LISTENER, types.ROUTE):
        assert after.get(t) is before.get(t)  # untouched types keep their identity
    eds_before, eds_after = before.get(types.ENDPOINT), after.get(types.ENDPOINT)
    assert eds_after.resources["api.default:80"] is eds_before.resources["api.default:80"]
    assert eds_after.resources["web.default:80"] is not eds_before.resources["web.default:80"]


async def test_new_service_changes_clusters_and_routes(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    catalog, cache, controller = setup
    cache.group_of(node("e1"))
    catalog.replace("f", [entry("web", "10.0.0.1")])
    await controller.rebuild()
    before = cache.get("envoy")
    db = entry("db", "10.0.0.9", protocol="tcp", port=5432)
    catalog.replace("f", [entry("web", "10.0.0.1"), db])
    await controller.rebuild()
    after = cache.get("envoy")
    assert sorted(after.get(types.CLUSTER).resources) == ["db.default:5432", "web.default:80"]
    assert sorted(after.get(types.LISTENER).resources) == ["http_10000", "tcp_5432"]
    cla = after.get(types.ENDPOINT).resources["web.default:80"]
    assert cla is before.get(types.ENDPOINT).resources["web.default:80"]


async def test_groups_from_node_metadata_are_built_when_a_proxy_arrives(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    catalog, cache, controller = setup
    catalog.replace("f", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    key = cache.group_of(node("e2", dependencies=["web"], http_listener_port=10001))
    assert key == "envoy;deps=web;port=10001"
    await wait_group(cache, key)
    snap = cache.get(key)
    assert list(snap.get(types.CLUSTER).resources) == ["web.default:80"]
    assert list(snap.get(types.LISTENER).resources) == ["http_10001"]
    grpc_key = cache.group_of(node("g1", agent="gRPC Python"))
    assert grpc_key == "grpc"
    await wait_group(cache, grpc_key)
    assert "web" in cache.get(grpc_key).get(types.LISTENER).resources
    assert controller.groups() == ["envoy;deps=web;port=10001", "grpc"]
    # A later change reaches every known group.
    catalog.replace("f", [entry("web", "10.0.0.1", "10.0.0.5"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    for k in controller.groups():
        cla = cache.get(k).get(types.ENDPOINT).resources["web.default:80"]
        assert len(cla.message().endpoints[0].lb_endpoints) == 2


async def test_snapshot_for_builds_a_group_no_proxy_has_asked_for(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    catalog, _, controller = setup
    catalog.replace("f", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    snap = await controller.snapshot_for("envoy;deps=api")
    assert list(snap.get(types.CLUSTER).resources) == ["api.default:80"]
    with pytest.raises(ValueError, match="bad proxy group key"):
        await controller.snapshot_for("istio")


async def test_bad_node_metadata_is_ignored_with_a_warning(
    setup: tuple[Catalog, SnapshotCache, Controller], caplog: pytest.LogCaptureFixture
) -> None:
    _, cache, _ = setup
    assert cache.group_of(node("e3", http_listener_port="eighty")) == "envoy"
    assert "http_listener_port" in caplog.text and "e3" in caplog.text


async def test_groups_without_proxies_are_forgotten_after_the_idle_time() -> None:
    catalog = Catalog()
    catalog.register("f", "file")
    cache = SnapshotCache()
    now = [1000.0]
    controller = Controller(catalog, cache, group_idle=600, clock=lambda: now[0])
    cache.group_of = controller.group_of
    catalog.replace("f", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    watched = cache.group_of(node("e1", dependencies=["web"]))
    await controller.snapshot_for("envoy;deps=api")  # asked for once by xdsctl
    await wait_group(cache, watched)
    watch = cache.watch(watched, lambda _snap: None)  # a connected stream

    now[0] += 601
    catalog.replace("f", [entry("web", "10.0.0.1", "10.0.0.3"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    assert controller.groups() == [watched]
    assert "envoy;deps=api" not in cache.groups()

    # The stream goes away: its group is kept for the idle time, then forgotten.
    watch.cancel()
    now[0] += 300
    await controller.rebuild()
    assert controller.groups() == [watched]
    now[0] += 301
    await controller.rebuild()
    assert controller.groups() == [] and cache.groups() == []
    # A proxy of it coming back gets it built again.
    assert cache.group_of(node("e2", dependencies=["web"])) == watched
    await wait_group(cache, watched)
    assert list(cache.get(watched).get(types.CLUSTER).resources) == ["web.default:80"]


async def test_incremental_rebuilds_equal_a_fresh_translation(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    """Whatever the controller reuses between rebuilds (scopes, clusters, listeners,
    routes), each group's snapshot equals translating the whole catalog from scratch."""
    import random

    from translators import ProxyGroup, translate

    catalog, cache, controller = setup
    keys = [
        cache.group_of(node("e1")),
        cache.group_of(node("e2", dependencies=["s1", "s4"])),
        cache.group_of(node("g1", agent="gRPC Python")),
    ]
    rng = random.Random(11)
    services: dict[str, ServiceEntry] = {f"s{i}": entry(f"s{i}", f"10.0.0.{i}") for i in range(6)}
    for _ in range(40):
        name = f"s{rng.randrange(8)}"
        action = rng.choice(["endpoints", "endpoints", "port", "remove", "add"])
        if action == "remove":
            services.pop(name, None)
        elif action == "port" or name not in services:
            services[name] = entry(name, "10.1.0.1", port=rng.choice([80, 81, 5432]),
                                   protocol=rng.choice(["http", "tcp"]))  # fmt: skip
        else:
            ips = [f"10.2.0.{rng.randrange(1, 9)}" for _ in range(rng.randrange(0, 3))]
            services[name] = entry(name, *ips)
        catalog.replace("f", list(services.values()))
        await controller.rebuild()
        for key in keys:
            want = translate(catalog.merged(), ProxyGroup.from_key(key)).resources
            snap = cache.get(key)
            for type_url, messages in want.items():
                got = [r.message() for r in snap.get(type_url).resources.values()]
                assert got == messages, (key, types.short_name(type_url), action, name)


async def test_incremental_rebuilds_with_policy_equal_a_fresh_translation(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    """The same with traffic policy changing too: canary weights, subsets, locality load
    balancing, routes to another service; and groups in a locality."""
    import random

    from translators import ProxyGroup, translate
    from translators.policy_resolve import resolve_policies
    from xds_server.model import (
        Destination,
        DestinationPolicy,
        HttpRule,
        LoadBalancer,
        Locality,
        LocalityLb,
        PolicyKey,
        PolicyObject,
        RoutePolicy,
        Subset,
        TrafficPolicy,
        WeightedDestination,
        labels,
    )

    catalog, cache, controller = setup
    catalog.register("p", "policy")
    zoned = node("e3")
    zoned.locality.region, zoned.locality.zone = "r", "a"
    keys = [
        cache.group_of(node("e1")),
        cache.group_of(node("e2", dependencies=["s0"])),  # s0's routes pull in s1
        cache.group_of(node("g1", agent="gRPC Python")),
        cache.group_of(zoned),
    ]
    rng = random.Random(7)

    def versioned(name: str) -> ServiceEntry:
        eps = tuple(
            Endpoint(
                f"10.3.{rng.randrange(4)}.{k}",
                8080,
                "http",
                labels=labels({"version": f"v{k % 2 + 1}"}),
                locality=Locality("r", rng.choice("ab")),
            )
            for k in range(rng.randrange(1, 4))
        )
        return ServiceEntry(Service(name, ports=(Port("http", 80),)), eps)

    def dr(name: str, local: bool) -> PolicyObject:
        lb = LoadBalancer(locality=LocalityLb()) if local else None
        policy = DestinationPolicy(
            PolicyKey("DestinationRule", "default", name), name,
            TrafficPolicy(load_balancer=lb) if lb else None,
            subsets=tuple(Subset(v, labels({"version": v})) for v in ("v1", "v2")),
        )  # fmt: skip
        return PolicyObject(policy.key, f"{name}-dr", policy)

    def vs(name: str, to: str, w1: int) -> PolicyObject:
        dests = (
            WeightedDestination(Destination(to, "default", None, "v1"), w1),
            WeightedDestination(Destination(to, "default", None, "v2"), 100 - w1),
        )
        policy = RoutePolicy(PolicyKey("VirtualService", "default", name), (name,),
                             (HttpRule(destinations=dests),))  # fmt: skip
        return PolicyObject(policy.key, f"{name}-vs", policy)

    stable = {f"s{i}": versioned(f"s{i}") for i in range(3)}  # policy names only these
    others: dict[str, ServiceEntry] = {}
    objects: dict[str, PolicyObject] = {}
    for _ in range(40):
        action = rng.choice(["endpoints", "service", "weights", "subsets", "drop"])
        if action == "endpoints":
            name = rng.choice(sorted(stable))
            stable[name] = versioned(name)
        elif action == "service":
            name = f"s{rng.randrange(3, 6)}"
            if others.pop(name, None) is None:
                others[name] = entry(name, "10.1.0.1")
        elif action == "weights":
            src = rng.choice(["s0", "s2"])
            to = "s1" if src == "s0" else "s2"
            objects[f"{to}-dr"] = objects.get(f"{to}-dr") or dr(to, rng.random() < 0.5)
            objects[f"{src}-vs"] = vs(src, to, rng.choice([0, 10, 50, 90, 100]))
        elif action == "subsets":
            name = rng.choice(["s1", "s2"])
            objects[f"{name}-dr"] = dr(name, rng.random() < 0.5)
        else:
            # Drop a VirtualService (dropping a DestinationRule a route uses would be
            # rejected, and its fallback is state this comparison does not model).
            for k in [k for k in objects if k.endswith("-vs")][:1]:
                del objects[k]
        catalog.replace("f", [*stable.values(), *others.values()])
        catalog.replace_policies("p", list(objects.values()))
        await controller.rebuild()
        policies = resolve_policies(catalog.merged(), list(objects.values()), {}).services
        assert all(s["state"] != "REJECTED" for s in controller.policy_statuses())
        for key in keys:
            want = translate(catalog.merged(), ProxyGroup.from_key(key), policies=policies)
            snap = cache.get(key)
            for type_url, messages in want.resources.items():
                got = [r.message() for r in snap.get(type_url).resources.values()]
                assert got == messages, (key, types.short_name(type_url), action)


async def test_a_policy_that_only_moved_in_its_file_rebuilds_nothing(
    setup: tuple[Catalog, SnapshotCache, Controller], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding a line above an object changes where it is, not what it says."""
    from dataclasses import replace

    from xds_server.model import (
        Destination,
        HttpRule,
        PolicyKey,
        PolicyObject,
        RoutePolicy,
        WeightedDestination,
    )

    catalog, cache, controller = setup
    catalog.register("p", "policy")
    cache.group_of(node("e1"))
    catalog.replace("f", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    rule = HttpRule(destinations=(WeightedDestination(Destination("api", "default")),))
    vs = RoutePolicy(PolicyKey("VirtualService", "default", "web"), ("web",), (rule,),
                     origin="p.yaml:1:1")  # fmt: skip
    catalog.replace_policies("p", [PolicyObject(vs.key, "p.yaml:1:1", vs)])
    await controller.rebuild()
    built: list[str] = []
    real = controller_module.group_resources
    monkeypatch.setattr(
        controller_module, "group_resources", lambda *a: built.append("routes") or real(*a)
    )
    moved = replace(vs, origin="p.yaml:2:1")
    catalog.replace_policies("p", [PolicyObject(vs.key, "p.yaml:2:1", moved)])
    await controller.rebuild()
    assert built == []  # listeners and routes were not even rebuilt
    assert controller.policy_statuses()[0]["origin"] == "p.yaml:2:1"


async def test_policy_object_metric_counts_every_kind(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    """xds_policy_objects{kind,state} has Gateway API routes (and any other kind) as well as
    VirtualServices, and a kind whose objects are gone drops to 0."""
    from sources.policy_file import parse_policy_file
    from xds_server import metrics

    def count(kind: str, state: str = "ACCEPTED") -> float:
        return metrics.POLICY_OBJECTS.labels(kind, state)._value.get()  # type: ignore[no-any-return]

    catalog, _, controller = setup
    catalog.register("p", "policy")
    catalog.replace("f", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    route = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{name: api, port: 80}]}]
"""
    catalog.replace_policies("p", parse_policy_file(route, "p.yaml"))
    await controller.rebuild()
    assert count("HTTPRoute") == 1
    catalog.replace_policies("p", [])
    await controller.rebuild()
    assert count("HTTPRoute") == 0
