"""Destination policy (the model's `TrafficPolicy`) applied to a cluster, for Envoy proxies
or proxyless gRPC clients; a subset's endpoints; and locality priorities and weights
computed for one client's locality.

Istio's semantics (pilot/pkg/networking/core/cluster_traffic_policy.go and
loadbalancer/loadbalancer.go): connection pool limits become the DEFAULT circuit-breaker
thresholds, every unset one at the maximum so only what the operator set limits (Envoy's
own defaults are 1024/1024/1024/3); outlier detection ejects on consecutive errors only
(success-rate ejection off); locality failover orders localities by how much of the
client's locality they share.

gRPC clients get what grpcio accepts (research digest §3): load balancing only through
``load_balancing_policy`` (it NACKs the LEAST_REQUEST, RANDOM and MAGLEV enum values),
only ``max_requests`` of the circuit breakers, no consecutive-error outlier detection;
the rest is reported as `NotApplied`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3 import base_pb2, extension_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from envoy.extensions.load_balancing_policies.wrr_locality.v3 import wrr_locality_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as hpo
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from xds_server.model import (
    ConnectionPool,
    Endpoint,
    HashOn,
    Labels,
    LoadBalancer,
    Locality,
    LocalityDistribute,
    LocalityFailover,
    LocalityLb,
    OutlierDetection,
    TrafficPolicy,
)

from .policy_common import UINT32_MAX, Client, NotApplied, duration, not_for_grpc
from .resources import (
    HTTP_PROTOCOL_OPTIONS,
    LocalityGroup,
    grouped_load_assignment,
    locality_groups,
    pack,
)

_SIMPLE_LB = {
    "ROUND_ROBIN": Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": Cluster.LEAST_REQUEST,
    "RANDOM": Cluster.RANDOM,
}


def subset_endpoints(endpoints: Iterable[Endpoint], labels: Labels) -> list[Endpoint]:
    """The endpoints whose labels include every one of `labels` (a subset's endpoints)."""
    wanted = set(labels)
    return [ep for ep in endpoints if wanted <= set(ep.labels)]


def apply_traffic_policy(
    cluster: Cluster, policy: TrafficPolicy, client: Client, subject: str
) -> tuple[Cluster, list[NotApplied]]:
    """A copy of `cluster` with `policy`'s load balancing, connection pool and outlier
    detection, as `client` accepts them, and what `client` cannot apply (reported
    against `subject`, the policy that asked for it). `cluster` is not modified."""
    out = Cluster()
    out.CopyFrom(cluster)
    notes: list[NotApplied] = []
    lb, pool, outlier = policy.load_balancer, policy.connection_pool, policy.outlier_detection
    if client == "grpc":
        if lb is not None:
            _grpc_load_balancer(out, lb, subject, notes)
        if pool is not None:
            _grpc_connection_pool(out, pool, subject, notes)
        if outlier is not None:
            notes.append(
                not_for_grpc(
                    subject,
                    "outlier detection",
                    "gRPC ejects only by success rate or failure percentage",
                )
            )
        return out, notes
    if lb is not None:
        _envoy_load_balancer(out, lb)
    if pool is not None:
        _envoy_connection_pool(out, pool)
    if outlier is not None:
        _envoy_outlier_detection(out, outlier)
    return out, notes


# --------------------------------------------------------------------- load balancing


def _envoy_load_balancer(c: Cluster, lb: LoadBalancer) -> None:
    if lb.hash is not None:
        c.ClearField("lb_config")
        if lb.maglev:
            c.lb_policy = Cluster.MAGLEV
            c.maglev_lb_config.SetInParent()
            if lb.maglev_table_size:
                c.maglev_lb_config.table_size.value = lb.maglev_table_size
        else:
            c.lb_policy = Cluster.RING_HASH
            c.ring_hash_lb_config.hash_function = Cluster.RingHashLbConfig.XX_HASH
            c.ring_hash_lb_config.SetInParent()
            if lb.minimum_ring_size:
                c.ring_hash_lb_config.minimum_ring_size.value = lb.minimum_ring_size
    elif lb.simple is not None:
        c.ClearField("lb_config")
        c.lb_policy = _SIMPLE_LB[lb.simple]
    locality = lb.locality
    if locality is not None and locality.enabled and locality.distribute:
        # Without it Envoy ignores the locality weights `distribute` sets.
        c.common_lb_config.locality_weighted_lb_config.SetInParent()


def _grpc_load_balancer(
    c: Cluster, lb: LoadBalancer, subject: str, notes: list[NotApplied]
) -> None:
    """Through ``load_balancing_policy``: the client takes the first policy it supports,
    so a policy gRPC lacks is followed by round robin over weighted localities (what the
    ROUND_ROBIN enum means to gRPC), then plain round robin for any other reader."""
    wanted: list[tuple[str, Message]] = []
    if lb.hash is not None:
        if lb.maglev:
            maglev = maglev_pb2.Maglev()
            if lb.maglev_table_size:
                maglev.table_size.value = lb.maglev_table_size
            wanted.append(("maglev", maglev))
            notes.append(not_for_grpc(subject, "Maglev", "gRPC clients use a ring hash"))
        ring = ring_hash_pb2.RingHash(hash_function=ring_hash_pb2.RingHash.XX_HASH)
        if lb.minimum_ring_size and not lb.maglev:
            ring.minimum_ring_size.value = lb.minimum_ring_size
        wanted.append(("ring_hash", ring))
        _note_grpc_hash(lb.hash, subject, notes)
    elif lb.simple == "LEAST_REQUEST":
        wanted.append(("least_request", least_request_pb2.LeastRequest()))
        notes.append(not_for_grpc(subject, "LEAST_REQUEST", "gRPC clients use round robin"))
    elif lb.simple == "RANDOM":
        wanted.append(("random", random_pb2.Random()))
        notes.append(not_for_grpc(subject, "RANDOM", "gRPC clients use round robin"))
    if not wanted:
        return  # round robin: the cluster's ROUND_ROBIN enum already says so
    round_robin = _lb_policy("round_robin", round_robin_pb2.RoundRobin())
    wrr_locality = wrr_locality_pb2.WrrLocality(
        endpoint_picking_policy=cluster_pb2.LoadBalancingPolicy(policies=[round_robin])
    )
    c.ClearField("lb_config")
    c.lb_policy = Cluster.ROUND_ROBIN
    c.load_balancing_policy.CopyFrom(
        cluster_pb2.LoadBalancingPolicy(
            policies=[
                *(_lb_policy(name, config) for name, config in wanted),
                _lb_policy("wrr_locality", wrr_locality),
                round_robin,
            ]
        )
    )


def _lb_policy(name: str, config: Message) -> cluster_pb2.LoadBalancingPolicy.Policy:
    return cluster_pb2.LoadBalancingPolicy.Policy(
        typed_extension_config=extension_pb2.TypedExtensionConfig(
            name=f"envoy.load_balancing_policies.{name}", typed_config=pack(config)
        )
    )


def _note_grpc_hash(on: HashOn, subject: str, notes: list[NotApplied]) -> None:
    """gRPC hashes a request only on a header, or on its channel (gRFC A42), which the
    routes use for source-IP hashing; cookie and query parameter hashing it cannot do."""
    kind = "cookie" if on.cookie else "query parameter" if on.query_parameter else None
    if kind is not None:
        notes.append(
            not_for_grpc(subject, f"consistent hash on a {kind}", "requests hash randomly")
        )


# -------------------------------------------------------------------- connection pool


def _envoy_connection_pool(c: Cluster, pool: ConnectionPool) -> None:
    """Circuit breakers with every threshold set (unset or 0: the maximum, as Istio), the
    connect timeout, and per-connection HTTP options merged into the cluster's own."""

    def limit(value: int | None) -> wrappers_pb2.UInt32Value:
        return wrappers_pb2.UInt32Value(value=min(value, UINT32_MAX) if value else UINT32_MAX)

    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        priority=base_pb2.DEFAULT,
        max_connections=limit(pool.max_connections),
        max_pending_requests=limit(pool.http1_max_pending_requests),
        max_requests=limit(pool.http2_max_requests),
        max_retries=limit(pool.max_retries),
        track_remaining=True,
    )
    c.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds]))
    if pool.connect_timeout:
        c.connect_timeout.CopyFrom(duration(pool.connect_timeout))
    # tcp.idleTimeout stands in for the HTTP one when that is unset (as Istio).
    idle = pool.idle_timeout if pool.idle_timeout is not None else pool.tcp_idle_timeout
    if idle is None and not pool.max_requests_per_connection:
        return
    options = hpo.HttpProtocolOptions()
    if HTTP_PROTOCOL_OPTIONS in c.typed_extension_protocol_options:
        # Keep its HTTP/2 (or other protocol) settings.
        c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Unpack(options)
    if options.WhichOneof("upstream_protocol_options") is None:
        # Envoy requires a protocol choice here; HTTP/1.1 is what the cluster had.
        options.explicit_http_config.http_protocol_options.SetInParent()
    common = options.common_http_protocol_options
    if idle is not None:
        common.idle_timeout.CopyFrom(duration(idle))
    if pool.max_requests_per_connection:
        common.max_requests_per_connection.value = pool.max_requests_per_connection
    c.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))


_GRPC_IGNORED_POOL_FIELDS = (
    ("max_connections", "max connections"),
    ("connect_timeout", "connect timeout"),
    ("tcp_idle_timeout", "TCP idle timeout"),
    ("http1_max_pending_requests", "max pending requests"),
    ("max_requests_per_connection", "max requests per connection"),
    ("max_retries", "max retries"),
    ("idle_timeout", "idle timeout"),
)


def _grpc_connection_pool(
    c: Cluster, pool: ConnectionPool, subject: str, notes: list[NotApplied]
) -> None:
    """gRPC applies only max_requests, of the DEFAULT thresholds (gRFC A32)."""
    if pool.http2_max_requests:
        thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(
            priority=base_pb2.DEFAULT,
            max_requests=wrappers_pb2.UInt32Value(value=min(pool.http2_max_requests, UINT32_MAX)),
        )
        c.circuit_breakers.CopyFrom(circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds]))
    for field, label in _GRPC_IGNORED_POOL_FIELDS:
        if getattr(pool, field) is not None:
            notes.append(not_for_grpc(subject, f"connection pool {label}"))


# ------------------------------------------------------------------ outlier detection


def _envoy_outlier_detection(c: Cluster, od: OutlierDetection) -> None:
    """Consecutive 5xx and gateway errors, enforced at 100 % when set above 0; success-rate
    ejection explicitly off (Envoy enforces it at 100 % by default). The panic threshold
    is the minimum health percent, 0 (never panic) when unset, as Istio."""
    out = outlier_detection_pb2.OutlierDetection(
        enforcing_success_rate=wrappers_pb2.UInt32Value(value=0),
        enforcing_consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=0),
    )
    if od.consecutive_5xx_errors is not None:
        out.consecutive_5xx.value = od.consecutive_5xx_errors
        out.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx_errors > 0 else 0
    if od.consecutive_gateway_errors is not None:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = (
            100 if od.consecutive_gateway_errors > 0 else 0
        )
    if od.interval:
        out.interval.CopyFrom(duration(od.interval))
    if od.base_ejection_time:
        out.base_ejection_time.CopyFrom(duration(od.base_ejection_time))
    if od.max_ejection_percent is not None:
        out.max_ejection_percent.value = od.max_ejection_percent
    c.outlier_detection.CopyFrom(out)
    c.common_lb_config.healthy_panic_threshold.value = float(od.min_health_percent or 0)


# ------------------------------------------------------------------------- locality


def locality_priorities(
    endpoints: Iterable[Endpoint],
    client: Locality,
    setting: LocalityLb | None,
    *,
    failover: bool = True,
) -> list[LocalityGroup]:
    """`endpoints` by locality, with the priority and weight each locality has for a
    client in locality `client` (Istio's locality load balancing; `setting` None is
    Istio's mesh default: enabled, no rules).

    - `distribute` (when one rule's origin matches the client): each target locality
      pattern shares its weight among the localities it matches (first pattern wins),
      in proportion to their own weights; other localities get no traffic and are left
      out. If no locality matches any target, nothing changes (never a 503 of ours).
    - otherwise, with `failover`: priority by what the endpoints share with the client:
      same subzone, same zone, same region, then other regions; with a failover rule
      for the client's region, its target region before the remaining ones. Priorities
      run from 0 without gaps (Envoy requires it).

    Istio applies failover only when the destination has outlier detection (it learns
    endpoint health from nothing else); pass ``failover=False`` to get that. A client
    without a locality, or `setting.enabled` False, gets every locality at priority 0.
    """
    groups = locality_groups(endpoints)
    if not client.region or (setting is not None and not setting.enabled):
        return groups
    if setting is not None and setting.distribute:
        return _distribute(groups, client, setting.distribute)
    if not failover:
        return groups
    return _failover(groups, client, setting.failover if setting is not None else ())


def locality_load_assignment(
    name: str,
    endpoints: Iterable[Endpoint],
    client: Locality,
    setting: LocalityLb | None,
    *,
    failover: bool = True,
) -> endpoint_pb2.ClusterLoadAssignment:
    """The ClusterLoadAssignment `name` of `endpoints` for a client in `client`
    (see `locality_priorities`)."""
    return grouped_load_assignment(
        name, locality_priorities(endpoints, client, setting, failover=failover)
    )


def _locality_matches(locality: Locality, pattern: str) -> bool:
    """``region/zone/subzone`` with ``*`` for any; a missing zone or subzone matches any."""
    region, zone, subzone = ([*pattern.split("/", 2), "", ""])[:3]
    return (
        region in ("*", locality.region)
        and zone in ("*", "", locality.zone)
        and subzone in ("*", "", locality.subzone)
    )


def _base_weight(group: LocalityGroup) -> int:
    return sum(max(1, e.weight) for e in group.endpoints)


def _distribute(
    groups: Sequence[LocalityGroup], client: Locality, rules: Sequence[LocalityDistribute]
) -> list[LocalityGroup]:
    rule = next((r for r in rules if _locality_matches(client, r.origin)), None)
    if rule is None:
        return list(groups)
    weights: dict[int, int] = {}
    unclaimed = list(range(len(groups)))
    for pattern, share in rule.to:
        claimed = [i for i in unclaimed if _locality_matches(groups[i].locality, pattern)]
        unclaimed = [i for i in unclaimed if i not in claimed]
        total = sum(_base_weight(groups[i]) for i in claimed)
        for i in claimed:
            if share > 0:
                # Rounded up (as Istio), so a locality with a share never gets weight 0.
                weights[i] = -(-_base_weight(groups[i]) * share // total)
    if not weights:
        return list(groups)
    return [replace(g, weight=weights[i]) for i, g in enumerate(groups) if i in weights]


def _shared_rank(client: Locality, locality: Locality) -> int:
    """0: same subzone, 1: same zone, 2: same region, 3: another region."""
    if client.region != locality.region:
        return 3
    if client.zone != locality.zone:
        return 2
    return 0 if client.subzone == locality.subzone else 1


def _failover(
    groups: Sequence[LocalityGroup], client: Locality, rules: Sequence[LocalityFailover]
) -> list[LocalityGroup]:
    rule = next((r for r in rules if r.origin == client.region), None)
    ranks = []
    for g in groups:
        rank = _shared_rank(client, g.locality)
        if rank == 3 and rule is not None and g.locality.region != rule.to:
            rank = 4  # after the failover region
        ranks.append(rank)
    priority = {rank: i for i, rank in enumerate(sorted(set(ranks)))}
    return [replace(g, priority=priority[r]) for g, r in zip(groups, ranks, strict=True)]
