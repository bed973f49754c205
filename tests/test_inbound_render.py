"""Rendering of sidecars' resources: inbound listeners by PeerAuthentication mode, local
clusters, the local rate limit, mesh clusters and endpoints, and the byte-stable SDS
references (translators.inbound, translators.mesh_tls, translators.services)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format

from translators import ProxyGroup, translate
from translators.group_mesh import SidecarOf
from translators.inbound import (
    InboundPolicy,
    Instance,
    MtlsMode,
    find_instance,
    inbound_resources,
    mesh_mode,
)
from translators.mesh_tls import (
    downstream_transport_socket,
    sds_secret_config,
    upstream_transport_socket,
)
from translators.services import service_clusters, service_load_assignments
from xds_server import types
from xds_server.model import (
    Endpoint,
    Port,
    RateLimit,
    Service,
    ServiceEntry,
    ServiceKey,
    Sidecar,
)

API = Service("api", ports=(Port("http", 80, "http"),))
DB = Service("db", ports=(Port("tcp", 5432, "tcp"),))
SIDE = Endpoint("10.0.0.5", 8080, "http", sidecar=Sidecar(15006))


def render(
    mode: MtlsMode = "PERMISSIVE",
    *,
    mtls: bool = True,
    service: Service = API,
    endpoint: Endpoint = SIDE,
    policy: InboundPolicy | None = None,
) -> tuple[listener_pb2.Listener, cluster_pb2.Cluster]:
    listeners, clusters, skipped = inbound_resources(
        Instance(service, (endpoint,)),
        mtls=mtls,
        policy=policy or InboundPolicy(mode_of=mesh_mode(mode)),
    )
    assert skipped == [] and len(listeners) == len(clusters) == 1
    return listeners[0], clusters[0]


def hcm_of(chain: listener_components_pb2.FilterChain) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager()
    assert chain.filters[-1].typed_config.Unpack(hcm)
    return hcm


def test_sds_references_are_byte_identical_everywhere_and_are_istios_ads_config() -> None:
    """envoy#47309: a reference whose bytes change opens a provider that is never fed."""
    assert json_format.MessageToDict(sds_secret_config("default")) == {
        "name": "default",
        "sdsConfig": {"ads": {}, "resourceApiVersion": "V3"},
    }
    down, up = tls_pb2.DownstreamTlsContext(), tls_pb2.UpstreamTlsContext()
    downstream_transport_socket().typed_config.Unpack(down)
    upstream_transport_socket(["spiffe://td/ns/default/sa/api"], "http").typed_config.Unpack(up)
    refs = set()
    for common in (down.common_tls_context, up.common_tls_context):
        refs.add(common.tls_certificate_sds_secret_configs[0].SerializeToString())
        refs.add(
            common.combined_validation_context.validation_context_sds_secret_config.SerializeToString()
        )
    assert refs == {
        sds_secret_config("default").SerializeToString(),
        sds_secret_config("ROOTCA").SerializeToString(),
    }
    # Two builds of the same listener are the same bytes.
    first, _ = render("STRICT")
    second, _ = render("STRICT")
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(
        deterministic=True
    )


def test_strict_has_one_mutual_tls_chain_requiring_a_client_certificate() -> None:
    listener, _ = render("STRICT")
    assert listener.name == "inbound_15006"
    assert listener.address.socket_address.port_value == 15006
    assert [c.name for c in listener.filter_chains] == ["mtls"]
    assert not listener.listener_filters
    down = tls_pb2.DownstreamTlsContext()
    listener.filter_chains[0].transport_socket.typed_config.Unpack(down)
    assert down.require_client_certificate.value is True
    assert list(down.common_tls_context.alpn_protocols) == ["h2", "http/1.1"]


def test_permissive_tells_tls_from_plaintext_with_the_tls_inspector() -> None:
    listener, _ = render("PERMISSIVE")
    assert [f.name for f in listener.listener_filters] == ["envoy.filters.listener.tls_inspector"]
    chains = {c.name: c for c in listener.filter_chains}
    assert chains["mtls"].filter_chain_match.transport_protocol == "tls"
    assert chains["mtls"].HasField("transport_socket")
    assert chains["plaintext"].filter_chain_match.transport_protocol == "raw_buffer"
    assert not chains["plaintext"].HasField("transport_socket")


def test_disable_and_no_workload_identity_are_plaintext() -> None:
    for listener, _ in (render("DISABLE"), render("STRICT", mtls=False)):
        assert len(listener.filter_chains) == 1
        assert not listener.filter_chains[0].HasField("transport_socket")
        assert not listener.listener_filters


def test_http_inbound_forwards_to_the_application_and_sets_the_callers_spiffe_id() -> None:
    listener, cluster = render("STRICT")
    assert cluster.name == "inbound|15006|api.default"
    assert cluster.type == cluster_pb2.Cluster.STATIC
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address
    assert (address.socket_address.address, address.socket_address.port_value) == (
        "10.0.0.5",
        8080,
    )
    hcm = hcm_of(listener.filter_chains[0])
    assert hcm.forward_client_cert_details == hcm_pb2.HttpConnectionManager.SANITIZE_SET
    assert hcm.set_current_client_cert_details.uri is True
    route = hcm.route_config.virtual_hosts[0].routes[0]
    assert route.route.cluster == cluster.name
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]


def test_consul_local_service_address_is_where_the_sidecar_forwards() -> None:
    ep = Endpoint("10.0.0.5", 8080, "http", sidecar=Sidecar(21000, "127.0.0.1", 9090))
    _, cluster = render(endpoint=ep)
    sock = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (sock.address, sock.port_value) == ("127.0.0.1", 9090)


def test_rate_limit_and_authorization_filters_come_before_the_router() -> None:
    limited = Service("api", ports=API.ports, rate_limit=RateLimit(5, 10))
    rbac = hcm_pb2.HttpFilter(name="envoy.filters.http.rbac")
    policy = InboundPolicy(http_authz=lambda service, endpoint, port: [rbac])
    listener, _ = render(service=limited, policy=policy)
    for chain in listener.filter_chains:  # the same filters on the TLS and plaintext chains
        hcm = hcm_of(chain)
        names = [f.name for f in hcm.http_filters]
        assert names == [
            "envoy.filters.http.local_ratelimit",
            "envoy.filters.http.rbac",
            "envoy.filters.http.router",
        ]
        config = local_rate_limit_pb2.LocalRateLimit()
        hcm.http_filters[0].typed_config.Unpack(config)
        assert config.token_bucket.max_tokens == 10
        assert config.token_bucket.tokens_per_fill.value == 5
        assert config.token_bucket.fill_interval.seconds == 1
        assert config.filter_enforced.default_value.numerator == 100
        header = config.response_headers_to_add[0].header
        assert (header.key, header.value) == ("x-local-rate-limit", "true")


def test_tcp_inbound_is_a_tcp_proxy_behind_the_network_authorization_filters() -> None:
    ep = Endpoint("10.0.0.6", 5432, "tcp", sidecar=Sidecar(15432))
    rbac = listener_components_pb2.Filter(name="envoy.filters.network.rbac")
    policy = InboundPolicy(mode_of=mesh_mode("STRICT"), tcp_authz=lambda s, e, p: [rbac])
    listener, cluster = render(service=DB, endpoint=ep, policy=policy)
    filters = listener.filter_chains[0].filters
    assert [f.name for f in filters] == [
        "envoy.filters.network.rbac",
        "envoy.filters.network.tcp_proxy",
    ]
    proxy = tcp_proxy_pb2.TcpProxy()
    filters[1].typed_config.Unpack(proxy)
    assert proxy.cluster == cluster.name


def test_an_inbound_port_taken_by_another_listener_is_skipped() -> None:
    listeners, clusters, skipped = inbound_resources(
        Instance(API, (SIDE,)), mtls=True, taken={15006: "listener http_15006"}
    )
    assert listeners == [] and clusters == []
    assert [s.reason for s in skipped] == ["port 15006 already used by listener http_15006"]


def test_find_instance_takes_the_sidecar_endpoints_at_the_instance_addresses() -> None:
    other = Service("api", namespace="prod", ports=API.ports)
    catalog = {
        API.key: ServiceEntry(
            API, (SIDE, Endpoint("10.0.0.7", 8080, "http", sidecar=Sidecar(15006)))
        ),
        other.key: ServiceEntry(other, (Endpoint("10.0.0.5", 8080, "http"),)),
    }
    found = find_instance(catalog, SidecarOf("api.default", ("10.0.0.5",)))
    assert found == Instance(API, (SIDE,))
    assert find_instance(catalog, SidecarOf("api", ("10.0.0.5",))) == Instance(API, (SIDE,))
    # prod's endpoint at that address has no sidecar
    assert find_instance(catalog, SidecarOf("api.prod", ("10.0.0.5",))) is None
    assert find_instance(catalog, SidecarOf("api", ("10.9.9.9",))) is None
    assert find_instance(catalog, None) is None
    # A bare name in two namespaces: the first by (namespace, name), whatever the order.
    prod = ServiceEntry(other, (Endpoint("10.0.0.5", 8080, "http", sidecar=Sidecar(15007)),))
    both = {other.key: prod, API.key: catalog[API.key]}
    assert find_instance(both, SidecarOf("api", ("10.0.0.5",))) == Instance(API, (SIDE,))
    assert find_instance(both, SidecarOf("api.prod", ("10.0.0.5",))) == Instance(
        other, prod.endpoints
    )


def test_callers_reach_sidecar_fronted_endpoints_at_the_sidecar_port_marked_for_mtls() -> None:
    plain = Endpoint("10.0.0.8", 8080, "http")
    (cla,) = service_load_assignments(ServiceEntry(API, (SIDE, plain)))
    got = {
        (lb.endpoint.address.socket_address.address, lb.endpoint.address.socket_address.port_value):
        json_format.MessageToDict(lb.metadata)
        for lb in cla.endpoints[0].lb_endpoints
    }  # fmt: skip
    assert got == {
        ("10.0.0.5", 15006): {
            "filterMetadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}
        },
        ("10.0.0.8", 8080): {},
    }


def test_mesh_clusters_check_the_destinations_spiffe_ids() -> None:
    svc = Service("api", ports=API.ports, service_accounts=("api-v1", "api-v2"))
    (plain,) = service_clusters(svc)
    assert not plain.transport_socket_matches
    (proxyless,) = service_clusters(svc, None, "grpc", mesh_trust_domain="td")
    assert not proxyless.transport_socket_matches
    (mesh,) = service_clusters(svc, None, "envoy", mesh_trust_domain="td")
    (match,) = mesh.transport_socket_matches
    assert json_format.MessageToDict(match.match) == {"tlsMode": "istio"}
    up = tls_pb2.UpstreamTlsContext()
    match.transport_socket.typed_config.Unpack(up)
    validation = up.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in validation.match_typed_subject_alt_names] == [
        "spiffe://td/ns/default/sa/api-v1",
        "spiffe://td/ns/default/sa/api-v2",
    ]
    assert list(up.common_tls_context.alpn_protocols) == ["http/1.1"]
    # Without service accounts, a service's identity is its name (Consul's convention).
    (named,) = service_clusters(API, None, "envoy", mesh_trust_domain="td")
    named.transport_socket_matches[0].transport_socket.typed_config.Unpack(up)
    validation = up.common_tls_context.combined_validation_context.default_validation_context
    assert [m.matcher.exact for m in validation.match_typed_subject_alt_names] == [
        "spiffe://td/ns/default/sa/api"
    ]
    # ALPN follows the port's protocol; TCP offers none.
    mixed = Service("m", ports=(Port("grpc", 81, "grpc"), Port("tcp", 82, "tcp")))
    alpns = []
    for cluster in service_clusters(mixed, None, "envoy", mesh_trust_domain="td"):
        cluster.transport_socket_matches[0].transport_socket.typed_config.Unpack(up)
        alpns.append(list(up.common_tls_context.alpn_protocols))
    assert alpns == [["h2"], []]


def test_translate_gives_a_sidecar_group_its_inbound_listener_and_local_cluster() -> None:
    catalog = {API.key: ServiceEntry(API, (SIDE,))}
    group = ProxyGroup(
        dependencies=frozenset(), sidecar=SidecarOf("api.default", ("10.0.0.5",)), mesh=True
    )
    out = translate(catalog, group, mesh_trust_domain="td").resources
    assert [types.resource_name(types.LISTENER, m) for m in out[types.LISTENER]] == [
        "http_10000",
        "inbound_15006",
    ]
    assert [types.resource_name(types.CLUSTER, m) for m in out[types.CLUSTER]] == [
        "inbound|15006|api.default"
    ]
    # The same group without the CA: plaintext inbound.
    listener = out[types.LISTENER][1]
    assert isinstance(listener, listener_pb2.Listener)
    assert any(c.HasField("transport_socket") for c in listener.filter_chains)
    plain = translate(catalog, group).resources[types.LISTENER][1]
    assert isinstance(plain, listener_pb2.Listener)
    assert not any(c.HasField("transport_socket") for c in plain.filter_chains)
    assert ServiceKey("default", "api") == API.key
