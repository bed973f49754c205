"""Pure functions from the registry model and traffic policy to Envoy resources.

`translate(catalog, group, policies=...)` is the whole translation; the modules hold its
parts: `names` (every naming rule), `group` (ProxyGroup), `services` (per-service
clusters and load assignments), `listeners` (per-group listeners and routes),
`resources` (the protobuf builders they share with tests and benchmarks), and for
policy: `policy_resolve` (which policy applies to which service), `policy_routes` (rules
to routes), `policy_actions` (timeouts, retries, faults, hashing, CORS, headers),
`policy_clusters` (cluster policy, subsets, locality), `policy_common`
(what both share), `policy_status` (what operators are told beyond accept/reject).
"""

from .group import ProxyGroup
from .report import Skipped
from .translate import Translation, translate

__all__ = ["ProxyGroup", "Skipped", "Translation", "translate"]
