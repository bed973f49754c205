"""Generated AuthorizationPolicies → Envoy accepts every filter rendered from them.

Hypothesis builds batches of policies (every source, operation and condition field, in
Istio's string forms, at their limits: 63-character namespaces, IPv6 blocks, any header
text); each either parses or is refused with a `PolicyError` (never another exception),
and the HTTP RBAC, network RBAC and gRPC filters of the accepted ones go into one static
bootstrap that ``envoy --mode validate`` must accept (Envoy validates static listeners
fully: a NACK-worthy filter fails it)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pytest
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from sources.istio import PolicyError
from sources.istio.security import parse_security
from tests.authz_bootstrap import authz_bootstrap
from tests.harness.envoy import validate_bootstrap
from translators.authz import grpc_server_rbac, http_authz_filters, network_authz_filters
from translators.grpc_server import RBAC_FILTER
from translators.resources import pack
from xds_server.model import SecurityPolicy, Workload

pytestmark = pytest.mark.timeout(180)

SETTINGS = settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # tmp_path only holds the validated files
    ],
)
WORKLOAD = Workload("shop", (("app", "api"),))

label = st.from_regex(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
word = st.text(string.ascii_letters + string.digits + "-._~/:%", min_size=1, max_size=40)


def istio_forms(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """A value in Istio's string forms: exact, prefix*, *suffix, or *."""
    return st.one_of(base, base.map(lambda s: s + "*"), base.map(lambda s: "*" + s), st.just("*"))


trust_domain = st.sampled_from(["cluster.local", "example.org"])
principal = istio_forms(
    st.builds(lambda td, ns, sa: f"{td}/ns/{ns}/sa/{sa}", trust_domain, label, label)
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ip_block = st.one_of(
    ipv4,
    ipv6,
    st.builds(lambda a, n: f"{a}/{n}", ipv4, st.integers(0, 32)),
    st.builds(lambda a, n: f"{a}/{n}", ipv6, st.integers(0, 128)),
)
port = st.integers(1, 65535).map(str)
method = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "X-CUSTOM"])
path = istio_forms(word.map(lambda s: "/" + s.lstrip("*")))
host = istio_forms(st.builds(lambda a, b: f"{a}.{b}", label, label))
header_name = st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True)
printable = st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="*")
header_value = istio_forms(st.text(printable, min_size=1, max_size=30))


def some(values: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(values, min_size=1, max_size=3)


def fields(options: dict[str, st.SearchStrategy[list[str]]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=options).filter(bool)


source = fields(
    {
        "principals": some(principal),
        "notPrincipals": some(principal),
        "namespaces": some(istio_forms(label)),
        "notNamespaces": some(istio_forms(label)),
        "ipBlocks": some(ip_block),
        "notIpBlocks": some(ip_block),
        "serviceAccounts": some(st.builds(lambda n, s: f"{n}/{s}", label, label)),
    }
)
operation = fields(
    {
        "hosts": some(host),
        "notHosts": some(host),
        "ports": some(port),
        "notPorts": some(port),
        "methods": some(method),
        "notMethods": some(method),
        "paths": some(path),
        "notPaths": some(path),
    }
)


@st.composite
def condition(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(
        st.one_of(
            header_name.map(lambda h: f"request.headers[{h}]"),
            st.sampled_from(
                ["source.ip", "source.namespace", "source.principal", "destination.port"]
            ),
        )
    )
    values = {
        "source.ip": ip_block,
        "source.namespace": istio_forms(label),
        "source.principal": principal,
        "destination.port": port,
    }.get(key, header_value)
    out: dict[str, Any] = draw(fields({"values": some(values), "notValues": some(values)}))
    return {"key": key, **out}


rule = st.fixed_dictionaries(
    {},
    optional={
        "from": st.lists(source.map(lambda s: {"source": s}), min_size=1, max_size=2),
        "to": st.lists(operation.map(lambda o: {"operation": o}), min_size=1, max_size=2),
        "when": st.lists(condition(), min_size=1, max_size=3),
    },
)
spec = st.fixed_dictionaries(
    {"rules": st.lists(rule, max_size=3)},
    optional={"action": st.sampled_from(["ALLOW", "DENY"])},
)


def parsed(index: int, body: dict[str, Any]) -> SecurityPolicy | None:
    doc = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": f"p{index}", "namespace": "shop"},
        "spec": body,
    }
    try:
        return parse_security(doc).policy
    except PolicyError as exc:  # refused with its reason: fine; anything else is a bug
        note(f"refused p{index}: {exc}")
        return None


@SETTINGS
@given(st.lists(spec, min_size=1, max_size=6))
def test_envoy_accepts_every_rendered_filter(tmp_path: Path, specs: list[dict[str, Any]]) -> None:
    policies = [p for i, s in enumerate(specs) if (p := parsed(i, s)) is not None]
    http = http_authz_filters(policies, WORKLOAD, "example.org")
    tcp = network_authz_filters(policies, WORKLOAD, "example.org")
    grpc = [  # as translators.grpc_server names them
        hcm_pb2.HttpFilter(name=f"{RBAC_FILTER}.grpc{i}", typed_config=pack(config))
        for i, config in enumerate(grpc_server_rbac(policies, WORKLOAD, "example.org"))
    ]
    note(f"{len(policies)} policies accepted of {len(specs)}")
    config = authz_bootstrap(1, 2, 3, [*http, *grpc], [("tcp", 4, tcp)])
    validate_bootstrap(config, tmp_path)


def test_the_generator_reaches_every_field(tmp_path: Path) -> None:
    """A generated policy that Envoy accepts with every field at once (the generator's
    reach, pinned as one explicit example)."""
    body = {
        "rules": [
            {
                "from": [{"source": {"principals": ["*"], "notNamespaces": ["a" * 63 + "*"],
                                     "ipBlocks": ["::1/128"], "notIpBlocks": ["10.0.0.0/8"]}}],
                "to": [{"operation": {"hosts": ["*.a.b"], "notPorts": ["1"], "methods": ["GET"],
                                      "paths": ["*.json"], "notPaths": ["/x*"]}}],
                "when": [{"key": "request.headers[x]", "values": ["*"], "notValues": ["a*"]},
                         {"key": "source.namespace", "values": ["b" * 63]},
                         {"key": "destination.port", "notValues": ["9"]}],
            }
        ]
    }  # fmt: skip
    policy = parsed(0, body)
    assert policy is not None
    http = http_authz_filters([policy], WORKLOAD, "td")
    tcp = network_authz_filters([policy], WORKLOAD, "td")
    config = authz_bootstrap(1, 2, 3, http, [("tcp", 4, tcp)])
    validate_bootstrap(config, tmp_path)
