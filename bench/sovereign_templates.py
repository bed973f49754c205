"""The Envoy resources the side-by-side benchmark's sovereign serves, as plain dicts
built from the registry file's services (sovereign's "instances").

Run *inside sovereign* (its Python templates, `bench.sovereign_peer` writes the stubs that
call these) and in the benchmark (the static-bootstrap floor uses `clusters`), so this
module imports nothing but the standard library.

The shapes follow what xds-server sends for the same file (cluster names
``name.namespace:port``, one locality per zone, healthy endpoints with their weight, an
HTTP listener ``http_<port>`` with one route configuration of one virtual host per
service port), with one difference sovereign's REST model imposes: the endpoints are
inline in each cluster (``STATIC`` with a ``load_assignment``, sovereign's documented
way), because Envoy polls REST EDS once per cluster, 1,000 HTTP requests a second here.
Only ``http`` ports are modelled (the benchmark's file has no others).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

HCM = (
    "type.googleapis.com/"
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
FILTERS = (
    ("envoy.filters.http.cors", "envoy.extensions.filters.http.cors.v3.Cors"),
    ("envoy.filters.http.fault", "envoy.extensions.filters.http.fault.v3.HTTPFault"),
    ("envoy.filters.http.router", "envoy.extensions.filters.http.router.v3.Router"),
)
RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
PREVIOUS_HOSTS = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

Instance = Mapping[str, Any]


def cluster_name(instance: Instance, port: Mapping[str, Any]) -> str:
    return f"{instance['name']}.{instance.get('namespace', 'default')}:{port['port']}"


def load_assignment(name: str, endpoints: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One locality per zone, in order of first appearance, weighing what its endpoints
    weigh; endpoints healthy."""
    zones: dict[str, list[dict[str, Any]]] = {}
    for ep in endpoints:
        zones.setdefault(str(ep.get("zone", "")), []).append(
            {
                "endpoint": {
                    "address": {
                        "socket_address": {
                            "address": ep["address"],
                            "port_value": int(ep["port"]),
                        }
                    }
                },
                "health_status": "HEALTHY",
                "load_balancing_weight": int(ep.get("weight", 1)),
            }
        )
    return {
        "cluster_name": name,
        "endpoints": [
            {
                "locality": {"zone": zone},
                "lb_endpoints": lbs,
                "load_balancing_weight": sum(lb["load_balancing_weight"] for lb in lbs),
            }
            for zone, lbs in zones.items()
        ],
    }


def clusters(instances: Iterable[Instance]) -> list[dict[str, Any]]:
    """A STATIC cluster with its endpoints inline per service port, sorted by name."""
    out = []
    for inst in instances:
        for port in inst.get("ports", []):
            name = cluster_name(inst, port)
            out.append(
                {
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": load_assignment(name, inst.get("endpoints", [])),
                }
            )
    return sorted(out, key=lambda c: c["name"])


def route_name(listener_port: int) -> str:
    return f"http_{listener_port}"


def routes(instances: Iterable[Instance], listener_port: int) -> list[dict[str, Any]]:
    """One route configuration: a virtual host per service port, as xds-server's."""
    hosts = []
    for inst in instances:
        name, ns = inst["name"], inst.get("namespace", "default")
        for port in inst.get("ports", []):
            p = port["port"]
            hosts.append(
                {
                    "name": f"{name}.{ns}" if p == 80 else f"{name}.{ns}:{p}",
                    "domains": [name, f"{name}.{ns}", f"{name}:{p}", f"{name}.{ns}:{p}"],
                    "routes": [
                        {
                            "name": "default",
                            "match": {"prefix": "/"},
                            "route": {
                                "cluster": cluster_name(inst, port),
                                "timeout": "0s",
                                "max_stream_duration": {"grpc_timeout_header_max": "0s"},
                            },
                        }
                    ],
                    "retry_policy": {
                        "retry_on": RETRY_ON,
                        "num_retries": 2,
                        "retry_host_predicate": [
                            {
                                "name": "envoy.retry_host_predicates.previous_hosts",
                                "typed_config": {"@type": f"type.googleapis.com/{PREVIOUS_HOSTS}"},
                            }
                        ],
                        "host_selection_retry_max_attempts": "5",  # int64: a string in proto3 JSON
                    },
                }
            )
    hosts.sort(key=lambda h: h["name"])
    return [{"name": route_name(listener_port), "virtual_hosts": hosts}]


def rest_source(cluster: str, refresh_s: float) -> dict[str, Any]:
    """Envoy polling `cluster` over REST every `refresh_s` seconds (sovereign's model)."""
    return {
        "resource_api_version": "V3",
        "api_config_source": {
            "api_type": "REST",
            "transport_api_version": "V3",
            "cluster_names": [cluster],
            "refresh_delay": f"{refresh_s:g}s",
            "request_timeout": "5s",
        },
    }


def listeners(listener_port: int, xds_cluster: str, refresh_s: float) -> list[dict[str, Any]]:
    """The HTTP listener on `listener_port`, its routes by RDS over REST."""
    name = route_name(listener_port)
    hcm = {
        "@type": HCM,
        "stat_prefix": name,
        "rds": {"config_source": rest_source(xds_cluster, refresh_s), "route_config_name": name},
        "http_filters": [
            {
                "name": filter_name,
                "typed_config": {"@type": f"type.googleapis.com/{type_name}"},
                **({"is_optional": True} if filter_name.endswith("cors") else {}),
            }
            for filter_name, type_name in FILTERS
        ],
    }
    return [
        {
            "name": name,
            "address": {"socket_address": {"address": "0.0.0.0", "port_value": listener_port}},
            "filter_chains": [
                {
                    "filters": [
                        {
                            "name": "envoy.filters.network.http_connection_manager",
                            "typed_config": hcm,
                        }
                    ]
                }
            ],
        }
    ]
