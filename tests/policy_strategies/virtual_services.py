"""VirtualServices: HTTP and TCP rules with every field's boundary values, and the defects
the product must refuse (RE2 errors and sizes, weights, statuses, percentages, durations,
retry conditions, redirect codes, body sizes, header values, unknown subsets, hosts and
ports)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import strategies as st

from sources.istio import CORS_METHODS, GRPC_STATUS_NAMES, RETRY_ON_TOKENS
from tests.policy_strategies.objects import Drawn
from tests.policy_strategies.values import (
    DURATIONS,
    HEADER_VALUES,
    HTTP_SERVICES,
    INT32_MAX,
    MAX_DURATION_SECONDS,
    NAME,
    OFF_OR_DURATION,
    PERCENTAGES,
    REGEXES,
    TCP_SERVICE,
    TEXT,
    TOKEN,
    UINT32_MAX,
    WEIGHTS,
    Draw,
    Object,
    header_ops,
    istio_object,
    maybe,
)


@st.composite
def _string_match(draw: Draw, present: bool = True) -> Object:
    kinds = ["exact", "prefix", "regex", *(["present"] if present else [])]
    kind = draw(st.sampled_from(kinds))
    if kind == "exact":
        return {"exact": draw(TEXT)}
    if kind == "prefix":
        return {"prefix": draw(TEXT.filter(bool))}
    if kind == "regex":
        return {"regex": draw(REGEXES)}
    return {}


@st.composite
def _match(draw: Draw, ports: tuple[int, ...]) -> Object:
    out: Object = {}
    maybe(draw, out, "name", NAME)
    maybe(draw, out, "uri", _string_match(present=False))
    maybe(draw, out, "method", st.sampled_from([{"exact": "GET"}, {"regex": "GET|POST"}]))
    maybe(draw, out, "authority", _string_match())
    maybe(draw, out, "headers", st.dictionaries(TOKEN, _string_match(), max_size=2))
    maybe(draw, out, "withoutHeaders", st.dictionaries(TOKEN, _string_match(), max_size=1))
    maybe(draw, out, "queryParams", st.dictionaries(NAME, _string_match(), max_size=2))
    maybe(draw, out, "ignoreUriCase", st.booleans())
    maybe(draw, out, "port", st.sampled_from([*ports, 1, 65535]))
    return out


HEADER_OPS = header_ops(TOKEN, HEADER_VALUES)


@st.composite
def _route(
    draw: Draw, hosts: tuple[str, ...], ports: Mapping[str, tuple[int, ...]],
    subsets: Mapping[str, list[str]], uses: set[str], http: bool,
) -> list[Object]:  # fmt: skip
    """Weighted destinations (at least one weight positive, the sum at most 2^32-1);
    `uses` gains the services whose subsets take traffic (a zero weight takes none, and
    its destination is not looked at)."""
    count = draw(st.integers(1, 3))
    if count > 1 and draw(st.integers(0, 4)) == 0:  # the largest sum Envoy takes
        weights = [INT32_MAX, INT32_MAX, 1][:count]
    else:
        weights = draw(st.lists(WEIGHTS, min_size=count, max_size=count))
        if count > 1 and not any(weights):
            weights[0] = 1
        while sum(weights) > UINT32_MAX:
            weights[weights.index(INT32_MAX)] = 1
    route = []
    for weight in weights:
        named: set[str] = set()
        entry: Object = {"destination": draw(_destination(hosts, ports, subsets, named))}
        if count == 1 or weight > 0:
            uses.update(named)
        if count > 1 or draw(st.booleans()):
            entry["weight"] = weight
        if http and draw(st.integers(0, 3)) == 0:
            entry["headers"] = draw(HEADER_OPS)
        route.append(entry)
    return route


@st.composite
def _destination(
    draw: Draw, hosts: tuple[str, ...], ports: Mapping[str, tuple[int, ...]],
    subsets: Mapping[str, list[str]], uses: set[str],
) -> Object:  # fmt: skip
    host = draw(st.sampled_from(hosts))
    dest: Object = {"host": host}
    if subsets.get(host) and draw(st.booleans()):
        dest["subset"] = draw(st.sampled_from(subsets[host]))
        uses.add(host)
    if draw(st.booleans()):
        dest["port"] = {"number": draw(st.sampled_from(ports[host]))}
    return dest


_RETRY_ON = st.lists(
    st.one_of(st.sampled_from(sorted(RETRY_ON_TOKENS)), st.sampled_from(["100", "503", "599"])),
    min_size=1,
    max_size=3,
).map(",".join)
RETRIES = st.one_of(
    st.just({"attempts": 0}),
    st.fixed_dictionaries(
        {"attempts": st.sampled_from([1, 2, 5, 10, INT32_MAX])},
        optional={"perTryTimeout": DURATIONS, "retryOn": _RETRY_ON},
    ),
)
FAULTS = st.one_of(
    st.builds(lambda d, p: {"delay": {"fixedDelay": d, "percentage": {"value": p}}},
              DURATIONS, PERCENTAGES),
    st.builds(lambda s, p: {"abort": {"httpStatus": s, "percentage": {"value": p}}},
              st.sampled_from([200, 418, 503, 599]), PERCENTAGES),
    st.builds(lambda s, p: {"abort": {"grpcStatus": s, "percentage": {"value": p}}},
              st.sampled_from(GRPC_STATUS_NAMES), PERCENTAGES),
    st.just({"delay": {"fixedDelay": "1s"}}),  # no percentage: 0 %, with a notice
)  # fmt: skip
CORS = st.fixed_dictionaries(
    {},
    optional={
        "allowOrigins": st.lists(
            st.one_of(
                st.builds(lambda t: {"exact": t}, TEXT.filter(bool)),
                st.builds(lambda r: {"regex": r}, REGEXES),
            ),
            max_size=2,
        ),
        "allowMethods": st.lists(st.sampled_from(sorted(CORS_METHODS)), max_size=3),
        "allowHeaders": st.lists(TOKEN, max_size=2),
        "exposeHeaders": st.lists(TOKEN, max_size=2),
        "maxAge": st.sampled_from(["1s", "24h", f"{MAX_DURATION_SECONDS}s"]),
        "allowCredentials": st.booleans(),
    },
)


@st.composite
def _http_rule(
    draw: Draw, ports: Mapping[str, tuple[int, ...]], subsets: Mapping[str, list[str]],
    uses: set[str], host: str,
) -> Object:  # fmt: skip
    rule: Object = {}
    maybe(draw, rule, "name", NAME)
    maybe(draw, rule, "match", st.lists(_match(ports[host]), max_size=2))
    kind = draw(st.sampled_from(["route", "route", "route", "redirect", "direct"]))
    if kind == "redirect":
        rule["redirect"] = draw(st.fixed_dictionaries(
            {"uri": st.just("/moved")},
            optional={"authority": st.just("other.example"),
                      "scheme": st.sampled_from(["http", "https"]),
                      "port": st.sampled_from([1, 80, 443, 65535]),
                      "redirectCode": st.sampled_from([301, 302, 303, 307, 308])},
        ))  # fmt: skip
        return rule
    if kind == "direct":
        body = st.sampled_from(["", "ok", "x" * 4096, "ünïcödé"])
        rule["directResponse"] = draw(st.fixed_dictionaries(
            {"status": st.sampled_from([200, 204, 503, 599])},
            optional={"body": st.builds(lambda b: {"string": b}, body)},
        ))  # fmt: skip
        return rule
    rule["route"] = draw(_route(HTTP_SERVICES, ports, subsets, uses, http=True))
    maybe(draw, rule, "timeout", OFF_OR_DURATION)
    maybe(draw, rule, "retries", RETRIES)
    maybe(draw, rule, "fault", FAULTS)
    if draw(st.booleans()):
        mirrored: set[str] = set()  # used only if the mirror takes a share of requests
        rule["mirror"] = draw(_destination(HTTP_SERVICES, ports, subsets, mirrored))
        maybe(draw, rule, "mirrorPercentage", st.builds(lambda p: {"value": p}, PERCENTAGES))
        if rule.get("mirrorPercentage", {"value": 100})["value"]:
            uses.update(mirrored)
    maybe(draw, rule, "rewrite", st.sampled_from([{"uri": "/new"}, {"authority": "b.example"}]))
    maybe(draw, rule, "corsPolicy", CORS)
    maybe(draw, rule, "headers", HEADER_OPS)
    return rule


def _to(host: str, **dest: Any) -> list[Object]:
    return [{"destination": {"host": host, **dest}}]


def _weighted(host: str, *weights: int) -> list[Object]:
    return [{"destination": {"host": host}, "weight": w} for w in weights]


# A bad route: (route for the VirtualService's own host, words of the rejection).
ROUTE_DEFECTS: dict[str, tuple[Callable[[str], list[Object]], str]] = {
    "zero weights": (lambda h: _weighted(h, 0, 0), "total weight is zero"),
    "weight overflow": (
        lambda h: _weighted(h, INT32_MAX, INT32_MAX, 2),
        f"total weight {UINT32_MAX + 1} exceeds {UINT32_MAX}",
    ),
    "unknown subset": (lambda h: _to(h, subset="nope"), "subset 'nope' of service"),
    "unknown host": (lambda h: _to("ghost"), "destination host 'ghost' names no service"),
    "missing port": (lambda h: _to(h, port={"number": 9999}), "has no port 9999"),
}
# A bad HTTP rule for the VirtualService's own host, and the words of its rejection.
RULE_DEFECTS: dict[str, tuple[Callable[[str], Object], str]] = {
    "regex syntax": (
        lambda h: {"match": [{"uri": {"regex": "a("}}], "route": _to(h)},
        "invalid RE2 regex: missing ): a(",
    ),
    "regex size": (
        lambda h: {"match": [{"headers": {"x-a": {"regex": "[a-z]{97}"}}}], "route": _to(h)},
        "regex program size 101 exceeds Envoy's limit of 100",
    ),
    "regex length": (
        lambda h: {"match": [{"uri": {"regex": "x" * 1025}}], "route": _to(h)},
        "regex is 1025 characters long; the limit is 1024",
    ),
    "abort status": (
        lambda h: {"route": _to(h), "fault": {"abort": {"httpStatus": 600}}},
        "600 is outside 200-599",
    ),
    "percentage": (
        lambda h: {"route": _to(h), "fault": {
            "delay": {"fixedDelay": "1s", "percentage": {"value": 100.5}}}},
        "100.5 is neither 0 nor within 0.0001-100",
    ),
    "negative timeout": (lambda h: {"route": _to(h), "timeout": "-1s"}, "negative duration"),
    "huge timeout": (
        lambda h: {"route": _to(h), "timeout": f"{MAX_DURATION_SECONDS + 1}s"},
        f"is longer than {MAX_DURATION_SECONDS}s",
    ),
    "retry token": (
        lambda h: {"route": _to(h), "retries": {"attempts": 2, "retryOn": "5xx,bogus"}},
        "unknown retry condition 'bogus'",
    ),
    "retry code": (
        lambda h: {"route": _to(h), "retries": {"attempts": 2, "retryOn": "600"}},
        "retriable status code 600 is outside 100-599",
    ),
    "attempts": (
        lambda h: {"route": _to(h), "retries": {"attempts": -1}},
        f"-1 is outside 0-{INT32_MAX}",
    ),
    "per-try timeout": (
        lambda h: {"route": _to(h), "retries": {"attempts": 1, "perTryTimeout": "0.5ms"}},
        "shorter than 1ms",
    ),
    "grpc status": (
        lambda h: {"route": _to(h), "fault": {"abort": {"grpcStatus": "NOPE"}}},
        "unknown gRPC status 'NOPE'",
    ),
    "redirect code": (
        lambda h: {"redirect": {"uri": "/x", "redirectCode": 305}},
        "305 is not a redirect code",
    ),
    "body size": (
        lambda h: {"directResponse": {"status": 200, "body": {"string": "x" * 4097}}},
        "body is 4097 bytes; Envoy's limit is 4096",
    ),
    "header value": (
        lambda h: {"route": _to(h), "headers": {"request": {"set": {"x-a": "%BOGUS%"}}}},
        "invalid '%' at position 0",
    ),
    "mirror subset": (
        lambda h: {"route": _to(h), "mirror": {"host": h, "subset": "nope"}},
        "subset 'nope' of service",
    ),
}  # fmt: skip


@st.composite
def virtual_service(
    draw: Draw, host: str, ports: Mapping[str, tuple[int, ...]],
    subsets: Mapping[str, list[str]], bad: bool,
) -> Drawn:  # fmt: skip
    uses: set[str] = set()
    hosts = [host, *draw(st.sampled_from([[], ["ghost"], [f"{host}.default.svc.cluster.local"]]))]
    spec: Object = {"hosts": hosts}
    tcp = host == TCP_SERVICE
    if tcp:
        rules = []
        for _ in range(draw(st.integers(1, 2))):
            rule: Object = {"route": draw(_route((host,), ports, subsets, uses, http=False))}
            maybe(draw, rule, "match", st.just([{"port": ports[host][0]}]))
            rules.append(rule)
        spec["tcp"] = rules
    else:
        count = draw(st.integers(1, 3))
        spec["http"] = [draw(_http_rule(ports, subsets, uses, host)) for _ in range(count)]
    words = None
    if bad:
        words = add_defect(spec, host, draw(st.sampled_from(defects_for(host))))
    return Drawn(istio_object("VirtualService", spec), words, frozenset(uses))


def defects_for(host: str) -> list[str]:
    """The defects a VirtualService for ``host`` can have (TCP rules have only routes)."""
    return sorted(ROUTE_DEFECTS) + ([] if host == TCP_SERVICE else sorted(RULE_DEFECTS))


def add_defect(spec: Object, host: str, defect: str) -> str:
    """Append a rule with ``defect`` (a key of ROUTE_DEFECTS or RULE_DEFECTS) to the
    spec; the words of its rejection."""
    rules = spec.setdefault("tcp" if host == TCP_SERVICE else "http", [])
    if defect in ROUTE_DEFECTS:
        make_route, words = ROUTE_DEFECTS[defect]
        rules.append({"route": make_route(host)})
    else:
        make_rule, words = RULE_DEFECTS[defect]
        rules.append(make_rule(host))
    return words


def broken_virtual_service(host: str, defect: str, label: str) -> Drawn:
    """A VirtualService for ``host`` with one rule: ``defect``."""
    spec: Object = {"hosts": [host]}
    words = add_defect(spec, host, defect)
    return Drawn(istio_object("VirtualService", spec), words, label=label)
