"""The discovery chain compiled as Consul compiles it, into policies the existing
resolver (`translators.policy_resolve`) accepts against a catalog the Consul source
built: the cases of issue 11 and Consul's refusals with their reasons."""

from __future__ import annotations

from typing import Any

from sources.consul_config import (
    CHAIN_KIND,
    RESOLVER_KIND,
    Compiled,
    integer_weights,
    upstream_config,
)
from sources.consul_config.entries import parse_entry
from sources.consul_config.kinds import ServiceDefaults
from sources.istio.report import Context
from tests.consul_entries import (
    catalog,
    compiled,
    defaults,
    instance,
    key,
    policy_object,
    resolver,
    router,
    splitter,
    versions,
)
from translators.policy_clusters import subset_endpoints
from translators.policy_resolve import resolve_policies
from xds_server.model import (
    ConnectionPool,
    Destination,
    DestinationPolicy,
    OutlierDetection,
    RoutePolicy,
    ServiceFailover,
    StringMatch,
    TcpRule,
    WeightedDestination,
)


def chain(result: Compiled, name: str) -> RoutePolicy:
    policy = policy_object(result, CHAIN_KIND, name).policy
    assert isinstance(policy, RoutePolicy), policy_object(result, CHAIN_KIND, name).error
    return policy


def chain_error(result: Compiled, name: str) -> str:
    obj = policy_object(result, CHAIN_KIND, name)
    assert obj.policy is None, obj.policy
    return obj.error


def destination(result: Compiled, name: str) -> DestinationPolicy:
    policy = policy_object(result, RESOLVER_KIND, name).policy
    assert isinstance(policy, DestinationPolicy)
    return policy


def split(name: str, subset: str, weight: int) -> WeightedDestination:
    return WeightedDestination(Destination(name, "default", subset=subset), weight)


WEB = catalog(
    web=[
        instance("web", "10.0.0.1", meta={"version": "v1"}),
        instance("web", "10.0.0.2", meta={"version": "v2"}, tags=["canary"]),
    ],
    admin=[instance("admin", "10.0.1.1")],
    backup=[instance("backup", "10.0.2.1")],
)


def test_splitter_90_10_between_resolver_subsets_by_meta_version() -> None:
    result = compiled(
        defaults("web"),
        resolver("web", Subsets=versions("v1", "v2")),
        splitter(
            "web", {"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}
        ),
    )
    (rule,) = chain(result, "web").http
    assert rule.matches == ()
    assert rule.destinations == (split("web", "v1", 9000), split("web", "v2", 1000))
    resolution = resolve_policies(WEB, result.policies, {})
    assert {s.state for s in resolution.statuses} == {"ACCEPTED"}, resolution.statuses
    served = resolution.services[key("web")]
    assert served.subsets == ((8080, "v1"), (8080, "v2"))
    # The Filter selects the instances Consul would: the labels the Consul source gives.
    v2 = destination(result, "web").subset("v2")
    assert v2 is not None
    assert [e.ip for e in subset_endpoints(WEB[key("web")].endpoints, v2.labels)] == ["10.0.0.2"]


def test_router_sends_admin_to_another_service_then_the_implicit_catch_all() -> None:
    result = compiled(
        defaults("web"),
        defaults("admin"),
        router(
            "web",
            {"Match": {"HTTP": {"PathPrefix": "/admin"}}, "Destination": {"Service": "admin"}},
        ),
    )
    admin, catch_all = chain(result, "web").http
    assert admin.matches[0].uri == StringMatch("prefix", "/admin")
    assert admin.destinations == (split("admin", "", 10000),)
    assert catch_all.matches == () and catch_all.destinations == (split("web", "", 10000),)
    served = resolve_policies(WEB, result.policies, {}).services[key("web")]
    assert served.depends == (key("admin"),)


def test_failover_to_another_service_through_its_own_resolver() -> None:
    result = compiled(
        defaults("web"),
        defaults("backup"),
        defaults("spare"),
        resolver(
            "web",
            Subsets=versions("v1"),
            Failover={
                "*": {"Targets": [{"Service": "backup"}, {"Service": "spare"}]},
                "v1": {"ServiceSubset": "v1", "Service": "web"},
            },
        ),
        # Consul resolves a failover target as any target: redirect, then default subset.
        resolver("spare", Redirect={"Service": "backup", "ServiceSubset": "v2"}),
        resolver("backup", Subsets=versions("v2")),
    )
    assert destination(result, "web").failover == (
        ServiceFailover(
            "",
            (Destination("backup", "default"), Destination("backup", "default", subset="v2")),
        ),
        ServiceFailover("v1", (Destination("web", "default", subset="v1"),)),
    )
    bad = compiled(
        defaults("web"),
        defaults("backup"),
        resolver("web", Failover={"*": {"Service": "backup", "ServiceSubset": "v9"}}),
    )
    assert policy_object(bad, RESOLVER_KIND, "web").error == (
        "consul discovery chain web: service-resolver/web: Failover['*']: service 'backup' "
        "does not have a subset named 'v9' (no service-resolver/backup defines subsets)"
    )
    mixed = compiled(defaults("web"), resolver("web", Failover={"*": {"Service": "db"}}))
    assert (
        "'web' is 'http' but its target 'db' is 'tcp'"
        in policy_object(mixed, RESOLVER_KIND, "web").error
    )


def test_circular_redirect_is_rejected_and_the_last_good_chain_stays() -> None:
    good = compiled(
        defaults("web"), defaults("admin"), resolver("web", Redirect={"Service": "admin"})
    )
    assert chain(good, "web").http[0].destinations == (split("admin", "", 10000),)
    before = resolve_policies(WEB, good.policies, {}).accepted
    bad = compiled(
        defaults("web"),
        defaults("admin"),
        resolver("web", Redirect={"Service": "admin"}),
        resolver("admin", Redirect={"Service": "web"}),
    )
    assert chain_error(bad, "web") == (
        "consul discovery chain web: service-resolver/admin: Redirect: "
        "detected circular resolver redirect: web -> admin -> web"
    )
    resolution = resolve_policies(WEB, bad.policies, before)
    status = next(
        s for s in resolution.statuses if s.key.name == "web" and s.key.kind == CHAIN_KIND
    )
    assert status.state == "REJECTED"
    assert "detected circular resolver redirect" in status.reasons[0]
    assert status.reasons[-1] == "serving its last valid version (consul discovery chain web)"
    assert resolution.services[key("web")].routing == chain(good, "web")


def test_nested_splitters_are_flattened_by_multiplying_weights() -> None:
    result = compiled(
        defaults("web"),
        defaults("api"),
        resolver("web", Subsets=versions("v1")),
        resolver("api", Subsets=versions("v1", "v2")),
        splitter("web", {"Weight": 50, "ServiceSubset": "v1"}, {"Weight": 50, "Service": "api"}),
        splitter(
            "api",
            {"Weight": 33.33, "ServiceSubset": "v1"},
            {"Weight": 66.67, "ServiceSubset": "v2"},
        ),
    )
    (rule,) = chain(result, "web").http
    # 50 % x 33.33 % = 16.665 %, 50 % x 66.67 % = 33.335 %: rounded (a tie goes to the
    # first), summing to 100 %.
    assert rule.destinations == (
        split("web", "v1", 5000),
        split("api", "v1", 1667),
        split("api", "v2", 3333),
    )
    assert sum(d.weight for d in rule.destinations) == 10000


def test_integer_weights_keep_the_sum() -> None:
    from fractions import Fraction

    assert integer_weights([Fraction(1, 3)] * 3) == [3334, 3333, 3333]
    assert integer_weights([Fraction(1)]) == [10000]


def test_circular_split_is_rejected() -> None:
    result = compiled(
        defaults("web"),
        defaults("api"),
        splitter("web", {"Weight": 100, "Service": "api"}),
        splitter("api", {"Weight": 100, "Service": "web"}),
    )
    assert chain_error(result, "web") == (
        "consul discovery chain web: service-splitter/api: Splits[0]: detected circular "
        "reference: service-splitter/web -> service-splitter/api -> service-splitter/web"
    )


def test_mixed_protocols_are_rejected() -> None:
    result = compiled(
        defaults("web"),
        defaults("db", "tcp"),
        router("web", {"Match": {"HTTP": {"PathPrefix": "/db"}}, "Destination": {"Service": "db"}}),
    )
    assert chain_error(result, "web") == (
        "consul discovery chain web: service-router/web: Routes[0].Destination: discovery "
        "chain 'web' uses inconsistent protocols: 'web' is 'http' but its target 'db' is 'tcp'"
    )


def test_router_or_splitter_on_a_tcp_service_is_rejected() -> None:
    for entry in (router("db", {}), splitter("db", {"Weight": 100})):
        error = chain_error(compiled(defaults("db", "tcp"), entry), "db")
        assert (
            f"{entry['Kind']}/db: does not permit advanced routing or splitting behavior" in error
        )
    # Nothing sets a protocol: Consul's default, tcp (service meta counts when set).
    assert "with protocol 'tcp'" in chain_error(compiled(router("web", {})), "web")
    assert chain(compiled(router("web", {}), meta={"web": "http"}), "web").http


def test_unknown_subset_is_rejected() -> None:
    result = compiled(
        defaults("web"),
        resolver("web", Subsets=versions("v1")),
        splitter("web", {"Weight": 100, "ServiceSubset": "v3"}),
    )
    assert chain_error(result, "web") == (
        "consul discovery chain web: service-splitter/web: Splits[0]: service 'web' does not "
        "have a subset named 'v3' (service-resolver/web defines: v1)"
    )


def test_redirect_then_default_subset_and_resolver_request_timeout() -> None:
    result = compiled(
        defaults("web"),
        defaults("api"),
        resolver("web", Redirect={"Service": "api"}),
        resolver("api", DefaultSubset="v2", Subsets=versions("v1", "v2"), RequestTimeout="7s"),
        router(
            "web",
            {"Match": {"HTTP": {"PathExact": "/slow"}}, "Destination": {"RequestTimeout": "30s"}},
        ),
    )
    slow, catch_all = chain(result, "web").http
    assert slow.destinations == catch_all.destinations == (split("api", "v2", 10000),)
    assert (slow.timeout, catch_all.timeout) == (30.0, 7.0)


def test_a_chain_needing_an_invalid_entry_fails_so_its_last_good_version_stays() -> None:
    result = compiled(
        defaults("web"), resolver("web", Subsets={"v1": {"Filter": "Node.Meta.x == y"}})
    )
    assert chain_error(result, "web") == (
        "consul discovery chain web: service-resolver/web is invalid (see its own status)"
    )
    (entry,) = [e for e in result.entries if e.key.kind == "service-resolver"]
    assert "Subsets.v1.Filter: unsupported filter" in entry.error


def test_protocol_precedence_service_defaults_then_proxy_defaults_then_meta() -> None:
    proxy = {"Kind": "proxy-defaults", "Name": "global", "Config": {"protocol": "http2"}}
    result = compiled(
        defaults("web", "grpc"), proxy, router("api", {}), meta={"api": "http", "x": "http"}
    )
    assert dict(result.protocols) == {key("web"): "grpc", key("api"): "http2", key("x"): "http2"}
    assert dict(compiled(meta={"x": "http"}).protocols) == {}


def test_tcp_chain_with_a_resolver_is_a_tcp_rule() -> None:
    result = compiled(
        defaults("db", "tcp"), resolver("db", DefaultSubset="v1", Subsets=versions("v1"))
    )
    policy = chain(result, "db")
    assert policy.http == () and policy.tcp == (TcpRule((split("db", "v1", 10000),)),)


def test_upstream_config_defaults_then_overrides_and_connect_timeout() -> None:
    ctx = Context()
    caller = parse_entry(
        defaults(
            "web",
            UpstreamConfig={
                "Defaults": {"Limits": {"MaxConnections": 10}, "ConnectTimeoutMs": 1000},
                "Overrides": [
                    {
                        "Name": "api",
                        "Limits": {"MaxConnections": 3},
                        "PassiveHealthCheck": {"MaxFailures": 2},
                    }
                ],
            },
        ),
        ctx,
    )
    assert isinstance(caller, ServiceDefaults)
    api = upstream_config(caller, "api")
    assert api is not None
    assert api.pool == ConnectionPool(max_connections=3, connect_timeout=1.0)
    assert api.outlier == OutlierDetection(consecutive_5xx_errors=2)
    other = upstream_config(caller, "other")
    assert other is not None and other.pool == ConnectionPool(
        max_connections=10, connect_timeout=1.0
    )
    result = compiled(
        {"Kind": "service-defaults", "Name": "web", "UpstreamConfig": {
            "Overrides": [{"Name": "api", "Limits": {"MaxConnections": 3}}]}},
        resolver("api", ConnectTimeout="2s"),
    )  # fmt: skip
    traffic = destination(result, "api").policy
    assert traffic is not None
    assert traffic.connection_pool == ConnectionPool(max_connections=3, connect_timeout=2.0)


def test_a_route_to_a_service_the_catalog_lacks_is_reported_in_consul_terms() -> None:
    result = compiled(
        defaults("web"),
        defaults("gone"),
        router(
            "web", {"Match": {"HTTP": {"PathPrefix": "/g"}}, "Destination": {"Service": "gone"}}
        ),
    )
    resolution = resolve_policies(WEB, result.policies, {})
    (status,) = [s for s in resolution.statuses if s.key.kind == CHAIN_KIND]
    assert status.reasons == (
        "consul discovery chain web: discovery-chain default/web: service-router/web "
        "Routes[0].Destination: destination host 'gone' names no service",
    )


def test_an_unexpected_error_costs_one_entry_or_one_chain(monkeypatch: Any) -> None:
    from sources.consul_config import chain as chain_module
    from sources.consul_config import entries as entries_module

    def broken_router(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(entries_module, "parse_router", broken_router)
    original = chain_module.ChainCompiler.compile

    def compile_but_api(self: Any, service: Any) -> Any:
        if service.name == "api":
            raise RuntimeError("chain bug")
        return original(self, service)

    monkeypatch.setattr(chain_module.ChainCompiler, "compile", compile_but_api)
    result = compiled(
        defaults("web"), defaults("api"), router("web", {}), resolver("api"), resolver("admin")
    )
    assert policy_object(result, "service-router", "web").error == (
        "consul config entry service-router/web: internal error: RuntimeError: bug"
    )
    assert chain_error(result, "api") == (
        "consul discovery chain api: internal error: RuntimeError: chain bug"
    )
    assert chain(result, "admin").tcp  # the others are compiled


def test_shared_clusters_take_the_first_callers_override_else_the_first_defaults() -> None:
    def caller(name: str, upstream: dict[str, Any]) -> dict[str, Any]:
        return {"Kind": "service-defaults", "Name": name, "UpstreamConfig": upstream}

    def limit(n: int) -> dict[str, Any]:
        return {"Limits": {"MaxConnections": n}}

    result = compiled(
        caller("b", {"Defaults": limit(10), "Overrides": [{"Name": "api", **limit(7)}]}),
        caller("a", {"Overrides": [{"Name": "api", **limit(3)}]}),
        caller("c", {"Defaults": limit(99)}),
        meta={"api": "http", "x": "http"},
    )

    def pool(name: str) -> ConnectionPool | None:
        traffic = destination(result, name).policy
        return traffic.connection_pool if traffic else None

    assert pool("api") == ConnectionPool(max_connections=3)  # a's override, before b's
    assert pool("x") == ConnectionPool(max_connections=10)  # b's Defaults, before c's
