"""Mutual TLS between sidecars: the TLS contexts of inbound listeners and of clusters to
mesh services, with the workload certificate and trust bundle by SDS over ADS.

Secrets are named as Istio names them (``default``: the proxy's own certificate and
key; ``ROOTCA``: the trust bundle) and resolved per stream to the proxy's verified
identity (xds_server.secrets), so every proxy's resources reference the same names and
groups can share them.

Envoy keys its SDS subscriptions by the whole `SdsSecretConfig`: a reference whose bytes
change between pushes (even a new `initial_fetch_timeout`) opens a second provider that
is never fed, and the listener goes live without a certificate (envoy#47309). So every
reference here comes from one builder and is the same message, byte for byte, always.

Clusters carry the TLS context as a *transport socket match* (Istio's auto mTLS): only
endpoints marked `MESH_ENDPOINT_METADATA` (those a sidecar fronts) are dialled over
mutual TLS, the others in plaintext, so one cluster serves a service whose instances
are partly in the mesh, and endpoint changes never rebuild clusters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2, wrappers_pb2

from xds_server.model import Protocol, Service

from . import resources as rb

CERTIFICATE: Final = "default"  # the names xds_server.secrets serves (Istio's)
ROOT_CA: Final = "ROOTCA"
TLS_SOCKET: Final = "envoy.transport_sockets.tls"
# Endpoint metadata that selects the mutual-TLS transport socket (Istio's label).
MATCH_FILTER: Final = "envoy.transport_socket_match"
MATCH_KEY: Final = "tlsMode"
MATCH_VALUE: Final = "istio"
MESH_MATCH_NAME: Final = "tlsMode-istio"
# What a mesh listener offers: gRPC callers fail the handshake without `h2` (digest §4).
INBOUND_ALPN: Final = ("h2", "http/1.1")
_ALPN: Final[dict[str, tuple[str, ...]]] = {
    "http": ("http/1.1",),
    "http2": ("h2",),
    "grpc": ("h2",),
}


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """``spiffe://<trust domain>/ns/<namespace>/sa/<service account>`` (Istio's form)."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def service_spiffe_ids(service: Service, trust_domain: str) -> list[str]:
    """The SPIFFE IDs a service's sidecars may present, sorted."""
    return sorted(spiffe_id(trust_domain, service.namespace, sa) for sa in service.identities)


def sds_secret_config(name: str) -> secret_pb2.SdsSecretConfig:
    """Secret `name` over the ADS stream, with nothing else set: the same bytes on every
    build (see the module docstring), exactly Istio's ``SDSAdsConfig``."""
    return secret_pb2.SdsSecretConfig(
        name=name,
        sds_config=config_source_pb2.ConfigSource(
            ads=config_source_pb2.AggregatedConfigSource(),
            resource_api_version=config_source_pb2.V3,
        ),
    )


def common_tls_context(
    peer_spiffe_ids: Iterable[str] = (), alpn: Iterable[str] = ()
) -> tls_pb2.CommonTlsContext:
    """Certificate ``default``, trust ``ROOTCA``; the peer must present one of
    `peer_spiffe_ids` as its URI SAN when any are given (a client checking a server;
    servers authorize callers with RBAC instead)."""
    validation = common_pb2.CertificateValidationContext(
        match_typed_subject_alt_names=[
            common_pb2.SubjectAltNameMatcher(
                san_type=common_pb2.SubjectAltNameMatcher.URI,
                matcher=string_pb2.StringMatcher(exact=sid),
            )
            for sid in peer_spiffe_ids
        ]
    )
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[sds_secret_config(CERTIFICATE)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=validation,
            validation_context_sds_secret_config=sds_secret_config(ROOT_CA),
        ),
        alpn_protocols=list(alpn),
    )


def downstream_transport_socket() -> base_pb2.TransportSocket:
    """An inbound listener's mutual TLS: a client certificate is required."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=common_tls_context(alpn=INBOUND_ALPN),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=rb.pack(context))


def upstream_transport_socket(
    peer_spiffe_ids: Iterable[str], protocol: Protocol
) -> base_pb2.TransportSocket:
    """A client sidecar's mutual TLS to a mesh service's sidecars, accepting only the
    service's SPIFFE IDs. For HTTP, ALPN says the protocol the cluster speaks, so the
    inbound side's automatic codec agrees; TCP offers none."""
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=common_tls_context(peer_spiffe_ids, alpn=_ALPN.get(protocol, ()))
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=rb.pack(context))


def mesh_endpoint_metadata() -> base_pb2.Metadata:
    """Metadata marking an endpoint a sidecar fronts: selects `mesh_socket_match`."""
    meta = base_pb2.Metadata()
    match = struct_pb2.Struct()
    match.update({MATCH_KEY: MATCH_VALUE})
    meta.filter_metadata[MATCH_FILTER].CopyFrom(match)
    return meta


def with_mesh_tls(
    cluster: cluster_pb2.Cluster, service: Service, trust_domain: str, protocol: Protocol
) -> cluster_pb2.Cluster:
    """`cluster` (an EDS cluster of `service`) dialling sidecar-fronted endpoints over
    mutual TLS checked against the service's SPIFFE IDs; other endpoints stay plaintext
    (no match: the cluster's own, default transport socket)."""
    out = cluster_pb2.Cluster()
    out.CopyFrom(cluster)
    match = struct_pb2.Struct()
    match.update({MATCH_KEY: MATCH_VALUE})
    out.transport_socket_matches.append(
        cluster_pb2.Cluster.TransportSocketMatch(
            name=MESH_MATCH_NAME,
            match=match,
            transport_socket=upstream_transport_socket(
                service_spiffe_ids(service, trust_domain), protocol
            ),
        )
    )
    return out
