"""Prometheus metrics of the serving core (exposed by the admin server)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTED = Gauge("xds_connected_proxies", "Open xDS streams by stream kind", ["kind"])
PUSHES = Counter("xds_pushes_total", "Responses sent to proxies, by resource type", ["type"])
PUSH_BYTES = Counter("xds_push_bytes_total", "Bytes of responses sent, by resource type", ["type"])
NACKS = Counter(
    "xds_nacks_total", "Responses rejected by proxies (NACK), by resource type", ["type"]
)
ACK_LATENCY = Histogram(
    "xds_ack_latency_seconds",
    "Time from sending a response to its ACK or NACK",
    ["type"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STREAMS_REJECTED = Counter(
    "xds_streams_rejected_total", "Streams refused or ended by the server, by reason", ["reason"]
)
