"""What a proxyless gRPC group gets beyond its client resources, memoised for the
controller: mTLS variants of its clusters (translators.grpc_tls) and, for an
xDS-managed server, its server Listeners (translators.grpc_server).

Only groups that need them pay: a client group without an identity, or a CA that is
off, gets the plain clusters; a group without ``INSTANCE_IPS`` gets no server listeners.
Built resources are kept in the controller's form (`encode`, e.g. encoded once into
`Resource`s) so an unchanged input costs a comparison, not an encoding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from google.protobuf.message import Message

from xds_server import types
from xds_server.model import Endpoint, Service, ServiceEntry, ServiceKey

from .group import ProxyGroup
from .grpc_server import ServerRbac, index_by_ip, instances_at, no_rbac, server_listeners
from .grpc_tls import mesh_tls, with_upstream_tls

R = TypeVar("R")
Encode = Callable[[str, Sequence[Message]], list[R]]
Body = Callable[[R], bytes]


class ProxylessMesh(Generic[R]):
    """Memo of TLS clusters per service and server listeners per group."""

    def __init__(self, encode: Encode[R], body: Body[R], rbac_of: ServerRbac = no_rbac):
        self.encode = encode
        self.body = body
        # The authorization translator's hook (AuthorizationPolicy, intentions → RBAC).
        self.rbac_of = rbac_of
        self._tls: dict[ServiceKey, tuple[tuple[object, str], list[R]]] = {}
        self._servers: dict[str, tuple[object, list[R]]] = {}
        self._index: dict[str, list[tuple[Service, Endpoint]]] | None = None

    def changed(self) -> None:
        """The catalog view changed: the IP index is rebuilt on next use."""
        self._index = None

    def forget(self, group_key: str) -> None:
        self._servers.pop(group_key, None)

    def clusters(
        self, key: ServiceKey, service: Service, plain: list[R], trust_domain: str
    ) -> list[R]:
        """`plain` (the service's gRPC clusters), with an UpstreamTlsContext when the
        service is a mesh TLS service."""
        if not mesh_tls(service):
            return plain
        held = self._tls.get(key)
        if held is not None and held[0][0] is plain and held[0][1] == trust_domain:
            return held[1]
        messages = [cluster_pb2.Cluster.FromString(self.body(r)) for r in plain]
        built = self.encode(types.CLUSTER, with_upstream_tls(messages, service, trust_domain))
        self._tls[key] = ((plain, trust_domain), built)
        return built

    def server_listeners(
        self,
        group_key: str,
        group: ProxyGroup,
        view: Mapping[ServiceKey, ServiceEntry],
        inputs: object,
        tls: bool,
    ) -> list[R]:
        """The group's server Listeners (none without instance IPs). `inputs`: what else
        the RBAC depends on (compared by equality; e.g. the policy objects)."""
        if not group.instance_ips:
            return []
        if self._index is None:
            self._index = index_by_ip(view)
        instances = instances_at(self._index, group.instance_ips)
        memo_key = (instances, inputs, tls, self.rbac_of)
        held = self._servers.get(group_key)
        if held is not None and held[0] == memo_key:
            return held[1]
        built = self.encode(types.LISTENER, server_listeners(instances, self.rbac_of, tls))
        self._servers[group_key] = (memo_key, built)
        return built
