"""A parsed route as sources publish it: a `RoutePolicy` that also carries its
`ParsedRoute`, and merges the routes attached to one Service by the Gateway API's
precedence (`merge_attached`).

The resolver (translators) may not import sources; it finds these methods on the policy
objects it is given (its `AttachableRoute` protocol), so the precedence rules live in one
place, here, and the catalog-dependent part (which Service a parentRef names, whether a
backend exists, which version of a route is served) stays with the resolver.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sources.gateway_api.objects import ParsedRoute
from sources.gateway_api.precedence import kind_conflicts, merge_attached
from xds_server.model import PolicyKey, RoutePolicy

ParentRef = tuple[str, str, int | None]  # namespace, name, port (None: every port)


@dataclass(frozen=True, slots=True)
class AttachedRoute(RoutePolicy):
    """`RoutePolicy` fields as `parsed.policy` has them, and `parsed` itself."""

    parsed: ParsedRoute | None = None

    @property
    def parents(self) -> tuple[ParentRef, ...]:
        """The Service parentRefs, in the order written."""
        refs = self.parsed.parents if self.parsed is not None else ()
        return tuple((p.namespace, p.name, p.port) for p in refs)

    def merge_attached(
        self,
        routes: Sequence[RoutePolicy],
        service: str,
        namespace: str,
        service_ports: Sequence[int] = (),
        callers: str | None = None,
    ) -> RoutePolicy:
        """The routes among `routes` (this one included or not) attached to Service
        `namespace/service` that callers in namespace `callers` get (None: the producer
        routes), as one policy in Gateway API precedence."""
        return merge_attached(service, namespace, _parsed(routes), callers, service_ports)

    def kind_conflicts(
        self,
        routes: Sequence[RoutePolicy],
        service: str,
        namespace: str,
        service_ports: Sequence[int] = (),
    ) -> dict[PolicyKey, str]:
        """The HTTPRoutes among `routes` that a GRPCRoute displaces on this Service."""
        return kind_conflicts(service, namespace, _parsed(routes), service_ports)


def attached(parsed: ParsedRoute) -> AttachedRoute:
    """The policy a source publishes for a parsed route."""
    p = parsed.policy
    assert isinstance(p, RoutePolicy)
    return AttachedRoute(p.key, p.hosts, p.http, p.tcp, p.origin, p.callers, parsed=parsed)


def _parsed(routes: Sequence[RoutePolicy]) -> list[ParsedRoute]:
    return [r.parsed for r in routes if isinstance(r, AttachedRoute) and r.parsed is not None]
