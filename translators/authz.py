"""Authorization policies → Envoy RBAC filters.

Pure. The inbound listener of a workload calls:

- `http_authz_filters(policies, workload, trust_domain) -> list[HttpFilter]`: for an HTTP
  inbound listener, the RBAC filters to put before the router: a DENY filter then an
  ALLOW filter (as istiod orders them), each only when a policy of that action applies.
  A denied request gets Envoy's ``403 RBAC: access denied``, and the HCM's
  ``http.<prefix>.rbac.denied`` counter moves.
- `network_authz_filters(policies, workload, trust_domain) -> list[Filter]`: for a TCP
  inbound listener, the network RBAC filters to put before the tcp_proxy (stat prefix
  ``tcp.``: ``tcp.rbac.denied``); a denied connection is closed. Istio's rule for the
  fields only an HTTP request has (hosts, methods, paths, headers): an ALLOW rule with
  them is dropped (fewer allows), a DENY rule is kept without them (a wider deny).
- `grpc_server_rbac(policies, workload, trust_domain) -> list[RBAC]`: for a proxyless
  gRPC server's listener (gRFC A41): the same HTTP RBAC configs; gRPC methods are
  ``url_path`` ``/pkg.Service/Method`` (Istio paths), no metadata matchers are used.

`policies` is every security policy; the ones applying to `workload` are chosen here
(`model.applicable_authz`). Principals: Istio's strings without ``spiffe://`` (added
here), ``*`` any authenticated caller, ``prefix*`` and ``*suffix``; a principal written
in Istio's default trust domain (``cluster.local/...``) names ours (`trust_domain`), as
istiod treats it. A source namespace matches the caller's SPIFFE ID by regex
(`model.namespace_principal_regex`); ipBlocks match the connection's peer address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import path_pb2, string_pb2
from google.protobuf import wrappers_pb2

from xds_server.model import (
    ROOT_NAMESPACE,
    AuthorizationPolicy,
    AuthzAction,
    AuthzRule,
    Condition,
    HeaderCondition,
    Operation,
    SecurityPolicy,
    Source,
    ValueMatch,
    Workload,
    applicable_authz,
    namespace_principal_regex,
)

from .policy_common import regex_matcher
from .resources import pack

HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
TCP_STAT_PREFIX = "tcp."  # istiod's, for the network RBAC filters
ISTIO_DEFAULT_TRUST_DOMAIN = "cluster.local"
SPIFFE = "spiffe://"
# gRPC (A39) NACKs two HTTP filters of one name: the two RBAC filters are told apart.
_NAMES = {"DENY": f"{HTTP_RBAC_FILTER}.deny", "ALLOW": f"{HTTP_RBAC_FILTER}.allow"}
_ACTIONS = {"DENY": rbac_pb2.RBAC.DENY, "ALLOW": rbac_pb2.RBAC.ALLOW}

Principal: TypeAlias = rbac_pb2.Principal
Permission: TypeAlias = rbac_pb2.Permission


def http_authz_filters(
    policies: Iterable[SecurityPolicy],
    workload: Workload,
    trust_domain: str,
    root: str = ROOT_NAMESPACE,
) -> list[hcm_pb2.HttpFilter]:
    """The HTTP RBAC filters (DENY, then ALLOW) for `workload`'s HTTP inbound listener."""
    return [
        hcm_pb2.HttpFilter(name=_NAMES[action], typed_config=pack(config))
        for action, config in _http_rbac(policies, workload, trust_domain, root)
    ]


def _http_rbac(
    policies: Iterable[SecurityPolicy], workload: Workload, trust_domain: str, root: str
) -> list[tuple[AuthzAction, http_rbac_pb2.RBAC]]:
    return [
        (action, http_rbac_pb2.RBAC(rules=rbac(chosen, action, trust_domain, tcp=False)))
        for action, chosen in _by_action(policies, workload, root)
    ]


def _by_action(
    policies: Iterable[SecurityPolicy], workload: Workload, root: str
) -> list[tuple[AuthzAction, list[AuthorizationPolicy]]]:
    """The policies applying to `workload`, DENY ones first, then ALLOW (none: left out)."""
    applying = applicable_authz(policies, workload, root)
    actions: tuple[AuthzAction, ...] = ("DENY", "ALLOW")
    grouped = [(a, [p for p in applying if p.action == a]) for a in actions]
    return [(a, chosen) for a, chosen in grouped if chosen]


def grpc_server_rbac(
    policies: Iterable[SecurityPolicy],
    workload: Workload,
    trust_domain: str,
    root: str = ROOT_NAMESPACE,
) -> list[http_rbac_pb2.RBAC]:
    """The HTTP RBAC configs (DENY, then ALLOW) for a proxyless gRPC server (A41; the
    server listener names the filters): those of `http_authz_filters`, which use nothing
    gRPC lacks (no metadata, no requested server name)."""
    return [config for _, config in _http_rbac(policies, workload, trust_domain, root)]


def network_authz_filters(
    policies: Iterable[SecurityPolicy],
    workload: Workload,
    trust_domain: str,
    root: str = ROOT_NAMESPACE,
) -> list[listener_components_pb2.Filter]:
    """The network RBAC filters (DENY, then ALLOW) for `workload`'s TCP inbound listener."""
    out = []
    for action, chosen in _by_action(policies, workload, root):
        rules = rbac(chosen, action, trust_domain, tcp=True)
        config = network_rbac_pb2.RBAC(stat_prefix=TCP_STAT_PREFIX, rules=rules)
        out.append(
            listener_components_pb2.Filter(name=NETWORK_RBAC_FILTER, typed_config=pack(config))
        )
    return out


def rbac(
    policies: Sequence[AuthorizationPolicy], action: AuthzAction, trust_domain: str, *, tcp: bool
) -> rbac_pb2.RBAC:
    """The RBAC rules of `policies` (all of `action`): one Envoy policy per rule, named
    ``ns[<namespace>]-policy[<name>]-rule[<index>]`` as istiod names them."""
    out = rbac_pb2.RBAC(action=_ACTIONS[action])
    for policy in policies:
        for i, rule in enumerate(policy.rules):
            if tcp and rule.http_only():
                if action == "ALLOW":
                    continue  # Istio: an ALLOW rule TCP cannot evaluate allows nothing
                rule = tcp_part(rule)
            name = f"ns[{policy.key.namespace}]-policy[{policy.key.name}]-rule[{i}]"
            out.policies[name].CopyFrom(_policy(rule, trust_domain))
    return out


def tcp_part(rule: AuthzRule) -> AuthzRule:
    """`rule` without what only HTTP requests have (a DENY rule on TCP, Istio's rule)."""
    operations = tuple(Operation(ports=o.ports, not_ports=o.not_ports) for o in rule.operations)
    return AuthzRule(
        rule.sources, operations, tuple(c for c in rule.conditions if not c.http_only())
    )


def _policy(rule: AuthzRule, trust_domain: str) -> rbac_pb2.Policy:
    principal_conditions = [
        _condition_principal(c, trust_domain)
        for c in rule.conditions
        if c.key.startswith("source.")
    ]
    permission_conditions = [
        _condition_permission(c) for c in rule.conditions if not c.key.startswith("source.")
    ]
    if rule.unless:
        permission_conditions.append(
            Permission(not_rule=_any_permission([_operation(o) for o in rule.unless]))
        )
    sources = [_source(s, trust_domain) for s in rule.sources] or [Principal(any=True)]
    operations = [_operation(o) for o in rule.operations] or [Permission(any=True)]
    return rbac_pb2.Policy(
        principals=[_all_ids([s, *principal_conditions]) for s in sources],
        permissions=[_all_rules([o, *permission_conditions]) for o in operations],
    )


# -- principals -------------------------------------------------------------------------


def _all_ids(ids: Sequence[Principal]) -> Principal:
    if len(ids) == 1:
        return ids[0]
    return Principal(and_ids=Principal.Set(ids=list(ids)))


def _any_id(ids: Sequence[Principal]) -> Principal:
    if len(ids) == 1:
        return ids[0]
    return Principal(or_ids=Principal.Set(ids=list(ids)))


def principal_matcher(principal: str, trust_domain: str) -> string_pb2.StringMatcher:
    """An Istio principal string as a matcher of the caller's SPIFFE ID."""
    if principal == "*":
        return string_pb2.StringMatcher(safe_regex=regex_matcher(".+"))
    if principal.startswith(ISTIO_DEFAULT_TRUST_DOMAIN + "/"):
        principal = trust_domain + principal.removeprefix(ISTIO_DEFAULT_TRUST_DOMAIN)
    if principal.startswith("*"):
        return string_pb2.StringMatcher(suffix=principal[1:])
    if principal.endswith("*"):
        return string_pb2.StringMatcher(prefix=SPIFFE + principal[:-1])
    return string_pb2.StringMatcher(exact=SPIFFE + principal)


def _authenticated(matcher: string_pb2.StringMatcher) -> Principal:
    return Principal(authenticated=Principal.Authenticated(principal_name=matcher))


def _principals(principals: Iterable[str], trust_domain: str) -> Principal:
    return _any_id([_authenticated(principal_matcher(p, trust_domain)) for p in principals])


def _namespaces(namespaces: Iterable[str]) -> Principal:
    return _any_id(
        [
            _authenticated(
                string_pb2.StringMatcher(safe_regex=regex_matcher(namespace_principal_regex(n)))
            )
            for n in namespaces
        ]
    )


def cidr(block: str) -> address_pb2.CidrRange:
    network = ipaddress.ip_network(block, strict=False)
    return address_pb2.CidrRange(
        address_prefix=str(network.network_address),
        prefix_len=wrappers_pb2.UInt32Value(value=network.prefixlen),
    )


def _ips(blocks: Iterable[str]) -> Principal:
    return _any_id([Principal(direct_remote_ip=cidr(b)) for b in blocks])


def _source(source: Source, trust_domain: str) -> Principal:
    ids: list[Principal] = []
    if source.principals:
        ids.append(_principals(source.principals, trust_domain))
    if source.not_principals:
        ids.append(Principal(not_id=_principals(source.not_principals, trust_domain)))
    if source.namespaces:
        ids.append(_namespaces(source.namespaces))
    if source.not_namespaces:
        ids.append(Principal(not_id=_namespaces(source.not_namespaces)))
    if source.ip_blocks:
        ids.append(_ips(source.ip_blocks))
    if source.not_ip_blocks:
        ids.append(Principal(not_id=_ips(source.not_ip_blocks)))
    return _all_ids(ids) if ids else Principal(any=True)


def _condition_principal(condition: Condition, trust_domain: str) -> Principal:
    def test(values: tuple[str, ...]) -> Principal:
        if condition.key == "source.ip":
            return _ips(values)
        if condition.key == "source.namespace":
            return _namespaces(values)
        return _principals(values, trust_domain)

    ids = [test(condition.values)] if condition.values else []
    if condition.not_values:
        ids.append(Principal(not_id=test(condition.not_values)))
    return _all_ids(ids)


# -- permissions ------------------------------------------------------------------------


def _all_rules(rules: Sequence[Permission]) -> Permission:
    if len(rules) == 1:
        return rules[0]
    return Permission(and_rules=Permission.Set(rules=list(rules)))


def _any_permission(rules: Sequence[Permission]) -> Permission:
    if len(rules) == 1:
        return rules[0]
    return Permission(or_rules=Permission.Set(rules=list(rules)))


def value_matcher(match: ValueMatch, ignore_case: bool = False) -> string_pb2.StringMatcher:
    m = string_pb2.StringMatcher(ignore_case=ignore_case)
    if match.kind == "exact":
        m.exact = match.value
    elif match.kind == "prefix" and match.value:
        m.prefix = match.value
    elif match.kind == "suffix" and match.value:
        m.suffix = match.value
    elif match.kind == "regex":
        m.safe_regex.CopyFrom(regex_matcher(match.value))
    else:  # present, or an empty prefix/suffix (Envoy refuses those): any value
        m.safe_regex.CopyFrom(regex_matcher(".*"))
    return m


def _header(name: str, match: ValueMatch, ignore_case: bool = False) -> Permission:
    header = route_components_pb2.HeaderMatcher(name=name)
    if match.kind == "present":
        header.present_match = True
    else:
        header.string_match.CopyFrom(value_matcher(match, ignore_case))
    return Permission(header=header)


def _either(rules: list[Permission], negated: list[Permission]) -> list[Permission]:
    out = [_any_permission(rules)] if rules else []
    if negated:
        out.append(Permission(not_rule=_any_permission(negated)))
    return out


def _operation(op: Operation) -> Permission:
    rules: list[Permission] = []
    hosts = [_header(":authority", h, ignore_case=True) for h in op.hosts]
    not_hosts = [_header(":authority", h, ignore_case=True) for h in op.not_hosts]
    rules += _either(hosts, not_hosts)
    rules += _either(
        [Permission(destination_port=p) for p in op.ports],
        [Permission(destination_port=p) for p in op.not_ports],
    )
    rules += _either(
        [_header(":method", ValueMatch("exact", m)) for m in op.methods],
        [_header(":method", ValueMatch("exact", m)) for m in op.not_methods],
    )
    rules += _either([_path(p) for p in op.paths], [_path(p) for p in op.not_paths])
    rules += [_header_condition(h) for h in op.headers]
    return _all_rules(rules) if rules else Permission(any=True)


def _path(match: ValueMatch) -> Permission:
    return Permission(url_path=path_pb2.PathMatcher(path=value_matcher(match)))


def _header_condition(header: HeaderCondition) -> Permission:
    rules = [_header(header.name, v) for v in header.values]
    if not rules and not header.not_values:
        rules = [_header(header.name, ValueMatch("present"))]
    tests = _either(rules, [_header(header.name, v) for v in header.not_values])
    return _all_rules(tests)


def _condition_permission(condition: Condition) -> Permission:
    if condition.key == "destination.port":
        return _all_rules(
            _either(
                [Permission(destination_port=int(v)) for v in condition.values],
                [Permission(destination_port=int(v)) for v in condition.not_values],
            )
        )
    return _header_condition(
        HeaderCondition(
            condition.header,
            tuple(ValueMatch.istio(v) for v in condition.values),
            tuple(ValueMatch.istio(v) for v in condition.not_values),
        )
    )
