"""Translators: golden files (the spec of what each catalog becomes), ProxyGroup parsing,
and the real Envoy's ``--mode validate`` over translated resources.

``UPDATE_GOLDEN=1 pytest tests/test_translators.py`` rewrites tests/golden/*.json and
fails every golden test ("goldens rewritten, review the diff"); read the diff, then run
without it before committing.
"""

from __future__ import annotations

import difflib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from tests.harness.envoy import validate_bootstrap
from tests.harness.ports import free_port
from translators import ProxyGroup, Skipped, Translation, translate
from translators.group import DEFAULT_HTTP_LISTENER_PORT, Kind
from translators.policy_resolve import ServicePolicy
from translators.services import service_clusters, service_load_assignments
from xds_server import types
from xds_server.model import Endpoint, Locality, Port, Service, ServiceEntry, ServiceKey

GOLDEN = Path(__file__).parent / "golden"
Catalog = dict[ServiceKey, ServiceEntry]

# ------------------------------------------------------------------------ catalogs


def catalog(*entries: ServiceEntry) -> Catalog:
    return {e.key: e for e in entries}


def single() -> Catalog:
    web = Service("web", ports=(Port("http", 8080),))
    return catalog(
        ServiceEntry(web, (Endpoint("10.0.0.2", 8080, "http"), Endpoint("10.0.0.1", 8080, "http")))
    )


def multi() -> Catalog:
    """Two services, several ports, localities, every health value, weights, hostnames."""
    east_a = Locality("us-east-1", "us-east-1a")
    east_b = Locality("us-east-1", "us-east-1b", "rack-7")
    api = Service(
        "api",
        "shop",
        ports=(Port("http", 8080), Port("grpc", 9090, "grpc"), Port("h2c", 8443, "http2")),
        hostnames=("api.service.consul", "api.shop.svc.cluster.local"),
        source="kubernetes",
    )
    api_eps = (
        Endpoint("10.1.0.1", 8080, "http", "healthy", east_a, weight=3),
        Endpoint("10.1.0.2", 8080, "http", "unhealthy", east_a),
        Endpoint("10.1.0.3", 8080, "http", "draining", east_b, weight=2),
        Endpoint("10.1.0.4", 8080, "http", "unknown", east_b),
        Endpoint("10.1.0.1", 9090, "grpc", "healthy", east_a),
        Endpoint("10.1.0.3", 9090, "grpc", "healthy", east_b, weight=5),
        # h2c has no endpoints: an empty assignment still warms its cluster.
        Endpoint("10.1.0.9", 1234, "no-such-port"),  # names no port: left out
    )
    web = Service(
        "web",
        ports=(Port("http", 80),),
        hostnames=("web.service.consul", "web.default"),  # the 2nd repeats name.namespace
        source="consul",
    )
    web_eps = (
        Endpoint("2001:db8::1", 80, "http"),
        Endpoint("192.168.0.10", 80, "http", locality=Locality("eu-west-1")),
    )
    return catalog(ServiceEntry(api, api_eps), ServiceEntry(web, web_eps))


def tcp() -> Catalog:
    """TCP ports next to HTTP ones; port conflicts with each other and the HTTP listener."""
    db = Service("db", ports=(Port("pg", 5432, "tcp"),))
    cache = Service("cache", "infra", ports=(Port("redis", 6379, "tcp"), Port("ui", 8080)))
    db2 = Service("db", "other", ports=(Port("pg", 5432, "tcp"),))  # 5432 taken by db.default
    clash = Service("edge", ports=(Port("raw", 10000, "tcp"),))  # the HTTP listener's port
    return catalog(
        ServiceEntry(db, (Endpoint("10.2.0.1", 5432, "pg"),)),
        ServiceEntry(cache, (Endpoint("10.2.0.2", 6379, "redis"), Endpoint("10.2.0.2", 80, "ui"))),
        ServiceEntry(db2, (Endpoint("10.2.0.3", 5432, "pg"),)),
        ServiceEntry(clash, ()),
    )


def conflict() -> Catalog:
    """Services claiming the same domains; a name.namespace shared by two services.

    Claims go in (namespace, name) order: a/b.c, alias/aaa, web/default, a.b/c, web/prod.
    """
    return catalog(
        ServiceEntry(Service("web", "default", (Port("http", 80),), ("www.example.com",))),
        # loses "web", "web:80", "WWW.example.com" (case-insensitive), "WWW.example.com:80";
        # its port 81 keeps every domain.
        ServiceEntry(
            Service("web", "prod", (Port("http", 80), Port("alt", 81)), ("WWW.example.com",))
        ),
        # takes "web.prod" and "web.prod:80", so web.prod's port-80 virtual host has no
        # domain left and is dropped.
        ServiceEntry(Service("alias", "aaa", (Port("http", 80),), ("web.prod",))),
        # "a"/"b.c" and "a.b"/"c" are both "a.b.c": the second loses its cluster, its
        # assignment and its virtual host.
        ServiceEntry(Service("a", "b.c", (Port("http", 80),))),
        ServiceEntry(Service("a.b", "c", (Port("http", 80),))),
    )


def grpc_catalog() -> Catalog:
    return catalog(
        *multi().values(),
        # api/other comes before api/shop: it keeps "api" and "api:8080", api.shop loses them.
        ServiceEntry(
            Service("api", "other", (Port("grpc", 8080, "grpc"), Port("db", 5432, "tcp"))),
            (Endpoint("10.3.0.1", 8080, "grpc"), Endpoint("10.3.0.1", 5432, "db")),
        ),
        ServiceEntry(Service("tcponly", ports=(Port("db", 5432, "tcp"),))),  # nothing for gRPC
    )


def external() -> Catalog:
    """A service Envoy resolves by DNS (Kubernetes ExternalName) beside an EDS one."""
    ext = Service(
        "payments",
        "shop",
        ports=(Port("http", 443), Port("grpc", 8443, "grpc"), Port("pg", 5432, "tcp")),
        hostnames=("payments.shop.svc",),
        external_name="api.payments.example.com",
    )
    return catalog(ServiceEntry(ext), *single().values())


CASES: dict[str, tuple[Callable[[], Catalog], str]] = {
    "external": (external, "envoy"),
    "single": (single, "envoy"),
    "multi": (multi, "envoy"),
    "tcp": (tcp, "envoy"),
    "conflict": (conflict, "envoy"),
    "deps": (multi, "envoy;deps=web.service.consul"),
    "deps_by_name": (grpc_catalog, "envoy;deps=api,tcponly.default"),
    "port": (single, "envoy;port=10001"),
    "grpc": (grpc_catalog, "grpc"),
    "grpc_deps": (grpc_catalog, "grpc;deps=api.other"),
}

# ------------------------------------------------------------------------ golden


def to_dict(message: Message) -> dict[str, Any]:
    """Envoy's config_dump form."""
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def render(group: ProxyGroup, result: Translation) -> str:
    doc = {
        "group": group.key,
        "resources": {
            types.short_name(t): [to_dict(m) for m in result.resources[t]] for t in types.PUSH_ORDER
        },
        "skipped": [{"subject": s.subject, "reason": s.reason} for s in result.skipped],
    }
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    make, key = CASES[case]
    group = ProxyGroup.from_key(key)
    text = render(group, translate(make(), group))
    path = GOLDEN / f"{case}.json"
    expected = path.read_text() if path.exists() else ""
    diff = "".join(
        difflib.unified_diff(
            expected.splitlines(keepends=True),
            text.splitlines(keepends=True),
            f"golden/{case}.json",
            "translated",
        )
    )
    if os.environ.get("UPDATE_GOLDEN"):
        # Rewriting compares nothing, so this mode never passes: a run with
        # UPDATE_GOLDEN left set must not look like a green suite.
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
        pytest.fail(
            f"goldens rewritten, review the diff (git diff {path}), then run without "
            f"UPDATE_GOLDEN:\n{diff or f'golden/{case}.json: unchanged'}"
        )
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    if diff:
        pytest.fail(
            f"translation differs from golden/{case}.json (UPDATE_GOLDEN=1 to accept):\n{diff}"
        )


@pytest.mark.parametrize("case", sorted(CASES))
def test_translation_is_deterministic_and_names_unique(case: str) -> None:
    make, key = CASES[case]
    group = ProxyGroup.from_key(key)
    items = list(make().items())
    random.Random(7).shuffle(items)
    first, second = translate(make(), group), translate(dict(items), group)
    assert render(group, first) == render(group, second)
    assert list(first.resources) == list(types.PUSH_ORDER)
    for type_url, messages in first.resources.items():
        names = [types.resource_name(type_url, m) for m in messages]
        assert names == sorted(set(names)), type_url
    # Every EDS cluster has its assignment (DNS clusters carry their address themselves);
    # every route config is used by a listener.
    eds = {
        c.name
        for c in first.resources[types.CLUSTER]
        if c.WhichOneof("cluster_discovery_type") and c.type == c.EDS
    }
    assert eds == names_of(first, types.ENDPOINT)
    assert names_of(first, types.ROUTE) <= {
        name for name in names_of(first, types.LISTENER) if not name.startswith("tcp_")
    }


def names_of(result: Translation, type_url: str) -> set[str]:
    return {types.resource_name(type_url, m) for m in result.resources[type_url]}


def test_routes_refer_to_existing_clusters() -> None:
    for make, key in CASES.values():
        result = translate(make(), ProxyGroup.from_key(key))
        clusters = names_of(result, types.CLUSTER)
        for rc in result.resources[types.ROUTE]:
            for vh in to_dict(rc).get("virtual_hosts", []):
                for route in vh["routes"]:
                    assert route["route"]["cluster"] in clusters


def test_endpoint_changes_do_not_touch_service_level_builders() -> None:
    """The per-service builders read only what they need: equal services, equal clusters."""
    entry = multi()[ServiceKey("shop", "api")]
    moved = ServiceEntry(entry.service, entry.endpoints[:1])
    assert service_clusters(entry.service) == service_clusters(moved.service)
    assert service_load_assignments(entry) != service_load_assignments(moved)
    seen: list[str] = []

    def clusters_of(service: Service, policy: ServicePolicy | None, client: Kind) -> list[Any]:
        seen.append(service.name)
        return service_clusters(service, policy, client)

    translate(multi(), ProxyGroup(), clusters_of=clusters_of)
    assert seen == ["web", "api"]  # (namespace, name) order: default/web, shop/api


def test_dependencies_match_name_namespaced_name_or_hostname() -> None:
    cat = grpc_catalog()
    for deps, expected in [
        ({"api"}, {"api.shop", "api.other"}),
        ({"api.other"}, {"api.other"}),
        ({"api.shop.svc.cluster.local"}, {"api.shop"}),
        ({"web.service.consul", "nope"}, {"web.default"}),
        (set(), set()),
    ]:
        result = translate(cat, ProxyGroup("envoy", frozenset(deps)))
        services = {name.rsplit(":", 1)[0] for name in names_of(result, types.CLUSTER)}
        assert services == expected, deps
        # Even a proxy depending on nothing gets its (empty) HTTP listener and routes.
        assert "http_10000" in names_of(result, types.LISTENER)
        assert names_of(result, types.ROUTE) == {"http_10000"}


# ------------------------------------------------------------------------ ProxyGroup


def node(user_agent: str = "envoy", **metadata: Any) -> base_pb2.Node:
    meta = struct_pb2.Struct()
    meta.update(metadata)
    return base_pb2.Node(id="n", user_agent_name=user_agent, metadata=meta)


@pytest.mark.parametrize(
    ("agent", "kind"),
    [
        ("envoy", "envoy"),
        ("", "envoy"),
        ("gRPC Python", "grpc"),
        ("gRPC C-core", "grpc"),
        ("grpc-go", "grpc"),
        ("GRPC-JAVA", "grpc"),
    ],
)
def test_kind_from_user_agent(agent: str, kind: str) -> None:
    assert ProxyGroup.from_node(node(agent)).kind == kind


@pytest.mark.parametrize(
    ("generator", "kind"),
    [("grpc", "grpc"), ("GRPC", "grpc"), ("envoy", "envoy"), ("", "envoy"), (1, "envoy")],
)
def test_kind_from_istio_generator_metadata(generator: object, kind: str) -> None:
    """Istio's proxyless bootstraps say GENERATOR: grpc, whatever the user agent."""
    assert ProxyGroup.from_node(node("istio-agent", GENERATOR=generator)).kind == kind


def test_from_node_metadata() -> None:
    assert ProxyGroup.from_node(node()) == ProxyGroup()
    assert ProxyGroup.from_node(node(), default_port=10080).http_listener_port == 10080
    group, warnings = ProxyGroup.parse(
        node(dependencies=["web", "api.shop", " db , cache "], http_listener_port=10001)
    )
    assert warnings == []
    assert group == ProxyGroup("envoy", frozenset({"web", "api.shop", "db", "cache"}), 10001)
    assert group.key == "envoy;deps=api.shop,cache,db,web;port=10001"
    group, warnings = ProxyGroup.parse(node(dependencies="web,api", http_listener_port="10002"))
    assert (group.dependencies, group.http_listener_port, warnings) == (
        frozenset({"web", "api"}),
        10002,
        [],
    )
    assert ProxyGroup.from_node(node(dependencies=[])).key == "envoy;deps="
    assert ProxyGroup.from_node(node(dependencies=None)).dependencies is None
    # gRPC clients have no HTTP listener: the port is neither read nor part of the key.
    grpc = ProxyGroup.from_node(node("gRPC Python", dependencies=["web"], http_listener_port=1))
    assert grpc.key == "grpc;deps=web"
    assert ProxyGroup("grpc", None, 10001) == ProxyGroup("grpc")


@pytest.mark.parametrize(
    ("metadata", "expected", "warning"),
    [
        ({"http_listener_port": "abc"}, ProxyGroup(), 'http_listener_port="abc"'),
        ({"http_listener_port": 0}, ProxyGroup(), "is not a port number"),
        ({"http_listener_port": 70000}, ProxyGroup(), "using 10000"),
        ({"http_listener_port": 10001.5}, ProxyGroup(), "not a port number"),
        ({"http_listener_port": True}, ProxyGroup(), "true"),
        ({"http_listener_port": [1]}, ProxyGroup(), "not a port number"),
        ({"dependencies": 3}, ProxyGroup(), "not a list of names"),
        (
            {"dependencies": ["web", 4]},
            ProxyGroup("envoy", frozenset({"web"})),
            "4.0 is not a string",
        ),
        ({"dependencies": ["we b", "x;y", "ok"]}, ProxyGroup("envoy", frozenset({"ok"})), "'we b'"),
    ],
)
def test_from_node_bad_metadata_warns(
    metadata: dict[str, Any], expected: ProxyGroup, warning: str
) -> None:
    group, warnings = ProxyGroup.parse(node(**metadata))
    assert group == expected
    assert any(warning in w for w in warnings), warnings
    assert ProxyGroup.from_node(node(**metadata)) == expected


@pytest.mark.parametrize(
    "group",
    [
        ProxyGroup(),
        ProxyGroup("envoy", None, 10001),
        ProxyGroup("envoy", frozenset({"web", "api"})),
        ProxyGroup("envoy", frozenset(), 8080),
        ProxyGroup("envoy", frozenset({"web.service.consul", "api.shop"}), 1),
        ProxyGroup("grpc"),
        ProxyGroup("grpc", frozenset({"web"})),
        ProxyGroup("envoy", None, 10001, Locality("eu", "eu-a", "rack-1")),
        ProxyGroup("grpc", frozenset({"web"}), locality=Locality(zone="z1")),
    ],
)
def test_key_round_trip(group: ProxyGroup) -> None:
    assert ProxyGroup.from_key(group.key) == group
    assert ProxyGroup.from_key(group.key).key == group.key
    assert str(group) == group.key


def test_key_examples() -> None:
    assert ProxyGroup().key == "envoy"
    assert ProxyGroup(http_listener_port=10001).key == "envoy;port=10001"
    assert ProxyGroup("envoy", frozenset({"web", "api"})).key == "envoy;deps=api,web"
    assert ProxyGroup("grpc").key == "grpc"
    assert ProxyGroup("grpc", frozenset({"web"})).key == "grpc;deps=web"
    # Options in any order; surrounding blanks ignored.
    assert ProxyGroup.from_key(" envoy;port=10001;deps=web ") == ProxyGroup(
        "envoy", frozenset({"web"}), 10001
    )
    assert ProxyGroup.from_key(f"envoy;port={DEFAULT_HTTP_LISTENER_PORT}").key == "envoy"
    assert ProxyGroup(locality=Locality("eu", "eu-a")).key == "envoy;locality=eu/eu-a/"
    assert ProxyGroup(locality=Locality()).key == "envoy"  # no locality at all


def test_node_locality_joins_the_group() -> None:
    n = node()
    n.locality.region, n.locality.zone = "eu", "eu-a"
    assert ProxyGroup.from_node(n).locality == Locality("eu", "eu-a")
    n.locality.zone = "a/b"
    group, warnings = ProxyGroup.parse(n)
    assert group.locality is None
    assert warnings == ["node locality ('eu', 'a/b', '') has a space , ; = or /; ignored"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "must start with one of envoy, grpc"),
        ("istio", "must start with one of envoy, grpc"),
        ("Envoy", "must start with one of"),
        ("envoy;port", "options are deps="),
        ("envoy;colour=red", "options are deps="),
        ("envoy;port=1;port=2", "port given twice"),
        ("envoy;port=x", "port must be 1-65535"),
        ("envoy;port=0", "port must be 1-65535"),
        ("envoy;port=65536", "port must be 1-65535"),
        ("envoy;port=-1", "port must be 1-65535"),
        ("grpc;port=10001", "gRPC groups have no port"),
        ("envoy;deps=a b", "invalid dependency names"),
        ("envoy;locality=eu/a", "locality is region/zone/subzone"),
    ],
)
def test_from_key_rejects(key: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ProxyGroup.from_key(key)


def test_constructor_rejects() -> None:
    with pytest.raises(ValueError, match="kind"):
        ProxyGroup("istio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="http_listener_port"):
        ProxyGroup(http_listener_port=0)
    with pytest.raises(ValueError, match="invalid dependency"):
        ProxyGroup(dependencies=frozenset({""}))
    with pytest.raises(ValueError, match="default_port"):
        ProxyGroup.parse(node(), default_port=70000)


def test_skipped_str() -> None:
    assert str(Skipped("listener tcp_1", "port 1 taken")) == "listener tcp_1: port 1 taken"


# ------------------------------------------------------------------------ real Envoy


def static_config(result: Translation) -> dict[str, Any]:
    """The translated resources as static bootstrap resources: EDS clusters become
    STATIC ones with their assignment inlined; RDS is replaced by the route config."""
    assignments = {a["cluster_name"]: a for a in map(to_dict, result.resources[types.ENDPOINT])}
    routes = {r["name"]: r for r in map(to_dict, result.resources[types.ROUTE])}
    clusters = []
    for cluster in map(to_dict, result.resources[types.CLUSTER]):
        if cluster["type"] == "LOGICAL_DNS":  # carries its own address
            assert cluster["name"] not in assignments
            clusters.append(cluster)
            continue
        assert cluster.pop("type") == "EDS"
        assert cluster.pop("eds_cluster_config") == {
            "eds_config": {"ads": {}, "resource_api_version": "V3"}
        }
        cluster["type"] = "STATIC"
        cluster["load_assignment"] = assignments[cluster["name"]]
        clusters.append(cluster)

    def inline(hcm: dict[str, Any]) -> None:
        if "rds" in hcm:
            hcm["route_config"] = routes[hcm.pop("rds")["route_config_name"]]

    listeners: list[dict[str, Any]] = []
    for listener in map(to_dict, result.resources[types.LISTENER]):
        if "api_listener" in listener:
            # This Envoy build has no API listener extension: check the gRPC listener's
            # connection manager and routes in an ordinary listener instead.
            hcm = listener.pop("api_listener")["api_listener"]
            listener["address"] = {
                "socket_address": {"address": "127.0.0.1", "port_value": 20000 + len(listeners)}
            }
            listener["filter_chains"] = [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        }
                    ]
                }
            ]
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                inline(f["typed_config"])
        listeners.append(listener)
    return {"clusters": clusters, "listeners": listeners}


@pytest.mark.parametrize("case", ["multi", "tcp", "conflict", "port", "grpc", "external"])
def test_envoy_accepts_translation(case: str, tmp_path: Path) -> None:
    make, key = CASES[case]
    static = static_config(translate(make(), ProxyGroup.from_key(key)))
    assert static["clusters"] and static["listeners"]
    config = {
        "node": {"id": "validate", "cluster": "validate"},
        "static_resources": static,
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}
        },
    }
    validate_bootstrap(config, tmp_path)
