"""What policy resolution yields: per service the `ServicePolicy` the renderers apply,
per object its `PolicyStatus`, and the host index both use (`policy_resolve` computes
them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from xds_server.model import (
    Destination,
    DestinationPolicy,
    FieldPath,
    Policy,
    PolicyKey,
    RoutePolicy,
    Service,
    ServiceKey,
)

from .policy_common import RouteTarget

# SHADOWED: valid, but another registry's object owns every service it names
# (translators.policy_owners).
State = Literal["ACCEPTED", "WARNING", "REJECTED", "SHADOWED"]
TargetKey = tuple[Destination, int]  # a destination as used by a route on that port


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """Everything policy changes about one service's resources.

    `routing`: the VirtualService whose rules replace the service's default route;
    `destination`: its DestinationRule; `subsets`: the (port, subset) clusters to build
    for it because a route or mirror somewhere sends traffic there; `targets`: the
    cluster (and hash key) each destination of `routing` names, per route port;
    `depends`: the services those destinations are (a proxy that gets this service's
    routes must get their clusters too), and its failover targets; `failovers`: the
    aggregate clusters to build for it, as (port, subset, clusters in priority order).
    """

    routing: RoutePolicy | None = None
    destination: DestinationPolicy | None = None
    subsets: tuple[tuple[int, str], ...] = ()
    targets: tuple[tuple[TargetKey, RouteTarget], ...] = ()
    depends: tuple[ServiceKey, ...] = ()
    failovers: tuple[tuple[int, str, tuple[str, ...]], ...] = ()

    def target(self, destination: Destination, port: int) -> RouteTarget:
        for key, target in self.targets:
            if key == (destination, port):
                return target
        raise KeyError(f"no target for {destination} on port {port}")


@dataclass(frozen=True, slots=True)
class PolicyStatus:
    """How one object stands: what is served of it and why, and where it applies."""

    key: PolicyKey
    origin: str
    state: State
    reasons: tuple[str, ...] = ()
    services: tuple[ServiceKey, ...] = ()
    source: str = ""  # the registry it came from (PolicyObject.source)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.key.kind,
            "namespace": self.key.namespace,
            "name": self.key.name,
            "origin": self.origin,
            "state": self.state,
            "reasons": list(self.reasons),
            "services": [str(s) for s in self.services],
            "source": self.source,
        }


@dataclass(slots=True)
class Resolution:
    """`services`: the policy every caller gets; `consumers`: per caller namespace, the
    services whose routing Gateway API consumer routes of that namespace replace, with
    the policy callers there get instead (`policies_for`)."""

    services: dict[ServiceKey, ServicePolicy] = field(default_factory=dict)
    statuses: list[PolicyStatus] = field(default_factory=list)
    accepted: dict[PolicyKey, Policy] = field(default_factory=dict)
    consumers: dict[str, dict[ServiceKey, ServicePolicy]] = field(default_factory=dict)

    def policies_for(self, namespace: str | None) -> Mapping[ServiceKey, ServicePolicy]:
        return policies_for(self.services, self.consumers, namespace)


def policies_for(
    services: Mapping[ServiceKey, ServicePolicy],
    consumers: Mapping[str, Mapping[ServiceKey, ServicePolicy]],
    namespace: str | None,
) -> Mapping[ServiceKey, ServicePolicy]:
    """What callers in `namespace` (None: unknown) get: `services`, with the services
    their namespace's consumer routes route replaced."""
    own = consumers.get(namespace) if namespace is not None else None
    return {**services, **own} if own else services


class Rejected(Exception):
    """A policy version that cannot be applied: which field (`path`) and why."""

    def __init__(self, path: FieldPath, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


class HostIndex:
    """Host names → services, as Istio resolves a VirtualService or DestinationRule host."""

    def __init__(self, services: Iterable[Service]) -> None:
        self._names: dict[str, ServiceKey] = {}
        for svc in sorted(services, key=lambda s: s.key):
            base = f"{svc.name}.{svc.namespace}"
            for host in (base, f"{base}.svc", f"{base}.svc.cluster.local", *svc.hostnames):
                self._names.setdefault(host.lower().rstrip("."), svc.key)

    def find(self, host: str, namespace: str) -> ServiceKey | None:
        host = host.lower().rstrip(".")
        if "." not in host:
            return self._names.get(f"{host}.{namespace}")
        return self._names.get(host)
