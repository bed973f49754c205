"""Envoy as the judge of the Istio parser's checks: the regex program-size limit, header
values and modifications, direct-response and load-balancer limits, durations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sources.istio import (
    HEADER_VARIABLES,
    MAX_DIRECT_RESPONSE_BODY,
    MAX_DURATION_SECONDS,
    MAX_HEADER_BYTES,
    MAX_HEADERS_TO_ADD,
    MAX_MAGLEV_TABLE_SIZE,
    MAX_QUERY_NAME_BYTES,
    MAX_RING_SIZE,
    PolicyError,
    check_regex,
    header_value_problem,
    parse_duration,
    parse_policy,
)
from tests.harness.envoy import static_bootstrap, validate_bootstrap
from tests.istio_objects import http_vs, parse_dr, to_reviews


def envoy_config(
    routes: list[dict[str, Any]] | None = None, cluster: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A static bootstrap whose only virtual host has `routes` (to cluster "backend", which
    gets `cluster` merged in), with the fault filter before the router."""
    boot = static_bootstrap(10000, 10001, 10002)
    hcm = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    if routes is not None:
        hcm["route_config"]["virtual_hosts"][0]["routes"] = routes
    hcm["http_filters"].insert(
        0,
        {
            "name": "envoy.filters.http.fault",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
            },
        },
    )
    boot["static_resources"]["clusters"][0].update(cluster or {})
    return boot


def envoy_rejection(tmp_path: Path, boot: dict[str, Any]) -> str | None:
    """None if Envoy accepts `boot`, else its error output."""
    try:
        validate_bootstrap(boot, tmp_path)
    except AssertionError as exc:
        return str(exc)
    return None


def to_backend(match: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"match": match, "route": {"cluster": "backend"}, **extra}


REGEX_CASES = [
    *(f"[a-z]{{{n}}}" for n in range(92, 100)),  # program sizes 96..103
    *("a" * n for n in range(94, 100)),
    "/api/(users|orders)/[0-9a-f]{8}$",
    ".*\\.(png|jpg|gif)$",
    "(foo|bar|baz)+/v[0-9]{1,3}",
    "(?i)/hello/.*",
    "(?P<id>[0-9]+)",
    "(?<id>[0-9]+)",
    "\\p{Greek}+",
    "[[:alpha:]]+",
    "\\bword\\b",
    "x*?y",
    "a{1000}",
    "(a|b|c|d|e|f|g|h){5}",
    "a(",
    "(?=x)",
    "\\8",
]


def test_envoy_accepts_exactly_the_regexes_check_regex_accepts(tmp_path: Path) -> None:
    """Envoy is the judge: every regex check_regex accepts is accepted by Envoy (as a path
    and as a header matcher), every one it rejects, for program size or syntax, is not."""
    accepted = [p for p in REGEX_CASES if check_regex(p) is None]
    too_big = [p for p in REGEX_CASES if (check_regex(p) or "").startswith("regex program size")]
    invalid = [p for p in REGEX_CASES if (check_regex(p) or "").startswith("invalid RE2")]
    assert len(accepted) >= 10 and len(too_big) >= 6 and len(invalid) >= 3
    assert len(accepted) + len(too_big) + len(invalid) == len(REGEX_CASES)
    # the parser hands Envoy what it accepted
    obj = http_vs(
        to_reviews(
            match=[{"uri": {"regex": p}, "headers": {"x-a": {"regex": p}}} for p in accepted]
        )
    )
    matches = parse_policy(obj).policy.http[0].matches  # type: ignore[union-attr]
    routes = [
        to_backend(
            {
                "safe_regex": {"regex": m.uri.value},  # type: ignore[union-attr]
                "headers": [
                    {
                        "name": "x-a",
                        "string_match": {"safe_regex": {"regex": m.headers[0].match.value}},
                    }
                ],
            }
        )
        for m in matches
    ]
    assert len(routes) == len(accepted)
    assert envoy_rejection(tmp_path, envoy_config(routes)) is None
    for pattern in too_big + invalid:
        output = envoy_rejection(
            tmp_path, envoy_config([to_backend({"safe_regex": {"regex": pattern}})])
        )
        assert output is not None, f"Envoy accepted {pattern!r}, which check_regex rejects"
        if pattern in too_big:
            assert "RE2 program size" in output


def test_envoy_accepts_the_header_values_we_accept(tmp_path: Path) -> None:
    values = [f"%{name}%" for name in sorted(HEADER_VARIABLES)]
    values += ["%REQ(x-request-id)%", "%REQ(:authority)%", "a 100%% b", "", "plain"]
    values += ["v" * MAX_HEADER_BYTES]
    assert all(header_value_problem(v) is None for v in values)
    ops = [{"header": {"key": f"x-v{i}", "value": v}} for i, v in enumerate(values)]
    route = to_backend({"prefix": "/"}, request_headers_to_add=ops, response_headers_to_add=ops)
    assert envoy_rejection(tmp_path, envoy_config([route])) is None
    many = [{"header": {"key": f"x-{i}", "value": "v"}} for i in range(MAX_HEADERS_TO_ADD)]
    assert (
        envoy_rejection(
            tmp_path, envoy_config([to_backend({"prefix": "/"}, request_headers_to_add=many)])
        )
        is None
    )
    many.append({"header": {"key": "x-last", "value": "v"}})
    assert envoy_rejection(
        tmp_path, envoy_config([to_backend({"prefix": "/"}, request_headers_to_add=many)])
    )
    query = {
        "prefix": "/",
        "query_parameters": [{"name": "q" * MAX_QUERY_NAME_BYTES, "present_match": True}],
    }
    assert envoy_rejection(tmp_path, envoy_config([to_backend(query)])) is None
    query["query_parameters"][0]["name"] += "q"  # type: ignore[index]
    assert envoy_rejection(tmp_path, envoy_config([to_backend(query)]))
    for bad in ["100%", "%FOO%", "%REQUEST_PROTOCOL%", "v" * (MAX_HEADER_BYTES + 1)]:
        assert header_value_problem(bad) is not None
        ops = [{"header": {"key": "x-a", "value": bad}}]
        assert envoy_rejection(
            tmp_path, envoy_config([to_backend({"prefix": "/"}, request_headers_to_add=ops)])
        )


@pytest.mark.parametrize("name", ["host", ":authority", ":path", ":method", ":scheme", ":status"])
def test_envoy_refuses_the_header_modifications_we_refuse(tmp_path: Path, name: str) -> None:
    for side in ("request", "response"):
        for verb, envoy_field, op in (
            ("set", f"{side}_headers_to_add", {"header": {"key": name, "value": "v"}}),
            ("remove", f"{side}_headers_to_remove", name),
        ):
            if side == "request" and verb == "set" and name in ("host", ":authority"):
                continue  # the parser turns these into an authority rewrite
            ops = {verb: [name]} if verb == "remove" else {verb: {name: "v"}}
            with pytest.raises(PolicyError):
                parse_policy(http_vs(to_reviews(headers={side: ops})))
            route = to_backend({"prefix": "/"}, **{envoy_field: [op]})
            assert envoy_rejection(tmp_path, envoy_config([route])), (side, verb, name)


def test_envoy_direct_response_limits_are_ours(tmp_path: Path) -> None:
    def direct(status: int, body: str) -> dict[str, Any]:
        return {
            "match": {"prefix": "/"},
            "direct_response": {"status": status, "body": {"inline_string": body}},
        }

    limit = "x" * MAX_DIRECT_RESPONSE_BODY
    for status in (200, 599):
        parse_policy(http_vs({"directResponse": {"status": status, "body": {"string": limit}}}))
        assert envoy_rejection(tmp_path, envoy_config([direct(status, limit)])) is None
    for status, body in ((199, ""), (600, ""), (200, limit + "x")):
        with pytest.raises(PolicyError):
            parse_policy(http_vs({"directResponse": {"status": status, "body": {"string": body}}}))
        assert envoy_rejection(tmp_path, envoy_config([direct(status, body)]))


def test_envoy_load_balancer_limits_are_ours(tmp_path: Path) -> None:
    def accepted(lb: dict[str, Any]) -> bool:
        return (
            parse_dr(
                trafficPolicy={"loadBalancer": {"consistentHash": {"useSourceIp": True, **lb}}}
            )
            is not None
        )

    ring = {"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": MAX_RING_SIZE}}
    assert accepted({"ringHash": {"minimumRingSize": MAX_RING_SIZE}})
    assert envoy_rejection(tmp_path, envoy_config(cluster=ring)) is None
    ring["ring_hash_lb_config"] = {"minimum_ring_size": MAX_RING_SIZE + 1}
    assert envoy_rejection(tmp_path, envoy_config(cluster=ring))
    with pytest.raises(PolicyError):
        accepted({"ringHash": {"minimumRingSize": MAX_RING_SIZE + 1}})
    for size, prime in (
        (2, True),
        (65537, True),
        (MAX_MAGLEV_TABLE_SIZE, True),
        (65536, False),
        (9, False),
    ):
        maglev = {"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": size}}
        if prime:
            assert accepted({"maglev": {"tableSize": size}})
            assert envoy_rejection(tmp_path, envoy_config(cluster=maglev)) is None
        else:
            with pytest.raises(PolicyError):
                accepted({"maglev": {"tableSize": size}})
            assert "prime" in (envoy_rejection(tmp_path, envoy_config(cluster=maglev)) or "")


def test_envoy_accepts_the_longest_duration_we_accept(tmp_path: Path) -> None:
    longest = parse_duration(f"{MAX_DURATION_SECONDS}s")
    text = f"{longest:.0f}s"
    route = to_backend(
        {"prefix": "/"},
        typed_per_filter_config={
            "envoy.filters.http.fault": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                "delay": {"fixed_delay": text, "percentage": {"numerator": 1}},
            }
        },
    )
    route["route"].update(
        timeout=text,
        idle_timeout=text,
        retry_policy={"per_try_timeout": text},
        hash_policy=[{"cookie": {"name": "c", "ttl": text}}],
    )
    cluster = {
        "connect_timeout": text,
        "outlier_detection": {"interval": text, "base_ejection_time": text},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "common_http_protocol_options": {"idle_timeout": text},
                "explicit_http_config": {"http_protocol_options": {}},
            }
        },
    }
    assert envoy_rejection(tmp_path, envoy_config([route], cluster)) is None
    route["route"]["timeout"] = f"{MAX_DURATION_SECONDS + 1}s"
    assert "out-of-range" in (envoy_rejection(tmp_path, envoy_config([route], cluster)) or "")
