"""The clusters end of `xdsctl explain`: a cluster in brief (type, load balancing,
circuit breakers, outlier detection) and its endpoints from the ClusterLoadAssignment
(address, health, weight, locality, priority, metadata labels).

Sans-IO, on the protobuf resources of one snapshot. Cluster names follow the
translators' naming rules (translators/names.py), read here without importing them (the
serving core does not import translators): ``<service>.<namespace>:<port>``, then
``|<subset>`` for a DestinationRule subset, ``/failover`` for the aggregate cluster of a
locality failover.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2
from google.protobuf import duration_pb2, json_format
from google.protobuf.message import Message

AGGREGATE = "envoy.clusters.aggregate"
SUBSET_SEPARATOR = "|"
FAILOVER_SUFFIX = "/failover"
LB_LABELS = "envoy.lb"  # Envoy's subset load balancer reads endpoint labels from here

Lookup = Callable[[str], Message | None]
# (service ``name.namespace``, subset) -> the labels that subset selects, if known
SubsetLabels = Callable[[str, str], Mapping[str, str] | None]


def seconds(d: duration_pb2.Duration) -> float:
    return round(float(d.seconds) + float(d.nanos) / 1e9, 3)


def name_parts(cluster: str) -> dict[str, str]:
    """The service, port and subset a cluster name says it is for."""
    base = cluster.removesuffix(FAILOVER_SUFFIX)
    base, _, subset = base.partition(SUBSET_SEPARATOR)
    service, _, port = base.rpartition(":")
    out = {"service": service or base, "port": port}
    if subset:
        out["subset"] = subset
    if cluster.endswith(FAILOVER_SUFFIX):
        out["failover_of"] = cluster.removesuffix(FAILOVER_SUFFIX)
    return out


def cluster_brief(c: cluster_pb2.Cluster) -> dict[str, Any]:
    """What decides where a request to `c` goes and when it is refused."""
    doc: dict[str, Any] = {}
    if c.HasField("cluster_type"):
        doc["type"] = c.cluster_type.name
    else:
        doc["type"] = cluster_pb2.Cluster.DiscoveryType.Name(c.type)
    doc["lb_policy"] = cluster_pb2.Cluster.LbPolicy.Name(c.lb_policy)
    if c.HasField("load_balancing_policy"):
        doc["lb_policy"] = " > ".join(
            p.typed_extension_config.name for p in c.load_balancing_policy.policies
        )
    if c.HasField("connect_timeout"):
        doc["connect_timeout"] = seconds(c.connect_timeout)
    limits: dict[str, int] = {}
    for t in c.circuit_breakers.thresholds:
        for field in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            if t.HasField(field):
                limits[field] = getattr(t, field).value
    if limits:
        doc["circuit_breakers"] = limits
    if c.HasField("outlier_detection"):
        od = c.outlier_detection
        outlier: dict[str, Any] = {}
        if od.HasField("consecutive_5xx"):
            outlier["consecutive_5xx"] = od.consecutive_5xx.value
        if od.HasField("consecutive_gateway_failure"):
            outlier["consecutive_gateway_failure"] = od.consecutive_gateway_failure.value
        if od.HasField("interval"):
            outlier["interval"] = seconds(od.interval)
        if od.HasField("base_ejection_time"):
            outlier["base_ejection_time"] = seconds(od.base_ejection_time)
        if od.HasField("max_ejection_percent"):
            outlier["max_ejection_percent"] = od.max_ejection_percent.value
        doc["outlier_detection"] = outlier
    return doc


def aggregate_members(c: cluster_pb2.Cluster) -> list[str]:
    if not c.HasField("cluster_type") or c.cluster_type.name != AGGREGATE:
        return []
    config = aggregate_pb2.ClusterConfig()
    if not c.cluster_type.typed_config.Unpack(config):
        return []
    return list(config.clusters)


def _labels(lb: endpoint_pb2.LbEndpoint) -> dict[str, Any]:
    meta = lb.metadata.filter_metadata
    if LB_LABELS not in meta:
        return {}
    labels: dict[str, Any] = json_format.MessageToDict(meta[LB_LABELS])
    return labels


def endpoints(cla: endpoint_pb2.ClusterLoadAssignment) -> list[dict[str, Any]]:
    """Each endpoint with its locality, priority, health and weights."""
    out = []
    for group in cla.endpoints:
        loc = group.locality
        locality = "/".join((loc.region, loc.zone, loc.sub_zone))
        for lb in group.lb_endpoints:
            sock = lb.endpoint.address.socket_address
            doc: dict[str, Any] = {
                "address": f"{sock.address}:{sock.port_value}",
                "health": health_check_pb2.HealthStatus.Name(lb.health_status),
                "weight": lb.load_balancing_weight.value
                if lb.HasField("load_balancing_weight")
                else 1,
                "locality": locality if locality != "//" else "",
                "locality_weight": group.load_balancing_weight.value,
                "priority": group.priority,
            }
            labels = _labels(lb)
            if labels:
                doc["labels"] = labels
            out.append(doc)
    return out


def describe_cluster(
    name: str,
    clusters: Lookup,
    assignments: Lookup,
    destination_policy: Callable[[str], dict[str, Any] | None],
    subset_labels: SubsetLabels = lambda service, subset: None,
    seen: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Cluster `name` in brief, its endpoints, and (an aggregate's) its members in order.
    `destination_policy(service)` names the DestinationRule behind a service's clusters,
    `subset_labels(service, subset)` the labels a subset selects."""
    doc: dict[str, Any] = {"name": name, **name_parts(name)}
    policy = destination_policy(doc["service"])
    if policy is not None:
        doc["destination_policy"] = policy
    if "subset" in doc:
        selects = subset_labels(doc["service"], doc["subset"])
        if selects is not None:
            doc["subset_labels"] = dict(selects)
    message = clusters(name)
    if not isinstance(message, cluster_pb2.Cluster):
        doc["missing"] = "the proxy's configuration has no cluster of this name (Envoy: 503 NC)"
        return doc
    doc.update(cluster_brief(message))
    members = aggregate_members(message)
    if members:
        doc["members"] = [
            describe_cluster(
                m, clusters, assignments, destination_policy, subset_labels, seen | {name}
            )
            if m not in seen
            else {"name": m, "missing": "a cycle of aggregate clusters"}
            for m in members
        ]
        return doc
    if message.HasField("load_assignment"):
        doc["endpoints"] = endpoints(message.load_assignment)
        return doc
    eds_name = message.eds_cluster_config.service_name or name
    cla = assignments(eds_name)
    if not isinstance(cla, endpoint_pb2.ClusterLoadAssignment):
        doc["endpoints"] = []
        doc["endpoints_missing"] = (
            f"no ClusterLoadAssignment {eds_name} (the cluster stays warming)"
        )
    else:
        doc["endpoints"] = endpoints(cla)
    return doc


def destination_policies(
    statuses: list[Mapping[str, Any]],
) -> Callable[[str], dict[str, Any] | None]:
    """`describe_cluster`'s lookup: the DestinationRule (or other non-route policy) that
    applies to a service, from the controller's policy statuses."""
    by_service: dict[str, dict[str, Any]] = {}
    for s in statuses:
        if s.get("kind") != "DestinationRule":
            continue
        for service in s.get("services", []):
            by_service.setdefault(str(service), _policy_ref(s))
    return by_service.get


def _policy_ref(status: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("kind", "namespace", "name", "origin", "state", "source")
    return {k: status.get(k) for k in keys}
