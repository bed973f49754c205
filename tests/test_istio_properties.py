"""Istio parser property tests over generated VirtualServices and DestinationRules: they
parse into what they say, and an unknown field or a wrong type anywhere is named."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sources.istio import (
    CORS_METHODS,
    GRPC_STATUS_NAMES,
    RETRY_ON_TOKENS,
    PolicyError,
    parse_duration,
    parse_policy,
)
from xds_server.model import DestinationPolicy, RoutePolicy

LABEL = st.from_regex(r"[a-z]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
HOST = st.one_of(LABEL, st.builds(lambda a, b: f"{a}.{b}", LABEL, LABEL))
HEADER = st.from_regex(r"x-[a-z0-9-]{1,8}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00\r\n%"), max_size=12)
REGEXES = st.sampled_from(["/v[0-9]+", "[a-z]+", "^(a|b)$", ".*", "\\d{1,3}", "a" * 96])
DURATION = st.builds(
    lambda n, unit: f"{n}{unit}", st.integers(1, 5000), st.sampled_from(["ms", "s", "m", "h"])
)
PERCENT = st.one_of(st.just(0), st.floats(0.0001, 100), st.integers(1, 100))


def string_match(present: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    options = [
        st.builds(lambda v: {"exact": v}, TEXT),
        st.builds(lambda v: {"prefix": v}, TEXT.filter(bool)),
        st.builds(lambda v: {"regex": v}, REGEXES),
    ]
    return st.one_of(*options, st.builds(dict)) if present else st.one_of(*options)


MATCH = st.fixed_dictionaries(
    {},
    optional={
        "name": LABEL,
        "uri": string_match(present=False),
        "method": string_match(),
        "authority": string_match(),
        "headers": st.dictionaries(HEADER, string_match(), max_size=3),
        "withoutHeaders": st.dictionaries(HEADER, string_match(), max_size=2),
        "queryParams": st.dictionaries(LABEL, string_match(), max_size=2),
        "ignoreUriCase": st.booleans(),
        "port": st.integers(1, 65535),
    },
)
DESTINATION = st.fixed_dictionaries(
    {"host": HOST},
    optional={"subset": LABEL, "port": st.builds(lambda n: {"number": n}, st.integers(1, 65535))},
)
HEADER_OPS = st.fixed_dictionaries(
    {},
    optional={
        side: st.fixed_dictionaries(
            {},
            optional={
                "set": st.dictionaries(HEADER, TEXT, max_size=2),
                "add": st.dictionaries(HEADER, TEXT, max_size=2),
                "remove": st.lists(HEADER, max_size=2),
            },
        )
        for side in ("request", "response")
    },
)


@st.composite
def weighted(draw: st.DrawFn, headers: bool) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 4))
    weights = draw(st.lists(st.integers(0, 1000), min_size=count, max_size=count))
    if count > 1 and not any(weights):
        weights[0] = 1
    out = []
    for weight in weights:
        entry: dict[str, Any] = {"destination": draw(DESTINATION)}
        if count > 1 or draw(st.booleans()):
            entry["weight"] = weight
        if headers and draw(st.booleans()):
            entry["headers"] = draw(HEADER_OPS)
        out.append(entry)
    return out


HTTP_RULE = st.fixed_dictionaries(
    {"route": weighted(headers=True)},
    optional={
        "name": LABEL,
        "match": st.lists(MATCH, max_size=3),
        "timeout": st.one_of(DURATION, st.just("0s")),
        "retries": st.one_of(
            st.builds(lambda: {"attempts": 0}),
            st.fixed_dictionaries(
                {"attempts": st.integers(1, 10)},
                optional={
                    "perTryTimeout": DURATION,
                    "retryOn": st.lists(
                        st.one_of(
                            st.sampled_from(sorted(RETRY_ON_TOKENS)), st.integers(100, 599).map(str)
                        ),
                        min_size=1,
                        max_size=4,
                    ).map(",".join),
                },
            ),
        ),
        "fault": st.one_of(
            st.builds(
                lambda d, p: {"delay": {"fixedDelay": d, "percentage": {"value": p}}},
                DURATION,
                PERCENT,
            ),
            st.builds(
                lambda s, p: {"abort": {"httpStatus": s, "percentage": {"value": p}}},
                st.integers(200, 599),
                PERCENT,
            ),
            st.builds(
                lambda s: {"abort": {"grpcStatus": s, "percentage": {"value": 100}}},
                st.sampled_from(GRPC_STATUS_NAMES),
            ),
        ),
        "mirror": DESTINATION,
        "mirrors": st.lists(
            st.fixed_dictionaries(
                {"destination": DESTINATION},
                optional={"percentage": st.builds(lambda p: {"value": p}, PERCENT)},
            ),
            max_size=2,
        ),
        "rewrite": st.fixed_dictionaries({"uri": st.just("/new")}, optional={"authority": HOST}),
        "corsPolicy": st.fixed_dictionaries(
            {},
            optional={
                "allowOrigins": st.lists(
                    string_match(present=False).filter(lambda m: m.get("exact", "x")), max_size=2
                ),
                "allowMethods": st.lists(st.sampled_from(sorted(CORS_METHODS)), max_size=3),
                "allowHeaders": st.lists(HEADER, max_size=2),
                "maxAge": st.integers(1, 100000).map(lambda n: f"{n}s"),
                "allowCredentials": st.booleans(),
            },
        ),
        "headers": HEADER_OPS,
    },
)
OTHER_RULE = st.one_of(
    st.fixed_dictionaries(
        {
            "redirect": st.fixed_dictionaries(
                {"uri": st.just("/moved")},
                optional={
                    "authority": HOST,
                    "scheme": st.sampled_from(["http", "https"]),
                    "port": st.integers(1, 65535),
                    "redirectCode": st.sampled_from([301, 302, 303, 307, 308]),
                },
            )
        },
        optional={"match": st.lists(MATCH, max_size=2), "headers": HEADER_OPS},
    ),
    st.fixed_dictionaries(
        {
            "directResponse": st.fixed_dictionaries(
                {"status": st.integers(200, 599)},
                optional={"body": st.builds(lambda t: {"string": t}, TEXT)},
            )
        },
        optional={"match": st.lists(MATCH, max_size=2), "corsPolicy": st.builds(dict)},
    ),
)
TCP_RULE = st.fixed_dictionaries(
    {"route": weighted(headers=False)},
    optional={
        "match": st.lists(
            st.fixed_dictionaries({}, optional={"port": st.integers(1, 65535)}), max_size=3
        )
    },
)
VIRTUAL_SERVICE = st.builds(
    lambda hosts, http, tcp, ns: {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "gen", "namespace": ns},
        "spec": {"hosts": hosts, "http": http, "tcp": tcp},
    },
    st.lists(HOST, min_size=1, max_size=3, unique=True),
    st.lists(st.one_of(HTTP_RULE, HTTP_RULE, OTHER_RULE), min_size=1, max_size=4),
    st.lists(TCP_RULE, max_size=2),
    LABEL,
)

LB_SETTINGS = st.one_of(
    st.builds(
        lambda s: {"simple": s},
        st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN", "RANDOM"]),
    ),
    st.builds(
        lambda key, algo: {"consistentHash": {**key, **algo}},
        st.one_of(
            st.builds(lambda h: {"httpHeaderName": h}, HEADER),
            st.builds(lambda: {"useSourceIp": True}),
            st.builds(lambda q: {"httpQueryParameterName": q}, LABEL),
            st.builds(lambda c, t: {"httpCookie": {"name": c, "ttl": t}}, LABEL, DURATION),
        ),
        st.one_of(
            st.builds(dict),
            st.builds(lambda n: {"ringHash": {"minimumRingSize": n}}, st.integers(1, 8_388_608)),
            st.builds(
                lambda n: {"maglev": {"tableSize": n}}, st.sampled_from([2, 3, 65537, 5_000_011])
            ),
        ),
    ),
)
POOL = st.fixed_dictionaries(
    {
        "tcp": st.fixed_dictionaries(
            {}, optional={"maxConnections": st.integers(0, 10**6), "connectTimeout": DURATION}
        )
    },
    optional={
        "http": st.fixed_dictionaries(
            {},
            optional={
                "http1MaxPendingRequests": st.integers(0, 10**6),
                "http2MaxRequests": st.integers(0, 10**6),
                "maxRequestsPerConnection": st.integers(0, 100),
                "maxRetries": st.integers(0, 100),
                "idleTimeout": DURATION,
            },
        )
    },
)
OUTLIER = st.fixed_dictionaries(
    {},
    optional={
        "consecutive5xxErrors": st.integers(0, 100),
        "consecutiveGatewayErrors": st.integers(0, 100),
        "interval": DURATION,
        "baseEjectionTime": DURATION,
        "maxEjectionPercent": st.integers(0, 100),
        "minHealthPercent": st.integers(0, 100),
    },
)
TRAFFIC_POLICY = st.fixed_dictionaries(
    {"loadBalancer": LB_SETTINGS},
    optional={"connectionPool": POOL, "outlierDetection": OUTLIER},
)


@st.composite
def destination_rules(draw: st.DrawFn) -> dict[str, Any]:
    def with_ports(policy: dict[str, Any]) -> dict[str, Any]:
        ports = draw(st.lists(st.integers(1, 65535), max_size=3, unique=True))
        if ports:
            policy["portLevelSettings"] = [
                {"port": {"number": p}, **draw(TRAFFIC_POLICY)} for p in ports
            ]
        return policy

    spec: dict[str, Any] = {"host": draw(HOST)}
    if draw(st.booleans()):
        spec["trafficPolicy"] = with_ports(draw(TRAFFIC_POLICY))
    names = draw(st.lists(LABEL, max_size=4, unique=True))
    spec["subsets"] = [
        {
            "name": name,
            "labels": draw(st.dictionaries(LABEL, LABEL, max_size=3)),
            **({"trafficPolicy": with_ports(draw(TRAFFIC_POLICY))} if draw(st.booleans()) else {}),
        }
        for name in names
    ]
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "DestinationRule",
        "metadata": {"name": "gen"},
        "spec": spec,
    }


def expected_weights(route: list[dict[str, Any]]) -> list[int]:
    if len(route) == 1:
        return [100]
    kept = [r["weight"] for r in route if r.get("weight")]
    return [100] if len(kept) == 1 else kept


@settings(max_examples=150, deadline=None)
@given(VIRTUAL_SERVICE)
def test_generated_virtual_services_parse(obj: dict[str, Any]) -> None:
    parsed = parse_policy(obj)
    policy = parsed.policy
    assert isinstance(policy, RoutePolicy)
    spec = obj["spec"]
    assert policy.hosts == tuple(spec["hosts"])
    assert policy.key.namespace == obj["metadata"]["namespace"]
    assert len(policy.http) == len(spec["http"])
    for rule, raw in zip(policy.http, spec["http"], strict=True):
        assert len(rule.matches) == len(raw.get("match", []))
        assert (rule.redirect is None, rule.direct_response is None) == (
            "redirect" not in raw,
            "directResponse" not in raw,
        )
        if "route" not in raw:
            assert rule.destinations == ()
            continue
        assert [d.weight for d in rule.destinations] == expected_weights(raw["route"])
        assert {d.destination.namespace for d in rule.destinations} == {
            obj["metadata"]["namespace"]
        }
        if "timeout" in raw:
            assert rule.timeout == parse_duration(raw["timeout"])
        if "retries" in raw:
            assert rule.retry is not None and rule.retry.attempts == raw["retries"]["attempts"]
        assert len(rule.mirrors) == ("mirror" in raw) + sum(
            1 for m in raw.get("mirrors", []) if m.get("percentage", {"value": 1})["value"]
        )
    assert len(policy.tcp) == sum(max(1, len(r.get("match", []))) for r in spec["tcp"])
    # the only notices a valid object can get: a fault without a percentage
    assert all(n.message.startswith("no percentage") for n in parsed.notices)


@settings(max_examples=150, deadline=None)
@given(destination_rules())
def test_generated_destination_rules_parse(obj: dict[str, Any]) -> None:
    parsed = parse_policy(obj)
    assert (parsed.notices, parsed.applies) == ((), True)
    policy = parsed.policy
    assert isinstance(policy, DestinationPolicy)
    spec = obj["spec"]
    assert policy.host == spec["host"]
    assert [s.name for s in policy.subsets] == [s["name"] for s in spec["subsets"]]
    assert [dict(s.labels) for s in policy.subsets] == [s["labels"] for s in spec["subsets"]]
    raw_ports = [
        p["port"]["number"] for p in spec.get("trafficPolicy", {}).get("portLevelSettings", [])
    ]
    assert [p.port for p in policy.ports] == raw_ports
    if "trafficPolicy" in spec:
        lb = spec["trafficPolicy"]["loadBalancer"]
        top = policy.policy
        assert top is not None and top.load_balancer is not None
        assert (top.load_balancer.hash is not None) == ("consistentHash" in lb)


def message_paths(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The paths of the objects in `node` that are Istio messages (not maps of names)."""
    maps = {"labels", "queryParams", "withoutHeaders", "set", "add", "to", "metadata"}
    out: list[tuple[str | int, ...]] = []
    if isinstance(node, dict):
        last = path[-1] if path else None
        is_map = last in maps or (last == "headers" and len(path) > 2 and path[-3] == "match")
        if not is_map:
            out.append(path)
        for key, value in node.items():
            out += message_paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += message_paths(value, (*path, i))
    return out


def scalar_paths(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in scalar_paths(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in scalar_paths(v, (*path, i))]
    return [path]


def at(obj: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


@settings(max_examples=150, deadline=None)
@given(st.one_of(VIRTUAL_SERVICE, destination_rules()), st.data())
def test_an_unknown_field_anywhere_is_named(obj: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(message_paths(obj)))
    at(obj, path)["zzUnknown"] = 1
    with pytest.raises(PolicyError) as caught:
        parse_policy(obj)
    assert caught.value.path == (*path, "zzUnknown")
    assert caught.value.reason == 'unknown field "zzUnknown"'


@settings(max_examples=150, deadline=None)
@given(st.one_of(VIRTUAL_SERVICE, destination_rules()), st.data())
def test_a_wrong_type_anywhere_is_named(obj: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(scalar_paths(obj)))
    parent = at(obj, path[:-1])
    parent[path[-1]] = [1]
    with pytest.raises(PolicyError) as caught:
        parse_policy(obj)
    assert caught.value.path == path
    assert caught.value.reason.startswith("expected ") or caught.value.reason.startswith(
        "unsupported "
    )
    assert caught.value.reason.endswith(", got a list") or "[1]" in caught.value.reason
