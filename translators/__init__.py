"""Pure functions from the registry model to Envoy resources.

`translate(catalog, group)` is the whole translation; the modules hold its parts:
`names` (every naming rule), `group` (ProxyGroup), `services` (per-service clusters and
load assignments), `listeners` (per-group listeners and routes), `resources` (the
protobuf builders they share with tests and benchmarks).
"""

from .group import ProxyGroup
from .report import Skipped
from .translate import Translation, translate

__all__ = ["ProxyGroup", "Skipped", "Translation", "translate"]
