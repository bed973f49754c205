"""Snapshot cache and resource builders: content addressing, sharing, §4.12 shapes."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from tests.xds_util import CDS, EDS, cla, cluster, make_cache, set_types
from translators import resources as rb
from xds_server.model import Endpoint, Locality
from xds_server.snapshot import Resource


def test_unchanged_resources_keep_identity_and_do_not_notify() -> None:
    cache = make_cache(cds=[cluster("a"), cluster("b")])
    seen: list[object] = []
    cache.watch("g", seen.append)
    before = cache.get("g")
    assert not cache.set_snapshot("g", {CDS: [cluster("b"), cluster("a")]})
    assert cache.get("g") is before and seen == []
    set_types(cache, cds=[cluster("a"), cluster("b", 3.0)])
    after = cache.get("g").get(CDS).resources
    assert after["a"] is before.get(CDS).resources["a"]  # shared, not re-serialised
    assert after["b"] is not before.get(CDS).resources["b"]
    assert len(seen) == 1


def test_setting_one_type_keeps_the_others() -> None:
    cache = make_cache(cds=[cluster("a")], eds=[cla("a")])
    eds = cache.get("g").get(EDS)
    set_types(cache, cds=[cluster("a", 2.0)])
    assert cache.get("g").get(EDS) is eds


def test_pre_encoded_fields_decode_to_the_resource() -> None:
    r = Resource.from_message(CDS, cluster("a"))
    msg = discovery_pb2.DiscoveryResponse.FromString(r.sotw_field)
    assert msg.resources[0] == r.to_any()
    d = discovery_pb2.DeltaDiscoveryResponse.FromString(r.delta_field)
    assert (d.resources[0].name, d.resources[0].version) == ("a", r.version)
    assert d.resources[0].resource == r.to_any()


def test_eds_cluster_knows_its_load_assignment_name() -> None:
    c = rb.eds_cluster("web")
    c.eds_cluster_config.service_name = "web-eds"
    assert Resource.from_message(CDS, c).eds_names == ("web-eds",)
    assert Resource.from_message(CDS, rb.eds_cluster("x")).eds_names == ("x",)


def test_4_12_every_locality_has_a_locality_and_a_weight() -> None:
    a = rb.load_assignment(
        "web",
        [
            Endpoint("10.0.0.1", 80, locality=Locality(zone="z1")),
            Endpoint("10.0.0.2", 80, locality=Locality(zone="z2"), weight=3),
            Endpoint("10.0.0.3", 80),
        ],
    )
    assert len(a.endpoints) == 3
    for loc in a.endpoints:
        assert loc.HasField("locality") and loc.load_balancing_weight.value >= 1
    assert [loc.locality.zone for loc in a.endpoints] == ["", "z1", "z2"]


def test_4_12_api_listener_is_an_hcm_with_rds_over_ads_and_router_last() -> None:
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm,
    )

    lst = rb.api_listener("web", "web-routes")
    m = hcm.HttpConnectionManager()
    assert lst.api_listener.api_listener.Unpack(m)
    assert m.rds.route_config_name == "web-routes" and m.rds.config_source.HasField("ads")
    assert m.http_filters[-1].name == "envoy.filters.http.router"
    c = rb.eds_cluster("web")
    assert c.type == c.EDS and c.eds_cluster_config.eds_config.HasField("ads")
