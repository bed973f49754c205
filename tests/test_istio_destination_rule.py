"""Istio DestinationRules parsed into the policy model: every field into its exact model
value, every rejection with its exact message and field path, and the notices."""

from __future__ import annotations

from typing import Any

import pytest

from sources.istio import parse_policy
from tests.istio_objects import NS, dr, parse_dr, rejection, top_policy
from xds_server.model import (
    ConnectionPool,
    DestinationPolicy,
    HashOn,
    LoadBalancer,
    LocalityDistribute,
    LocalityFailover,
    LocalityLb,
    OutlierDetection,
    PolicyKey,
    PortTrafficPolicy,
    Subset,
    TrafficPolicy,
)


def test_destination_rule_whole() -> None:
    obj = dr(
        {
            "trafficPolicy": {
                "loadBalancer": {"simple": "LEAST_REQUEST"},
                "connectionPool": {
                    "tcp": {"maxConnections": 100, "connectTimeout": "30ms", "idleTimeout": "1h"},
                    "http": {
                        "http1MaxPendingRequests": 1,
                        "http2MaxRequests": 2,
                        "maxRequestsPerConnection": 3,
                        "maxRetries": 4,
                        "idleTimeout": "5m",
                    },
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 7,
                    "consecutiveGatewayErrors": 0,
                    "interval": "5m",
                    "baseEjectionTime": "15m",
                    "maxEjectionPercent": 50,
                    "minHealthPercent": 0,
                },
                "portLevelSettings": [
                    {"port": {"number": 80}, "loadBalancer": {"simple": "RANDOM"}},
                    {"port": {"number": 9080}, "connectionPool": {"tcp": {"maxConnections": 10}}},
                ],
            },
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {
                    "name": "v2",
                    "labels": {"version": "v2", "app.kubernetes.io/name": "reviews"},
                    "trafficPolicy": {
                        "loadBalancer": {"simple": "ROUND_ROBIN"},
                        "portLevelSettings": [
                            {
                                "port": {"number": 80},
                                "outlierDetection": {"consecutive5xxErrors": 1},
                            }
                        ],
                    },
                },
                {"name": "all"},
            ],
        }
    )
    parsed = parse_policy(obj, origin="dr.yaml")
    assert (parsed.notices, parsed.applies) == ((), True)
    assert parsed.policy == DestinationPolicy(
        key=PolicyKey("DestinationRule", NS, "reviews-dr"),
        host="reviews",
        policy=TrafficPolicy(
            load_balancer=LoadBalancer(simple="LEAST_REQUEST"),
            connection_pool=ConnectionPool(
                max_connections=100,
                connect_timeout=0.03,
                tcp_idle_timeout=3600.0,
                http1_max_pending_requests=1,
                http2_max_requests=2,
                max_requests_per_connection=3,
                max_retries=4,
                idle_timeout=300.0,
            ),
            outlier_detection=OutlierDetection(
                consecutive_5xx_errors=7,
                consecutive_gateway_errors=0,
                interval=300.0,
                base_ejection_time=900.0,
                max_ejection_percent=50,
                min_health_percent=0,
            ),
        ),
        ports=(
            PortTrafficPolicy(80, TrafficPolicy(load_balancer=LoadBalancer(simple="RANDOM"))),
            PortTrafficPolicy(
                9080, TrafficPolicy(connection_pool=ConnectionPool(max_connections=10))
            ),
        ),
        subsets=(
            Subset("v1", (("version", "v1"),)),
            Subset(
                "v2",
                (("app.kubernetes.io/name", "reviews"), ("version", "v2")),
                TrafficPolicy(load_balancer=LoadBalancer(simple="ROUND_ROBIN")),
                (
                    PortTrafficPolicy(
                        80,
                        TrafficPolicy(outlier_detection=OutlierDetection(consecutive_5xx_errors=1)),
                    ),
                ),
            ),
            Subset("all", ()),
        ),
        origin="dr.yaml",
    )
    # Istio's merge (subset over port over top level) works on what was parsed
    merged = parsed.policy.for_port(80, "v2")  # type: ignore[union-attr]
    assert merged.load_balancer == LoadBalancer(simple="ROUND_ROBIN")
    assert merged.outlier_detection == OutlierDetection(consecutive_5xx_errors=1)


@pytest.mark.parametrize(
    ("lb", "want"),
    [
        ({"simple": "ROUND_ROBIN"}, LoadBalancer(simple="ROUND_ROBIN")),
        ({"simple": "LEAST_CONN"}, LoadBalancer(simple="LEAST_REQUEST")),  # deprecated alias
        ({"simple": "RANDOM"}, LoadBalancer(simple="RANDOM")),
        ({"simple": "UNSPECIFIED"}, None),
        ({}, None),
        (
            {"consistentHash": {"httpHeaderName": "X-User"}},
            LoadBalancer(hash=HashOn(header="x-user")),
        ),
        ({"consistentHash": {"useSourceIp": True}}, LoadBalancer(hash=HashOn(source_ip=True))),
        (
            {"consistentHash": {"httpQueryParameterName": "user"}},
            LoadBalancer(hash=HashOn(query_parameter="user")),
        ),
        (
            {"consistentHash": {"httpCookie": {"name": "session", "ttl": "0s"}}},
            LoadBalancer(hash=HashOn(cookie="session", cookie_ttl=0.0)),
        ),
        (
            {"consistentHash": {"httpCookie": {"name": "s", "path": "/app", "ttl": "1h"}}},
            LoadBalancer(hash=HashOn(cookie="s", cookie_ttl=3600.0, cookie_path="/app")),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "ringHash": {"minimumRingSize": 8_388_608}}},
            LoadBalancer(hash=HashOn(header="x"), minimum_ring_size=8_388_608),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "ringHash": {}}},
            LoadBalancer(hash=HashOn(header="x")),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "minimumRingSize": 1}},  # deprecated form
            LoadBalancer(hash=HashOn(header="x"), minimum_ring_size=1),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "maglev": {"tableSize": 65537}}},
            LoadBalancer(hash=HashOn(header="x"), maglev=True, maglev_table_size=65537),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "maglev": {"tableSize": 5_000_011}}},
            LoadBalancer(hash=HashOn(header="x"), maglev=True, maglev_table_size=5_000_011),
        ),
        (
            {"consistentHash": {"httpHeaderName": "x", "useSourceIp": False}},  # proto3 false
            LoadBalancer(hash=HashOn(header="x")),
        ),
        (
            {
                "simple": "ROUND_ROBIN",
                "localityLbSetting": {
                    "enabled": True,
                    "distribute": [
                        {
                            "from": "us-west/zone1/*",
                            "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20},
                        },
                        {"from": "us-west/zone2/*", "to": {"us-west/zone2": 100}},
                    ],
                },
            },
            LoadBalancer(
                simple="ROUND_ROBIN",
                locality=LocalityLb(
                    distribute=(
                        LocalityDistribute(
                            "us-west/zone1/*", (("us-west/zone1/*", 80), ("us-west/zone2/*", 20))
                        ),
                        LocalityDistribute("us-west/zone2/*", (("us-west/zone2", 100),)),
                    )
                ),
            ),
        ),
        (
            {
                "localityLbSetting": {
                    "failover": [
                        {"from": "us-east", "to": "eu-west"},
                        {"from": "us-west", "to": "us-east"},
                    ]
                }
            },
            LoadBalancer(
                locality=LocalityLb(
                    failover=(
                        LocalityFailover("us-east", "eu-west"),
                        LocalityFailover("us-west", "us-east"),
                    )
                )
            ),
        ),
        (
            {"localityLbSetting": {"enabled": False}},
            LoadBalancer(locality=LocalityLb(enabled=False)),
        ),
        ({"localityLbSetting": {}}, LoadBalancer(locality=LocalityLb())),
        (
            {
                "consistentHash": {"httpHeaderName": "x"},
                "localityLbSetting": {"distribute": [{"from": "*", "to": {"a": 100}}]},
            },
            LoadBalancer(
                hash=HashOn(header="x"),
                locality=LocalityLb(distribute=(LocalityDistribute("*", (("a", 100),)),)),
            ),
        ),
    ],
)
def test_load_balancer(lb: dict[str, Any], want: LoadBalancer | None) -> None:
    policy = top_policy(loadBalancer=lb)
    assert (policy.load_balancer if policy else None) == want


@pytest.mark.parametrize(
    ("pool", "want"),
    [
        ({"tcp": {"maxConnections": 0}}, None),  # Istio: 0 is unset, never a limit of 0
        ({"http": {"http2MaxRequests": 0, "maxRetries": 0}}, None),
        ({"tcp": {"idleTimeout": "0s"}}, ConnectionPool(tcp_idle_timeout=0.0)),
        (
            {"http": {"http1MaxPendingRequests": 2147483647}},
            ConnectionPool(http1_max_pending_requests=2147483647),
        ),
        ({"http": {"h2UpgradePolicy": "DEFAULT", "useClientProtocol": False}}, None),
    ],
)
def test_connection_pool(pool: dict[str, Any], want: ConnectionPool | None) -> None:
    policy = top_policy(connectionPool=pool)
    assert (policy.connection_pool if policy else None) == want


@pytest.mark.parametrize(
    ("outlier", "want"),
    [
        ({}, OutlierDetection()),
        ({"maxEjectionPercent": 0}, OutlierDetection()),  # Istio: 0 is Envoy's default
        (
            {"maxEjectionPercent": 100, "minHealthPercent": 100},
            OutlierDetection(max_ejection_percent=100, min_health_percent=100),
        ),
        ({"consecutive5xxErrors": 0}, OutlierDetection(consecutive_5xx_errors=0)),  # disabled
        (
            {"consecutiveGatewayErrors": 4294967295},
            OutlierDetection(consecutive_gateway_errors=4294967295),
        ),
        (
            {"interval": "1ms", "baseEjectionTime": "1ms"},
            OutlierDetection(interval=0.001, base_ejection_time=0.001),
        ),
    ],
)
def test_outlier_detection(outlier: dict[str, Any], want: OutlierDetection) -> None:
    policy = top_policy(outlierDetection=outlier)
    assert policy is not None and policy.outlier_detection == want


def dr_with(**spec: Any) -> dict[str, Any]:
    return dr(spec)


def tp(**traffic: Any) -> dict[str, Any]:
    return dr({"trafficPolicy": traffic})


def lb(**fields: Any) -> dict[str, Any]:
    return tp(loadBalancer=fields)


def ch(**fields: Any) -> dict[str, Any]:
    return lb(consistentHash=fields)


def loc(**fields: Any) -> dict[str, Any]:
    return lb(localityLbSetting=fields)


TP = "spec.trafficPolicy"
LB = f"{TP}.loadBalancer"
CH = f"{LB}.consistentHash"
LOC = f"{LB}.localityLbSetting"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({**dr({}), "spec": {}}, "spec.host: required"),
        (
            dr({"host": "*.example.com"}),
            "spec.host: wildcard hosts are not supported ('*.example.com')",
        ),
        (dr({"host": "Reviews"}), "spec.host: invalid host 'Reviews' (a lowercase DNS name)"),
        (dr({"hots": "x"}), 'spec.hots: unknown field "hots" (did you mean "host"?)'),
        (dr({"trafficPolicy": {}}), f"{TP}: must set at least one field"),
        (dr({"trafficPolicy": []}), f"{TP}: expected an object, got a list"),
        (
            tp(loadbalancer={}),
            f'{TP}.loadbalancer: unknown field "loadbalancer" (did you mean "loadBalancer"?)',
        ),
        # load balancer
        (lb(simple="PASSTHROUGH"), f"{LB}.simple: PASSTHROUGH is not supported"),
        (
            lb(simple="round_robin"),
            f"{LB}.simple: unknown value 'round_robin' (ROUND_ROBIN, LEAST_REQUEST, RANDOM)",
        ),
        (lb(simple=1), f"{LB}.simple: expected a string, got integer 1"),
        (
            lb(simple="RANDOM", consistentHash={"useSourceIp": True}),
            f"{LB}: only one of simple, consistentHash may be set (got simple and consistentHash)",
        ),
        (
            ch(),
            f"{CH}: one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is "
            "required",
        ),
        (
            ch(useSourceIp=False),
            f"{CH}: one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName is "
            "required",
        ),
        (
            ch(httpHeaderName="x", useSourceIp=True),
            f"{CH}: only one of httpHeaderName, httpCookie, useSourceIp, httpQueryParameterName "
            "may "
            "be set (got httpHeaderName and useSourceIp)",
        ),
        (ch(httpHeaderName=""), f"{CH}.httpHeaderName: header name must not be empty"),
        (ch(httpHeaderName="x y"), f"{CH}.httpHeaderName: invalid header name 'x y'"),
        (ch(httpQueryParameterName=""), f"{CH}.httpQueryParameterName: must not be empty"),
        (ch(httpCookie={}), f"{CH}.httpCookie.name: required"),
        (ch(httpCookie={"name": "a;b"}), f"{CH}.httpCookie.name: invalid cookie name 'a;b'"),
        (
            ch(httpCookie={"name": "a", "ttl": "-1s"}),
            f"{CH}.httpCookie.ttl: negative duration '-1s'",
        ),
        (
            ch(httpCookie={"name": "a", "path": "/\n"}),
            f"{CH}.httpCookie.path: contains a NUL, CR or LF character",
        ),
        (
            ch(httpHeaderName="x", ringHash={"minimumRingSize": 8_388_609}),
            f"{CH}.ringHash.minimumRingSize: 8388609 is outside 0-8388608",
        ),
        (
            ch(httpHeaderName="x", minimumRingSize=-1),
            f"{CH}.minimumRingSize: -1 is outside 0-8388608",
        ),
        (
            ch(httpHeaderName="x", ringHash={}, maglev={"tableSize": 7}),
            f"{CH}: only one of ringHash, maglev may be set (got ringHash and maglev)",
        ),
        (
            ch(httpHeaderName="x", ringHash={}, minimumRingSize=1024),
            f"{CH}.minimumRingSize: cannot be combined with ringHash; use ringHash",
        ),
        (ch(httpHeaderName="x", maglev={}), f"{CH}.maglev.tableSize: required"),
        (
            ch(httpHeaderName="x", maglev={"tableSize": 65536}),
            f"{CH}.maglev.tableSize: 65536 is not a prime number",
        ),
        (
            ch(httpHeaderName="x", maglev={"tableSize": 1}),
            f"{CH}.maglev.tableSize: 1 is not a prime number",
        ),
        (
            ch(httpHeaderName="x", maglev={"tableSize": 5_000_017}),
            f"{CH}.maglev.tableSize: 5000017 is outside 1-5000011",
        ),
        # locality
        (
            loc(distribute=[{"from": "a", "to": {"a": 100}}], failover=[{"from": "a", "to": "b"}]),
            f"{LOC}: distribute and failover cannot both be set",
        ),
        (loc(distribute=[{"to": {"a": 100}}]), f"{LOC}.distribute[0].from: required"),
        (
            loc(distribute=[{"from": "a", "to": {"a": 50, "b": 40}}]),
            f"{LOC}.distribute[0].to: weights add up to 90, not 100",
        ),
        (
            loc(distribute=[{"from": "a", "to": {"a": 0, "b": 100}}]),
            f"{LOC}.distribute[0].to.a: 0 is outside 1-100",
        ),
        (
            loc(distribute=[{"from": "a", "to": {}}]),
            f"{LOC}.distribute[0].to: weights add up to 0, not 100",
        ),
        (
            loc(distribute=[{"from": "us-*", "to": {"a": 100}}]),
            f"{LOC}.distribute[0].from: invalid locality 'us-*' (no empty parts; '*' only as the "
            "last "
            "part)",
        ),
        (
            loc(distribute=[{"from": "a//b", "to": {"a": 100}}]),
            f"{LOC}.distribute[0].from: invalid locality 'a//b' (no empty parts; '*' only as the "
            "last "
            "part)",
        ),
        (
            loc(distribute=[{"from": "a/b/c/d", "to": {"a": 100}}]),
            f"{LOC}.distribute[0].from: invalid locality 'a/b/c/d' (region/zone/subzone)",
        ),
        (
            loc(distribute=[{"from": "a", "to": {"a/b": 50, "a/*": 50}}]),
            f'{LOC}.distribute[0].to["a/*"]: locality a overlaps a/b',
        ),
        (
            loc(distribute=[{"from": "a/*", "to": {"x": 100}}, {"from": "a/b", "to": {"x": 100}}]),
            f"{LOC}.distribute[1].from: locality a/b overlaps a",
        ),
        (
            loc(distribute=[{"from": "*", "to": {"x": 100}}, {"from": "b", "to": {"x": 100}}]),
            f"{LOC}.distribute[1].from: locality b overlaps *",
        ),
        (loc(failover=[{"from": "a"}]), f"{LOC}.failover[0].to: required"),
        (
            loc(failover=[{"from": "a", "to": "a"}]),
            f"{LOC}.failover[0]: from and to must be different regions",
        ),
        (
            loc(failover=[{"from": "a/z", "to": "b"}]),
            f"{LOC}.failover[0].from: 'a/z' is not a region (no '/' or '*')",
        ),
        (
            loc(failover=[{"from": "a", "to": "*"}]),
            f"{LOC}.failover[0].to: '*' is not a region (no '/' or '*')",
        ),
        (loc(enabled="true"), f"{LOC}.enabled: expected a boolean, got string 'true'"),
        # connection pool
        (tp(connectionPool={}), f"{TP}.connectionPool: one of tcp, http is required"),
        (
            tp(connectionPool={"tcp": {"maxConnections": -1}}),
            f"{TP}.connectionPool.tcp.maxConnections: -1 is outside 0-2147483647",
        ),
        (
            tp(connectionPool={"tcp": {"connectTimeout": "0s"}}),
            f"{TP}.connectionPool.tcp.connectTimeout: duration '0s' is shorter than 1ms",
        ),
        (
            tp(connectionPool={"tcp": {"idleTimeout": "0.1ms"}}),
            f"{TP}.connectionPool.tcp.idleTimeout: duration '0.1ms' is shorter than 1ms",
        ),
        (
            tp(connectionPool={"http": {"idleTimeout": "0s"}}),
            f"{TP}.connectionPool.http.idleTimeout: duration '0s' is shorter than 1ms",
        ),
        (
            tp(connectionPool={"http": {"http2MaxRequests": "1"}}),
            f"{TP}.connectionPool.http.http2MaxRequests: expected an integer, got string '1'",
        ),
        (
            tp(connectionPool={"http": {"maxRequestsPerConnection": -1}}),
            f"{TP}.connectionPool.http.maxRequestsPerConnection: -1 is outside 0-2147483647",
        ),
        (
            tp(connectionPool={"http": {"http1MaxPendingRequest": 1}}),
            f"{TP}.connectionPool.http.http1MaxPendingRequest: unknown field "
            '"http1MaxPendingRequest" (did you mean "http1MaxPendingRequests"?)',
        ),
        # outlier detection
        (
            tp(outlierDetection={"consecutive5xxErrors": -1}),
            f"{TP}.outlierDetection.consecutive5xxErrors: -1 is outside 0-4294967295",
        ),
        (
            tp(outlierDetection={"consecutiveGatewayErrors": 2**32}),
            f"{TP}.outlierDetection.consecutiveGatewayErrors: 4294967296 is outside 0-4294967295",
        ),
        (
            tp(outlierDetection={"interval": "0s"}),
            f"{TP}.outlierDetection.interval: duration '0s' is shorter than 1ms",
        ),
        (
            tp(outlierDetection={"baseEjectionTime": "1"}),
            f"""{TP}.outlierDetection.baseEjectionTime: invalid duration '1' (for example """
            """"1.5s", """
            """"100ms", "1m")""",
        ),
        (
            tp(outlierDetection={"maxEjectionPercent": 101}),
            f"{TP}.outlierDetection.maxEjectionPercent: 101 is outside 0-100",
        ),
        (
            tp(outlierDetection={"minHealthPercent": -1}),
            f"{TP}.outlierDetection.minHealthPercent: -1 is outside 0-100",
        ),
        # port level settings
        (
            tp(portLevelSettings=[{"loadBalancer": {"simple": "RANDOM"}}]),
            f"{TP}.portLevelSettings[0].port: required",
        ),
        (
            tp(portLevelSettings=[{"port": {"number": 80}}]),
            f"{TP}.portLevelSettings[0]: one of loadBalancer, connectionPool, outlierDetection, "
            "tls "
            "is required",
        ),
        (
            tp(portLevelSettings=[{"port": {"number": 80}, "tls": {}, "portLevelSettings": []}]),
            f'{TP}.portLevelSettings[0].portLevelSettings: unknown field "portLevelSettings"',
        ),
        (
            tp(
                portLevelSettings=[
                    {"port": {"number": 80}, "loadBalancer": {"simple": "RANDOM"}},
                    {"port": {"number": 80}, "tls": {}},
                ]
            ),
            f"{TP}.portLevelSettings[1].port: duplicate port 80",
        ),
        (
            tp(
                portLevelSettings=[{"port": {"number": 80}, "outlierDetection": {"interval": "0s"}}]
            ),
            f"{TP}.portLevelSettings[0].outlierDetection.interval: duration '0s' is shorter than "
            "1ms",
        ),
        # subsets
        (dr({"subsets": [{"labels": {"v": "1"}}]}), "spec.subsets[0].name: required"),
        (
            dr({"subsets": [{"name": "V1"}]}),
            "spec.subsets[0].name: invalid subset name 'V1' (a lowercase DNS label)",
        ),
        (
            dr({"subsets": [{"name": "v1.0"}]}),
            "spec.subsets[0].name: invalid subset name 'v1.0' (a lowercase DNS label)",
        ),
        (
            dr({"subsets": [{"name": "v1"}, {"name": "v1"}]}),
            "spec.subsets[1].name: duplicate subset name 'v1'",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"version": 1}}]}),
            "spec.subsets[0].labels.version: expected a string, got integer 1",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"bad key": "x"}}]}),
            """spec.subsets[0].labels["bad key"]: invalid label key 'bad key'""",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"Example.com/x": "x"}}]}),
            """spec.subsets[0].labels["Example.com/x"]: invalid label key 'Example.com/x'""",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"v": "a b"}}]}),
            "spec.subsets[0].labels.v: invalid label value 'a b'",
        ),
        (
            dr({"subsets": [{"name": "v1", "labels": {"v": "x" * 64}}]}),
            f"spec.subsets[0].labels.v: invalid label value '{'x' * 64}'",
        ),
        (
            dr({"subsets": [{"name": "v1", "trafficPolicy": {}}]}),
            "spec.subsets[0].trafficPolicy: must set at least one field",
        ),
        (
            dr({"subsets": [{"name": "v1", "trafficPolicy": {"loadBalancer": {"simple": "X"}}}]}),
            "spec.subsets[0].trafficPolicy.loadBalancer.simple: unknown value 'X' (ROUND_ROBIN, "
            "LEAST_REQUEST, "
            "RANDOM)",
        ),
        (
            dr(
                {
                    "subsets": [
                        {
                            "name": "v1",
                            "trafficPolicy": {
                                "portLevelSettings": [{"port": {"number": 0}, "tls": {}}]
                            },
                        }
                    ]
                }
            ),
            "spec.subsets[0].trafficPolicy.portLevelSettings[0].port.number: 0 is outside 1-65535",
        ),
        (dr({"subsets": {"v1": {}}}), "spec.subsets: expected a list, got an object"),
    ],
)
def test_destination_rule_rejections(obj: dict[str, Any], message: str) -> None:
    assert rejection(obj) == message


def test_destination_rule_notices() -> None:
    obj = dr(
        {
            "exportTo": ["."],
            "trafficPolicy": {
                "tls": {"mode": "ISTIO_MUTUAL"},
                "tunnel": {"targetHost": "x", "targetPort": 1},
                "proxyProtocol": {"version": "V2"},
                "retryBudget": {"percent": 20},
                "loadBalancer": {
                    "simple": "ROUND_ROBIN",
                    "warmupDurationSecs": "60s",
                    "localityLbSetting": {"failoverPriority": ["topology.kubernetes.io/region"]},
                },
                "connectionPool": {
                    "tcp": {"tcpKeepalive": {"time": "7200s"}, "maxConnectionDuration": "1h"},
                    "http": {
                        "h2UpgradePolicy": "UPGRADE",
                        "useClientProtocol": True,
                        "maxConcurrentStreams": 5,
                    },
                },
                "outlierDetection": {
                    "consecutiveErrors": 5,
                    "splitExternalLocalOriginErrors": True,
                },
                "portLevelSettings": [{"port": {"number": 443}, "tls": {"mode": "SIMPLE"}}],
            },
            "subsets": [
                {
                    "name": "v1",
                    "trafficPolicy": {
                        "loadBalancer": {
                            "consistentHash": {
                                "httpCookie": {"name": "c", "attributes": [{"name": "SameSite"}]}
                            }
                        }
                    },
                }
            ],
        }
    )
    parsed = parse_policy(obj)
    assert parsed.applies
    assert [str(n) for n in parsed.notices] == [
        "spec.exportTo: not supported; ignored",
        f"{TP}.tls: not supported; ignored",
        f"{TP}.tunnel: not supported; ignored",
        f"{TP}.proxyProtocol: not supported; ignored",
        f"{TP}.retryBudget: not supported; ignored",
        f"{TP}.portLevelSettings[0].tls: not supported; ignored",
        f"{LB}.warmupDurationSecs: not supported; ignored",
        f"{LOC}.failoverPriority: not supported; ignored",
        f"{TP}.connectionPool.tcp.tcpKeepalive: not supported; ignored",
        f"{TP}.connectionPool.tcp.maxConnectionDuration: not supported; ignored",
        f"{TP}.connectionPool.http.h2UpgradePolicy: not supported; ignored",
        f"{TP}.connectionPool.http.useClientProtocol: not supported; ignored",
        f"{TP}.connectionPool.http.maxConcurrentStreams: not supported; ignored",
        f"{TP}.outlierDetection.consecutiveErrors: not supported; ignored",
        f"{TP}.outlierDetection.splitExternalLocalOriginErrors: not supported; ignored",
        "spec.subsets[0].trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes: not "
        "supported; "
        "ignored",
    ]
    policy = parsed.policy
    assert isinstance(policy, DestinationPolicy)
    assert policy.policy == TrafficPolicy(
        load_balancer=LoadBalancer(simple="ROUND_ROBIN", locality=LocalityLb()),
        outlier_detection=OutlierDetection(),
    )
    assert policy.ports == (PortTrafficPolicy(443, TrafficPolicy()),)
    assert policy.subsets == (
        Subset("v1", (), TrafficPolicy(load_balancer=LoadBalancer(hash=HashOn(cookie="c")))),
    )


def test_tls_only_traffic_policy_is_none() -> None:
    assert parse_dr(trafficPolicy={"tls": {"mode": "DISABLE"}}).policy is None


def test_workload_selector_destination_rule_applies_to_nothing() -> None:
    obj = dr(
        {
            "workloadSelector": {"matchLabels": {"app": "web"}},
            "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}],
        }
    )
    parsed = parse_policy(obj, "x")
    assert not parsed.applies
    assert parsed.policy == DestinationPolicy(
        PolicyKey("DestinationRule", NS, "reviews-dr"), "reviews", origin="x"
    )
    assert [str(n) for n in parsed.notices] == [
        "spec.workloadSelector: applies only to the selected workloads; selecting workloads is "
        "not supported, so it is not applied"
    ]
    # still validated whole
    obj["spec"]["subsets"][0]["name"] = "V1"
    assert (
        rejection(obj) == "spec.subsets[0].name: invalid subset name 'V1' (a lowercase DNS label)"
    )
