"""Consul health entries → model (sources.consul_mapping), and Consul settings resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sources.consul import DEFAULT_ADDRESS, BlockingIndex, ConsulConfig, ConsulConfigError
from sources.consul_mapping import aggregate_status, to_entry
from xds_server.catalog import Catalog
from xds_server.model import Endpoint, Locality


def instance(
    sid: str,
    port: int,
    *,
    address: str = "",
    node: str = "node-1",
    node_address: str = "10.0.0.1",
    dc: str = "dc1",
    zone: str | None = None,
    tags: list[str] | None = None,
    meta: dict[str, str] | None = None,
    checks: list[str] = ("passing",),  # type: ignore[assignment]
    weights: dict[str, int] | None = None,
    kind: str = "",
) -> dict[str, Any]:
    return {
        "Node": {
            "Node": node,
            "Address": node_address,
            "Datacenter": dc,
            "Meta": {"zone": zone} if zone else {},
        },
        "Service": {
            "ID": sid,
            "Service": "web",
            "Tags": tags or [],
            "Address": address,
            "Port": port,
            "Meta": meta or {},
            "Weights": weights or {"Passing": 1, "Warning": 1},
            "Kind": kind,
        },
        "Checks": [{"CheckID": f"c{i}", "Status": s} for i, s in enumerate(checks)],
    }


def test_plain_registration_is_an_http_service_reachable_by_name() -> None:
    entry = to_entry("web", [instance("web-1", 8080)], source="consul", datacenter="")
    assert entry is not None
    svc = entry.service
    assert (svc.name, svc.namespace) == ("web", "default")
    assert [(p.name, p.port, p.protocol) for p in svc.ports] == [("http", 8080, "http")]
    assert svc.hostnames == ("web.service.consul", "web.service.dc1.consul")
    assert entry.endpoints == (
        Endpoint("10.0.0.1", 8080, "http", "healthy", Locality("dc1", ""), 1, ()),
    )


def test_service_address_wins_over_node_address_and_locality_comes_from_dc_and_zone() -> None:
    entry = to_entry(
        "web",
        [instance("web-1", 8080, address="10.1.1.1", zone="eu-1a", dc="eu")],
        source="consul",
    )
    assert entry is not None
    (ep,) = entry.endpoints
    assert ep.ip == "10.1.1.1"
    assert ep.locality == Locality("eu", "eu-1a")


@pytest.mark.parametrize(
    ("checks", "weights", "want"),
    [
        (["passing", "passing"], {"Passing": 3, "Warning": 1}, ("healthy", 3)),
        (["passing", "warning"], {"Passing": 3, "Warning": 1}, ("healthy", 1)),
        (["warning", "critical"], {"Passing": 3, "Warning": 1}, ("unhealthy", 3)),
        (["passing", "maintenance"], {"Passing": 1, "Warning": 1}, ("unhealthy", 1)),
        (["warning"], {"Passing": 2, "Warning": 0}, ("unhealthy", 2)),
        ([], {"Passing": 1, "Warning": 1}, ("healthy", 1)),
    ],
)
def test_health_and_weights(
    checks: list[str], weights: dict[str, int], want: tuple[str, int]
) -> None:
    entry = to_entry("web", [instance("w", 80, checks=checks, weights=weights)], source="c")
    assert entry is not None
    (ep,) = entry.endpoints
    assert (ep.health, ep.weight) == want


def test_aggregate_status_is_the_worst_check() -> None:
    assert aggregate_status([]) == "passing"
    assert aggregate_status([{"Status": "passing"}, {"Status": "warning"}]) == "warning"
    assert aggregate_status([{"Status": "warning"}, {"Status": "critical"}]) == "critical"


def test_protocol_from_meta_and_tags_and_meta_become_labels() -> None:
    inst = instance("g", 9000, tags=["v2", "canary"], meta={"protocol": "grpc", "team": "x"})
    entry = to_entry("greeter", [inst], source="c")
    assert entry is not None
    assert [(p.name, p.protocol) for p in entry.service.ports] == [("grpc", "grpc")]
    (ep,) = entry.endpoints
    assert ep.port_name == "grpc"
    assert dict(ep.labels) == {"v2": "", "canary": "", "protocol": "grpc", "team": "x"}


def test_unknown_protocol_is_skipped_by_the_catalog_with_a_reason() -> None:
    catalog = Catalog()
    catalog.register("consul", "consul")
    entry = to_entry("odd", [instance("o", 80, meta={"protocol": "thrift"})], source="consul")
    assert entry is not None
    catalog.upsert("consul", entry)
    assert not catalog.merged()
    (status,) = catalog.sources()
    assert any("thrift" in str(r) for r in status.rejections)


def test_sidecars_and_gateways_are_not_ordinary_services() -> None:
    sidecar = instance("web-sidecar-proxy", 21000, kind="connect-proxy")
    assert to_entry("web-sidecar-proxy", [sidecar], source="c") is None
    mixed = to_entry(
        "web", [instance("w", 80), instance("gw", 8443, kind="mesh-gateway")], source="c"
    )
    assert mixed is not None
    assert [e.port for e in mixed.endpoints] == [80]


def test_port_is_sticky_while_any_instance_uses_it_and_kept_when_all_are_gone() -> None:
    first = to_entry("web", [instance("a", 9000), instance("b", 8000)], source="c")
    assert first is not None and first.service.ports[0].port == 8000
    # A new instance on a lower port does not rename the cluster.
    again = to_entry(
        "web",
        [instance("a", 9000), instance("b", 8000), instance("c", 7000)],
        source="c",
        previous_port=8000,
    )
    assert again is not None and again.service.ports[0].port == 8000
    # Every instance gone (or filtered out): the cluster stays, with no endpoints.
    empty = to_entry("web", [], source="c", previous_port=8000)
    assert empty is not None and empty.service.ports[0].port == 8000 and empty.endpoints == ()
    assert to_entry("web", [], source="c") is None


def test_same_address_and_port_from_two_registrations_is_one_endpoint() -> None:
    entry = to_entry(
        "web",
        [instance("a", 80, node="n1"), instance("b", 80, node="n2")],
        source="c",
    )
    assert entry is not None and len(entry.endpoints) == 1


def test_names_that_are_not_dns_labels_get_no_consul_dns_hostnames() -> None:
    entry = to_entry("web_api", [instance("a", 80)], source="c")
    assert entry is not None and entry.service.hostnames == ()


# --------------------------------------------------------------------------- settings


def test_address_defaults_and_consul_environment(tmp_path: Path) -> None:
    assert ConsulConfig.resolve({}).address == DEFAULT_ADDRESS
    env = {"CONSUL_HTTP_ADDR": "consul.local:8600", "CONSUL_HTTP_TOKEN": "t-env"}
    config = ConsulConfig.resolve(env)
    assert (config.address, config.token) == ("http://consul.local:8600", "t-env")
    # Flags (settings) win over CONSUL_*.
    config = ConsulConfig.resolve(env, address="https://c.example", token="t-flag")
    assert (config.address, config.token) == ("https://c.example:8501", "t-flag")
    assert ConsulConfig.resolve(
        {"CONSUL_HTTP_ADDR": "c:8501", "CONSUL_HTTP_SSL": "true"}
    ).address == ("https://c:8501")
    token_file = tmp_path / "token"
    token_file.write_text("t-file\n")
    assert ConsulConfig.resolve({"CONSUL_HTTP_TOKEN_FILE": str(token_file)}).token == "t-file"
    assert not ConsulConfig.resolve({"CONSUL_HTTP_SSL_VERIFY": "false"}).verify


def test_tls_files_from_environment_and_their_errors(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert ConsulConfig.resolve({"CONSUL_CACERT": str(ca)}).cacert == ca
    with pytest.raises(ConsulConfigError, match="needs its key"):
        ConsulConfig.resolve({"CONSUL_CLIENT_CERT": str(ca)})
    with pytest.raises(ConsulConfigError, match="does not exist"):
        ConsulConfig.resolve({}, cacert=tmp_path / "missing.pem")


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("unix:///var/run/consul.sock", "scheme must be http or https"),
        ("http://c:notaport", "invalid port"),
        ("http://:8500", "no host"),
    ],
)
def test_bad_addresses_are_one_line_errors(address: str, message: str) -> None:
    with pytest.raises(ConsulConfigError, match=message) as err:
        ConsulConfig.resolve({"CONSUL_HTTP_ADDR": address})
    assert "CONSUL_HTTP_ADDR" in str(err.value) and "\n" not in str(err.value)


def test_read_timeout_exceeds_consuls_wait_plus_jitter() -> None:
    config = ConsulConfig(wait=60.0)
    assert config.read_timeout > 60.0 * 17 / 16
    assert config.wait_param == "60000ms"


def test_blocking_index_rules() -> None:
    index = BlockingIndex()
    assert index.update("10") and index.value == 10
    assert index.update("12") and index.value == 12
    # Backwards: start over with a non-blocking query.
    assert not index.update("5") and index.value == 0
    # 0 (a Consul bug) is clamped to 1, so the next query still blocks.
    assert index.update("0") and index.value == 1
    assert not index.update(None) and index.value == 0


def test_instances_without_a_port_are_skipped_by_the_catalog_with_a_reason() -> None:
    catalog = Catalog()
    catalog.register("consul", "consul")
    entry = to_entry("monitor", [instance("m", 0)], source="consul")
    assert entry is not None
    catalog.upsert("consul", entry)
    assert not catalog.merged()
    (status,) = catalog.sources()
    assert [r.reason for r in status.rejections] == ["port 0 outside 1-65535"]


def test_an_external_service_on_one_dns_name_is_resolved_by_envoy() -> None:
    # consul-esm's pattern: a node whose address is a DNS name.
    ext = instance("search", 443, node="google", node_address="www.example.com")
    entry = to_entry("search", [ext], source="consul")
    assert entry is not None
    assert entry.service.external_name == "www.example.com"
    assert entry.service.ports[0].port == 443 and entry.endpoints == ()
    # Two different hosts cannot be one DNS cluster: left to validation, which drops
    # each non-IP address with a reason. A malformed IP is not a DNS name.
    two = [ext, instance("s2", 443, node="b", node_address="www2.example.com")]
    assert to_entry("search", two, source="consul").service.external_name == ""  # type: ignore[union-attr]
    bad_ip = instance("x", 80, node_address="10.0.0.300")
    assert to_entry("x", [bad_ip], source="consul").service.external_name == ""  # type: ignore[union-attr]
