"""Prometheus metrics of the server (exposed by the admin server on /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _latency(name: str, doc: str) -> Histogram:
    return Histogram(name, doc, ["type"], buckets=_SECONDS)


CONNECTED = Gauge("xds_connected_proxies", "Open xDS streams by stream kind", ["kind"])
PUSHES = Counter("xds_pushes_total", "Responses sent to proxies, by resource type", ["type"])
PUSH_BYTES = Counter("xds_push_bytes_total", "Bytes of responses sent, by resource type", ["type"])
NACKS = Counter(
    "xds_nacks_total", "Responses rejected by proxies (NACK), by resource type", ["type"]
)
ACK_LATENCY = _latency("xds_ack_latency_seconds", "Time from sending a response to its ACK or NACK")
STREAMS_REJECTED = Counter(
    "xds_streams_rejected_total", "Streams refused or ended by the server, by reason", ["reason"]
)
PUSH_LATENCY = _latency(
    "xds_push_latency_seconds",
    "Time from a registry change being seen to a response carrying it being sent",
)
CONVERGENCE_LATENCY = _latency(
    "xds_convergence_latency_seconds",
    "Time from a registry change being seen to its ACK by a proxy",
)

# Registry side (sources, catalog, debouncer).
SOURCE_SYNCED = Gauge(
    "xds_source_synced", "1 once the source has delivered its first full state", ["source"]
)
SOURCE_STALE = Gauge(
    "xds_source_stale",
    "1 while the source cannot reach its registry and serves its last good state",
    ["source"],
)
SOURCE_HOLDING = Gauge(
    "xds_source_holding",
    "1 while the source holds back a sudden mass removal of services and serves its"
    " previous state (--registry-hold-threshold, --registry-hold)",
    ["source"],
)
SOURCE_HELD_REMOVALS = Gauge(
    "xds_source_held_removals",
    "Services whose removal the source currently holds back",
    ["source"],
)
SOURCE_ERRORS = Counter("xds_source_errors_total", "Errors reading a registry", ["source"])
SOURCE_SERVICES = Gauge("xds_source_services", "Services a source currently provides", ["source"])
REJECTED_ENTRIES = Gauge(
    "xds_source_rejected_entries",
    "Registry entries currently skipped because they would produce invalid resources",
    ["source"],
)
REJECTIONS = Counter(
    "xds_source_rejections_total",
    "Registry entries newly skipped because they would produce invalid resources",
    ["source"],
)
CATALOG_VALIDATIONS = Counter(
    "xds_catalog_validations_total",
    "Registry entries validated by the catalog (an entry republished unchanged is not)",
    ["source"],
)
DEBOUNCE_EVENTS = Counter("xds_debounce_events_total", "Catalog changes received by the debouncer")
DEBOUNCE_PUSHES = Counter(
    "xds_debounce_pushes_total",
    "Rebuilds triggered by the debouncer, by trigger (leading, quiet, max_delay)",
    ["trigger"],
)
TRANSLATE_SECONDS = Histogram(
    "xds_translate_seconds", "Time to rebuild resources after a debounced change", buckets=_SECONDS
)
TRANSLATE_SKIPPED = Gauge(
    "xds_translate_skipped",
    "Items (domains, listeners) currently left out because they conflict, by proxy group",
    ["group"],
)

# Consul source (sources/consul.py).
CONSUL_WATCHES = Gauge(
    "xds_consul_watches",
    "Consul blocking queries the source keeps running (the catalog's and one per service)",
    ["source"],
)
CONSUL_INDEX_RESETS = Counter(
    "xds_consul_index_resets_total",
    "Consul watches started over because the index went backwards",
    ["source"],
)

# Kubernetes source (sources/kubernetes.py).
KUBE_RELISTS = Counter(
    "xds_kubernetes_relists_total",
    "Full lists of a Kubernetes resource after the first (410 Gone, or an error before the "
    "first watch)",
    ["source", "resource"],
)
KUBE_WATCH_RESTARTS = Counter(
    "xds_kubernetes_watch_restarts_total",
    "Kubernetes watches started again, by reason (closed, gone, error)",
    ["source", "resource", "reason"],
)
KUBE_SKIPPED_SERVICES = Gauge(
    "xds_kubernetes_skipped_services",
    "Kubernetes Services currently not published (no TCP port)",
    ["source"],
)
POLICY_OBJECTS = Gauge(
    "xds_policy_objects",
    "Traffic policy objects by kind and state (ACCEPTED, WARNING, REJECTED, SHADOWED)",
    ["kind", "state"],
)
ROUTE_STATUS_WRITES = Counter(
    "xds_kubernetes_route_status_writes_total",
    "PATCHes of HTTPRoute/GRPCRoute status, by result (written, conflict, failed)",
    ["result"],
)
ROUTE_STATUS_LEADER = Gauge(
    "xds_kubernetes_route_status_leader", "1 while this replica holds the status Lease"
)

# Push provenance (xds_server/events.py): registry/policy changes followed to the ACKs.
EVENTS = Counter(
    "xds_events_total", "Registry and policy changes applied, as events, by source", ["source"]
)
EVENT_CONVERGENCE = Histogram(
    "xds_event_convergence_seconds",
    "Time from a registry or policy change being seen to a proxy having ACKed all of it",
    buckets=(*_SECONDS, 30, 60),
)
EVENT_NACKS = Counter(
    "xds_event_nacks_total", "Proxies that NACKed a response carrying a registry change"
)
