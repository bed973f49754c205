"""Which instance a sidecar fronts: node metadata → proxy group, the file registry's
sidecar fields → the model, and the controller keeping sidecar groups up to date."""

from __future__ import annotations

import random
import types as pytypes

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from sources.file_schema import FileRegistryError, parse_registry
from tests.harness.controller_world import controller_world
from tests.harness.waiting import async_wait_for
from translators import ProxyGroup, translate
from translators.group_mesh import SidecarOf
from translators.inbound import InboundPolicy, mesh_mode
from xds_server import types
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.model import Endpoint, Port, RateLimit, Service, ServiceEntry, Sidecar


def node(**metadata: object) -> base_pb2.Node:
    md = struct_pb2.Struct()
    md.update(metadata)
    return base_pb2.Node(id="n1", user_agent_name="envoy", metadata=md)


IDENTITY = {"NAMESPACE": "shop", "SERVICE_ACCOUNT": "api"}


def test_node_metadata_names_the_instance_and_the_identity() -> None:
    group, warnings = ProxyGroup.parse(
        node(**IDENTITY, SIDECAR_FOR="api", INSTANCE_IPS="10.0.0.5, 10.0.0.4")
    )
    assert warnings == []
    assert group.sidecar == SidecarOf("api.shop", ("10.0.0.4", "10.0.0.5"))
    assert group.mesh is True
    assert group.key == "envoy;ns=shop;sidecar=api.shop@10.0.0.4,10.0.0.5;mesh=on"
    assert ProxyGroup.from_key(group.key) == group
    # No identity: a sidecar without mutual TLS; a bare name stays bare without NAMESPACE.
    plain = ProxyGroup.from_node(node(SIDECAR_FOR="api", INSTANCE_IPS="10.0.0.5"))
    assert (plain.sidecar, plain.mesh) == (SidecarOf("api", ("10.0.0.5",)), False)
    # Identity only: a client in the mesh.
    assert ProxyGroup.from_node(node(**IDENTITY)).key == "envoy;ns=shop;mesh=on"
    # Proxyless gRPC clients have no sidecar listeners (and no SDS): their identity is
    # their own key part (certificate providers, translators.grpc_tls), never `mesh`.
    grpc = base_pb2.Node(id="g", user_agent_name="gRPC Python", metadata=node(**IDENTITY).metadata)
    assert ProxyGroup.from_node(grpc).key == "grpc;ns=shop;identity"


def test_a_sidecar_without_instance_addresses_is_warned_about_and_ignored() -> None:
    group, warnings = ProxyGroup.parse(node(**IDENTITY, SIDECAR_FOR="api"))
    assert group.sidecar is None and group.mesh
    assert warnings == [
        "node metadata SIDECAR_FOR/INSTANCE_IPS: invalid sidecar instance addresses (); "
        "no inbound listener"
    ]


@pytest.mark.parametrize(
    "key", ["envoy;sidecar=api", "envoy;sidecar=api@", "envoy;mesh=yes", "envoy;sidecar=a@x y"]
)
def test_bad_sidecar_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="bad proxy group key"):
        ProxyGroup.from_key(key)


REGISTRY = """\
services:
  - name: api
    ports: [{port: 80}]
    service_account: api-sa
    rate_limit: {requests_per_second: 5}
    endpoints:
      - {address: 10.0.0.5, port: 8080, sidecar_port: 15006}
      - {address: 10.0.0.6, port: 8080}
"""


def test_file_registry_sidecar_port_service_account_and_rate_limit() -> None:
    (entry,) = parse_registry(REGISTRY, "reg.yaml", "file")
    assert entry.service.service_accounts == ("api-sa",)
    assert entry.service.rate_limit == RateLimit(5, 5)  # burst defaults to the rate
    assert [ep.sidecar for ep in entry.endpoints] == [Sidecar(15006), None]
    assert entry.endpoints[0].reached_at == ("10.0.0.5", 15006)
    assert entry.endpoints[1].reached_at == ("10.0.0.6", 8080)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ("sidecar_port: 15006}", "sidecar_port: Input should be less than or equal to 65535"),
        ("ports: {http: 1, grpc: 2}, sidecar_port: 5}", "sidecar_port fronts one instance port"),
    ],
)
def test_file_registry_refuses_bad_sidecar_ports(change: str, error: str) -> None:
    text = REGISTRY.replace("sidecar_port: 15006}", change.replace("15006", "70000"))
    text = text.replace("port: 8080, ports:", "ports:")
    with pytest.raises(FileRegistryError, match=error):
        parse_registry(text, "reg.yaml", "file")


def _entry(sidecar_port: int | None, ips: list[str]) -> ServiceEntry:
    sidecar = Sidecar(sidecar_port) if sidecar_port else None
    return ServiceEntry(
        Service("api", ports=(Port("http", 80, "http"),)),
        tuple(Endpoint(ip, 8080, "http", sidecar=sidecar) for ip in ips),
    )


async def test_sidecar_groups_follow_their_instance_and_equal_a_fresh_translation() -> None:
    """The inbound listener depends on endpoints (the sidecar port), which the
    controller otherwise rebuilds without touching listeners: it must still follow."""
    catalog, cache, controller = controller_world(("f", "file"), trust_domain="td")
    keys = [
        cache.group_of(node(**IDENTITY, SIDECAR_FOR="api.default", INSTANCE_IPS="10.0.0.5")),
        cache.group_of(node(SIDECAR_FOR="api.default", INSTANCE_IPS="10.0.0.5")),
        cache.group_of(node(**IDENTITY)),
    ]
    assert keys[2] == "envoy;ns=shop;mesh=on"
    await async_wait_for(lambda: all(k in cache.groups() for k in keys), timeout=5)
    rng = random.Random(5)
    for _ in range(25):
        port = rng.choice([None, 15006, 15007])
        ips = rng.sample(["10.0.0.5", "10.0.0.6"], rng.randrange(0, 3))
        catalog.replace("f", [_entry(port, ips)])
        await controller.rebuild()
        for key in keys:
            want = translate(
                catalog.merged(), ProxyGroup.from_key(key), mesh_trust_domain="td"
            ).resources
            snap = cache.get(key)
            for type_url, messages in want.items():
                got = [r.message() for r in snap.get(type_url).resources.values()]
                assert got == messages, (key, types.short_name(type_url), port, ips)


async def test_without_a_ca_no_group_is_in_the_mesh() -> None:
    catalog = Catalog()
    cache = SnapshotCache()
    controller = Controller(catalog, cache)
    assert controller.group_of(node(**IDENTITY)) == "envoy;ns=shop"


async def test_an_identity_the_ca_cannot_issue_gets_no_secret_references(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its listeners and clusters would wait for secrets that never come (and stall
    CDS): such a proxy stays out of the mesh, with one line saying why."""
    cache = SnapshotCache()
    cache.secrets = pytypes.SimpleNamespace(trust_domain="td")  # type: ignore[assignment]
    controller = Controller(Catalog(), cache)
    bad = node(NAMESPACE="shop", SERVICE_ACCOUNT="Not_A_DNS_Name")
    assert controller.group_of(bad) == "envoy;ns=shop"
    assert "no mutual TLS with sidecars" in caplog.text
    assert controller.group_of(node(**IDENTITY)) == "envoy;ns=shop;mesh=on"


async def test_set_inbound_rerenders_sidecar_listeners_on_the_next_rebuild() -> None:
    catalog, cache, controller = controller_world(("f", "file"), trust_domain="td")
    key = controller.group_of(node(**IDENTITY, SIDECAR_FOR="api.default", INSTANCE_IPS="10.0.0.5"))
    catalog.replace("f", [_entry(15006, ["10.0.0.5"])])
    await controller.rebuild()

    def chains() -> list[str]:
        listener = cache.get(key).get(types.LISTENER).resources["inbound_15006"].message()
        return [c.name for c in listener.filter_chains]  # type: ignore[attr-defined]

    assert chains() == ["mtls", "plaintext"]  # PERMISSIVE by default
    await controller.set_inbound(InboundPolicy(mode_of=mesh_mode("STRICT")))
    await controller.rebuild()
    assert chains() == ["mtls"]
