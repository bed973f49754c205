"""Traffic policy as immutable values: how requests to a service are routed, and how the
calling proxy treats the service's endpoints.

Two kinds of object, whatever dialect they were written in (Istio VirtualService and
DestinationRule today; Gateway API routes and Consul config entries parse into the same):

- `RoutePolicy` (a VirtualService): for the services its `hosts` name, ordered HTTP rules
  (first match wins) and TCP rules, each sending traffic to weighted `Destination`s;
- `DestinationPolicy` (a DestinationRule): for one service, load balancing, connection
  pool limits and outlier detection, per port and per named subset of its endpoints.

Hosts are kept as written (with the namespace of the object that wrote them): which
service a host names depends on the catalog, and is decided when policy is applied.
Durations are seconds (float), percentages 0-100 (float). `None` means "not set":
the renderers then apply the documented default, which is not always Envoy's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .services import Labels

# "path_prefix" is the Gateway API's PathPrefix: whole path segments ("/foo" matches "/foo"
# and "/foo/bar", never "/foobar"); its value has no trailing "/" except the root "/".
MatchKind = Literal["exact", "prefix", "regex", "present", "path_prefix"]
FieldPath = tuple[str | int, ...]  # a field of an object: ("spec", "http", 0, "route")
SimpleLb = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"]
PolicyKind = Literal["VirtualService", "DestinationRule"]
# The kinds of object holding a RoutePolicy or a DestinationPolicy: Istio's, and what
# other dialects compile into (Consul's discovery chain: the chain of a called service,
# and the resolver of each service a chain reaches).
ROUTE_KINDS = frozenset({"VirtualService", "discovery-chain"})
DESTINATION_KINDS = frozenset({"DestinationRule", "discovery-chain-resolver"})


@dataclass(frozen=True, slots=True)
class StringMatch:
    """A string test: exact, prefix, RE2 regex, or only "present" (value unused)."""

    kind: MatchKind
    value: str = ""


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """A request header that must match (`invert`: must not match, or be absent)."""

    name: str
    match: StringMatch
    invert: bool = False


@dataclass(frozen=True, slots=True)
class QueryMatch:
    name: str
    match: StringMatch


@dataclass(frozen=True, slots=True)
class RequestMatch:
    """One alternative of a rule's match list: every field set here must hold (AND)."""

    name: str = ""
    uri: StringMatch | None = None
    ignore_uri_case: bool = False
    method: StringMatch | None = None
    authority: StringMatch | None = None
    scheme: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()
    query: tuple[QueryMatch, ...] = ()
    port: int | None = None


@dataclass(frozen=True, slots=True)
class HeaderOps:
    """Headers to set (replace), add (append) and remove, on requests and on responses."""

    request_set: tuple[tuple[str, str], ...] = ()
    request_add: tuple[tuple[str, str], ...] = ()
    request_remove: tuple[str, ...] = ()
    response_set: tuple[tuple[str, str], ...] = ()
    response_add: tuple[tuple[str, str], ...] = ()
    response_remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(getattr(self, f) for f in self.__slots__)


@dataclass(frozen=True, slots=True, order=True)
class Destination:
    """A service as a rule names it: `host` as written (resolved against the catalog in
    `namespace`, the writing object's), an optional port number and subset name."""

    host: str
    namespace: str
    port: int | None = None
    subset: str = ""


@dataclass(frozen=True, slots=True)
class WeightedDestination:
    destination: Destination
    weight: int = 100
    headers: HeaderOps = HeaderOps()


@dataclass(frozen=True, slots=True)
class Retry:
    """`attempts` 0 means no retries at all. `retry_on` holds Envoy's retry conditions;
    `status_codes` the retriable HTTP statuses (Istio writes them into retryOn)."""

    attempts: int
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = ()
    status_codes: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Fault:
    """Delay `delay` seconds for `delay_percent` of requests; abort `abort_percent` of them
    with HTTP `abort_http` or gRPC status `abort_grpc` (a code name such as UNAVAILABLE)."""

    delay: float | None = None
    delay_percent: float = 100.0
    abort_http: int | None = None
    abort_grpc: str | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Mirror:
    destination: Destination
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Rewrite:
    """Replace the matched path prefix (or the whole path of an exact match) by `uri`;
    replace the whole path, whatever matched, by `path` (Gateway API ReplaceFullPath);
    replace the Host/authority by `authority`. At most one of `uri` and `path`."""

    uri: str | None = None
    authority: str | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Redirect to the same URL but for what is set: the whole path `uri`, or the matched
    path prefix replaced by `prefix` (Gateway API ReplacePrefixMatch; at most one).

    `derive_port` False (Istio's default): an unset port, or the well-known port of the
    scheme, keeps the request's port. True (the Gateway API's rule when a scheme or port
    is given; Istio's derivePort FROM_PROTOCOL_DEFAULT): the redirect always names its
    port, `port` or else the scheme's well-known one."""

    uri: str | None = None
    authority: str | None = None
    scheme: str | None = None
    port: int | None = None
    code: int = 301
    prefix: str | None = None
    derive_port: bool = False


@dataclass(frozen=True, slots=True)
class DirectResponse:
    status: int
    body: str | None = None


@dataclass(frozen=True, slots=True)
class Cors:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True, slots=True)
class HttpRule:
    """One HTTP rule: if any of `matches` holds (or there are none), do what it says.

    Exactly one action: `destinations` (weighted), `redirect` or `direct_response`.
    `retry` None means the default retry policy; `timeout` None means no timeout.
    """

    name: str = ""
    matches: tuple[RequestMatch, ...] = ()
    destinations: tuple[WeightedDestination, ...] = ()
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    timeout: float | None = None
    retry: Retry | None = None
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    rewrite: Rewrite | None = None
    cors: Cors | None = None
    headers: HeaderOps = HeaderOps()
    # The object that wrote this rule when the rules of several are merged into one
    # policy (the Gateway API routes attached to one Service), for status and reports.
    route: PolicyKey | None = None


@dataclass(frozen=True, slots=True)
class TcpRule:
    """A TCP rule: connections (to `port`, if set) go to the weighted destinations."""

    destinations: tuple[WeightedDestination, ...]
    port: int | None = None


@dataclass(frozen=True, slots=True, order=True)
class PolicyKey:
    """Identity of a policy object: kind (a `PolicyKind`, or another kind a source read
    and could not use), namespace and name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """How requests to the services named by `hosts` are routed (a VirtualService).

    `callers`: None applies it to every caller; a namespace applies it only to callers
    in that namespace (a Gateway API consumer route, written in another namespace than
    its Service's). Proxies say their namespace in node metadata ``NAMESPACE``."""

    key: PolicyKey
    hosts: tuple[str, ...]
    http: tuple[HttpRule, ...] = ()
    tcp: tuple[TcpRule, ...] = ()
    # Where it was read: shown to operators, but not part of what it says (a line added
    # above it in its file must not make it "changed" and rebuild what depends on it).
    origin: str = field(default="", compare=False)
    callers: str | None = None  # after `origin`: older callers pass that by position


@dataclass(frozen=True, slots=True)
class HashOn:
    """What a consistent-hash load balancer hashes: exactly one field is set."""

    header: str | None = None
    cookie: str | None = None
    cookie_ttl: float | None = None
    cookie_path: str | None = None
    source_ip: bool = False
    query_parameter: str | None = None


@dataclass(frozen=True, slots=True)
class LocalityDistribute:
    """Traffic from locality `origin` ("region/zone/subzone", trailing `*` allowed) is
    shared between localities by weight (percent)."""

    origin: str
    to: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class LocalityFailover:
    """When the endpoints of region `origin` are unhealthy, use region `to`."""

    origin: str
    to: str


@dataclass(frozen=True, slots=True)
class LocalityLb:
    enabled: bool = True
    distribute: tuple[LocalityDistribute, ...] = ()
    failover: tuple[LocalityFailover, ...] = ()


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """`simple`, or a consistent hash (`hash`) on a ring (`maglev` False) or Maglev table."""

    simple: SimpleLb | None = None
    hash: HashOn | None = None
    maglev: bool = False
    minimum_ring_size: int | None = None
    maglev_table_size: int | None = None
    locality: LocalityLb | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout: float | None = None
    tcp_idle_timeout: float | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    interval: float | None = None
    base_ejection_time: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    """What a caller's proxy applies to a service's endpoints. Fields left None inherit
    (subset over port over top level) and otherwise take the documented default."""

    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None


@dataclass(frozen=True, slots=True)
class PortTrafficPolicy:
    port: int
    policy: TrafficPolicy


@dataclass(frozen=True, slots=True)
class Subset:
    """The endpoints of a service whose labels include all of `labels`."""

    name: str
    labels: Labels
    policy: TrafficPolicy | None = None
    ports: tuple[PortTrafficPolicy, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceFailover:
    """Where the traffic for a service's endpoints (`subset` "": every subset without its
    own entry) goes when none of them is healthy: `targets`, in order (Consul's
    service-resolver `Failover` to another service or subset). Rendered as an Envoy
    aggregate cluster (the service's cluster, then the targets')."""

    subset: str
    targets: tuple[Destination, ...]


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """How callers treat the endpoints of the service named by `host` (a DestinationRule)."""

    key: PolicyKey
    host: str
    policy: TrafficPolicy | None = None
    ports: tuple[PortTrafficPolicy, ...] = ()
    subsets: tuple[Subset, ...] = ()
    origin: str = field(default="", compare=False)  # as RoutePolicy.origin
    failover: tuple[ServiceFailover, ...] = ()

    def subset(self, name: str) -> Subset | None:
        for s in self.subsets:
            if s.name == name:
                return s
        return None

    def for_port(self, port: int, subset: str = "") -> TrafficPolicy:
        """The policy in force for `port` (and `subset`): each of load balancer, pool and
        outlier detection from the most specific level that sets it, as Istio merges."""
        levels = [self.policy, *(p.policy for p in self.ports if p.port == port)]
        chosen = self.subset(subset) if subset else None
        if chosen is not None:
            levels += [chosen.policy, *(p.policy for p in chosen.ports if p.port == port)]
        merged = TrafficPolicy()
        for level in levels:
            if level is None:
                continue
            merged = TrafficPolicy(
                level.load_balancer or merged.load_balancer,
                level.connection_pool or merged.connection_pool,
                level.outlier_detection or merged.outlier_detection,
            )
        return merged


Policy = RoutePolicy | DestinationPolicy
