"""Security objects → what enforces them (translators.authz_inbound): the workload a
policy selects, the sidecar's InboundPolicy and the gRPC server's RBAC, the memory kept
between policy changes, and the controller applying them only when they change."""

from __future__ import annotations

from envoy.config.rbac.v3 import rbac_pb2

from sources.consul_config import compile_intentions
from sources.policy_parse import parse_policy_file
from tests.harness.controller_world import controller_world
from tests.test_sidecar_registry import IDENTITY, node
from translators.authz_inbound import (
    Enforcement,
    SecurityPolicies,
    inbound_policy,
    server_rbac,
    workload_of,
)
from translators.grpc_server import ServerInstance
from xds_server import types
from xds_server.model import Endpoint, Port, Service, ServiceEntry, Sidecar, Workload

API = Service("api", "shop", ports=(Port("http", 80, "http"),), labels=(("app", "api"),))
EP = Endpoint("10.0.0.5", 8080, "http", labels=(("version", "v1"),), sidecar=Sidecar(15006))
PEER = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {version: v1}}
  mtls: {mode: %s}
  portLevelMtls: {"9090": {mode: DISABLE}}
"""
ALLOW_WEB = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]
"""


def policies(text: str) -> tuple[object, ...]:
    return tuple(o.security for o in parse_policy_file(text, "p.yaml"))


def test_a_workload_is_the_services_namespace_and_name_with_the_endpoints_labels() -> None:
    assert workload_of(API, EP) == Workload("shop", (("app", "api"), ("version", "v1")), "api")
    assert workload_of(API) == Workload("shop", (("app", "api"),), "api")


def test_mode_of_follows_peer_authentication_per_endpoint_and_port_else_the_default() -> None:
    strict = inbound_policy(Enforcement(policies(PEER % "STRICT"), default_mode="DISABLE"))  # type: ignore[arg-type]
    assert strict.mode_of(API, EP) == "STRICT"
    assert strict.mode_of(API, Endpoint("10.0.0.5", 9090, "http", labels=EP.labels)) == "DISABLE"
    # Another endpoint's labels: not selected, the mesh default.
    assert strict.mode_of(API, Endpoint("10.0.0.6", 8080, "http")) == "DISABLE"
    assert inbound_policy(Enforcement()).mode_of(API, EP) == "PERMISSIVE"


def test_authorization_by_labels_and_by_consul_service() -> None:
    allow = inbound_policy(Enforcement(policies(ALLOW_WEB), "td"))  # type: ignore[arg-type]
    (http,) = allow.http_authz(API, EP, API.ports[0])
    assert http.name == "envoy.filters.http.rbac.allow"
    assert allow.http_authz(Service("web", "shop", ports=API.ports), EP, API.ports[0]) == []
    assert [f.name for f in allow.tcp_authz(API, EP, Port("tcp", 5432, "tcp"))] == [
        "envoy.filters.network.rbac"
    ]
    # A Consul intention selects by service name, whatever the labels.
    deny_web = {"Kind": "service-intentions", "Name": "api", "Namespace": "shop",
                "Sources": [{"Name": "web", "Namespace": "shop", "Action": "deny"}]}  # fmt: skip
    (obj,) = compile_intentions([deny_web])
    assert obj.security is not None
    consul = inbound_policy(Enforcement((obj.security,), "td"))
    assert [f.name for f in consul.http_authz(Service("api", "shop"), EP, API.ports[0])] == [
        "envoy.filters.http.rbac.deny"
    ]
    assert consul.http_authz(Service("db", "shop"), EP, API.ports[0]) == []


def test_authorization_selects_the_instance_by_its_own_labels() -> None:
    """As Istio's selector matches a pod's labels: a policy for `version: v1` applies to
    the sidecar of a v1 instance, not to a v2 instance of the same service."""
    v1_only = inbound_policy(
        Enforcement(policies(ALLOW_WEB.replace("app: api", "version: v1")), "td")  # type: ignore[arg-type]
    )
    assert [f.name for f in v1_only.http_authz(API, EP, API.ports[0])] == [
        "envoy.filters.http.rbac.allow"
    ]
    v2 = Endpoint("10.0.0.6", 8080, "http", labels=(("version", "v2"),), sidecar=Sidecar(15006))
    assert v1_only.http_authz(API, v2, API.ports[0]) == []
    assert v1_only.tcp_authz(API, v2, Port("tcp", 5432, "tcp")) == []


def test_server_rbac_is_the_workloads_allow_policy() -> None:
    rbac_of = server_rbac(Enforcement(policies(ALLOW_WEB), "td"))  # type: ignore[arg-type]
    (config,) = rbac_of(ServerInstance("10.0.0.5", 8080, (API,), (EP,)))
    assert config.rules.action == rbac_pb2.RBAC.ALLOW
    assert rbac_of(ServerInstance("10.0.0.5", 8080, (), ())) == []


def test_only_a_change_of_what_is_in_force_gives_a_new_enforcement() -> None:
    memory = SecurityPolicies()
    objects = parse_policy_file(ALLOW_WEB, "p.yaml")
    first = memory.update(objects, "td")
    assert first is not None and memory.statuses[0].state == "ACCEPTED"
    assert memory.update(parse_policy_file(ALLOW_WEB, "p.yaml"), "td") is None  # a re-read
    broken = parse_policy_file(ALLOW_WEB.replace("principals:", "principalz:"), "p.yaml")
    assert memory.update(broken, "td") is None  # refused: its last valid version stays
    (status,) = memory.statuses
    assert status.state == "REJECTED" and "serving its last valid version" in status.reasons[-1]
    assert memory.update([], "td") == Enforcement((), "td")


async def test_the_controller_applies_security_objects_only_when_they_change() -> None:
    catalog, cache, controller = controller_world(
        ("f", "file"), ("p", "policy-file"), trust_domain="td"
    )
    key = controller.group_of(node(**IDENTITY, SIDECAR_FOR="api.shop", INSTANCE_IPS="10.0.0.5"))
    catalog.replace("f", [ServiceEntry(API, (EP,))])
    await controller.rebuild()

    def chains() -> list[str]:
        listener = cache.get(key).get(types.LISTENER).resources["inbound_15006"].message()
        return [c.name for c in listener.filter_chains]  # type: ignore[attr-defined]

    assert chains() == ["mtls", "plaintext"]
    catalog.replace_policies("p", parse_policy_file(PEER % "STRICT" + "---\n" + ALLOW_WEB, "p"))
    await controller.rebuild()
    assert chains() == ["mtls"]
    inbound = controller.inbound
    listener = cache.get(key).get(types.LISTENER).resources["inbound_15006"]
    assert b"envoy.filters.http.rbac.allow" in listener.body
    statuses = sorted((s["kind"], s["state"]) for s in controller.policy_statuses())
    assert statuses == [("AuthorizationPolicy", "ACCEPTED"), ("PeerAuthentication", "ACCEPTED")]
    # Another object that changes no security policy in force: nothing re-rendered.
    refused = parse_policy_file(
        PEER % "STRICT" + "---\n" + ALLOW_WEB.replace("rules", "rulez"), "p"
    )
    catalog.replace_policies("p", refused)
    await controller.rebuild()
    assert controller.inbound is inbound
    assert cache.get(key).get(types.LISTENER).resources["inbound_15006"] is listener
    (refused_status,) = [
        s for s in controller.policy_statuses() if s["kind"] == "AuthorizationPolicy"
    ]
    assert refused_status["state"] == "REJECTED"
    assert "serving its last valid version" in refused_status["reasons"][-1]


def test_the_root_namespace_is_a_setting() -> None:
    mesh_wide = "\n".join(line for line in PEER.splitlines() if "Labels" not in line
                          and "portLevel" not in line).replace("shop", "mesh-root")  # fmt: skip
    objects = parse_policy_file(mesh_wide % "STRICT", "p.yaml")
    for root, mode in (("mesh-root", "STRICT"), ("istio-system", "PERMISSIVE")):
        enforcement = SecurityPolicies(root=root).update(objects, "td")
        assert enforcement is not None
        assert inbound_policy(enforcement).mode_of(API, EP) == mode, root
