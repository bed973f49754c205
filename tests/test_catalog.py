"""The catalog: validation of registry entries, merging of sources, change tracking."""

from __future__ import annotations

from prometheus_client import REGISTRY

from xds_server.catalog import Catalog
from xds_server.model import Endpoint, Locality, Port, Service, ServiceEntry, ServiceKey
from xds_server.validation import check_entry


def entry(name: str, *eps: tuple[str, int], ns: str = "default", port: int = 80) -> ServiceEntry:
    return ServiceEntry(
        Service(name, ns, ports=(Port("http", port),)),
        tuple(Endpoint(ip, p, "http") for ip, p in eps),
    )


def gauge(name: str, source: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"source": source})


def test_bad_service_values_are_skipped_with_a_reason() -> None:
    bad = [
        (ServiceEntry(Service("", ports=(Port("http", 80),))), "empty service name"),
        (ServiceEntry(Service("we b", ports=(Port("http", 80),))), "invalid service name"),
        (ServiceEntry(Service("web", ports=(Port("http", 0),))), "outside 1-65535"),
        (ServiceEntry(Service("web", ports=(Port("http", 70000),))), "outside 1-65535"),
        (ServiceEntry(Service("web")), "no ports"),
        (ServiceEntry(Service("web", ports=(Port("a", 80), Port("a", 81)))), "duplicate port"),
        (ServiceEntry(Service("web", ports=(Port("a", 80, "udp"),))), "unknown protocol"),  # type: ignore[arg-type]
        (
            ServiceEntry(Service("db", ports=(Port("a", 80),), external_name="*.example.com")),
            "invalid external name",
        ),
        (
            ServiceEntry(Service("db", ports=(Port("a", 80),), external_name="not a host")),
            "invalid external name",
        ),
    ]
    for e, reason in bad:
        clean, rejections = check_entry("file", e)
        assert clean is None
        assert len(rejections) == 1 and reason in rejections[0].reason, (e, rejections)


def test_bad_endpoints_are_dropped_and_the_service_kept() -> None:
    svc = Service("web", ports=(Port("http", 80),), hostnames=("web.example.com", "bad host"))
    e = ServiceEntry(
        svc,
        (
            Endpoint("10.0.0.1", 8080, "http"),
            Endpoint("10.0.0.300", 8080, "http"),
            Endpoint("10.0.0.2", 0, "http"),
            Endpoint("10.0.0.3", 8080, "grpc"),
            Endpoint("10.0.0.4", 8080, "http", health="sick"),  # type: ignore[arg-type]
            Endpoint("10.0.0.5", 8080, "http", weight=0),
            Endpoint("10.0.0.1", 8080, "http"),  # duplicate: silently deduplicated
            Endpoint("::1", 8080, "http"),
        ),
    )
    clean, rejections = check_entry("file", e)
    assert clean is not None
    assert [ep.ip for ep in clean.endpoints] == ["10.0.0.1", "::1"]
    assert clean.service.hostnames == ("web.example.com",)
    reasons = " | ".join(r.reason for r in rejections)
    for fragment in (
        "invalid IP address '10.0.0.300'",
        "port 0 outside",
        "no service port named 'grpc'",
        "unknown health 'sick'",
        "weight 0",
        "invalid hostname 'bad host'",
    ):
        assert fragment in reasons
    assert len(rejections) == 6


def test_a_bad_entry_does_not_stop_the_rest_and_is_counted() -> None:
    cat = Catalog()
    cat.register("f1", "file")
    cat.replace("f1", [entry("web", ("10.0.0.1", 80)), entry("", ("10.0.0.2", 80)), entry("api")])
    assert sorted(k.name for k in cat.merged()) == ["api", "web"]
    status = cat.sources()[0]
    assert status.synced and not status.stale
    assert status.services == 2
    assert [r.reason for r in status.rejections] == ["empty service name"]
    assert gauge("xds_source_rejected_entries", "f1") == 1
    before = REGISTRY.get_sample_value("xds_source_rejections_total", {"source": "f1"})
    cat.replace("f1", [entry("web", ("10.0.0.1", 80)), entry("", ("10.0.0.2", 80))])
    # The same bad entry again is not a new rejection.
    assert REGISTRY.get_sample_value("xds_source_rejections_total", {"source": "f1"}) == before


def test_duplicate_service_in_one_source_keeps_the_first() -> None:
    cat = Catalog()
    cat.register("f2", "file")
    cat.replace("f2", [entry("web", ("10.0.0.1", 80)), entry("web", ("10.0.0.9", 80))])
    (merged,) = cat.merged().values()
    assert [e.ip for e in merged.endpoints] == ["10.0.0.1"]
    assert "duplicate service" in cat.sources()[0].rejections[0].reason


def test_same_service_in_two_sources_is_one_service_with_both_endpoints() -> None:
    cat = Catalog()
    cat.register("consul", "consul")
    cat.register("k8s", "kubernetes")
    a = ServiceEntry(
        Service("web", ports=(Port("http", 80),), hostnames=("web.service.consul",)),
        (Endpoint("10.0.0.1", 8080, "http", locality=Locality("dc1")),),
    )
    b = ServiceEntry(
        Service(
            "web",
            ports=(Port("http", 80), Port("grpc", 9090, "grpc")),
            hostnames=("web.default.svc.cluster.local",),
        ),
        (Endpoint("10.0.0.2", 8080, "http"), Endpoint("10.0.0.2", 9090, "grpc")),
    )
    cat.replace("consul", [a])
    cat.replace("k8s", [b])
    merged = cat.merged()[ServiceKey("default", "web")]
    assert [p.name for p in merged.service.ports] == ["http", "grpc"]
    assert merged.service.hostnames == ("web.service.consul", "web.default.svc.cluster.local")
    assert sorted((e.ip, e.port) for e in merged.endpoints) == [
        ("10.0.0.1", 8080),
        ("10.0.0.2", 8080),
        ("10.0.0.2", 9090),
    ]
    assert merged.service.source == "consul+k8s"
    # One source losing the service leaves the other's.
    cat.replace("consul", [])
    assert [e.ip for e in cat.merged()[ServiceKey("default", "web")].endpoints] == [
        "10.0.0.2",
        "10.0.0.2",
    ]


def test_changes_are_tracked_per_key_and_notify() -> None:
    cat = Catalog()
    cat.register("f3", "file")
    calls: list[int] = []
    cat.on_change(lambda: calls.append(1))
    cat.replace("f3", [entry("web", ("10.0.0.1", 80)), entry("api", ("10.0.0.2", 80))])
    _, dirty, first = cat.take_changes()
    assert {k.name for k in dirty} == {"web", "api"} and first is not None
    cat.replace("f3", [entry("web", ("10.0.0.1", 80)), entry("api", ("10.0.0.2", 80))])
    assert len(calls) == 1  # identical state is not a change
    cat.replace("f3", [entry("web", ("10.0.0.1", 80)), entry("api", ("10.0.0.3", 80))])
    view, dirty, _ = cat.take_changes()
    assert [k.name for k in dirty] == ["api"] and len(calls) == 2
    assert len(view) == 2
    cat.upsert("f3", entry("db", ("10.0.0.4", 5432), port=5432))
    cat.remove("f3", ServiceKey("default", "web"))
    _, dirty, _ = cat.take_changes()
    assert {k.name for k in dirty} == {"db", "web"}


def test_errors_keep_the_last_good_state_and_readiness_waits_for_first_sync() -> None:
    cat = Catalog()
    cat.register("c1", "consul")
    assert cat.not_ready() == ["source c1 (consul) has not synced yet"]
    cat.set_error("c1", "connection refused")
    assert "connection refused" in cat.not_ready()[0]
    cat.replace("c1", [entry("web", ("10.0.0.1", 80))])
    assert cat.not_ready() == []
    cat.set_error("c1", "no cluster leader")
    status = cat.sources()[0]
    assert status.stale and status.error == "no cluster leader"
    assert gauge("xds_source_stale", "c1") == 1
    assert list(cat.merged()) == [ServiceKey("default", "web")]
    assert cat.not_ready() == []  # stale but synced once: still serving
    cat.replace("c1", [entry("web", ("10.0.0.1", 80))])
    assert not cat.sources()[0].stale and gauge("xds_source_stale", "c1") == 0


def test_stale_lists_synced_sources_that_fail_now() -> None:
    catalog = Catalog()
    catalog.register("consul", "consul")
    catalog.set_error("consul", "cannot reach Consul")
    assert catalog.stale() == []  # never synced: that is unreadiness, not staleness
    catalog.replace("consul", [])
    catalog.set_error("consul", "cannot reach Consul")
    assert catalog.stale() == [
        "source consul (consul) is stale, serving its last good state: cannot reach Consul"
    ]
    catalog.mark_synced("consul")
    assert catalog.stale() == []
