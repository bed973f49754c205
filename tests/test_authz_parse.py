"""Istio AuthorizationPolicy and PeerAuthentication documents → the security model: what is
accepted, what each refusal says (``file:line:col: Kind ns/name: field: why``), and how the
objects stand in the resolver's statuses."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from sources.istio.security import parse_security
from sources.kube_policies import parse_object
from sources.policy_file import parse_policy_file
from translators.policy_resolve import resolve_policies
from xds_server.model import (
    AuthorizationPolicy,
    AuthzRule,
    Condition,
    Operation,
    PeerAuthentication,
    PolicyKey,
    Source,
    ValueMatch,
)

ALLOW_WEB = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web]
        namespaces: [shop]
        ipBlocks: [10.0.0.0/8]
    to:
    - operation:
        methods: [GET]
        paths: [/api/*, "*.json", /exact]
        ports: ["8080"]
        hosts: ["*"]
    when:
    - key: request.headers[X-Tenant]
      values: [blue]
      notValues: [red*]
    - key: destination.port
      values: ["8080"]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: STRICT}
  portLevelMtls:
    "9000": {mode: DISABLE}
"""


def test_documents_parse_into_the_security_model() -> None:
    allow, peer = parse_policy_file(ALLOW_WEB, "p.yaml")
    assert allow.error == "" and peer.error == ""
    assert allow.policy is None and peer.policy is None  # not traffic policy
    assert allow.security == AuthorizationPolicy(
        PolicyKey("AuthorizationPolicy", "shop", "api-allow"),
        "ALLOW",
        (
            AuthzRule(
                sources=(
                    Source(
                        principals=("cluster.local/ns/shop/sa/web",),
                        namespaces=("shop",),
                        ip_blocks=("10.0.0.0/8",),
                    ),
                ),
                operations=(
                    Operation(
                        hosts=(ValueMatch("present"),),
                        ports=(8080,),
                        methods=("GET",),
                        paths=(
                            ValueMatch("prefix", "/api/"),
                            ValueMatch("suffix", ".json"),
                            ValueMatch("exact", "/exact"),
                        ),
                    ),
                ),
                conditions=(
                    Condition("request.headers", ("blue",), ("red*",), header="x-tenant"),
                    Condition("destination.port", ("8080",)),
                ),
            ),
        ),
        selector=(("app", "api"),),
    )
    assert peer.security == PeerAuthentication(
        PolicyKey("PeerAuthentication", "shop", "strict"),
        "STRICT",
        (("app", "api"),),
        ((9000, "DISABLE"),),
    )


def _parse(spec: dict[str, Any], kind: str = "AuthorizationPolicy") -> Any:
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": spec,
    }
    return parse_security(doc).policy


def test_istio_empty_rule_semantics_are_kept() -> None:
    # ALLOW with no rules (denies all) and ``rules: [{}]`` (a rule matching everything).
    assert _parse({}).rules == ()
    assert _parse({"rules": [{}]}).rules == (AuthzRule(),)
    assert _parse({"action": "DENY"}).action == "DENY"
    assert _parse({"selector": {}}).selector is None  # an empty selector: every workload


def test_service_accounts_become_principals_in_their_namespace() -> None:
    rule = _parse({"rules": [{"from": [{"source": {"serviceAccounts": ["web", "o/x"]}}]}]})
    assert rule.rules[0].sources[0].principals == ("*/ns/ns/sa/web", "*/ns/o/sa/x")


@pytest.mark.parametrize(
    ("spec", "field", "why"),
    [
        ({"action": "AUDIT"}, "spec.action", "action AUDIT is not supported: no audit logger"),
        ({"action": "CUSTOM"}, "spec.action", "no external authorizer"),
        ({"action": "MAYBE"}, "spec.action", "unknown action 'MAYBE'"),
        ({"provider": {"name": "x"}}, "spec.provider", "only valid with action CUSTOM"),
        ({"targetRefs": [{"kind": "Gateway"}]}, "spec.targetRefs", "selector.matchLabels"),
        ({"rulez": []}, "spec.rulez", 'unknown field "rulez" (did you mean "rules"?)'),
        (
            {"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]},
            "spec.rules[0].from[0].source.requestPrincipals",
            "RequestAuthentication",
        ),
        (
            {"rules": [{"from": [{"source": {"remoteIpBlocks": ["1.2.3.4"]}}]}]},
            "spec.rules[0].from[0].source.remoteIpBlocks",
            "X-Forwarded-For",
        ),
        (
            {"rules": [{"from": [{"source": {}}]}]},
            "spec.rules[0].from[0].source",
            "at least one field must be set",
        ),
        ({"rules": [{"from": [{}]}]}, "spec.rules[0].from[0].source", "required"),
        (
            {"rules": [{"from": [{"source": {"principals": []}}]}]},
            "spec.rules[0].from[0].source.principals",
            "must not be empty when set",
        ),
        (
            {"rules": [{"from": [{"source": {"principals": ["a*b"]}}]}]},
            "spec.rules[0].from[0].source.principals[0]",
            "'*' only as a prefix or suffix wildcard",
        ),
        (
            {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.300/8"]}}]}]},
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "invalid IP address or CIDR",
        ),
        (
            {"rules": [{"from": [{"source": {"serviceAccounts": ["A/B/C"]}}]}]},
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "invalid service account",
        ),
        (
            {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]},
            "spec.rules[0].to[0].operation.ports[0]",
            "invalid port 'http'",
        ),
        (
            {"rules": [{"to": [{"operation": {"ports": ["70000"]}}]}]},
            "spec.rules[0].to[0].operation.ports[0]",
            "70000 is outside 1-65535",
        ),
        (
            {"rules": [{"to": [{"operation": {"methods": ["GE T"]}}]}]},
            "spec.rules[0].to[0].operation.methods[0]",
            "invalid HTTP method",
        ),
        (
            {"rules": [{"to": [{"operation": {"paths": ["/a/{*}"]}}]}]},
            "spec.rules[0].to[0].operation.paths[0]",
            "path templates are not supported",
        ),
        (
            {"rules": [{"to": [{"operation": {}}]}]},
            "spec.rules[0].to[0].operation",
            "at least one field must be set",
        ),
        (
            {"rules": [{"when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]},
            "spec.rules[0].when[0].key",
            "condition key 'request.auth.claims[iss]' is not supported",
        ),
        (
            {"rules": [{"when": [{"key": "source.ip"}]}]},
            "spec.rules[0].when[0]",
            "one of values or notValues must be set",
        ),
        (
            {"rules": [{"when": [{"key": "source.ip", "values": ["nope"]}]}]},
            "spec.rules[0].when[0].values[0]",
            "invalid IP address or CIDR",
        ),
        (
            {"rules": [{"when": [{"key": "destination.port", "notValues": ["x"]}]}]},
            "spec.rules[0].when[0].notValues[0]",
            "invalid port",
        ),
        (
            {"rules": [{"when": [{"key": "request.headers[a b]", "values": ["x"]}]}]},
            "spec.rules[0].when[0].key",
            "invalid header name 'a b'",
        ),
        (
            {"rules": [{"when": [{"values": ["x"]}]}]},
            "spec.rules[0].when[0].key",
            "required",
        ),
        (
            {"selector": {"matchLabels": {"app": "a b"}}},
            "spec.selector.matchLabels.app",
            "invalid label value",
        ),
    ],
)
def test_every_refusal_names_the_field_and_why(spec: dict[str, Any], field: str, why: str) -> None:
    doc = yaml.safe_dump(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": spec,
        }
    )
    (obj,) = parse_policy_file(doc, "a.yaml")
    assert obj.security is None
    assert f"AuthorizationPolicy ns/p: {field}: " in obj.error, obj.error
    assert why in obj.error
    assert obj.error.startswith("a.yaml:")  # located


@pytest.mark.parametrize(
    ("spec", "field", "why"),
    [
        ({"mtls": {"mode": "ON"}}, "spec.mtls.mode", "unknown mode 'ON'"),
        (
            {"portLevelMtls": {"80": {"mode": "STRICT"}}},
            "spec.portLevelMtls",
            "requires a workload selector",
        ),
        (
            {"selector": {"matchLabels": {"a": "b"}}, "portLevelMtls": {"http": {}}},
            "spec.portLevelMtls.http",
            "invalid port 'http'",
        ),
        ({"mtls": {"mod": "STRICT"}}, "spec.mtls.mod", 'unknown field "mod"'),
    ],
)
def test_peer_authentication_refusals(spec: dict[str, Any], field: str, why: str) -> None:
    doc = yaml.safe_dump(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": spec,
        }
    )
    (obj,) = parse_policy_file(doc, "a.yaml")
    assert f"PeerAuthentication ns/p: {field}: " in obj.error, obj.error
    assert why in obj.error


def test_an_unsupported_security_version_is_refused_naming_the_kinds() -> None:
    doc = "apiVersion: security.istio.io/v2\nkind: AuthorizationPolicy\nmetadata: {name: p}\n"
    (obj,) = parse_policy_file(doc, "a.yaml")
    assert "AuthorizationPolicy and PeerAuthentication of security.istio.io" in obj.error


def test_kubernetes_objects_parse_alike() -> None:
    obj = parse_object(
        {
            "apiVersion": "security.istio.io/v1beta1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny", "namespace": "shop"},
            "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/a"]}}]}]},
        },
        "kubernetes:shop/deny",
    )
    assert isinstance(obj.security, AuthorizationPolicy) and obj.security.action == "DENY"
    bad = parse_object(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "x", "namespace": "shop"},
            "spec": {"mtls": {"mode": "ON"}},
        },
        "kubernetes:shop/x",
    )
    assert bad.error.startswith("kubernetes:shop/x: PeerAuthentication shop/x: spec.mtls.mode:")


def test_valid_objects_are_accepted_and_a_refused_one_names_its_field() -> None:
    objects = parse_policy_file(ALLOW_WEB + "---\n" + ALLOW_WEB.replace("ALLOW\n", "AUDIT\n", 1)
                                .replace("api-allow", "audit"), "p.yaml")  # fmt: skip
    statuses = {s.key.name: s for s in resolve_policies({}, objects, {}).statuses}
    assert statuses["api-allow"].state == "ACCEPTED"
    assert statuses["audit"].state == "REJECTED"
    assert "action AUDIT is not supported" in statuses["audit"].reasons[0]
    assert statuses["strict"].state == "ACCEPTED"
