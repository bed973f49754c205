"""AuthorizationPolicies → Envoy RBAC filters, field by field: principals in Istio's forms,
namespaces as the SPIFFE regex, DENY before ALLOW, Istio's rule for HTTP-only fields on
TCP, and the local rate limit filter."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.rbac.v3 import rbac_pb2
from google.protobuf import json_format

from sources.istio.security import parse_security
from translators.authz import (
    grpc_server_rbac,
    http_authz_filters,
    network_authz_filters,
    principal_matcher,
)
from xds_server.model import AuthorizationPolicy, SecurityPolicy, Workload

TD = "example.org"
API = Workload("shop", (("app", "api"),))


def policy(spec: dict[str, Any], name: str = "p", namespace: str = "shop") -> SecurityPolicy:
    return parse_security(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    ).policy


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def rules_of(f: Any) -> dict[str, Any]:
    return as_dict(f)["typed_config"]["rules"]


@pytest.mark.parametrize(
    ("principal", "matcher"),
    [
        ("*", {"safe_regex": {"regex": ".+"}}),
        ("example.org/ns/a/sa/b", {"exact": "spiffe://example.org/ns/a/sa/b"}),
        ("cluster.local/ns/a/sa/b", {"exact": "spiffe://example.org/ns/a/sa/b"}),
        ("example.org/ns/a/*", {"prefix": "spiffe://example.org/ns/a/"}),
        ("cluster.local/ns/a/*", {"prefix": "spiffe://example.org/ns/a/"}),
        ("*/sa/b", {"suffix": "/sa/b"}),
        ("other.td/ns/a/sa/b", {"exact": "spiffe://other.td/ns/a/sa/b"}),
    ],
)
def test_principals_take_istios_forms(principal: str, matcher: dict[str, Any]) -> None:
    assert as_dict(principal_matcher(principal, TD)) == matcher


def test_sources_operations_and_conditions() -> None:
    p = policy(
        {
            "rules": [
                {
                    "from": [
                        {"source": {"principals": ["cluster.local/ns/shop/sa/web"]}},
                        {"source": {"namespaces": ["ops"], "notIpBlocks": ["10.1.2.3"]}},
                    ],
                    "to": [{"operation": {"methods": ["GET"], "notPaths": ["/admin*"]}}],
                    "when": [
                        {"key": "request.headers[x-tenant]", "values": ["blue"]},
                        {"key": "source.ip", "values": ["127.0.0.0/8"]},
                    ],
                }
            ]
        }
    )
    (allow,) = http_authz_filters([p], API, TD)
    assert allow.name == "envoy.filters.http.rbac.allow"
    rules = rules_of(allow)
    assert rules.get("action", "ALLOW") == "ALLOW"  # proto3: the 0 enum is not printed
    (name,) = rules["policies"]
    assert name == "ns[shop]-policy[p]-rule[0]"
    body = rules["policies"][name]
    source_ip = {"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}
    web = {"authenticated": {"principal_name": {"exact": "spiffe://example.org/ns/shop/sa/web"}}}
    ops = {"authenticated": {"principal_name": {"safe_regex": {"regex": ".*/ns/ops/.*"}}}}
    not_ip = {"not_id": {"direct_remote_ip": {"address_prefix": "10.1.2.3", "prefix_len": 32}}}
    assert body["principals"] == [
        {"and_ids": {"ids": [web, source_ip]}},
        {"and_ids": {"ids": [{"and_ids": {"ids": [ops, not_ip]}}, source_ip]}},
    ]
    get = {"header": {"name": ":method", "string_match": {"exact": "GET"}}}
    not_admin = {"not_rule": {"url_path": {"path": {"prefix": "/admin"}}}}
    tenant = {"header": {"name": "x-tenant", "string_match": {"exact": "blue"}}}
    assert body["permissions"] == [
        {"and_rules": {"rules": [{"and_rules": {"rules": [get, not_admin]}}, tenant]}}
    ]


def test_deny_comes_before_allow_and_empty_policies_keep_istios_meaning() -> None:
    deny = policy({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/x"]}}]}]}, "d")
    allow_nothing = policy({}, "a")
    filters = http_authz_filters([allow_nothing, deny], API, TD)
    assert [f.name for f in filters] == [
        "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.allow",
    ]
    assert rules_of(filters[0])["action"] == "DENY"
    # ALLOW with no rules: an ALLOW filter with no policies, which denies everything.
    assert rules_of(filters[1]) == {}  # action ALLOW (0), no policies
    allow_all = policy({"rules": [{}]}, "all")
    (only,) = http_authz_filters([allow_all], API, TD)
    assert rules_of(only)["policies"]["ns[shop]-policy[all]-rule[0]"] == {
        "permissions": [{"any": True}],
        "principals": [{"any": True}],
    }
    # No policy applies: no filter at all (everything allowed).
    assert http_authz_filters([policy({}, namespace="other")], API, TD) == []


def test_tcp_drops_allow_rules_with_http_fields_and_widens_deny_rules() -> None:
    allow = policy(
        {
            "rules": [
                {"to": [{"operation": {"paths": ["/a"], "ports": ["80"]}}]},
                {"to": [{"operation": {"ports": ["81"]}}]},
            ]
        },
        "allow",
    )
    deny = policy(
        {
            "action": "DENY",
            "rules": [
                {
                    "from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}],
                    "to": [{"operation": {"methods": ["POST"], "ports": ["90"]}}],
                    "when": [{"key": "request.headers[x]", "values": ["y"]}],
                }
            ],
        },
        "deny",
    )
    deny_filter, allow_filter = network_authz_filters([allow, deny], API, TD)
    assert deny_filter.name == allow_filter.name == "envoy.filters.network.rbac"
    assert as_dict(deny_filter)["typed_config"]["stat_prefix"] == "tcp."
    assert list(rules_of(allow_filter)["policies"]) == ["ns[shop]-policy[allow]-rule[1]"]
    widened = rules_of(deny_filter)["policies"]["ns[shop]-policy[deny]-rule[0]"]
    # The method and the header condition are gone; the port and the source stay.
    assert widened["permissions"] == [{"destination_port": 90}]
    assert widened["principals"] == [
        {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}
    ]


def test_grpc_server_rbac_uses_url_path_deny_first() -> None:
    p = policy({"rules": [{"to": [{"operation": {"paths": ["/pkg.Svc/Get", "/pkg.Other/*"]}}]}]})
    deny = policy({"action": "DENY", "rules": [{}]}, "d")
    configs = grpc_server_rbac([p, deny], API, TD)
    assert [c.rules.action for c in configs] == [rbac_pb2.RBAC.DENY, rbac_pb2.RBAC.ALLOW]
    body = json_format.MessageToDict(configs[1].rules, preserving_proto_field_name=True)
    body = body["policies"]["ns[shop]-policy[p]-rule[0]"]
    assert body["permissions"] == [
        {
            "or_rules": {
                "rules": [
                    {"url_path": {"path": {"exact": "/pkg.Svc/Get"}}},
                    {"url_path": {"path": {"prefix": "/pkg.Other/"}}},
                ]
            }
        }
    ]


def test_hosts_ignore_case_and_header_presence() -> None:
    p = policy(
        {
            "rules": [
                {
                    "to": [{"operation": {"hosts": ["API.example.com", "*"]}}],
                    "when": [{"key": "request.headers[x-a]", "notValues": ["*"]}],
                }
            ]
        }
    )
    (allow,) = http_authz_filters([p], API, TD)
    body = rules_of(allow)["policies"]["ns[shop]-policy[p]-rule[0]"]
    host = {"name": ":authority", "string_match": {"exact": "API.example.com", "ignore_case": True}}
    assert body["permissions"] == [
        {
            "and_rules": {
                "rules": [
                    {
                        "or_rules": {
                            "rules": [
                                {"header": host},
                                {"header": {"name": ":authority", "present_match": True}},
                            ]
                        }
                    },
                    {"not_rule": {"header": {"name": "x-a", "present_match": True}}},
                ]
            }
        }
    ]


def test_policies_of_other_workloads_are_left_out() -> None:
    selected = policy({"selector": {"matchLabels": {"app": "web"}}, "rules": [{}]})
    assert isinstance(selected, AuthorizationPolicy)
    assert http_authz_filters([selected], API, TD) == []
    assert network_authz_filters([selected], API, TD) == []


@pytest.mark.parametrize(
    ("path", "matcher"),
    [
        ("/a", {"exact": "/a"}),
        ("/a/*", {"prefix": "/a/"}),
        ("*.json", {"suffix": ".json"}),
        ("*", {"safe_regex": {"regex": ".*"}}),
    ],
)
def test_paths_take_istios_forms(path: str, matcher: dict[str, Any]) -> None:
    (allow,) = http_authz_filters(
        [policy({"rules": [{"to": [{"operation": {"paths": [path]}}]}]})], API, TD
    )
    body = rules_of(allow)["policies"]["ns[shop]-policy[p]-rule[0]"]
    assert body["permissions"] == [{"url_path": {"path": matcher}}]
