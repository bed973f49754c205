"""The security policies in force → what enforces them. Pure.

- `inbound_policy(enforcement)`: a sidecar's `InboundPolicy` (translators.inbound): the
  PeerAuthentication mode of each fronted endpoint, and the RBAC filters of its HTTP and
  TCP inbound listeners (translators.authz);
- `server_rbac(enforcement)`: a proxyless gRPC server's `ServerRbac` (gRFC A41,
  translators.grpc_server): the same HTTP RBAC, per server instance.

A workload as policies select it (`model.Workload`) is an instance of a service: the
service's namespace, its labels (the service's, overridden by the endpoint's where one is
known: PeerAuthentication per endpoint, authorization per service port), and the
service's name, which Consul intentions select by.

`Enforcement` holds everything the hooks read; two equal ones give the same listeners.
The hooks are opaque functions the controller cannot tell apart, so `SecurityPolicies`
(the controller's memory between policy changes: the versions accepted so far, the
statuses, the enforcement handed out) compares enforcements by value instead, and an
edit that changes no policy in force rebuilds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)

from xds_server.model import (
    ROOT_NAMESPACE,
    Endpoint,
    PolicyKey,
    PolicyObject,
    Port,
    SecurityPolicy,
    Service,
    Workload,
    mtls_mode,
)

from .authz import (
    ISTIO_DEFAULT_TRUST_DOMAIN,
    grpc_server_rbac,
    http_authz_filters,
    network_authz_filters,
)
from .authz_status import resolve_security
from .grpc_server import ServerInstance, ServerRbac
from .inbound import DEFAULT_MTLS_MODE, InboundPolicy, MtlsMode
from .policy_resolution import PolicyStatus


@dataclass(frozen=True, slots=True)
class Enforcement:
    """The inputs of the enforcing hooks: the policies in force, the mesh's trust domain,
    the mode where no PeerAuthentication applies and the root namespace."""

    policies: tuple[SecurityPolicy, ...] = ()
    trust_domain: str = ISTIO_DEFAULT_TRUST_DOMAIN
    default_mode: MtlsMode = DEFAULT_MTLS_MODE
    root: str = ROOT_NAMESPACE


def workload_of(service: Service, endpoint: Endpoint | None = None) -> Workload:
    """The workload an instance of `service` (at `endpoint`, when known) is."""
    labels = dict(service.labels)
    if endpoint is not None:
        labels.update(endpoint.labels)
    return Workload(service.namespace, tuple(sorted(labels.items())), service.name)


def inbound_policy(e: Enforcement) -> InboundPolicy:
    """What a sidecar's inbound listeners enforce under `e`."""

    def mode_of(service: Service, endpoint: Endpoint) -> MtlsMode:
        workload = workload_of(service, endpoint)
        # portLevelMtls keys on the workload's (the application's) port.
        mode = mtls_mode(e.policies, workload, endpoint.port, e.root, e.default_mode)
        return e.default_mode if mode == "UNSET" else mode

    def http_authz(service: Service, endpoint: Endpoint, port: Port) -> list[hcm_pb2.HttpFilter]:
        workload = workload_of(service, endpoint)
        return http_authz_filters(e.policies, workload, e.trust_domain, e.root)

    def tcp_authz(
        service: Service, endpoint: Endpoint, port: Port
    ) -> list[listener_components_pb2.Filter]:
        workload = workload_of(service, endpoint)
        return network_authz_filters(e.policies, workload, e.trust_domain, e.root)

    return InboundPolicy(mode_of, http_authz, tcp_authz)


def server_rbac(e: Enforcement) -> ServerRbac:
    """What an xDS-managed gRPC server's listeners enforce under `e`: the policies of the
    workload at each instance (its first service, with the endpoint's labels)."""

    def rbac_of(instance: ServerInstance) -> Sequence[rbac_pb2.RBAC]:
        if not instance.services:
            return []
        endpoint = instance.endpoints[0] if instance.endpoints else None
        workload = workload_of(instance.services[0], endpoint)
        return grpc_server_rbac(e.policies, workload, e.trust_domain, e.root)

    return rbac_of


class SecurityPolicies:
    """The security objects' last resolution, and the `Enforcement` last handed out."""

    def __init__(self, default_mode: MtlsMode = DEFAULT_MTLS_MODE, root: str = ROOT_NAMESPACE):
        self.default_mode = default_mode
        self.root = root
        self.statuses: tuple[PolicyStatus, ...] = ()
        self.enforcement: Enforcement | None = None  # None: the hooks were never set here
        self._accepted: dict[PolicyKey, SecurityPolicy] = {}

    def update(self, objects: Sequence[PolicyObject], trust_domain: str) -> Enforcement | None:
        """Resolve `objects` (every kind; the security ones count); the new enforcement
        when it differs from the last one, else None."""
        resolution = resolve_security(objects, self._accepted)
        self._accepted = resolution.accepted
        self.statuses = resolution.statuses
        new = Enforcement(resolution.policies, trust_domain, self.default_mode, self.root)
        if new == self.enforcement:
            return None
        self.enforcement = new
        return new

    def statuses_in(self, statuses: Sequence[PolicyStatus]) -> list[PolicyStatus]:
        """`statuses` (every kind's, from the traffic policy's resolution) with each
        security object's replaced by this resolution's, which knows what a refused object
        still serves."""
        mine = {s.key: s for s in self.statuses}
        return [mine.get(s.key, s) for s in statuses]
