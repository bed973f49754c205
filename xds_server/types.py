"""The xDS resource types this server serves, their push order and protocol traits."""

from __future__ import annotations

from typing import Final

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from google.protobuf.message import Message

PREFIX: Final = "type.googleapis.com/"
CLUSTER: Final = PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = PREFIX + "envoy.config.listener.v3.Listener"
ROUTE: Final = PREFIX + "envoy.config.route.v3.RouteConfiguration"
# SDS: per identity, not per proxy group (xds_server.secrets), so never in a group's
# snapshot; sent as soon as requested, outside the CDS → EDS → LDS → RDS order.
SECRET: Final = PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# DESIGN §4.9: clusters warm with their endpoints before listeners and routes use them.
PUSH_ORDER: Final[tuple[str, ...]] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

# §4.8: absence from a SotW LDS/CDS response means deletion, so those responses carry
# the whole subscribed state; RDS/EDS responses may carry only what changed.
FULL_STATE_TYPES: Final = frozenset({CLUSTER, LISTENER})

# §4.6: an empty first request means "everything" only for these types.
LEGACY_WILDCARD_TYPES: Final = frozenset({CLUSTER, LISTENER})

WILDCARD: Final = "*"

MESSAGE_CLASSES: Final[dict[str, type[Message]]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    SECRET: secret_pb2.Secret,
}

SHORT_NAMES: Final[dict[str, str]] = {
    CLUSTER: "clusters",
    ENDPOINT: "endpoints",
    LISTENER: "listeners",
    ROUTE: "routes",
}
# Types served but never held in a group's snapshot (so not offered by /debug/snapshot).
OWN_SHORT_NAMES: Final[dict[str, str]] = {SECRET: "secrets"}

# Resources referenced by make-before-break: while listeners or routes are not yet in
# sync, clusters (and their endpoints) the proxy still has are kept.
HOLDOVER_TYPES: Final = frozenset({CLUSTER, ENDPOINT})
CONSUMER_TYPES: Final = frozenset({LISTENER, ROUTE})


def resource_name(type_url: str, message: Message) -> str:
    """The xDS name of a resource: the field Envoy uses to key it."""
    if type_url == ENDPOINT:
        return str(message.cluster_name)
    return str(message.name)


def short_name(type_url: str) -> str:
    return (
        SHORT_NAMES.get(type_url) or OWN_SHORT_NAMES.get(type_url) or type_url.removeprefix(PREFIX)
    )


def push_rank(type_url: str) -> tuple[int, str]:
    """Sort key: types in push order (CDS, EDS, LDS, RDS), then any other by URL."""
    return (PUSH_ORDER.index(type_url) if type_url in PUSH_ORDER else len(PUSH_ORDER), type_url)
