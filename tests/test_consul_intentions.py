"""Consul service-intentions → AuthorizationPolicies: precedence (exact over wildcard, the
destination's entry over ``*``), L7 permissions in order, the default (allow, or Consul's
default deny), refusals with their field; and the config entries watch serving them
from the Consul emulator."""

from __future__ import annotations

from typing import Any

import pytest

from sources.consul_config import compile_intentions
from sources.consul_config.intentions import DEFAULT_DENY_ORIGIN
from tests.consul_emulator import ConsulEmulator
from tests.harness.waiting import async_wait_for
from tests.test_consul_source import WAIT, emulator, register, running
from translators.policy_resolve import resolve_policies
from xds_server.model import (
    AuthorizationPolicy,
    AuthzRule,
    HeaderCondition,
    Operation,
    Source,
    ValueMatch,
    Workload,
    applicable_authz,
)

__all__ = ["emulator"]

pytestmark = pytest.mark.timeout(60)


def entry(name: str, *sources: dict[str, Any]) -> dict[str, Any]:
    return {"Kind": "service-intentions", "Name": name, "Sources": list(sources)}


def compiled(*entries: dict[str, Any], default_allow: bool = True) -> dict[str, Any]:
    return {o.key.name: o.security or o.error for o in compile_intentions(entries, default_allow)}


WEB = "*/ns/default/sa/web"


def test_default_allow_compiles_denies_and_exempts_higher_precedence_allows() -> None:
    got = compiled(
        entry("api", {"Name": "web", "Action": "allow"}, {"Name": "*", "Action": "deny"})
    )
    api = got["api"]
    assert isinstance(api, AuthorizationPolicy)
    assert api.action == "DENY" and api.services == ("api",)
    # "*" deny (precedence 8) leaves out web, whose own intention (9) allows it.
    assert api.rules == (
        AuthzRule(sources=(Source(namespaces=("default",), not_principals=(WEB,)),)),
    )


def test_default_deny_compiles_allows_and_a_default_deny_policy() -> None:
    got = compiled(
        entry("api", {"Name": "web", "Action": "deny"}, {"Name": "*", "Action": "allow"}),
        default_allow=False,
    )
    api = got["api"]
    assert api.action == "ALLOW"
    assert api.rules == (
        AuthzRule(sources=(Source(namespaces=("default",), not_principals=(WEB,)),)),
    )
    # Services without an entry: Consul's default deny, an ALLOW with no rule.
    default = got["*"]
    assert default.action == "ALLOW" and default.rules == ()
    assert default.services is None and default.not_services == ("api",)
    assert default.origin == DEFAULT_DENY_ORIGIN
    api_workload = Workload("default", service="api")
    assert [p.key.name for p in applicable_authz([api, default], api_workload)] == ["api"]
    other = Workload("default", service="db")
    assert [p.key.name for p in applicable_authz([api, default], other)] == ["*"]


def test_the_wildcard_destination_has_lower_precedence() -> None:
    got = compiled(
        entry("api", {"Name": "*", "Action": "allow"}),
        entry("*", {"Name": "web", "Action": "deny"}),
    )
    # For api: its own "*" allow (8) beats the "*" entry's web deny (6): nothing denied.
    assert got["api"].rules == ()
    # For every other service: web is denied.
    assert got["*"].rules == (AuthzRule(sources=(Source(principals=(WEB,)),)),)
    assert got["*"].not_services == ("api",)


def test_l7_permissions_first_match_wins() -> None:
    got = compiled(
        entry(
            "api",
            {
                "Name": "web",
                "Permissions": [
                    {"Action": "allow", "HTTP": {"PathPrefix": "/admin/health"}},
                    {"Action": "deny", "HTTP": {"PathPrefix": "/admin", "Methods": ["POST"]}},
                    {
                        "Action": "deny",
                        "HTTP": {"Header": [{"Name": "X-Debug", "Present": True, "Invert": True}]},
                    },
                ],
            },
        )
    )
    health = Operation(paths=(ValueMatch("prefix", "/admin/health"),))
    admin = Operation(methods=("POST",), paths=(ValueMatch("prefix", "/admin"),))
    no_debug = Operation(headers=(HeaderCondition("x-debug", not_values=(ValueMatch("present"),)),))
    source = Source(principals=(WEB,))
    assert got["api"].rules == (
        AuthzRule(sources=(source,), operations=(admin,), unless=(health,)),
        AuthzRule(sources=(source,), operations=(no_debug,), unless=(health,)),
    )


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ({"Name": "web"}, "Sources[0]: exactly one of Action and Permissions must be set"),
        ({"Name": "web", "Action": "maybe"}, "Sources[0].Action: invalid action 'maybe'"),
        ({"Name": "web", "Action": "allow", "Peer": "p"}, "Sources[0].Peer: cluster peering"),
        ({"Name": "web", "Namespace": "*", "Action": "allow"}, "Sources[0].Namespace: a wildcard"),
        ({"Action": "allow"}, "Sources[0].Name: required"),
        (
            {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {}}]},
            "Sources[0].Permissions[0].HTTP: at least one of a path, Methods or Header",
        ),
        (
            {
                "Name": "web",
                "Permissions": [
                    {"Action": "allow", "HTTP": {"PathExact": "/a", "PathPrefix": "/b"}}
                ],
            },
            "Sources[0].Permissions[0].HTTP: only one of PathExact, PathPrefix, PathRegex",
        ),
        (
            {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {"PathRegex": "(?=x)"}}]},
            "Sources[0].Permissions[0].HTTP.PathRegex: invalid RE2 regex",
        ),
        (
            {"Name": "web", "Permissions": [{"Action": "deny", "HTTP": {"PathPrefix": "a"}}]},
            "Sources[0].Permissions[0].HTTP.PathPrefix: must begin with '/'",
        ),
        (
            {"Name": "web", "Permissions": [{"Action": "deny", "JWT": {"Providers": [{}]}}]},
            "Sources[0].Permissions[0].JWT: JWT requirements are not supported",
        ),
        (
            {"Name": "web", "Permissions": [{"HTTP": {"PathExact": "/"}}]},
            "Sources[0].Permissions[0].Action: required",
        ),
        (
            {
                "Name": "web",
                "Permissions": [{"Action": "deny", "HTTP": {"Header": [{"Name": "x"}]}}],
            },
            "Sources[0].Permissions[0].HTTP.Header[0]: one of Present, Exact",
        ),
    ],
)
def test_refusals_name_the_field(source: dict[str, Any], why: str) -> None:
    (obj,) = compile_intentions([entry("api", source)])
    assert obj.security is None
    assert obj.error.startswith("consul config entry service-intentions/api: "), obj.error
    assert why in obj.error, obj.error


def test_a_source_listed_twice_is_refused() -> None:
    (obj,) = compile_intentions(
        [entry("api", {"Name": "web", "Action": "allow"}, {"Name": "web", "Action": "deny"})]
    )
    assert "Sources[1].Name: source 'web' listed twice" in obj.error


async def test_intentions_are_watched_and_listed(emulator: ConsulEmulator) -> None:
    await register(emulator, "api", 8081)
    async with running(emulator, wait=1.0) as w:
        emulator.config_write(entry("api", {"Name": "web", "Action": "deny"}))

        def intentions() -> list[Any]:
            return [o for o in w.catalog.policies() if o.key.kind == "service-intentions"]

        await async_wait_for(lambda: intentions(), WAIT, message="the intention")
        (obj,) = intentions()
        assert isinstance(obj.security, AuthorizationPolicy)
        assert obj.security.rules == (AuthzRule(sources=(Source(principals=(WEB,)),)),)
        (status,) = [
            s
            for s in resolve_policies(w.catalog.merged(), w.catalog.policies(), {}).statuses
            if s.key.kind == "service-intentions"
        ]
        assert status.state == "ACCEPTED" and status.reasons == ()
        emulator.config_delete("service-intentions", "api")
        await async_wait_for(lambda: not intentions(), WAIT, message="the intention removed")
