"""Consul config entries → the policy model, compiled as Consul's discovery chain.

Pure: the entries `GET /v1/config/:kind` returns (service-defaults, proxy-defaults,
service-router, service-splitter, service-resolver) in, `Compiled` out — each entry's
report, a `RoutePolicy` per called service (router → splitter → resolver) and a
`DestinationPolicy` per service callers reach (subsets, load balancer, timeouts,
circuit breakers, outlier detection, failover), and the protocols the entries set.

Use (composition root): `compile_entries(entries of all five kinds, {service: its
instances' explicit meta protocol})`; `Compiled.policies` go to
`translators.policy_resolve.resolve_policies` with the other policy objects (kinds
``discovery-chain`` and ``discovery-chain-resolver`` are in the model's ROUTE_KINDS and
DESTINATION_KINDS); `Compiled.entries` are for listing (`xdsctl policies`: an error, or
accepted with notices), not for the resolver; `Compiled.protocols` override the
catalog's port protocol. Errors: ``consul config entry <kind>/<name>: <field>: <why>``
and ``consul discovery chain <service>: <entry>: <field>: <why>``.

Modules: `discovery` (the entry point), `chain` (routes, splits, redirects),
`destinations` (resolver and UpstreamConfig), `index` (entries by kind and service),
`entries` (the envelope, service-defaults, proxy-defaults, splitter), `router`,
`resolver`, `filter` (subset filters as labels), `read` (shared readers), `kinds`;
`intentions` (service-intentions → AuthorizationPolicies, `compile_intentions`).
"""

from sources.consul_config.chain import integer_weights
from sources.consul_config.destinations import RESOLVER_KIND, upstream_config
from sources.consul_config.discovery import CHAIN_KIND, Compiled, compile_entries
from sources.consul_config.filter import FilterError, filter_labels
from sources.consul_config.index import entry_name
from sources.consul_config.intentions import INTENTIONS_KIND, compile_intentions
from sources.consul_config.kinds import KINDS, L7_PROTOCOLS

# Every kind the config entries watch reads: the discovery chain's and the intentions.
WATCHED_KINDS = (*KINDS, INTENTIONS_KIND)

__all__ = [
    "CHAIN_KIND",
    "INTENTIONS_KIND",
    "KINDS",
    "L7_PROTOCOLS",
    "RESOLVER_KIND",
    "WATCHED_KINDS",
    "Compiled",
    "FilterError",
    "compile_entries",
    "compile_intentions",
    "entry_name",
    "filter_labels",
    "integer_weights",
    "upstream_config",
]
