"""Security policy as immutable values: who may call a workload, and whether its inbound
traffic must be mutual TLS. Whatever dialect wrote them (Istio AuthorizationPolicy and
PeerAuthentication, Consul service-intentions) parses into these:

- `AuthorizationPolicy`: for the workloads it selects, ALLOW or DENY the requests one of
  its `AuthzRule`s matches. Istio's semantics: DENY policies are evaluated first; if any
  ALLOW policy applies to a workload, a request no ALLOW rule matches is denied. An ALLOW
  policy with no rules therefore denies everything, and a rule with nothing set
  (``rules: [{}]``) matches everything.
- `PeerAuthentication`: the inbound mTLS mode of the workloads it selects, per port.

Which objects apply to a workload (`applicable_authz`) and its effective mTLS mode per port
(`mtls_mode`) are decided here, purely. Principals are kept as Istio writes them (no
``spiffe://``; ``*``, ``prefix*`` and ``*suffix`` forms); the renderer adds the scheme.

Consul intentions select by destination service, not labels (`AuthorizationPolicy.services`
and `not_services` against `Workload.service`).

The root namespace (`ROOT_NAMESPACE`, Istio's ``istio-system``) holds the mesh-wide
objects: a policy there without selector applies to every workload; an AuthorizationPolicy
there with a selector applies to the selected workloads of every namespace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from .policy import PolicyKey
from .services import Labels

ROOT_NAMESPACE = "istio-system"  # Istio's default meshConfig.rootNamespace
MtlsMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
MTLS_MODES: tuple[MtlsMode, ...] = ("UNSET", "DISABLE", "PERMISSIVE", "STRICT")
DEFAULT_MTLS_MODE: MtlsMode = "PERMISSIVE"  # Istio's when nothing sets one
AuthzAction = Literal["ALLOW", "DENY"]
ValueKind = Literal["exact", "prefix", "suffix", "regex", "present"]
# The kinds of object holding a security policy (a Consul service-intentions entry is
# compiled into an AuthorizationPolicy of kind "service-intentions").
SECURITY_KINDS = frozenset({"AuthorizationPolicy", "PeerAuthentication", "service-intentions"})


@dataclass(frozen=True, slots=True)
class ValueMatch:
    """A string test. Istio's forms: "a" exact, "a*" prefix, "*a" suffix, "*" present."""

    kind: ValueKind
    value: str = ""

    @staticmethod
    def istio(text: str) -> ValueMatch:
        """Istio's string form (paths, hosts, header values) as a match."""
        if text == "*":
            return ValueMatch("present")
        if text.startswith("*"):
            return ValueMatch("suffix", text[1:])
        if text.endswith("*"):
            return ValueMatch("prefix", text[:-1])
        return ValueMatch("exact", text)


@dataclass(frozen=True, slots=True)
class HeaderCondition:
    """Request header `name` matches one of `values` (none: any value) and none of
    `not_values`; absent fails unless only `not_values` are given."""

    name: str
    values: tuple[ValueMatch, ...] = ()
    not_values: tuple[ValueMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Source:
    """Who calls (every set field must hold). Principals as Istio writes them
    (``td/ns/<ns>/sa/<sa>``, ``*`` forms); ip blocks as CIDRs or addresses."""

    principals: tuple[str, ...] = ()
    not_principals: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    not_namespaces: tuple[str, ...] = ()
    ip_blocks: tuple[str, ...] = ()
    not_ip_blocks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    """What is called (every set field must hold). Paths, hosts and `headers` are HTTP
    only; `methods` are HTTP methods, or gRPC's ``/pkg.Service/Method`` paths in paths."""

    hosts: tuple[ValueMatch, ...] = ()
    not_hosts: tuple[ValueMatch, ...] = ()
    ports: tuple[int, ...] = ()
    not_ports: tuple[int, ...] = ()
    methods: tuple[str, ...] = ()
    not_methods: tuple[str, ...] = ()
    paths: tuple[ValueMatch, ...] = ()
    not_paths: tuple[ValueMatch, ...] = ()
    headers: tuple[HeaderCondition, ...] = ()  # Consul's permission header matchers

    def http_only(self) -> bool:
        return bool(
            self.hosts or self.not_hosts or self.methods or self.not_methods
            or self.paths or self.not_paths or self.headers
        )  # fmt: skip


ConditionKey = Literal[
    "request.headers", "source.principal", "source.namespace", "source.ip", "destination.port"
]


@dataclass(frozen=True, slots=True)
class Condition:
    """A `when` condition: `key` (``request.headers`` with `header` set) has one of
    `values` and none of `not_values`."""

    key: ConditionKey
    values: tuple[str, ...] = ()
    not_values: tuple[str, ...] = ()
    header: str = ""

    def http_only(self) -> bool:
        return self.key == "request.headers"


@dataclass(frozen=True, slots=True)
class AuthzRule:
    """Matches when one of `sources` (none: any caller), one of `operations` (none: any
    request) and every condition hold, and no operation of `unless` matches (`unless` is
    how Consul's earlier, opposite-action permissions take precedence; Istio never sets
    it)."""

    sources: tuple[Source, ...] = ()
    operations: tuple[Operation, ...] = ()
    conditions: tuple[Condition, ...] = ()
    unless: tuple[Operation, ...] = ()

    def http_only(self) -> bool:
        """Whether it tests anything only an HTTP request has (Istio's TCP rule)."""
        return any(o.http_only() for o in (*self.operations, *self.unless)) or any(
            c.http_only() for c in self.conditions
        )


@dataclass(frozen=True, slots=True)
class AuthorizationPolicy:
    """For the workloads of `key.namespace` whose labels include `selector` (None: all;
    in the root namespace: all of the mesh), `action` the requests a rule matches."""

    key: PolicyKey
    action: AuthzAction
    rules: tuple[AuthzRule, ...] = ()
    selector: Labels | None = None
    origin: str = field(default="", compare=False)
    # Consul intentions select by destination service instead of labels: only the
    # workloads of `services` (None: any), and none of `not_services`.
    services: tuple[str, ...] | None = None
    not_services: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PeerAuthentication:
    """The inbound mTLS mode of the selected workloads; `ports`: per workload port."""

    key: PolicyKey
    mode: MtlsMode = "UNSET"
    selector: Labels | None = None
    ports: tuple[tuple[int, MtlsMode], ...] = ()
    origin: str = field(default="", compare=False)


SecurityPolicy = AuthorizationPolicy | PeerAuthentication


@dataclass(frozen=True, slots=True)
class Workload:
    """A proxied workload as policies select it: its namespace, labels and service."""

    namespace: str
    labels: Labels = ()
    service: str = ""  # the service it is an instance of (Consul intentions select by it)


def _selects(selector: Labels | None, labels: Labels) -> bool:
    if not selector:
        return True
    have = dict(labels)
    return all(have.get(k) == v for k, v in selector)


def applies_to(policy: SecurityPolicy, workload: Workload, root: str = ROOT_NAMESPACE) -> bool:
    """Whether `policy` selects `workload` (Istio's rules; see the module docstring). A
    PeerAuthentication with a selector in the root namespace selects only that namespace."""
    if isinstance(policy, AuthorizationPolicy) and (
        (policy.services is not None and workload.service not in policy.services)
        or workload.service in policy.not_services
    ):
        return False
    namespace = policy.key.namespace
    if namespace == root and (policy.selector is None or isinstance(policy, AuthorizationPolicy)):
        return _selects(policy.selector, workload.labels)
    return namespace == workload.namespace and _selects(policy.selector, workload.labels)


def applicable_authz(
    policies: Iterable[SecurityPolicy], workload: Workload, root: str = ROOT_NAMESPACE
) -> tuple[AuthorizationPolicy, ...]:
    """The AuthorizationPolicies applying to `workload`, by namespace/name."""
    found = [
        p for p in policies if isinstance(p, AuthorizationPolicy) and applies_to(p, workload, root)
    ]
    return tuple(sorted(found, key=lambda p: (p.key.namespace, p.key.name)))


def mtls_mode(
    policies: Iterable[SecurityPolicy],
    workload: Workload,
    port: int,
    root: str = ROOT_NAMESPACE,
    default: MtlsMode = DEFAULT_MTLS_MODE,
) -> MtlsMode:
    """The mTLS mode of `workload`'s inbound `port`: the most specific level that sets one
    (port of the workload policy > workload policy > namespace > mesh), else `default`
    (PERMISSIVE, Istio's). Several policies at one level: the first by name wins (Istio:
    the oldest)."""
    mesh: list[PeerAuthentication] = []
    namespace: list[PeerAuthentication] = []
    selected: list[PeerAuthentication] = []
    for p in policies:
        if not isinstance(p, PeerAuthentication) or not applies_to(p, workload, root):
            continue
        if p.selector:
            selected.append(p)
        elif p.key.namespace == root and workload.namespace != root:
            mesh.append(p)
        else:
            namespace.append(p)
    mode: MtlsMode = default
    for level in (mesh, namespace, selected):
        if not level:
            continue
        chosen = min(level, key=lambda p: p.key.name)
        if chosen.mode != "UNSET":
            mode = chosen.mode
        if level is selected:
            for number, port_mode in chosen.ports:
                if number == port and port_mode != "UNSET":
                    mode = port_mode
    return mode


def _pattern(text: str) -> str:
    """An Istio string form as a regex fragment within one path segment."""
    if text == "*":
        return "[^/]+"
    if text.startswith("*"):
        return "[^/]*" + re.escape(text[1:])
    if text.endswith("*"):
        return re.escape(text[:-1]) + "[^/]*"
    return re.escape(text)


def namespace_principal_regex(namespace: str) -> str:
    """The RE2 regex a source namespace (Istio's string forms) becomes, matched against the
    caller's SPIFFE ID (``spiffe://<td>/ns/<namespace>/sa/<account>``). Istio's form,
    ``.*/ns/<namespace>/.*``: short enough for Envoy's RE2 program size limit (100) with
    a 63-character namespace."""
    return f".*/ns/{_pattern(namespace)}/.*"
