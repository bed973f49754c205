"""Compiled discovery chains go through the existing resolver and renderers unchanged,
and the real Envoy accepts what they render (``envoy --mode validate`` on the
translation as static resources): a chain using every supported field, and generated
chains (hypothesis), which also keep Consul's invariants (weights sum to 100 %, every
subset a route names is defined, a refused chain says why)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sources.consul_config import Compiled
from tests.consul_entries import (
    catalog,
    compiled,
    defaults,
    every_field_entries,
    instance,
    resolver,
    router,
    splitter,
    static_translation,
    versions,
)
from tests.harness.envoy import validate_bootstrap
from tests.harness.ports import free_port
from translators import ProxyGroup
from xds_server.model import HttpRule, RoutePolicy, TcpRule

SERVICES = ("web", "api", "admin", "backup")
CATALOG = catalog(
    **{
        name: [
            instance(name, f"10.0.{i}.1", meta={"version": "v1"}),
            instance(name, f"10.0.{i}.2", meta={"version": "v2"}, tags=["canary"]),
        ]
        for i, name in enumerate(SERVICES)
    }
)


def envoy_accepts(result: Compiled, tmp_path: Path) -> dict[str, Any]:
    """Resolve and translate `result` for an Envoy proxy; Envoy validates it. Returns the
    static resources."""
    static = static_translation(CATALOG, result, ProxyGroup())
    admin = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}}
    validate_bootstrap(
        {"node": {"id": "v", "cluster": "v"}, "static_resources": static, "admin": admin},
        tmp_path,
    )
    return static


def web_routes(static: dict[str, Any]) -> list[dict[str, Any]]:
    for listener in static["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                for vhost in f["typed_config"].get("route_config", {}).get("virtual_hosts", []):
                    if "web.default" in "".join(vhost["domains"]):
                        return list(vhost["routes"])
    raise AssertionError("no virtual host for web")


def test_envoy_accepts_a_chain_using_every_supported_field(tmp_path: Path) -> None:
    result = compiled(*every_field_entries())
    assert not [e.error for e in result.entries if e.error]
    assert not [p.error for p in result.policies if p.error]
    static = envoy_accepts(result, tmp_path)
    routes = web_routes(static)
    weighted = routes[-1]["route"]["weighted_clusters"]["clusters"]
    # web fails over to backup, whose resolver redirects to admin: Consul's target is admin.
    assert [(c["name"], c["weight"]) for c in weighted] == [
        ("web.default:8080|v1/failover", 9000),
        ("api.default:8080|v1", 333),
        ("api.default:8080|v2", 667),
    ]
    aggregates = {
        c["name"]: c["cluster_type"]["typed_config"]["clusters"]
        for c in static["clusters"]
        if "cluster_type" in c
    }
    assert aggregates == {  # Failover "*": every subset of web a route uses
        "web.default:8080|v1/failover": ["web.default:8080|v1", "admin.default:8080"],
        "web.default:8080|v2/failover": ["web.default:8080|v2", "admin.default:8080"],
    }


# -- generated chains ------------------------------------------------------------------

NAMES = SERVICES[:3]
WEIGHTS = st.integers(0, 10000)


@st.composite
def splits(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 3)) if draw(st.integers(0, 4)) == 0 else draw(st.integers(2, 3))
    cuts = sorted(draw(st.lists(WEIGHTS, min_size=n - 1, max_size=n - 1)))
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, 10000], strict=True)]
    out = []
    for part in parts:
        split: dict[str, Any] = {"Weight": part / 100}
        service = draw(st.sampled_from(("", "", "", *NAMES)))
        if service:
            split["Service"] = service
        subset = draw(st.sampled_from(("", "", "v1", "v2", "v1", "v2", "v3")))
        if subset:
            split["ServiceSubset"] = subset
        out.append(split)
    return out


@st.composite
def chains(draw: st.DrawFn) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = [
        defaults(s, draw(st.sampled_from(("http",) * 9 + ("tcp",)))) for s in NAMES
    ]
    for name in NAMES:
        if draw(st.integers(0, 4)) > 0:  # most services have a resolver: subsets resolve
            choices: tuple[tuple[str, ...], ...] = (("v1", "v2"),) * 6 + (("v1",), ())
            subsets = versions(*draw(st.sampled_from(choices)))
            fields: dict[str, Any] = {"Subsets": subsets}
            if draw(st.booleans()) and subsets:
                fields["DefaultSubset"] = draw(st.sampled_from(sorted(subsets)))
            if draw(st.integers(0, 3)) == 0:
                fields = {
                    "Redirect": {"Service": draw(st.sampled_from([n for n in NAMES if n != name]))}
                }
            fields["LoadBalancer"] = draw(
                st.sampled_from(
                    (
                        {"Policy": "round_robin"},
                        {"Policy": "random"},
                        {"Policy": "ring_hash", "HashPolicies": [{"SourceIP": True}]},
                        {
                            "Policy": "maglev",
                            "HashPolicies": [{"Field": "query_parameter", "FieldValue": "u"}],
                        },
                    )
                )
            )
            entries.append(resolver(name, **fields))
        if draw(st.booleans()):
            entries.append(splitter(name, *draw(splits())))
        if draw(st.booleans()):
            route = {
                "Match": {"HTTP": {"PathPrefix": "/" + draw(st.sampled_from(("a", "b", "")))}},
                "Destination": {
                    k: v
                    for k, v in (
                        ("Service", draw(st.sampled_from(("", *NAMES)))),
                        ("ServiceSubset", draw(st.sampled_from(("", "v1", "v2")))),
                    )
                    if v
                },
            }
            entries.append(router(name, route))
    return entries


REASONS = (
    "circular",
    "does not have a subset",
    "inconsistent protocols",
    "does not permit advanced routing",
)


@settings(
    max_examples=60,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(chains())
def test_generated_chains_keep_consul_invariants_and_envoy_accepts_them(
    tmp_path: Path, entries: list[dict[str, Any]]
) -> None:
    result = compiled(*entries)
    assert not [e.error for e in result.entries if e.error]
    for obj in result.policies:
        if obj.error:
            assert any(r in obj.error for r in REASONS), obj.error
            continue
        if isinstance(obj.policy, RoutePolicy):
            rules: list[HttpRule | TcpRule] = [*obj.policy.http, *obj.policy.tcp]
            for rule in rules:
                assert sum(d.weight for d in rule.destinations) == 10000
    static = envoy_accepts(result, tmp_path)
    names = {c["name"] for c in static["clusters"]}
    for cluster in static["clusters"]:
        for member in cluster.get("cluster_type", {}).get("typed_config", {}).get("clusters", []):
            assert member in names  # an aggregate's members are all there
