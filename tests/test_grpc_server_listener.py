"""What proxyless gRPC servers and mTLS clients get (gRFC A29, A36, A41), unit level: the
server Listener's exact shape, its names, the TLS contexts, the proxy group keys, and the
controller serving them to the right groups only (and following endpoint changes)."""

from __future__ import annotations

import datetime as dt

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from tests.harness.controller_world import controller_world
from tests.harness.waiting import async_wait_for
from translators.group import ProxyGroup
from translators.grpc_server import (
    GRPC_TEMPLATE,
    ISTIO_TEMPLATE,
    ServerInstance,
    allow_principals,
    index_by_ip,
    instances_at,
    listener_names,
    server_listener,
    server_listeners,
)
from translators.grpc_tls import (
    SERVICE_ACCOUNTS_LABEL,
    TLS_MODE_LABEL,
    downstream_tls,
    spiffe_ids,
    upstream_tls,
    with_upstream_tls,
)
from xds_server import secret_rotation, types
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.identity.ca import CertificateAuthority
from xds_server.model import Endpoint, Port, Service, ServiceEntry, ServiceKey

MESH = ((TLS_MODE_LABEL, "istio"),)
WEB = "spiffe://cluster.local/ns/default/sa/web"


def svc(name: str, labels: tuple[tuple[str, str], ...] = MESH) -> Service:
    return Service(name, ports=(Port("grpc", 50051, "grpc"),), labels=labels)


def entry(service: Service, *addresses: tuple[str, int]) -> ServiceEntry:
    return ServiceEntry(service, tuple(Endpoint(ip, port, "grpc") for ip, port in addresses))


def hcm_of(listener: listener_pb2.Listener) -> hcm_pb2.HttpConnectionManager:
    (chain,) = listener.filter_chains
    (f,) = chain.filters
    hcm = hcm_pb2.HttpConnectionManager()
    assert f.typed_config.Unpack(hcm)
    return hcm


# ------------------------------------------------------------------ the Listener (A36)


def test_server_listener_has_the_shape_grpc_requires() -> None:
    rbac = [allow_principals([WEB]), allow_principals(["spiffe://x/ns/a/sa/b"])]
    listener = server_listener("n", "127.0.0.1", 8080, rbac, downstream_tls())
    assert listener.name == "n"
    assert listener.address.socket_address.address == "127.0.0.1"
    assert listener.address.socket_address.port_value == 8080
    assert not listener.listener_filters  # gRPC NACKs any
    assert not listener.HasField("default_filter_chain")
    hcm = hcm_of(listener)
    assert not hcm.HasField("rds")
    (vhost,) = hcm.route_config.virtual_hosts
    assert list(vhost.domains) == ["*"]
    (route,) = vhost.routes
    assert route.WhichOneof("action") == "non_forwarding_action"
    names = [f.name for f in hcm.http_filters]
    assert names == [
        "envoy.filters.http.rbac",
        "envoy.filters.http.rbac.1",
        "envoy.filters.http.router",
    ]
    first = rbac_pb2.RBAC()
    assert hcm.http_filters[0].typed_config.Unpack(first)
    assert first == rbac[0]


def test_server_listener_without_rbac_or_tls_is_router_only_and_plaintext() -> None:
    listener = server_listener("n", "::", 80)
    assert [f.name for f in hcm_of(listener).http_filters] == ["envoy.filters.http.router"]
    assert not listener.filter_chains[0].HasField("transport_socket")


def test_listener_names_cover_the_ip_and_the_wildcards_under_both_templates() -> None:
    names = dict(listener_names("10.0.0.5", 50051))
    assert names[GRPC_TEMPLATE.replace("%s", "10.0.0.5:50051")] == "10.0.0.5"
    assert names[ISTIO_TEMPLATE.replace("%s", "10.0.0.5:50051")] == "10.0.0.5"
    assert names[GRPC_TEMPLATE.replace("%s", "0.0.0.0:50051")] == "0.0.0.0"
    assert names[GRPC_TEMPLATE.replace("%s", "[::]:50051")] == "::"
    assert len(names) == 6
    v6 = dict(listener_names("fd00::1", 9))
    assert v6[GRPC_TEMPLATE.replace("%s", "[fd00::1]:9")] == "fd00::1"


def test_instances_are_grouped_by_ip_and_port() -> None:
    a, b = svc("a"), svc("b")
    view = {
        ServiceKey("default", "a"): entry(a, ("10.0.0.1", 80), ("10.0.0.2", 80)),
        ServiceKey("default", "b"): entry(b, ("10.0.0.1", 80), ("10.0.0.1", 81)),
    }
    found = instances_at(index_by_ip(view), {"10.0.0.1", "10.9.9.9"})
    assert [(i.ip, i.port, [s.name for s in i.services]) for i in found] == [
        ("10.0.0.1", 80, ["a", "b"]),
        ("10.0.0.1", 81, ["b"]),
    ]


def test_tls_only_for_mesh_services_and_rbac_per_instance() -> None:
    seen: list[ServerInstance] = []

    def rbac_of(instance: ServerInstance) -> list[rbac_pb2.RBAC]:
        seen.append(instance)
        return [allow_principals([WEB])]

    mesh = ServerInstance("10.0.0.1", 80, (svc("a"),), ())
    plain = ServerInstance("10.0.0.1", 81, (svc("b", ()),), ())
    out = {lst.name: lst for lst in server_listeners([mesh, plain], rbac_of, tls=True)}
    tls80 = out[GRPC_TEMPLATE.replace("%s", "10.0.0.1:80")].filter_chains[0]
    tls81 = out[GRPC_TEMPLATE.replace("%s", "10.0.0.1:81")].filter_chains[0]
    assert tls80.HasField("transport_socket")
    assert not tls81.HasField("transport_socket")
    assert seen == [mesh, plain]
    off = server_listeners([mesh], rbac_of, tls=False)
    assert not any(lst.filter_chains[0].HasField("transport_socket") for lst in off)


# ------------------------------------------------------------------ TLS contexts (A29)


def test_downstream_tls_requires_client_certificates_from_the_providers() -> None:
    ctx = tls_pb2.DownstreamTlsContext()
    assert downstream_tls().typed_config.Unpack(ctx)
    assert ctx.require_client_certificate.value
    common = ctx.common_tls_context
    assert common.tls_certificate_provider_instance.instance_name == "default"
    assert common.tls_certificate_provider_instance.certificate_name == "default"
    validation = common.validation_context
    assert validation.ca_certificate_provider_instance.instance_name == "default"
    assert validation.ca_certificate_provider_instance.certificate_name == "ROOTCA"
    assert not validation.match_subject_alt_names  # gRPC NACKs it on servers


def test_upstream_tls_matches_the_destination_spiffe_ids_exactly() -> None:
    ctx = tls_pb2.UpstreamTlsContext()
    assert upstream_tls([WEB]).typed_config.Unpack(ctx)
    (san,) = ctx.common_tls_context.validation_context.match_subject_alt_names
    assert san.exact == WEB
    assert ctx.common_tls_context.tls_certificate_provider_instance.instance_name == "default"


def test_destination_accounts_default_to_the_service_name_or_come_from_the_label() -> None:
    assert spiffe_ids(svc("api"), "td") == ["spiffe://td/ns/default/sa/api"]
    labelled = svc("api", (*MESH, (SERVICE_ACCOUNTS_LABEL, "b, a")))
    assert spiffe_ids(labelled, "td") == [
        "spiffe://td/ns/default/sa/a",
        "spiffe://td/ns/default/sa/b",
    ]


def test_only_mesh_services_and_not_aggregate_clusters_get_tls() -> None:
    eds = cluster_pb2.Cluster(name="a", type=cluster_pb2.Cluster.EDS)
    agg = cluster_pb2.Cluster(name="agg")
    agg.cluster_type.name = "envoy.clusters.aggregate"
    out = with_upstream_tls([eds, agg], svc("a"), "td")
    assert out[0].HasField("transport_socket") and not out[1].HasField("transport_socket")
    assert not eds.HasField("transport_socket")  # a copy; the shared original is untouched
    assert not with_upstream_tls([eds], svc("a", ()), "td")[0].HasField("transport_socket")


# ------------------------------------------------------------------ proxy groups


def node(agent: str = "gRPC Python", **metadata: object) -> base_pb2.Node:
    md = struct_pb2.Struct()
    md.update(metadata)
    return base_pb2.Node(id="n", user_agent_name=agent, metadata=md)


def test_group_key_carries_identity_and_instance_ips_for_grpc_only() -> None:
    group, warnings = ProxyGroup.parse(
        node(NAMESPACE="default", SERVICE_ACCOUNT="api", INSTANCE_IPS="10.0.0.2, nope,::1")
    )
    assert group.key == "grpc;ns=default;identity;ips=10.0.0.2,::1"
    assert warnings == ["node metadata INSTANCE_IPS: not IPs, ignored: ['nope']"]
    assert ProxyGroup.from_key(group.key) == group
    assert ProxyGroup.parse(node(NAMESPACE="default"))[0].key == "grpc;ns=default"
    envoy = ProxyGroup.parse(
        node("envoy", NAMESPACE="d", SERVICE_ACCOUNT="s", INSTANCE_IPS="1.2.3.4")
    )
    assert envoy[0].key == "envoy;ns=d;mesh=on"
    with pytest.raises(ValueError, match="identity given twice"):
        ProxyGroup.from_key("grpc;identity;identity")
    with pytest.raises(ValueError, match="invalid instance IPs"):
        ProxyGroup.from_key("grpc;ips=1.2.3")


# ------------------------------------------------------------------ the controller


@pytest.fixture
def setup() -> tuple[Catalog, SnapshotCache, Controller]:
    return controller_world(("f", "file"))


def ca_on(cache: SnapshotCache) -> None:
    ca = CertificateAuthority.create_root(
        "cluster.local", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    )
    cache.secrets = secret_rotation.open_store(ca, "cluster.local", 3600.0)


def names(cache: SnapshotCache, key: str, type_url: str) -> set[str]:
    return set(cache.get(key).get(type_url).resources)


def tls_clusters(cache: SnapshotCache, key: str) -> set[str]:
    out = set()
    for name, resource in cache.get(key).get(types.CLUSTER).resources.items():
        if cluster_pb2.Cluster.FromString(resource.body).HasField("transport_socket"):
            out.add(name)
    return out


async def test_controller_serves_server_listeners_and_tls_clusters_to_the_right_groups(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    catalog, cache, controller = setup
    ca_on(cache)
    catalog.replace(
        "f", [entry(svc("api"), ("10.0.0.2", 7000)), entry(svc("db", ()), ("10.0.0.3", 5432))]
    )
    await controller.rebuild()
    server = cache.group_of(
        node(NAMESPACE="default", SERVICE_ACCOUNT="api", INSTANCE_IPS="10.0.0.2")
    )
    client = cache.group_of(node(NAMESPACE="default", SERVICE_ACCOUNT="web"))
    anonymous = cache.group_of(node())
    for key in (server, client, anonymous):
        await async_wait_for(lambda k=key: k in cache.groups(), timeout=5, message=key)
    wanted = GRPC_TEMPLATE.replace("%s", "10.0.0.2:7000")
    assert wanted in names(cache, server, types.LISTENER)
    assert not any("xds.resource" in n for n in names(cache, client, types.LISTENER))
    # Only the mesh service's clusters, and only for groups with an identity.
    assert tls_clusters(cache, client) and all("api" in n for n in tls_clusters(cache, client))
    assert tls_clusters(cache, anonymous) == set()

    # The server moves to another port: its listener follows the endpoint change.
    catalog.replace(
        "f", [entry(svc("api"), ("10.0.0.2", 7001)), entry(svc("db", ()), ("10.0.0.3", 5432))]
    )
    await controller.rebuild()
    listeners = names(cache, server, types.LISTENER)
    assert GRPC_TEMPLATE.replace("%s", "10.0.0.2:7001") in listeners
    assert wanted not in listeners


async def test_server_listener_follows_endpoints_of_a_service_outside_its_dependencies(
    setup: tuple[Catalog, SnapshotCache, Controller],
) -> None:
    # The server's client scope (dependencies: db) never includes api: its listeners
    # must still follow api's endpoints.
    catalog, cache, controller = setup
    catalog.replace("f", [entry(svc("db", ()), ("10.0.0.3", 5432)), entry(svc("api"))])
    await controller.rebuild()
    key = cache.group_of(node(INSTANCE_IPS="10.0.0.2", dependencies="db"))
    await async_wait_for(lambda: key in cache.groups(), timeout=5, message=key)
    assert not any("xds.resource" in n for n in names(cache, key, types.LISTENER))
    catalog.replace(
        "f", [entry(svc("db", ()), ("10.0.0.3", 5432)), entry(svc("api"), ("10.0.0.2", 7000))]
    )
    await controller.rebuild()
    listeners = names(cache, key, types.LISTENER)
    assert GRPC_TEMPLATE.replace("%s", "10.0.0.2:7000") in listeners
    assert "db" in listeners  # the client part is kept
    # No CA: plaintext server listener.
    body = (
        cache.get(key).get(types.LISTENER).resources[GRPC_TEMPLATE.replace("%s", "10.0.0.2:7000")]
    )
    assert (
        not listener_pb2.Listener.FromString(body.body)
        .filter_chains[0]
        .HasField("transport_socket")
    )


ips = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))


@given(
    identity=st.booleans(),
    instance_ips=st.frozensets(ips, max_size=3),
    deps=st.none() | st.frozensets(st.sampled_from(["api", "web", "db.shop"]), max_size=2),
)
def test_grpc_group_keys_round_trip(
    identity: bool, instance_ips: frozenset[str], deps: frozenset[str] | None
) -> None:
    group = ProxyGroup("grpc", deps, identity=identity, instance_ips=instance_ips)
    assert ProxyGroup.from_key(group.key) == group
    assert ("identity" in group.key.split(";")) == identity
    md: dict[str, object] = {"INSTANCE_IPS": ",".join(sorted(instance_ips))}
    if identity:
        md |= {"NAMESPACE": "default", "SERVICE_ACCOUNT": "a"}
    parsed, warnings = ProxyGroup.parse(node(**md))
    assert (parsed.identity, parsed.instance_ips, warnings) == (identity, group.instance_ips, [])
