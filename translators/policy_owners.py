"""One owner per service and kind of rule when several registries configure a service.

Policy objects come from several registries (`PolicyObject.source`: ``kubernetes``,
``consul``, ``file``). Two kinds of rule can be written for a service: its *routing*
(VirtualService, HTTPRoute, GRPCRoute, Consul's router/splitter chain) and its
*destination* policy (DestinationRule, Consul's service-resolver and service-defaults).
For each service and kind, the objects of one registry apply and those of the others
are reported SHADOWED. The registry that owns it is the first that configures it in:

1. the service's own registry (`Service.source`: a Consul service's Consul config
   entries, a Kubernetes Service's Kubernetes objects, a file service's policy file;
   a service several registries publish has several, taken in the order below);
2. then the others in the fixed order ``kubernetes``, ``consul``, ``file``.

Within the owning registry the usual rules decide (first DestinationRule by
namespace/name; a VirtualService before Gateway API routes, as Istio; the Gateway API's
precedence among routes). Consumer routes (Gateway API routes for callers in one
namespace) are owned per caller namespace: they compete with each other, not with the
routing every caller gets, which they replace for their namespace (GEP-1426).

A registry owns a service as soon as one of its objects names it with a usable version
(current or last accepted): an owner's object that is later rejected does not hand the
service to another registry, as a broken file does not hand its services to another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from xds_server.model import (
    DESTINATION_KINDS,
    ROUTE_KINDS,
    PolicyKey,
    Service,
    ServiceEntry,
    ServiceKey,
)
from xds_server.model.objects import registry_of

from .policy_resolve_gateway import GATEWAY_ROUTE_KINDS

Rule = Literal["routing", "destination"]
REGISTRY_ORDER: tuple[str, ...] = ("kubernetes", "consul", "file")
# Who owns: (service, kind of rule, caller namespace of consumer routes or None).
Scope = tuple[ServiceKey, Rule, str | None]


def rule_of(kind: str) -> Rule | None:
    """The kind of rule an object of `kind` writes (None: it writes neither)."""
    if kind in ROUTE_KINDS or kind in GATEWAY_ROUTE_KINDS:
        return "routing"
    if kind in DESTINATION_KINDS:
        return "destination"
    return None


def _rank(registry: str) -> tuple[int, str]:
    known = registry in REGISTRY_ORDER
    return (REGISTRY_ORDER.index(registry) if known else len(REGISTRY_ORDER), registry)


def service_registries(service: Service, registries: Mapping[str, str]) -> tuple[str, ...]:
    """The registries that publish `service` (its merged `source`, "consul+kubernetes"),
    in the fixed order; a source name the catalog does not know counts as a kind."""
    found = {registries.get(n) or registry_of(n) for n in service.source.split("+") if n}
    return tuple(sorted(found, key=_rank))


class Owners:
    """The claims of every registry, then who owns what (see the module docstring)."""

    def __init__(
        self, catalog: Mapping[ServiceKey, ServiceEntry], registries: Mapping[str, str]
    ) -> None:
        self._catalog = catalog
        self._registries = registries
        # Per scope and registry, its first claimant (a route kind before a Gateway API
        # route, then by key: the object that wins within that registry, usually).
        self._claims: dict[Scope, dict[str, tuple[int, PolicyKey]]] = {}

    def claim(self, scopes: Iterable[Scope], registry: str, key: PolicyKey) -> None:
        rank = (0 if key.kind not in GATEWAY_ROUTE_KINDS else 1, key)
        for scope in scopes:
            by_registry = self._claims.setdefault(scope, {})
            held = by_registry.get(registry)
            if held is None or rank < held:
                by_registry[registry] = rank

    def own(self, service: ServiceKey) -> tuple[str, ...]:
        entry = self._catalog.get(service)
        return service_registries(entry.service, self._registries) if entry else ()

    def order(self, service: ServiceKey) -> tuple[str, ...]:
        own = self.own(service)
        return (*own, *(r for r in REGISTRY_ORDER if r not in own))

    def shadowed(self, scope: Scope, registry: str) -> str | None:
        """Why `registry`'s objects do not apply in `scope`, or None if it owns it (or
        nobody else claims it)."""
        claims = self._claims.get(scope)
        if not claims or set(claims) <= {registry}:
            return None
        service = scope[0]
        order = self.order(service)
        owner = min(claims, key=lambda r: (order.index(r) if r in order else len(order), r))
        if owner == registry:
            return None
        winner = claims[owner][1]
        own = self.own(service)
        if owner in own:
            why = f"{service}'s own registry ({owner}) comes first"
        else:
            named = ", ".join(own) or "unknown"
            why = (f"{service}'s own registry ({named}) configures none; then "
                   f"{', '.join(REGISTRY_ORDER)}")  # fmt: skip
        return f"shadowed by {winner} from {owner}: {why}"
