"""One config entry, as `GET /v1/config/:kind` returns it, → its parsed value
(`kinds`), or a `PolicyError` naming the field (`Routes[0].Match.HTTP.PathRegex`).

Checked as Consul checks an entry on write (kinds, names, protocols, weights summing to
100, one path match per route, ...) and as Envoy would (RE2 program size, header names
and values): an accepted entry never makes a proxy NACK. The router and the resolver
have their own modules; service-defaults, proxy-defaults and the splitter are here.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from sources.istio.report import Context, Path, PolicyError
from sources.istio.values import (
    each,
    finite_number,
    int_percent,
    integer,
    items,
    limit,
    mapping,
    nonempty,
    optional,
    string,
)
from xds_server.model import DEFAULT_NAMESPACE, ConnectionPool, OutlierDetection, PolicyKey

from .kinds import (
    KINDS,
    PROTOCOLS,
    PROXY_DEFAULTS,
    PROXY_DEFAULTS_NAME,
    SERVICE_DEFAULTS,
    SERVICE_RESOLVER,
    SERVICE_ROUTER,
    SERVICE_SPLITTER,
    TOTAL_WEIGHT,
    WEIGHT_SCALE,
    Entry,
    ProxyDefaults,
    ServiceDefaults,
    ServiceSplitter,
    Split,
    Upstream,
)
from .read import ENVELOPE, header_ops, known, seconds, target
from .resolver import parse_resolver
from .router import parse_router


def entry_key(raw: object) -> PolicyKey:
    """Kind, namespace ("default" when unset) and name of a raw entry, for reporting
    even an entry that does not parse; missing parts read as "?"."""
    obj = raw if isinstance(raw, Mapping) else {}
    kind, name, ns = obj.get("Kind"), obj.get("Name"), obj.get("Namespace")
    return PolicyKey(
        kind if isinstance(kind, str) and kind else "?",
        ns if isinstance(ns, str) and ns else DEFAULT_NAMESPACE,
        name if isinstance(name, str) and name else "?",
    )


def parse_entry(raw: object, ctx: Context) -> Entry:
    """The parsed entry; its notices go to `ctx`."""
    obj = mapping(raw, ())
    kind = nonempty(obj.get("Kind"), ("Kind",))
    if kind not in KINDS:
        raise PolicyError(("Kind",), f"unsupported kind {kind!r} (one of {', '.join(KINDS)})")
    name = nonempty(obj.get("Name"), ("Name",))
    key = entry_key(obj)
    ctx.namespace = key.namespace
    partition = obj.get("Partition")
    if partition not in (None, "", "default"):
        ctx.notice(("Partition",), "admin partitions are not supported; ignored")
    if kind == PROXY_DEFAULTS:
        if name != PROXY_DEFAULTS_NAME:
            raise PolicyError(("Name",), f'proxy-defaults must be named "global", not {name!r}')
        return _proxy_defaults(obj, key, ctx)
    if kind == SERVICE_DEFAULTS:
        return _service_defaults(obj, key, ctx)
    if kind == SERVICE_SPLITTER:
        return _splitter(obj, key, ctx)
    if kind == SERVICE_ROUTER:
        return parse_router(obj, key, ctx)
    assert kind == SERVICE_RESOLVER
    return parse_resolver(obj, key, ctx)


def protocol(value: object, path: Path) -> str:
    text = string(value, path).lower()
    if text not in PROTOCOLS:
        raise PolicyError(
            path, f"unsupported protocol {text!r} (one of {', '.join(sorted(PROTOCOLS))})"
        )
    return text


# -- proxy-defaults, service-defaults --------------------------------------------------

_PROXY_DEFAULTS_IGNORED = (
    "Mode", "TransparentProxy", "MutualTLSMode", "MeshGateway", "Expose", "AccessLogs",
    "EnvoyExtensions", "FailoverPolicy", "PrioritizeByLocality", "Destination",
)  # fmt: skip


def _proxy_defaults(obj: Mapping[str, Any], key: PolicyKey, ctx: Context) -> ProxyDefaults:
    body = known(obj, (), ctx, (*ENVELOPE, "Config"), _PROXY_DEFAULTS_IGNORED)
    config = mapping(body.get("Config", {}), ("Config",))
    proto = optional(config, "protocol", ("Config",), protocol)
    for other in sorted(set(config) - {"protocol"}):
        ctx.notice(("Config", other), "not supported; ignored")
    return ProxyDefaults(key, proto)


_SERVICE_DEFAULTS_IGNORED = (
    "Mode", "TransparentProxy", "MutualTLSMode", "MeshGateway", "Expose", "ExternalSNI",
    "Destination", "MaxInboundConnections", "LocalConnectTimeoutMs", "LocalRequestTimeoutMs",
    "BalanceInboundConnections", "RateLimits", "EnvoyExtensions", "EnvoyExtension",
)  # fmt: skip
_UPSTREAM_IGNORED = (
    "Protocol", "EnvoyListenerJSON", "EnvoyClusterJSON", "MeshGateway",
    "BalanceOutboundConnections",
)  # fmt: skip


def _service_defaults(obj: Mapping[str, Any], key: PolicyKey, ctx: Context) -> ServiceDefaults:
    body = known(obj, (), ctx, (*ENVELOPE, "Protocol", "UpstreamConfig"), _SERVICE_DEFAULTS_IGNORED)
    proto = optional(body, "Protocol", (), protocol)
    defaults: Upstream | None = None
    overrides: list[tuple[str, Upstream]] = []
    if "UpstreamConfig" in body:
        path: Path = ("UpstreamConfig",)
        upstream = known(body["UpstreamConfig"], path, ctx, ("Defaults", "Overrides"))
        if "Defaults" in upstream:
            defaults = _upstream(upstream["Defaults"], (*path, "Defaults"), ctx, named=False)
        for i, item in enumerate(items(upstream.get("Overrides", []), (*path, "Overrides"))):
            where = (*path, "Overrides", i)
            name = nonempty(mapping(item, where).get("Name"), (*where, "Name"))
            if any(n == name for n, _ in overrides):
                raise PolicyError((*where, "Name"), f"upstream {name!r} is overridden twice")
            overrides.append((name, _upstream(item, where, ctx, named=True)))
    return ServiceDefaults(key, proto, defaults, tuple(overrides))


def _upstream(value: object, path: Path, ctx: Context, *, named: bool) -> Upstream:
    names: tuple[str, ...] = ("Limits", "PassiveHealthCheck", "ConnectTimeoutMs")
    if named:
        names += ("Name", "Namespace", "Partition", "Peer")
    obj = known(value, path, ctx, names, _UPSTREAM_IGNORED)
    pool: ConnectionPool | None = None
    connect = obj.get("ConnectTimeoutMs")
    connect_s = integer(connect, (*path, "ConnectTimeoutMs")) / 1000 if connect else None
    if "Limits" in obj or connect_s:
        lp = (*path, "Limits")
        lim = known(
            obj.get("Limits", {}),
            lp,
            ctx,
            ("MaxConnections", "MaxPendingRequests", "MaxConcurrentRequests"),
        )
        pool = ConnectionPool(
            max_connections=optional(lim, "MaxConnections", lp, limit),
            http1_max_pending_requests=optional(lim, "MaxPendingRequests", lp, limit),
            http2_max_requests=optional(lim, "MaxConcurrentRequests", lp, limit),
            connect_timeout=connect_s,
        )
    outlier: OutlierDetection | None = None
    if "PassiveHealthCheck" in obj:
        hp = (*path, "PassiveHealthCheck")
        check = known(
            obj["PassiveHealthCheck"],
            hp,
            ctx,
            (
                "Interval",
                "MaxFailures",
                "EnforcingConsecutive5xx",
                "MaxEjectionPercent",
                "BaseEjectionTime",
            ),
        )
        enforcing = optional(check, "EnforcingConsecutive5xx", hp, int_percent)
        if enforcing is not None and enforcing != 100:
            ctx.notice((*hp, "EnforcingConsecutive5xx"), "only 100 (always eject) is applied")
        outlier = OutlierDetection(
            consecutive_5xx_errors=optional(check, "MaxFailures", hp, limit),
            interval=seconds(check, "Interval", hp),
            base_ejection_time=seconds(check, "BaseEjectionTime", hp),
            max_ejection_percent=optional(check, "MaxEjectionPercent", hp, int_percent),
        )
    return Upstream(pool, outlier)


# -- service-splitter ------------------------------------------------------------------


def weight(value: object, path: Path) -> int:
    """A split weight in hundredths of a percent: Consul rounds to 0.01 and allows 0-100."""
    number = finite_number(value, path)
    if not 0 <= number <= 100:
        raise PolicyError(path, f"weight {value} is outside 0-100")
    scaled = Decimal(str(number)) * WEIGHT_SCALE
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _splitter(obj: Mapping[str, Any], key: PolicyKey, ctx: Context) -> ServiceSplitter:
    body = known(obj, (), ctx, (*ENVELOPE, "Splits"))
    if not body.get("Splits"):
        raise PolicyError(("Splits",), "at least one split is required")

    def split(item: Any, path: Path) -> Split:
        s = known(
            item,
            path,
            ctx,
            (
                "Weight",
                "Service",
                "ServiceSubset",
                "Namespace",
                "Partition",
                "RequestHeaders",
                "ResponseHeaders",
            ),
        )
        return Split(
            weight(s.get("Weight", 0), (*path, "Weight")),
            target(s, path, ctx),
            header_ops(s, path, ctx),
        )

    splits = each(body["Splits"], ("Splits",), split)
    total = sum(s.weight for s in splits)
    if total != TOTAL_WEIGHT:
        raise PolicyError(
            ("Splits",), f"the sum of all split weights must be 100, not {total / WEIGHT_SCALE:g}"
        )
    return ServiceSplitter(key, tuple(splits))
