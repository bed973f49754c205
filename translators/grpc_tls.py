"""Mutual TLS for proxyless gRPC (gRFC A29): certificate-provider instances, not SDS.

gRPC never subscribes to `Secret`s: its TLS contexts name a *certificate provider
instance* from the client's own bootstrap (``certificate_providers``), typically a
``file_watcher`` reading the files ``xds-server ca issue`` writes. We use Istio's names
(pkg/istio-agent/grpcxds): instance ``default``, certificate ``default`` for the
workload certificate and ``ROOTCA`` for the trust bundle. A bootstrap without an
instance named ``default`` makes gRPC NACK these resources ("unrecognized certificate
provider instance name"), so the bootstrap must define it.

Which services are called over mTLS: those whose Service carries Istio's label
``security.istio.io/tlsMode: istio`` (Istio marks mesh workloads with it; proxyless gRPC
has no auto-mTLS, so the marking is explicit). Their SPIFFE IDs are
``spiffe://<trust domain>/ns/<namespace>/sa/<account>`` for each account in the label
``alpha.istio.io/canonical-serviceaccounts`` (comma-separated, Istio's annotation name),
else for one account named like the service. A server presenting another identity fails
the handshake (the SAN match); fail closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import wrappers_pb2

from xds_server.model import Service

from .resources import pack

PROVIDER_INSTANCE: Final = "default"
CERTIFICATE_NAME: Final = "default"
ROOT_CERTIFICATE_NAME: Final = "ROOTCA"
TLS_TRANSPORT_SOCKET: Final = "envoy.transport_sockets.tls"
TLS_MODE_LABEL: Final = "security.istio.io/tlsMode"
TLS_MODE_MESH: Final = "istio"
SERVICE_ACCOUNTS_LABEL: Final = "alpha.istio.io/canonical-serviceaccounts"


def mesh_tls(service: Service) -> bool:
    """Whether the service's servers speak mesh mTLS (label ``tlsMode: istio``)."""
    return dict(service.labels).get(TLS_MODE_LABEL, "") == TLS_MODE_MESH


def service_accounts(service: Service) -> list[str]:
    """The service accounts the service's servers run as (see the module docstring)."""
    listed = dict(service.labels).get(SERVICE_ACCOUNTS_LABEL, "")
    accounts = sorted({a.strip() for a in listed.split(",") if a.strip()})
    return accounts or [service.name]


def spiffe_ids(service: Service, trust_domain: str) -> list[str]:
    """The SPIFFE IDs a caller accepts from the service's servers."""
    return [
        f"spiffe://{trust_domain}/ns/{service.namespace}/sa/{account}"
        for account in service_accounts(service)
    ]


def _common_context() -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
            instance_name=PROVIDER_INSTANCE, certificate_name=CERTIFICATE_NAME
        ),
        validation_context=common_pb2.CertificateValidationContext(
            ca_certificate_provider_instance=common_pb2.CertificateProviderPluginInstance(
                instance_name=PROVIDER_INSTANCE, certificate_name=ROOT_CERTIFICATE_NAME
            )
        ),
    )


def upstream_tls(peer_ids: Sequence[str]) -> base_pb2.TransportSocket:
    """A client's TLS socket: our certificate, the trust bundle, and an exact URI SAN
    match on each of `peer_ids` (gRPC reads ``match_subject_alt_names``, gRFC A29)."""
    common = _common_context()
    common.validation_context.match_subject_alt_names.extend(
        string_pb2.StringMatcher(exact=i) for i in peer_ids
    )
    context = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def downstream_tls() -> base_pb2.TransportSocket:
    """A server's TLS socket requiring a client certificate from the trust bundle. No SAN
    match: gRPC NACKs it on servers; authorization is RBAC's (gRFC A41)."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common_context(),
        require_client_certificate=wrappers_pb2.BoolValue(value=True),
    )
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=pack(context))


def with_upstream_tls(
    clusters: Sequence[cluster_pb2.Cluster], service: Service, trust_domain: str
) -> list[cluster_pb2.Cluster]:
    """Copies of a service's clusters calling it over mTLS (unchanged when the service is
    not a mesh TLS service)."""
    if not mesh_tls(service):
        return list(clusters)
    socket = upstream_tls(spiffe_ids(service, trust_domain))
    out = []
    for cluster in clusters:
        copy = cluster_pb2.Cluster()
        copy.CopyFrom(cluster)
        if not copy.HasField("cluster_type"):  # an aggregate cluster has no connections
            copy.transport_socket.CopyFrom(socket)
        out.append(copy)
    return out
