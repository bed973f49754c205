"""DestinationRules: traffic policies with every field's boundary values, and the defects
the product must refuse (ring and table sizes, counts and limits out of range, unknown
load balancers, duplicate subsets, ports the service lacks, locality weights)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from tests.policy_strategies.objects import Drawn
from tests.policy_strategies.values import (
    COUNTS,
    DURATIONS,
    INT32_MAX,
    LIKELY,
    LIMITS,
    LOCALITIES,
    MAX_MAGLEV_TABLE_SIZE,
    MAX_RING_SIZE,
    OFF_OR_DURATION,
    SUBSET_LABELS,
    UINT32_MAX,
    Draw,
    Object,
    istio_object,
    maybe,
)


@st.composite
def _load_balancer(draw: Draw) -> Object:
    # Hashing first: hypothesis draws the first choices most, and it is what the two
    # kinds of client render most differently (ring hash, Maglev, a gRPC fallback).
    kind = draw(st.sampled_from(["hash", "simple", "locality"]))
    if kind == "simple":
        names = ["ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM", "UNSPECIFIED"]
        return {"simple": draw(st.sampled_from(names))}
    if kind == "locality":
        if draw(st.booleans()):
            split = draw(st.sampled_from([(100, 0), (50, 50), (1, 99)]))
            to = dict(zip(LOCALITIES, split, strict=True))
            to = {k: v for k, v in to.items() if v}
            return {"localityLbSetting": {"distribute": [{"from": "r1/*", "to": to}]}}
        return {"localityLbSetting": {"failover": [{"from": "r1", "to": "r2"}]}}
    key = draw(
        st.sampled_from(["httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName"])
    )
    value: Any = {
        "httpHeaderName": "x-user",
        "httpCookie": {"name": "session", "ttl": draw(OFF_OR_DURATION)},
        "useSourceIp": True,
        "httpQueryParameterName": "user",
    }[key]
    chash: Object = {key: value}
    algorithm = draw(st.sampled_from(["maglev", "ring", "top", "none"]))
    if algorithm == "ring":
        sizes = [0, 1, 1024, MAX_RING_SIZE]
        chash["ringHash"] = {"minimumRingSize": draw(st.sampled_from(sizes))}
    elif algorithm == "maglev":
        chash["maglev"] = {"tableSize": draw(st.sampled_from([2, 65537, MAX_MAGLEV_TABLE_SIZE]))}
    elif algorithm == "top":
        chash["minimumRingSize"] = draw(st.sampled_from([1, MAX_RING_SIZE]))
    return {"consistentHash": chash}


@st.composite
def _pool(draw: Draw) -> Object:
    tcp: Object = {}
    http: Object = {}
    maybe(draw, tcp, "maxConnections", LIMITS)
    maybe(draw, tcp, "connectTimeout", DURATIONS)
    maybe(draw, tcp, "idleTimeout", OFF_OR_DURATION)
    for key in ("http1MaxPendingRequests", "http2MaxRequests", "maxRequestsPerConnection"):
        maybe(draw, http, key, LIMITS)
    maybe(draw, http, "maxRetries", LIMITS)
    maybe(draw, http, "idleTimeout", DURATIONS)
    return {"tcp": tcp, "http": http} if tcp or http else {"tcp": {"maxConnections": 1}}


@st.composite
def _outlier(draw: Draw) -> Object:
    out: Object = {}
    maybe(draw, out, "consecutive5xxErrors", COUNTS)
    maybe(draw, out, "consecutiveGatewayErrors", COUNTS)
    maybe(draw, out, "interval", DURATIONS)
    maybe(draw, out, "baseEjectionTime", DURATIONS)
    maybe(draw, out, "maxEjectionPercent", st.sampled_from([0, 1, 100]))
    maybe(draw, out, "minHealthPercent", st.sampled_from([0, 50, 100]))
    return out


@st.composite
def _traffic(draw: Draw, ports: tuple[int, ...]) -> Object:
    parts = draw(_policy_parts())
    chosen = draw(st.lists(st.sampled_from(ports), max_size=len(ports), unique=True))
    if chosen:
        parts["portLevelSettings"] = [
            {"port": {"number": p}, **draw(_policy_parts())} for p in chosen
        ]
    return parts


@st.composite
def _policy_parts(draw: Draw) -> Object:
    """What a traffic policy and a port's own policy set (at least one of them)."""
    parts: Object = {}
    maybe(draw, parts, "loadBalancer", _load_balancer(), likely=True)
    maybe(draw, parts, "connectionPool", _pool())
    maybe(draw, parts, "outlierDetection", _outlier())
    if not parts:
        parts["outlierDetection"] = draw(_outlier())
    return parts


DR_DEFECTS: dict[str, tuple[Callable[[Object], None], str]] = {
    "ring size": (
        lambda s: s.update(
            trafficPolicy={"loadBalancer": {"consistentHash": {
                "httpHeaderName": "x-user", "ringHash": {"minimumRingSize": MAX_RING_SIZE + 1}}}}
        ),
        f"{MAX_RING_SIZE + 1} is outside 0-{MAX_RING_SIZE}",
    ),
    "maglev": (
        lambda s: s.update(trafficPolicy={"loadBalancer": {"consistentHash": {
            "useSourceIp": True, "maglev": {"tableSize": 65536}}}}),
        "65536 is not a prime number",
    ),
    "ejection": (
        lambda s: s.update(trafficPolicy={"outlierDetection": {"maxEjectionPercent": 101}}),
        "101 is outside 0-100",
    ),
    "connect timeout": (
        lambda s: s.update(trafficPolicy={"connectionPool": {"tcp": {"connectTimeout": "0.5ms"}}}),
        "shorter than 1ms",
    ),
    "5xx count": (
        lambda s: s.update(
            trafficPolicy={"outlierDetection": {"consecutive5xxErrors": UINT32_MAX + 1}}
        ),
        f"is outside 0-{UINT32_MAX}",
    ),
    "pool limit": (
        lambda s: s.update(
            trafficPolicy={"connectionPool": {"http": {"http2MaxRequests": INT32_MAX + 1}}}
        ),
        f"is outside 0-{INT32_MAX}",
    ),
    "lb name": (
        lambda s: s.update(trafficPolicy={"loadBalancer": {"simple": "FASTEST"}}),
        "unknown value 'FASTEST'",
    ),
    "duplicate subset": (
        lambda s: s.update(subsets=[{"name": "v1"}, {"name": "v1"}]),
        "duplicate subset name 'v1'",
    ),
    "missing port": (
        lambda s: s.update(trafficPolicy={"portLevelSettings": [
            {"port": {"number": 9999}, "outlierDetection": {"interval": "1s"}}]}),
        "has no port 9999",
    ),
    "locality weights": (
        lambda s: s.update(trafficPolicy={"loadBalancer": {"localityLbSetting": {
            "distribute": [{"from": "r1/*", "to": {"r1/a": 60, "r2/b": 60}}]}}}),
        "weights add up to 120, not 100",
    ),
}  # fmt: skip


@st.composite
def destination_rule(draw: Draw, host: str, ports: tuple[int, ...], bad: bool) -> Drawn:
    spec: Object = {"host": draw(st.sampled_from([host, f"{host}.default.svc.cluster.local"]))}
    if draw(LIKELY):
        spec["trafficPolicy"] = draw(_traffic(ports))
    names = draw(st.lists(st.sampled_from(sorted(SUBSET_LABELS)), unique=True, max_size=4))
    spec["subsets"] = [
        {
            "name": name,
            "labels": SUBSET_LABELS[name],
            **({"trafficPolicy": draw(_traffic(ports))} if draw(LIKELY) else {}),
        }
        for name in names
    ]
    if not bad:
        return Drawn(istio_object("DestinationRule", spec))
    spec["host"] = host  # the defect, not a host alias, decides
    words = add_defect(spec, draw(st.sampled_from(sorted(DR_DEFECTS))))
    return Drawn(istio_object("DestinationRule", spec), words)


def add_defect(spec: Object, defect: str) -> str:
    """Give the spec defect ``defect`` (a key of DR_DEFECTS); the words of its rejection."""
    mutate, words = DR_DEFECTS[defect]
    mutate(spec)
    return words


def broken_destination_rule(host: str, defect: str, label: str) -> Drawn:
    """A DestinationRule for ``host`` with nothing but ``defect``."""
    spec: Object = {"host": host}
    words = add_defect(spec, defect)
    return Drawn(istio_object("DestinationRule", spec), words, label=label)


def declared_subsets(dr: Drawn | None) -> list[str]:
    if dr is None:
        return []
    return sorted({s["name"] for s in dr.obj["spec"].get("subsets", [])})
