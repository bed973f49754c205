"""The Consul emulator follows Consul's documented HTTP API semantics (no Envoy here)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import consul
import pytest
import requests

from tests.consul_emulator import ConsulEmulator, parse_duration
from tests.harness.waiting import wait_for


@pytest.fixture
def emu() -> Iterator[ConsulEmulator]:
    e = ConsulEmulator(jitter=False).start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def client(emu: ConsulEmulator) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=emu.port)


def get(
    emu: ConsulEmulator, path: str, token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(emu.url + path)
    if token is not None:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read().decode()
            headers = dict(resp.headers.items())
            return resp.status, headers, json.loads(body) if body else None
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read().decode()


def put(emu: ConsulEmulator, path: str, body: Any = None, token: str | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(emu.url + path, data=data, method="PUT")
    if token is not None:
        req.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def later(delay: float, fn: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def register_web(
    c: consul.Consul, sid: str = "web-1", tags: list[str] | None = None, port: int = 8080
) -> None:
    c.agent.service.register(
        "web", service_id=sid, port=port, tags=tags or [], check=consul.Check.ttl("10s")
    )


def test_parse_duration() -> None:
    assert parse_duration("10s") == 10
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("1m30s") == 90
    assert parse_duration("5m") == 300
    with pytest.raises(ValueError):
        parse_duration("10 s")


def test_register_check_and_deregister_visible_in_health(
    emu: ConsulEmulator, client: consul.Consul
) -> None:
    register_web(client, tags=["v1"])
    idx, entries = client.health.service("web")
    assert int(idx) >= 1
    [entry] = entries
    assert entry["Node"]["Node"] == "node-1"
    assert entry["Node"]["Address"] == "127.0.0.1"
    svc = entry["Service"]
    assert (svc["ID"], svc["Service"], svc["Port"], svc["Tags"]) == ("web-1", "web", 8080, ["v1"])
    assert svc["Weights"] == {"Passing": 1, "Warning": 1}
    checks = {c["CheckID"]: c for c in entry["Checks"]}
    assert checks["serfHealth"]["Status"] == "passing"
    # A TTL check without an initial Status starts critical, as in Consul.
    assert checks["service:web-1"]["Status"] == "critical"
    assert checks["service:web-1"]["ServiceName"] == "web"

    client.agent.check.ttl_pass("service:web-1")
    client.agent.check.ttl_warn("service:web-1", "slow")
    _, entries = client.health.service("web")
    ck = next(c for c in entries[0]["Checks"] if c["CheckID"] == "service:web-1")
    assert (ck["Status"], ck["Output"]) == ("warning", "slow")

    assert (
        put(emu, "/v1/agent/check/update/service:web-1", {"Status": "passing", "Output": "ok"})
        == 200
    )
    _, entries = client.health.service("web", passing=True)
    assert len(entries) == 1

    client.agent.service.maintenance("web-1", "true", "upgrading")
    _, entries = client.health.service("web")
    maint = next(c for c in entries[0]["Checks"] if c["CheckID"] == "_service_maintenance:web-1")
    assert (maint["Status"], maint["Notes"]) == ("critical", "upgrading")
    client.agent.service.maintenance("web-1", "false")
    _, entries = client.health.service("web")
    assert all(not c["CheckID"].startswith("_service_maintenance") for c in entries[0]["Checks"])

    client.agent.service.deregister("web-1")
    idx2, entries = client.health.service("web")
    assert entries == []
    assert int(idx2) > int(idx)
    # Unknown service: empty list, 200, a non-zero index.
    idx3, entries = client.health.service("nope")
    assert entries == [] and int(idx3) >= 1


def test_several_checks_ids_and_initial_status(client: consul.Consul) -> None:
    client.agent.service.register(
        "api",
        service_id="api-1",
        port=1,
        check={"ttl": "5s", "Status": "passing"},
        extra_checks=[{"http": "http://127.0.0.1:1/", "interval": "10s"}],
    )
    _, entries = client.health.service("api")
    checks = {c["CheckID"]: c for c in entries[0]["Checks"]}
    assert checks["service:api-1:1"]["Status"] == "passing"
    assert checks["service:api-1:2"]["Status"] == "critical"
    assert checks["service:api-1:2"]["Type"] == "http"


def test_headers_and_content_type(emu: ConsulEmulator, client: consul.Consul) -> None:
    register_web(client)
    status, headers, _ = get(emu, "/v1/health/service/web")
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert int(headers["X-Consul-Index"]) >= 1
    assert headers["X-Consul-KnownLeader"] == "true"
    assert "X-Consul-LastContact" in headers
    assert get(emu, "/v1/status/leader")[2] == "127.0.0.1:8300"
    assert get(emu, "/v1/agent/self")[2]["Config"]["Datacenter"] == "dc1"
    assert get(emu, "/v1/no/such/thing")[0] == 404
    assert get(emu, "/v1/health/service/web?dc=elsewhere")[:3:2] == (500, "No path to datacenter")


def test_blocking_returns_on_change_and_after_wait(
    emu: ConsulEmulator, client: consul.Consul
) -> None:
    register_web(client)
    idx, _ = client.health.service("web")

    t0 = time.monotonic()
    idx_same, _ = client.health.service("web", index=idx, wait="200ms")
    elapsed = time.monotonic() - t0
    assert idx_same == idx
    assert 0.15 < elapsed < 5

    later(0.1, lambda: client.agent.check.ttl_pass("service:web-1"))
    t0 = time.monotonic()
    idx_new, entries = client.health.service("web", index=idx, wait="5s")
    assert time.monotonic() - t0 < 4
    assert int(idx_new) > int(idx)
    assert entries[0]["Checks"][1]["Status"] == "passing"

    # A write to another service does not wake this query.
    t0 = time.monotonic()
    later(0.05, lambda: client.agent.service.register("other", port=1))
    idx_again, _ = client.health.service("web", index=idx_new, wait="300ms")
    assert idx_again == idx_new
    assert time.monotonic() - t0 > 0.25


def test_catalog_services_index_ignores_check_flips(client: consul.Consul) -> None:
    register_web(client, tags=["a"])
    register_web(client, sid="web-2", tags=["b"], port=8081)
    idx, services = client.catalog.services()
    assert services["web"] == ["a", "b"] or sorted(services["web"]) == ["a", "b"]
    hidx, _ = client.health.service("web")
    client.agent.check.ttl_pass("service:web-2")
    assert client.catalog.services()[0] == idx
    assert int(client.health.service("web")[0]) > int(hidx)
    idx_same, _ = client.catalog.services(index=idx, wait="100ms")
    assert idx_same == idx
    # A tag change moves it.
    register_web(client, sid="web-2", tags=["b", "c"], port=8081)
    idx2, services = client.catalog.services(index=idx, wait="5s")
    assert int(idx2) > int(idx) and "c" in services["web"]
    # An identical re-registration moves nothing.
    hidx2, _ = client.health.service("web")
    register_web(client, sid="web-2", tags=["b", "c"], port=8081)
    assert client.catalog.services()[0] == idx2
    assert client.health.service("web")[0] == hidx2


def test_tag_and_passing_filters(client: consul.Consul) -> None:
    client.agent.service.register(
        "web", service_id="w1", port=1, tags=["a", "b"], check={"ttl": "10s", "status": "passing"}
    )
    client.agent.service.register(
        "web", service_id="w2", port=2, tags=["a"], check={"ttl": "10s", "status": "passing"}
    )
    client.agent.service.register(
        "web", service_id="w3", port=3, tags=["b"], check={"ttl": "10s", "status": "warning"}
    )

    def ids(entries: list[dict[str, Any]]) -> list[str]:
        return [e["Service"]["ID"] for e in entries]

    assert ids(client.health.service("web")[1]) == ["w1", "w2", "w3"]
    assert ids(client.health.service("web", tag="a")[1]) == ["w1", "w2"]
    assert ids(client.health.service("web", tag=["a", "b"])[1]) == ["w1"]
    assert ids(client.health.service("web", passing=True)[1]) == ["w1", "w2"]
    assert ids(client.health.service("web", tag="b", passing=True)[1]) == ["w1"]
    assert [s["ServiceID"] for s in client.catalog.service("web", tag="b")[1]] == ["w1", "w3"]


def test_catalog_register_nodes_and_deregister(emu: ConsulEmulator, client: consul.Consul) -> None:
    for i, zone in ((1, "a"), (2, "b")):
        assert (
            put(
                emu,
                "/v1/catalog/register",
                {
                    "Node": f"ext-{i}",
                    "Address": f"10.0.0.{i}",
                    "NodeMeta": {"zone": zone},
                    "Service": {"Service": "db", "ID": "db", "Port": 5432},
                    "Check": {
                        "CheckID": "db-alive",
                        "Name": "db",
                        "ServiceID": "db",
                        "Status": "passing",
                    },
                },
            )
            == 200
        )
    idx, entries = client.health.service("db")
    assert [(e["Node"]["Address"], e["Node"]["Meta"]["zone"]) for e in entries] == [
        ("10.0.0.1", "a"),
        ("10.0.0.2", "b"),
    ]
    assert [c["CheckID"] for c in entries[0]["Checks"]] == ["db-alive"]
    assert entries[0]["Service"]["Address"] == ""
    assert len(client.health.service("db", node_meta={"zone": "b"})[1]) == 1

    # py-consul's own catalog.register, with several nodes via its node_meta argument.
    client.catalog.register(
        "ext-3", "10.0.0.3", service={"Service": "db", "Port": 5432}, node_meta={"zone": "c"}
    )
    entries = client.health.service("db")[1]
    assert entries[2]["Node"]["Meta"] == {"zone": "c"}
    assert entries[2]["Checks"] == []

    # A node address change moves the service's index.
    later(
        0.05,
        lambda: put(
            emu,
            "/v1/catalog/register",
            {"Node": "ext-1", "Address": "10.0.0.9", "NodeMeta": {"zone": "a"}},
        ),
    )
    idx2, entries = client.health.service("db", index=client.health.service("db")[0], wait="5s")
    assert entries[0]["Node"]["Address"] == "10.0.0.9"

    client.catalog.deregister("ext-2", service_id="db")
    client.catalog.deregister("ext-3")
    idx3, entries = client.health.service("db")
    assert [e["Node"]["Node"] for e in entries] == ["ext-1"]
    assert int(idx3) > int(idx2) > int(idx)
    assert "ext-3" not in [n for n in (e["Node"]["Node"] for e in entries)]


def test_index_never_zero_and_zero_index_next(emu: ConsulEmulator) -> None:
    for path in ("/v1/catalog/services", "/v1/health/service/x", "/v1/catalog/service/x"):
        assert int(get(emu, path)[1]["X-Consul-Index"]) >= 1
    emu.zero_index_next(2)
    assert get(emu, "/v1/catalog/services")[1]["X-Consul-Index"] == "0"
    assert get(emu, "/v1/health/service/x")[1]["X-Consul-Index"] == "0"
    assert get(emu, "/v1/health/service/x")[1]["X-Consul-Index"] != "0"


def test_reset_index_goes_backwards_and_wakes_blocked_queries(
    emu: ConsulEmulator, client: consul.Consul
) -> None:
    for i in range(5):
        register_web(client, sid=f"web-{i}", port=8000 + i)
    idx, _ = client.health.service("web")
    assert int(idx) >= 6
    later(0.1, lambda: emu.reset_index(2))
    t0 = time.monotonic()
    idx_back, entries = client.health.service("web", index=idx, wait="5s")
    assert time.monotonic() - t0 < 4
    assert int(idx_back) <= 2
    assert len(entries) == 5  # state kept
    assert emu.index() == 2
    client.agent.check.ttl_pass("service:web-0")
    assert int(client.health.service("web")[0]) == 3


def test_fail_next_and_no_leader(emu: ConsulEmulator, client: consul.Consul) -> None:
    emu.fail_next(2, path_prefix="/v1/health/")
    for _ in range(2):
        with pytest.raises(consul.ConsulException, match="No cluster leader"):
            client.health.service("web")
    assert client.catalog.services()[1] == {}
    assert client.health.service("web")[1] == []

    emu.fail_next(1, status=503, body="busy")
    status, _, body = get(emu, "/v1/catalog/services")
    assert (status, body) == (503, "busy")

    emu.set_no_leader(True)
    assert get(emu, "/v1/catalog/services")[:3:2] == (500, "No cluster leader")
    assert get(emu, "/v1/status/leader")[2] == ""
    emu.set_no_leader(False)
    assert get(emu, "/v1/catalog/services")[0] == 200
    statuses = [r.status for r in emu.request_log()]
    assert statuses.count(500) == 3 and 503 in statuses


def test_drop_next_is_a_connection_error(emu: ConsulEmulator, client: consul.Consul) -> None:
    emu.drop_next(1)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.catalog.services()
    assert client.catalog.services()[1] == {}


def test_pause_and_resume_keep_state_and_port(emu: ConsulEmulator, client: consul.Consul) -> None:
    register_web(client)
    idx, _ = client.health.service("web")
    port = emu.port
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            consul.Consul(port=port).health.service("web", index=idx, wait="5s")
        except BaseException as exc:
            errors.append(exc)

    def blocking() -> bool:  # the query has arrived and is still open
        return any(
            r.path == "/v1/health/service/web" and r.query.get("index") == [str(idx)] and not r.end
            for r in emu.request_log()
        )

    t = threading.Thread(target=blocked)
    t.start()
    wait_for(blocking, 5.0, interval=0.01, message="the blocking query open in the emulator")
    emu.pause()
    t.join(5)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], requests.exceptions.ConnectionError)
    with pytest.raises(requests.exceptions.ConnectionError):
        consul.Consul(port=port).catalog.services()
    emu.resume()
    assert emu.port == port
    idx2, entries = consul.Consul(port=port).health.service("web")
    assert idx2 == idx and len(entries) == 1


def test_acl_unknown_token_403_and_anonymous_filtered() -> None:
    with ConsulEmulator(acl_tokens={"secret"}, jitter=False) as emu:
        good = consul.Consul(port=emu.port, token="secret")
        register_web(good)
        assert len(good.health.service("web")[1]) == 1

        bad = consul.Consul(port=emu.port, token="wrong")
        with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
            bad.health.service("web")
        with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
            register_web(bad)

        status, headers, body = get(emu, "/v1/health/service/web")
        assert (status, body) == (200, [])
        assert headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert get(emu, "/v1/catalog/services")[2] == {}
        assert put(emu, "/v1/agent/service/deregister/web-1") == 403
        assert len(good.health.service("web")[1]) == 1
        assert emu.request_log()[-1].token == "secret"


def test_a_token_without_service_read_sees_filtered_lists_not_errors() -> None:
    with ConsulEmulator(acl_tokens={"secret"}, jitter=False) as emu:
        good = consul.Consul(port=emu.port, token="secret")
        register_web(good)
        good.agent.service.register("api", service_id="api-1", port=9000)
        status, headers, body = get(emu, "/v1/catalog/services", "secret")
        assert set(body) == {"web", "api"}
        assert "X-Consul-Results-Filtered-By-ACLs" not in headers
        index = headers["X-Consul-Index"]

        # The policy now reads services prefixed "we" only (service_prefix "we").
        emu.set_service_read("secret", ["we"])
        status, headers, body = get(emu, "/v1/catalog/services", "secret")
        assert (status, set(body)) == (200, {"web"})
        assert headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert headers["X-Consul-Index"] == index  # a policy edit moves no index
        status, headers, body = get(emu, "/v1/health/service/api", "secret")
        assert (status, body) == (200, [])
        assert headers["X-Consul-Results-Filtered-By-ACLs"] == "true"
        assert len(get(emu, "/v1/health/service/web", "secret")[2]) == 1
        assert set(get(emu, "/v1/agent/services", "secret")[2]) == {"web-1"}

        # No service:read at all: every list is empty, still 200.
        emu.set_service_read("secret", [])
        assert get(emu, "/v1/catalog/services", "secret")[:3:2] == (200, {})
        assert get(emu, "/v1/health/service/web", "secret")[:3:2] == (200, [])

        emu.set_service_read("secret", None)  # restored
        status, headers, body = get(emu, "/v1/catalog/services", "secret")
        assert set(body) == {"web", "api"}
        assert "X-Consul-Results-Filtered-By-ACLs" not in headers


def test_populate_for_benchmarks() -> None:
    emu = ConsulEmulator(jitter=False)
    emu.populate(20, 3)
    with emu:
        c = consul.Consul(port=emu.port)
        services = c.catalog.services()[1]
        assert sorted(services) == [f"svc-{i:04d}" for i in range(20)]
        entries = c.health.service("svc-0007", passing=True)[1]
        assert len(entries) == 3
        assert {e["Service"]["Address"] for e in entries} == {"127.0.0.1"}
