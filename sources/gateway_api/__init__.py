"""Gateway API `gateway.networking.k8s.io/v1` HTTPRoute and GRPCRoute in mesh mode (GAMMA,
GEP-1426/1294) → the policy model. Pure, like `sources.istio`, and built on its readers
and checks: one loaded object in, a `ParsedRoute` (the `Parsed` shape) out, or a
`PolicyError` naming the field path (`spec.rules[0].matches[1].path.value`).

A route applies to the Services its `parentRefs` name (`group: ""`, `kind: Service`,
optional `port`); Gateway parents are not ours (the route is then "not applied"). What
the CRD's schema and CEL rules refuse is refused, and so is what Envoy or gRPC would NACK
(RE2 program size, header names and values). `merge_attached` orders the routes of one
Service by the Gateway API's precedence; `route_status` computes `status.parents[]`.

Modules: `objects` (entry point), `rules` with `matches`, `filters` and `backends`;
`values` (Gateway API value types), `precedence`, `status`, `constants`;
`attached` (the policy sources publish for a route, which merges its Service's routes).
"""

from sources.gateway_api.attached import AttachedRoute, attached
from sources.gateway_api.backends import Ref
from sources.gateway_api.constants import API_GROUP, API_VERSIONS, CONTROLLER_NAME, KINDS
from sources.gateway_api.objects import ParsedRoute, is_supported_kind, parse_route
from sources.gateway_api.precedence import kind_conflicts, match_rank, merge_attached
from sources.gateway_api.status import any_namespace, route_status

__all__ = [
    "API_GROUP",
    "API_VERSIONS",
    "CONTROLLER_NAME",
    "KINDS",
    "AttachedRoute",
    "ParsedRoute",
    "Ref",
    "any_namespace",
    "attached",
    "is_supported_kind",
    "kind_conflicts",
    "match_rank",
    "merge_attached",
    "parse_route",
    "route_status",
]
