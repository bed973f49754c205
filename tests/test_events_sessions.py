"""Push provenance through the real controller and sans-IO sessions (SotW and delta).

A catalog change becomes an event; the sessions' pushes carry it and their ACKs and NACKs
are attributed to it, per stream; a stream that closes is no longer pending; a proxy whose
subscription the change does not touch is not counted. No gRPC: requests in, responses out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2

from tests.test_controller import entry, node
from tests.xds_util import CDS, EDS, LDS, RDS, dreq, sreq
from xds_server import events_report, metrics
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.events import EventLog
from xds_server.response import Response
from xds_server.session import Session
from xds_server.session_delta import DeltaSession
from xds_server.session_sotw import SotwSession

ADS = (CDS, EDS, LDS, RDS)
ERROR = "cluster provided LB specified but cluster 'web.default:80' did not provide one"


class Proxy:
    """An ADS client over one session: subscribes to everything, ACKs (or NACKs) all."""

    def __init__(self, cache: SnapshotCache, delta: bool, node_id: str) -> None:
        cls: type[Session] = DeltaSession if delta else SotwSession
        self.session = cls(cache)
        self.delta = delta
        self.node = node(node_id)
        self.nack_types: set[str] = set()

    def request(self, type_url: str, nonce: str = "", error: str | None = None) -> Any:
        first = self.session.node is None
        n: base_pb2.Node | None = self.node if first else None
        if self.delta:
            return dreq(type_url, [] if nonce else ["*"], nonce=nonce, error=error, node=n)
        return sreq(type_url, ["*"], nonce=nonce, error=error, node=n)

    def start(self) -> list[Response]:
        out: list[Response] = []
        for t in ADS:
            out.extend(self.session.on_request(self.request(t)))
        return out

    def answer(self, responses: list[Response]) -> None:
        """ACK every response (NACK those of `nack_types`), and what follows, to the end."""
        pending = list(responses)
        while pending:
            r = pending.pop(0)
            error = ERROR if r.type_url in self.nack_types else None
            pending.extend(self.session.on_request(self.request(r.type_url, r.nonce, error)))

    def update(self) -> list[Response]:
        """The stream wakes up: it reads its group's latest snapshot."""
        assert self.session.group is not None
        return self.session.on_snapshot(self.session.cache.get(self.session.group))


Setup = tuple[Catalog, Controller, EventLog, Callable[[str], Proxy]]


@pytest.fixture(params=["sotw", "delta"])
def setup(request: pytest.FixtureRequest) -> Setup:
    catalog = Catalog()
    catalog.register("registry.yaml", "file")
    cache = SnapshotCache()
    controller = Controller(catalog, cache)
    cache.group_of = controller.group_of
    log = EventLog(100, clock=time.monotonic, wall=time.time)
    cache.events = log
    delta = request.param == "delta"
    return catalog, controller, log, lambda node_id: Proxy(cache, delta, node_id)


async def synced(setup: Setup, *names: str) -> list[Proxy]:
    catalog, controller, _log, proxy = setup
    catalog.replace("registry.yaml", [entry("web", "10.0.0.1")])
    controller.group_of(node("warm-up"))  # the group is built by the rebuild
    await controller.rebuild()
    proxies = [proxy(n) for n in names]
    for p in proxies:
        p.answer(p.start())
    return proxies


def doc(log: EventLog, event_id: int) -> dict[str, Any]:
    (event,) = [e for e in log.events() if e.id == event_id]
    return events_report.event_doc(event)


async def test_a_change_is_acked_by_every_proxy(setup: Setup) -> None:
    catalog, controller, log, _ = setup
    a, b = await synced(setup, "envoy-a", "envoy-b")
    start_doc = doc(log, 1)
    assert start_doc["state"] == "NO_PROXY"  # built before any proxy connected
    assert start_doc["changes"] == {"services_added": {"count": 1, "names": ["web.default"]}}

    catalog.replace("registry.yaml", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    (event,) = log.events(since=1)
    before = doc(log, event.id)
    assert before["source"] == "registry.yaml"
    assert before["changes"] == {"services_added": {"count": 1, "names": ["api.default"]}}
    assert before["state"] == "PENDING" and before["pushed_at"] is None
    assert sorted(before["pending"]) == ["envoy-a", "envoy-b"]

    pushes = a.update()
    assert {r.type_url for r in pushes} >= {CDS, EDS}
    a.answer(pushes)
    half = doc(log, event.id)
    assert half["proxies"] == {
        "total": 2, "acked": 1, "nacked": 0, "pending": 1, "pushed_pending": 0
    }  # fmt: skip
    assert half["pending"] == ["envoy-b"] and half["pushed_at"] is not None

    b.answer(b.update())
    done = doc(log, event.id)
    assert done["state"] == "CONVERGED", done
    assert done["proxies"]["acked"] == 2 and done["pending"] == []
    c = done["convergence"]
    assert c["p50"] is not None and 0 <= c["p50"] <= c["p99"] <= c["max"]


async def test_a_nack_is_attributed_with_the_proxy_and_its_error(setup: Setup) -> None:
    catalog, controller, log, _ = setup
    good, bad = await synced(setup, "envoy-good", "envoy-bad")
    nacks_before = metrics.EVENT_NACKS._value.get()
    bad.nack_types = {CDS}
    catalog.replace("registry.yaml", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    (event,) = log.events(since=1)
    good.answer(good.update())
    bad.answer(bad.update())

    found = doc(log, event.id)
    assert found["state"] == "NACKED", found
    assert found["proxies"]["acked"] == 1 and found["proxies"]["nacked"] == 1
    (nack,) = found["nacks"]
    assert nack["node"] == "envoy-bad" and nack["error"] == ERROR and nack["type_url"] == CDS
    assert found["pending"] == []
    assert metrics.EVENT_NACKS._value.get() == nacks_before + 1


async def test_a_closed_stream_is_no_longer_pending(setup: Setup) -> None:
    catalog, controller, log, _ = setup
    a, b = await synced(setup, "envoy-a", "envoy-b")
    catalog.replace("registry.yaml", [entry("web", "10.0.0.1", "10.0.0.9")])
    await controller.rebuild()
    (event,) = log.events(since=1)
    assert doc(log, event.id)["changes"] == {
        "endpoints_changed": {"count": 1, "names": ["web.default"]}
    }
    pushed = b.update()
    assert [r.type_url for r in pushed] == [EDS]  # endpoints only
    assert doc(log, event.id)["proxies"]["pushed_pending"] == 1
    b.session.close()  # before it answered
    a.answer(a.update())
    found = doc(log, event.id)
    assert found["state"] == "CONVERGED" and found["proxies"]["total"] == 1
    assert found["pending"] == []


async def test_a_change_a_proxy_does_not_subscribe_to_is_not_its_concern(
    setup: Setup,
) -> None:
    """A proxy that names its clusters (like gRPC) is not pending on another's change."""
    catalog, controller, log, proxy = setup
    (everything,) = await synced(setup, "envoy-all")
    named = proxy("grpc-named")
    s = named.session
    req = (dreq(CDS, ["web.default:80"], node=named.node) if named.delta
           else sreq(CDS, ["web.default:80"], node=named.node))  # fmt: skip
    first = s.on_request(req)
    for r in first:  # ACK with the same named subscription
        ack = (dreq(CDS, nonce=r.nonce) if named.delta
               else sreq(CDS, ["web.default:80"], nonce=r.nonce))  # fmt: skip
        assert s.on_request(ack) == []
    catalog.replace("registry.yaml", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    (event,) = log.events(since=1)
    assert doc(log, event.id)["proxies"]["total"] == 2
    assert named.update() == []  # its one cluster did not change
    everything.answer(everything.update())
    found = doc(log, event.id)
    assert found["state"] == "CONVERGED"
    assert found["proxies"]["total"] == 1 and found["proxies"]["acked"] == 1


async def test_a_policy_change_is_an_event_of_its_source(setup: Setup) -> None:
    catalog, controller, log, _ = setup
    from xds_server.model import PolicyKey, PolicyObject

    await synced(setup)
    catalog.register("policy.yaml", "policy-file")
    key = PolicyKey("VirtualService", "default", "web")
    catalog.replace_policies("policy.yaml", [PolicyObject(key, "policy.yaml:1:1", error="bad")])
    await controller.rebuild()
    (event,) = log.events(since=1)
    found = doc(log, event.id)
    assert found["source"] == "policy.yaml"
    assert found["changes"] == {
        "policies_added": {"count": 1, "names": ["VirtualService default/web"]}
    }


async def test_per_type_streams_are_followed_too(setup: Setup) -> None:
    """Without ADS each type has its own stream (here CDS alone, SotW): counted as one."""
    catalog, controller, log, _ = setup
    await synced(setup)
    cds = SotwSession(controller.cache, type_url=CDS)
    (first,) = cds.on_request(sreq(CDS, node=node("envoy-cds")))
    assert cds.on_request(sreq(CDS, nonce=first.nonce, version=first.version)) == []
    catalog.replace("registry.yaml", [entry("web", "10.0.0.1"), entry("api", "10.0.0.2")])
    await controller.rebuild()
    (event,) = log.events(since=1)
    (push,) = cds.on_snapshot(controller.cache.get(cds.group or ""))
    assert doc(log, event.id)["state"] == "PENDING"
    assert cds.on_request(sreq(CDS, nonce=push.nonce, version=push.version)) == []
    found = doc(log, event.id)
    assert found["state"] == "CONVERGED" and found["proxies"]["acked"] == 1, found
