"""A DestinationRule spec → DestinationPolicy: traffic policies (load balancer, connection
pool, outlier detection), per port and per subset."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Any

from sources.istio.checks import TOKEN, dns_label, header_name, host_name, label_map, plain_value
from sources.istio.constants import MAX_MAGLEV_TABLE_SIZE, MAX_RING_SIZE
from sources.istio.locality import locality
from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import (
    boolean,
    count,
    duration,
    fields,
    int_percent,
    integer,
    items,
    limit,
    mapping,
    nonempty,
    off_or_duration,
    one_of,
    optional,
    port_selector,
    string,
)
from xds_server.model import (
    ConnectionPool,
    DestinationPolicy,
    HashOn,
    LoadBalancer,
    OutlierDetection,
    PolicyKey,
    PortTrafficPolicy,
    Subset,
    TrafficPolicy,
)
from xds_server.model.policy import SimpleLb

_DR_FIELDS = ("host", "trafficPolicy", "subsets", "exportTo", "workloadSelector")
_POLICY_COMMON = ("loadBalancer", "connectionPool", "outlierDetection", "tls")
_TRAFFIC_POLICY_FIELDS = (
    *_POLICY_COMMON,
    "portLevelSettings",
    "tunnel",
    "proxyProtocol",
    "retryBudget",
)
_PORT_POLICY_FIELDS = ("port", *_POLICY_COMMON)
_LB_FIELDS = (
    "simple",
    "consistentHash",
    "localityLbSetting",
    "zoneAwareLbSetting",
    "warmupDurationSecs",
    "warmup",
)
_HASH_KEYS = ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
_HASH_FIELDS = (*_HASH_KEYS, "ringHash", "maglev", "minimumRingSize")
_TCP_POOL_FIELDS = (
    "maxConnections",
    "connectTimeout",
    "tcpKeepalive",
    "maxConnectionDuration",
    "idleTimeout",
)
_HTTP_POOL_FIELDS = (
    "http1MaxPendingRequests",
    "http2MaxRequests",
    "maxRequestsPerConnection",
    "maxRetries",
    "idleTimeout",
    "h2UpgradePolicy",
    "useClientProtocol",
    "maxConcurrentStreams",
    "http2KeepAlive",
)
_OUTLIER_FIELDS = (
    "consecutiveErrors",
    "splitExternalLocalOriginErrors",
    "consecutiveLocalOriginFailures",
    "consecutiveGatewayErrors",
    "consecutive5xxErrors",
    "interval",
    "baseEjectionTime",
    "maxEjectionPercent",
    "minHealthPercent",
    "outlierDetectionHttpErrorCodes",
)
_SIMPLE_LB: dict[str, SimpleLb | None] = {
    "UNSPECIFIED": None,
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",  # deprecated alias
    "RANDOM": "RANDOM",
}


def destination_rule(
    ctx: Context, value: object, path: Path, key: PolicyKey, origin: str
) -> tuple[DestinationPolicy, bool]:
    spec = fields(value, path, _DR_FIELDS)
    if "host" not in spec:
        raise PolicyError((*path, "host"), "required")
    host = host_name(spec["host"], (*path, "host"))
    ctx.ignore(spec, path, ("exportTo",))
    policy, ports = traffic_policy(ctx, spec.get("trafficPolicy"), (*path, "trafficPolicy"))
    subsets: list[Subset] = []
    for i, raw in enumerate(items(spec.get("subsets", []), (*path, "subsets"))):
        where = (*path, "subsets", i)
        entry = fields(raw, where, ("name", "labels", "trafficPolicy"))
        if "name" not in entry:
            raise PolicyError((*where, "name"), "required")
        name = dns_label(entry["name"], (*where, "name"), "subset name")
        if any(s.name == name for s in subsets):
            raise PolicyError((*where, "name"), f"duplicate subset name {name!r}")
        labels = label_map(entry.get("labels", {}), (*where, "labels"))
        sub_policy, sub_ports = traffic_policy(
            ctx, entry.get("trafficPolicy"), (*where, "trafficPolicy")
        )
        subsets.append(Subset(name, labels, sub_policy, sub_ports))
    applies = not spec.get("workloadSelector")
    if applies:
        result = DestinationPolicy(key, host, policy, ports, tuple(subsets), origin)
    else:
        mapping(spec["workloadSelector"], (*path, "workloadSelector"))
        ctx.notice(
            (*path, "workloadSelector"),
            "applies only to the selected workloads; selecting workloads is not "
            "supported, so it is not applied",
        )
        result = DestinationPolicy(key, host, origin=origin)
    return result, applies


def traffic_policy(
    ctx: Context, value: object, path: Path
) -> tuple[TrafficPolicy | None, tuple[PortTrafficPolicy, ...]]:
    """The top-level policy (None if nothing applicable is set) and per-port ones."""
    if value is None:
        return None, ()
    obj = fields(value, path, _TRAFFIC_POLICY_FIELDS)
    if not obj:
        raise PolicyError(path, "must set at least one field")
    ctx.ignore(obj, path, ("tls", "tunnel", "proxyProtocol", "retryBudget"))
    ports: list[PortTrafficPolicy] = []
    for i, raw in enumerate(items(obj.get("portLevelSettings", []), (*path, "portLevelSettings"))):
        where = (*path, "portLevelSettings", i)
        entry = fields(raw, where, _PORT_POLICY_FIELDS)
        if "port" not in entry:
            raise PolicyError((*where, "port"), "required")
        number = port_selector(entry["port"], (*where, "port"))
        if any(p.port == number for p in ports):
            raise PolicyError((*where, "port"), f"duplicate port {number}")
        if not any(f in entry for f in _POLICY_COMMON):
            raise PolicyError(where, f"one of {', '.join(_POLICY_COMMON)} is required")
        ctx.ignore(entry, where, ("tls",))
        ports.append(PortTrafficPolicy(number, policy_parts(ctx, entry, where)))
    policy = policy_parts(ctx, obj, path)
    return (policy if policy != TrafficPolicy() else None), tuple(ports)


def policy_parts(ctx: Context, obj: Mapping[str, Any], path: Path) -> TrafficPolicy:
    return TrafficPolicy(
        load_balancer=optional(obj, "loadBalancer", path, partial(load_balancer, ctx)),
        connection_pool=optional(obj, "connectionPool", path, partial(connection_pool, ctx)),
        outlier_detection=optional(obj, "outlierDetection", path, partial(outlier_detection, ctx)),
    )


def load_balancer(ctx: Context, value: object, path: Path) -> LoadBalancer | None:
    obj = fields(value, path, _LB_FIELDS)
    ctx.ignore(obj, path, ("zoneAwareLbSetting", "warmupDurationSecs", "warmup"))
    kind = one_of(obj, path, ("simple", "consistentHash"))
    simple: SimpleLb | None = None
    if kind == "simple":
        name = string(obj["simple"], (*path, "simple"))
        if name == "PASSTHROUGH":
            raise PolicyError((*path, "simple"), "PASSTHROUGH is not supported")
        if name not in _SIMPLE_LB:
            raise PolicyError(
                (*path, "simple"),
                f"unknown value {name!r} (ROUND_ROBIN, LEAST_REQUEST, RANDOM)",
            )
        simple = _SIMPLE_LB[name]
    lb = LoadBalancer(
        simple=simple,
        locality=optional(obj, "localityLbSetting", path, partial(locality, ctx)),
    )
    if kind == "consistentHash":
        lb = consistent_hash(ctx, obj["consistentHash"], (*path, "consistentHash"), lb)
    return None if lb == LoadBalancer() else lb


def consistent_hash(ctx: Context, value: object, path: Path, lb: LoadBalancer) -> LoadBalancer:
    obj = fields(value, path, _HASH_FIELDS)
    if obj.get("useSourceIp") is False:
        del obj["useSourceIp"]  # false is the proto3 default: nothing chosen
    key = one_of(obj, path, _HASH_KEYS)
    if key is None:
        raise PolicyError(path, f"one of {', '.join(_HASH_KEYS)} is required")
    where = (*path, key)
    if key == "httpHeaderName":
        hash_on = HashOn(header=header_name(obj[key], where))
    elif key == "httpQueryParameterName":
        hash_on = HashOn(query_parameter=nonempty(obj[key], where))
    elif key == "useSourceIp":
        hash_on = HashOn(source_ip=boolean(obj[key], where))
    else:
        cookie = fields(obj[key], where, ("name", "path", "ttl", "attributes"))
        ctx.ignore(cookie, where, ("attributes",))
        if "name" not in cookie:
            raise PolicyError((*where, "name"), "required")
        name = nonempty(cookie["name"], (*where, "name"))
        if not TOKEN.fullmatch(name):
            raise PolicyError((*where, "name"), f"invalid cookie name {name!r}")
        hash_on = HashOn(
            cookie=name,
            cookie_ttl=optional(cookie, "ttl", where, off_or_duration),
            cookie_path=optional(cookie, "path", where, plain_value),
        )
    algorithm = one_of(obj, path, ("ringHash", "maglev"))
    if algorithm and obj.get("minimumRingSize"):
        raise PolicyError(
            (*path, "minimumRingSize"), f"cannot be combined with {algorithm}; use ringHash"
        )
    ring_size: int | None = None
    table_size: int | None = None
    if algorithm == "maglev":
        where = (*path, "maglev")
        maglev = fields(obj["maglev"], where, ("tableSize",))
        if not maglev.get("tableSize"):
            raise PolicyError((*where, "tableSize"), "required")
        table_size = integer(maglev["tableSize"], (*where, "tableSize"), 1, MAX_MAGLEV_TABLE_SIZE)
        if not _is_prime(table_size):
            raise PolicyError((*where, "tableSize"), f"{table_size} is not a prime number")
    elif algorithm == "ringHash":
        ring = fields(obj["ringHash"], (*path, "ringHash"), ("minimumRingSize",))
        ring_size = minimum_ring_size(ring, (*path, "ringHash"))
    else:
        ring_size = minimum_ring_size(obj, path)
    return LoadBalancer(
        simple=None,
        hash=hash_on,
        maglev=algorithm == "maglev",
        minimum_ring_size=ring_size,
        maglev_table_size=table_size,
        locality=lb.locality,
    )


def minimum_ring_size(obj: Mapping[str, Any], path: Path) -> int | None:
    """`minimumRingSize`: 0 or unset is the default (1024)."""
    size = integer(obj.get("minimumRingSize", 0), (*path, "minimumRingSize"), 0, MAX_RING_SIZE)
    return size or None


def connection_pool(ctx: Context, value: object, path: Path) -> ConnectionPool | None:
    obj = fields(value, path, ("tcp", "http"))
    if not obj:
        raise PolicyError(path, "one of tcp, http is required")
    tcp = fields(obj.get("tcp", {}), (*path, "tcp"), _TCP_POOL_FIELDS)
    http = fields(obj.get("http", {}), (*path, "http"), _HTTP_POOL_FIELDS)
    ctx.ignore(tcp, (*path, "tcp"), ("tcpKeepalive", "maxConnectionDuration"))
    ctx.ignore(
        http,
        (*path, "http"),
        ("h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams", "http2KeepAlive"),
    )

    t, h = (*path, "tcp"), (*path, "http")
    pool = ConnectionPool(
        max_connections=optional(tcp, "maxConnections", t, limit),
        connect_timeout=optional(tcp, "connectTimeout", t, duration),
        tcp_idle_timeout=optional(tcp, "idleTimeout", t, off_or_duration),
        http1_max_pending_requests=optional(http, "http1MaxPendingRequests", h, limit),
        http2_max_requests=optional(http, "http2MaxRequests", h, limit),
        max_requests_per_connection=optional(http, "maxRequestsPerConnection", h, limit),
        max_retries=optional(http, "maxRetries", h, limit),
        idle_timeout=optional(http, "idleTimeout", h, duration),
    )
    return None if pool == ConnectionPool() else pool


def outlier_detection(ctx: Context, value: object, path: Path) -> OutlierDetection:
    obj = fields(value, path, _OUTLIER_FIELDS)
    ctx.ignore(
        obj,
        path,
        (
            "consecutiveErrors",
            "splitExternalLocalOriginErrors",
            "consecutiveLocalOriginFailures",
            "outlierDetectionHttpErrorCodes",
        ),
    )

    return OutlierDetection(
        consecutive_5xx_errors=optional(obj, "consecutive5xxErrors", path, count),
        consecutive_gateway_errors=optional(obj, "consecutiveGatewayErrors", path, count),
        interval=optional(obj, "interval", path, duration),
        base_ejection_time=optional(obj, "baseEjectionTime", path, duration),
        # Istio reads a maxEjectionPercent of 0 as unset (Envoy's default, 10 %).
        max_ejection_percent=optional(obj, "maxEjectionPercent", path, int_percent) or None,
        min_health_percent=optional(obj, "minHealthPercent", path, int_percent),
    )


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % f for f in range(2, math.isqrt(n) + 1))
