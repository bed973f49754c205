"""Pure mapping of Kubernetes Services + EndpointSlices to the model (sources.kube_mapping)."""

from __future__ import annotations

from typing import Any

import pytest

from sources.kube_mapping import build_entry, parse_service, parse_slice, protocol_of
from tests.harness.kubeapi import endpoint, endpoint_slice, service
from xds_server.catalog import Catalog
from xds_server.model import Endpoint, Locality, Port


def entry(svc: dict[str, Any], *slices: dict[str, Any]) -> Any:
    return build_entry(parse_service(svc), [parse_slice(s) for s in slices], "kubernetes")


@pytest.mark.parametrize(
    ("name", "app_protocol", "want"),
    [
        ("http", None, "http"),
        ("http-web", None, "http"),
        ("http2-api", None, "http2"),
        ("grpc", None, "grpc"),
        ("grpc-internal", None, "grpc"),
        ("tcp-db", None, "tcp"),
        ("https", None, "tcp"),  # TLS passthrough: not http to Envoy
        ("web", None, "tcp"),
        ("", None, "tcp"),
        ("web", "http", "http"),
        ("tcp-x", "grpc", "grpc"),  # appProtocol wins over the name
        ("x", "kubernetes.io/h2c", "http2"),
        ("http-x", "example.com/custom", "tcp"),
    ],
)
def test_protocol(name: str, app_protocol: str | None, want: str) -> None:
    assert protocol_of(name, app_protocol) == want


def test_ports_match_by_name_and_target_ports_differ() -> None:
    svc = service(
        "api",
        [
            {"name": "http", "port": 80, "targetPort": "web"},
            {"name": "grpc-admin", "port": 9000, "targetPort": 9901},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
    )
    sl = endpoint_slice(
        "api-1",
        "api",
        [endpoint("10.0.0.1", zone="eu-1a"), endpoint("10.0.0.2")],
        [("grpc-admin", 9901), ("http", 8080), ("dns", 53), ("unknown", 1234)],
    )
    e = entry(svc, sl)
    assert e.service.ports == (Port("http", 80, "http"), Port("grpc-admin", 9000, "grpc"))
    assert e.endpoints == (
        Endpoint("10.0.0.1", 9901, "grpc-admin", "healthy", Locality(zone="eu-1a")),
        Endpoint("10.0.0.2", 9901, "grpc-admin", "healthy", Locality()),
        Endpoint("10.0.0.1", 8080, "http", "healthy", Locality(zone="eu-1a")),
        Endpoint("10.0.0.2", 8080, "http", "healthy", Locality()),
    )
    assert e.service.hostnames == ("api.default.svc", "api.default.svc.cluster.local")


def test_unnamed_single_port_is_named_after_its_protocol() -> None:
    svc = service("db", [{"port": 5432}])
    sl = endpoint_slice("db-1", "db", [endpoint("10.0.0.1")], [("", 5432)])
    e = entry(svc, sl)
    assert e.service.ports == (Port("tcp", 5432, "tcp"),)
    assert [(x.ip, x.port, x.port_name) for x in e.endpoints] == [("10.0.0.1", 5432, "tcp")]


@pytest.mark.parametrize(
    ("conditions", "health"),
    [
        ({}, "healthy"),  # ready nil -> ready
        ({"ready": True}, "healthy"),
        ({"ready": False}, "unhealthy"),
        ({"ready": False, "serving": True, "terminating": True}, "draining"),
        ({"ready": False, "serving": False, "terminating": True}, "unhealthy"),
        ({"terminating": True}, "draining"),  # serving nil -> ready (nil -> true)
        ({"ready": True, "terminating": True}, "draining"),  # never healthy when terminating
    ],
)
def test_conditions(conditions: dict[str, bool], health: str) -> None:
    sl = endpoint_slice("web-1", "web", [endpoint("10.0.0.1", **conditions)], [("http", 8080)])
    (ep,) = entry(service("web"), sl).endpoints
    assert ep.health == health


def test_addresses_deduplicated_across_slices_order_independent() -> None:
    a = endpoint_slice(
        "web-a", "web", [endpoint("10.0.0.1", ready=False), endpoint("10.0.0.2")], [("http", 80)]
    )
    b = endpoint_slice("web-b", "web", [endpoint("10.0.0.1"), endpoint("10.0.0.3")], [("http", 80)])
    one, two = entry(service("web"), a, b), entry(service("web"), b, a)
    assert one == two
    assert [(x.ip, x.health) for x in one.endpoints] == [
        ("10.0.0.1", "healthy"),
        ("10.0.0.2", "healthy"),
        ("10.0.0.3", "healthy"),
    ]


def test_service_labels_and_headless() -> None:
    svc = service("web", clusterIP="None", labels={"app": "web", "team": "shop"})
    sl = endpoint_slice("web-1", "web", [endpoint("10.1.2.3")], [("http", 8080)])
    e = entry(svc, sl)
    assert e.service.labels == (("app", "web"), ("team", "shop"))
    assert [x.ip for x in e.endpoints] == ["10.1.2.3"]


def test_external_name_is_a_service_envoy_resolves_itself() -> None:
    svc = service("db", [{"name": "tcp-pg", "port": 5432}], type="ExternalName",
                  externalName="db.example.com.")  # fmt: skip
    e = entry(svc)
    assert e.service.external_name == "db.example.com"
    assert [(p.name, p.port, p.protocol) for p in e.service.ports] == [("tcp-pg", 5432, "tcp")]
    assert e.endpoints == ()


def test_skipped_services_say_why() -> None:
    ext = parse_service(service("ext", [], type="ExternalName", externalName="db.example.com"))
    assert ext.skip == "ExternalName (db.example.com) without TCP ports"
    udp = parse_service(service("dns", [{"name": "dns", "port": 53, "protocol": "UDP"}]))
    assert udp.skip == "no TCP ports"
    assert parse_service(service("web")).skip is None


def test_fqdn_and_unlabelled_slices_join_nothing() -> None:
    fqdn = endpoint_slice("f", "web", [{"addresses": ["a.example.com"]}], [("http", 80)])
    fqdn["addressType"] = "FQDN"
    assert parse_slice(fqdn).service == ""
    orphan = endpoint_slice("o", "web", [endpoint()], [("http", 80)])
    del orphan["metadata"]["labels"]
    assert parse_slice(orphan).service == ""


def test_entries_pass_catalog_validation() -> None:
    svc = service("web", [{"name": "http", "port": 80}, {"name": "grpc", "port": 81}])
    sl = endpoint_slice("web-1", "web", [endpoint("10.0.0.1")], [("http", 8080), ("grpc", 8081)])
    e = entry(svc, sl)
    catalog = Catalog()
    catalog.register("kubernetes", "kubernetes")
    catalog.replace("kubernetes", [e])
    (status,) = catalog.sources()
    assert status.rejections == [] and catalog.merged()[e.key] == e
