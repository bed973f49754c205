"""The Kubernetes source against kmock's emulator: list+watch, 410, bookmarks, outages.

The source runs in the test's event loop against a real HTTP Kubernetes API (kmock,
in a thread, behind a proxy that can be cut) and publishes to the real Catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sources.hold import HoldPolicy
from sources.kube_config import from_kubeconfig
from sources.kubernetes import KubernetesSource, Timing
from tests.harness.kubeapi import (
    SERVICES,
    SLICES,
    TOKEN,
    FirstWatch,
    KubeApi,
    endpoint,
    endpoint_slice,
    service,
)
from tests.harness.waiting import async_wait_for, running_task
from xds_server.catalog import Catalog
from xds_server.model import Endpoint, Locality, ServiceEntry, ServiceKey

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0
FAST = Timing(connect_timeout=2, request_timeout=5, backoff_initial=0.05, backoff_max=0.3)
WEB = ServiceKey("default", "web")


pytest_plugins = ["tests.harness.kube_fixtures"]


@pytest.fixture
def api(kube_api: KubeApi) -> KubeApi:
    return kube_api


class Recorder:
    """A catalog and how many times its merged view changed."""

    def __init__(self) -> None:
        self.catalog = Catalog()
        self.changes = 0
        self.catalog.on_change(self._changed)

    def _changed(self) -> None:
        self.changes += 1

    def entry(self, key: ServiceKey = WEB) -> ServiceEntry | None:
        return self.catalog.merged().get(key)

    def status(self) -> dict[str, Any]:
        (status,) = self.catalog.sources()
        return status.as_dict()


def make_source(api: KubeApi, tmp_path: Path, rec: Recorder, **kwargs: Any) -> KubernetesSource:
    conn = from_kubeconfig([api.kubeconfig(tmp_path / "kubeconfig")])
    return KubernetesSource(conn, rec.catalog, timing=FAST, **kwargs)


def addresses(entry: ServiceEntry | None) -> list[tuple[str, int, str]]:
    assert entry is not None
    return [(e.ip, e.port, e.health) for e in entry.endpoints]


def gets(api: KubeApi, kind: str) -> list[dict[str, Any]]:
    """The source's requests for `kind` (the harness itself only creates and patches)."""
    return [r for r in api.requests() if r["method"] == "GET" and r["path"].endswith(kind)]


def watches(api: KubeApi, kind: str) -> list[dict[str, str]]:
    return [r["query"] for r in gets(api, kind) if r["query"].get("watch")]


def lists(api: KubeApi, kind: str) -> list[dict[str, str]]:
    return [r["query"] for r in gets(api, kind) if not r["query"].get("watch")]


def web_slice(*endpoints: dict[str, Any], name: str = "web-1") -> dict[str, Any]:
    return endpoint_slice(name, "web", list(endpoints), [("http", 8080)])


async def test_list_then_watch_follows_every_change(api: KubeApi, tmp_path: Path) -> None:
    api.create(service("web", [{"name": "http", "port": 80, "targetPort": 8080}]))
    api.create(web_slice(endpoint("10.0.0.1", zone="z1")))
    rec = Recorder()
    # Deleting the only service removes all of them: the guard would hold that
    # (the tests of a relist that empties the view cover it); this test follows events, unguarded.
    source = make_source(api, tmp_path, rec, hold=HoldPolicy(threshold=0))
    assert rec.catalog.not_ready()
    async with running_task(source.run()):
        await async_wait_for(lambda: rec.entry(), WAIT, message="initial state")
        entry = rec.entry()
        assert entry is not None
        assert entry.service.hostnames == ("web.default.svc", "web.default.svc.cluster.local")
        assert entry.service.ports[0].port == 80 and entry.service.ports[0].protocol == "http"
        # The target port (the slice's) is the endpoint's, not the service port.
        assert entry.endpoints == (
            Endpoint("10.0.0.1", 8080, "http", "healthy", Locality("", "z1")),
        )
        assert not rec.catalog.not_ready()

        # Scale up; one not ready; one terminating but serving; one terminating, not serving.
        api.patch(
            "endpointslices",
            "web-1",
            {
                "endpoints": [
                    endpoint("10.0.0.1"),
                    endpoint("10.0.0.2", ready=False),
                    endpoint("10.0.0.3", ready=False, serving=True, terminating=True),
                    endpoint("10.0.0.4", ready=False, serving=False, terminating=True),
                ]
            },
        )
        want = [
            ("10.0.0.1", 8080, "healthy"),
            ("10.0.0.2", 8080, "unhealthy"),
            ("10.0.0.3", 8080, "draining"),
            ("10.0.0.4", 8080, "unhealthy"),
        ]
        await async_wait_for(lambda: addresses(rec.entry()) == want, WAIT, message="conditions")

        # A second slice repeating an address: kept once, the healthier state wins.
        api.create(web_slice(endpoint("10.0.0.2"), endpoint("10.0.0.5"), name="web-2"))
        want = [
            ("10.0.0.1", 8080, "healthy"),
            ("10.0.0.2", 8080, "healthy"),
            ("10.0.0.3", 8080, "draining"),
            ("10.0.0.4", 8080, "unhealthy"),
            ("10.0.0.5", 8080, "healthy"),
        ]
        await async_wait_for(lambda: addresses(rec.entry()) == want, WAIT, message="dedupe")

        api.delete("endpointslices", "web-1")
        want = [("10.0.0.2", 8080, "healthy"), ("10.0.0.5", 8080, "healthy")]
        await async_wait_for(lambda: addresses(rec.entry()) == want, WAIT, message="slice gone")

        api.delete("services", "web")
        await async_wait_for(lambda: rec.entry() is None, WAIT, message="service deleted")
        api.create(service("web"))
        await async_wait_for(
            lambda: rec.entry() is not None and len(rec.entry().endpoints) == 2,  # type: ignore[union-attr]
            WAIT,
            message="service back, slices joined again",
        )

    (first_list, *_) = lists(api, "services")
    assert first_list["limit"] == "500"
    watch = watches(api, "services")[0]
    assert watch["allowWatchBookmarks"] == "true" and int(watch["timeoutSeconds"]) > 0
    assert watch["resourceVersion"] == "..."  # the list's, sent back as is


async def test_bookmark_then_close_resumes_from_its_version(api: KubeApi, tmp_path: Path) -> None:
    api.create(service("web"))
    first = FirstWatch("services")
    bookmark = {
        "type": "BOOKMARK",
        "object": {"kind": "Service", "metadata": {"resourceVersion": "77"}},
    }
    api.script(lambda k: k[k.action.WATCH, k.resource(SERVICES), first] << (bookmark,))
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: len(watches(api, "services")) >= 2, WAIT, message="resumed")
    _, second_watch, *_ = watches(api, "services")
    assert second_watch["resourceVersion"] == "77"
    assert len(lists(api, "services")) == 1  # a normal close is resumed, not relisted


async def relist_after_gone(
    api: KubeApi,
    rec: Recorder,
    once: FirstWatch,
    kind: str,
    relists: int,
    meanwhile: Callable[[], Any] = lambda: None,
) -> None:
    """Arm `once` (a watch scripted to answer 410) and cut the connections (`meanwhile`
    runs while they are cut): the watch reconnects, gets the 410, and the source relists
    (its `relists`-th list of `kind`) and recovers."""
    once.armed = True
    api.cut()
    meanwhile()
    api.restore()
    await async_wait_for(lambda: len(lists(api, kind)) >= relists, WAIT, message="relist")
    await async_wait_for(lambda: not rec.status()["stale"], WAIT, message="recovered")


@pytest.mark.parametrize("how", ["status", "event"])
async def test_gone_relists_without_spurious_changes(
    how: str, api: KubeApi, tmp_path: Path
) -> None:
    api.create(service("web"))
    api.create(web_slice(endpoint("10.0.0.1")))
    once = FirstWatch("endpointslices", armed=False)
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    if how == "status":
        api.script(lambda k: k[k.action.WATCH, k.resource(SLICES), once] << 410 << gone)
    else:
        api.script(
            lambda k: (
                k[k.action.WATCH, k.resource(SLICES), once] << ({"type": "ERROR", "object": gone},)
            )
        )
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: rec.entry(), WAIT, message="initial state")
        changes = rec.changes
        await relist_after_gone(api, rec, once, "endpointslices", 2)
        assert rec.changes == changes  # the same state again: nothing to push
        # And it still follows changes after the relist.
        api.patch("endpointslices", "web-1", {"endpoints": [endpoint("10.0.0.9")]})
        await async_wait_for(
            lambda: addresses(rec.entry()) == [("10.0.0.9", 8080, "healthy")], WAIT
        )


async def test_unreachable_api_keeps_last_good_state(api: KubeApi, tmp_path: Path) -> None:
    api.create(service("web"))
    api.create(web_slice(endpoint("10.0.0.1")))
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: rec.entry(), WAIT, message="initial state")
        before, changes = rec.entry(), rec.changes
        api.cut()
        status = await async_wait_for(
            lambda: (s := rec.status())["stale"] and s, WAIT, message="stale"
        )
        assert status["synced"] and status["error"].startswith(
            ("services", "endpointslices", "pods")
        )
        assert rec.entry() == before and not rec.catalog.not_ready()
        api.restore()
        await async_wait_for(lambda: not rec.status()["stale"], WAIT, message="recovered")
        assert rec.entry() == before and rec.changes == changes


async def test_first_sync_waits_for_both_lists(api: KubeApi, tmp_path: Path) -> None:
    api.create(service("web"))
    api.script(
        lambda k: (
            k[k.action.LIST, k.resource(SLICES)]
            << 403
            << {"kind": "Status", "code": 403, "message": "endpointslices is forbidden"}
        )
    )
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        reasons = await async_wait_for(
            lambda: [r for r in rec.catalog.not_ready() if "forbidden" in r],
            WAIT,
            message="the list error in readiness",
        )
        assert "get/list/watch" in reasons[0]
        assert rec.entry() is None and rec.changes == 0


async def test_error_event_is_retried(api: KubeApi, tmp_path: Path) -> None:
    api.create(service("web"))
    first = FirstWatch("services")
    boom = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd hiccup"}}
    api.script(lambda k: k[k.action.WATCH, k.resource(SERVICES), first] << (boom,))
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: len(watches(api, "services")) >= 2, WAIT, message="retried")
        await async_wait_for(lambda: rec.entry(), WAIT, message="state")
        await async_wait_for(lambda: not rec.status()["stale"], WAIT, message="not stale")


async def test_namespaces_and_label_selector(api: KubeApi, tmp_path: Path) -> None:
    api.create(service("web", namespace="shop"))
    api.create(service("db", namespace="data"))
    api.create(service("other", namespace="elsewhere"))
    rec = Recorder()
    source = make_source(api, tmp_path, rec, namespaces=["shop", "data"], label_selector="mesh=on")
    async with running_task(source.run()):
        await async_wait_for(lambda: len(rec.catalog.merged()) == 2, WAIT, message="two")
        assert set(rec.catalog.merged()) == {ServiceKey("shop", "web"), ServiceKey("data", "db")}
        await async_wait_for(lambda: len(watches(api, "endpointslices")) == 2, WAIT)
    paths = {r["path"] for r in api.requests()}
    assert "/api/v1/namespaces/shop/services" in paths
    assert "/apis/discovery.k8s.io/v1/namespaces/data/endpointslices" in paths
    assert "/api/v1/services" not in paths
    assert all(q["labelSelector"] == "mesh=on" for q in lists(api, "services"))
    assert all(q["labelSelector"] == "mesh=on" for q in watches(api, "services"))
    assert all("labelSelector" not in q for q in lists(api, "endpointslices"))


async def test_external_name_becomes_a_service_without_endpoints(
    api: KubeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api.create(service("web"))
    api.create(service("ext", type="ExternalName", externalName="db.example.com"))
    api.create(service("noports", [], type="ExternalName", externalName="x.example.com"))
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: rec.entry(), WAIT, message="state")
        ext = rec.catalog.merged()[ServiceKey("default", "ext")]
        assert ext.service.external_name == "db.example.com" and ext.endpoints == ()
        assert ServiceKey("default", "noports") not in rec.catalog.merged()
    assert "noports.default skipped: ExternalName (x.example.com) without TCP ports" in caplog.text


async def test_bearer_token_is_sent(api: KubeApi, tmp_path: Path) -> None:
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: len(watches(api, "services")) >= 1, WAIT, message="watch")
    tokens = {r["headers"].get("Authorization") for r in gets(api, "services")}
    assert tokens == {f"Bearer {TOKEN}"}


async def test_watch_lines_bigger_than_aiohttp_line_limit(api: KubeApi, tmp_path: Path) -> None:
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: not rec.catalog.not_ready(), WAIT, message="synced")
        big = service("web", labels={"app": "web"})
        big["metadata"]["annotations"] = {"last-applied": "x" * 300_000}  # one 300 KB line
        api.create(big)
        api.create(web_slice(endpoint("10.0.0.1")))
        await async_wait_for(
            lambda: addresses(rec.entry()) == [("10.0.0.1", 8080, "healthy")], WAIT
        )
        assert not rec.status()["stale"]


class WhileArmed:
    """A kmock criterion matching every list (or watch) of services that arrives while
    armed (kmock also asks criteria about requests it served earlier: ids stay)."""

    def __init__(self, watch: bool) -> None:
        self.watch, self.armed = watch, False
        self.chosen: set[int] = set()
        self.seen: set[int] = set()

    def __call__(self, req: Any) -> bool:
        if id(req) in self.chosen:
            return True
        fresh = id(req) not in self.seen
        self.seen.add(id(req))
        if not (fresh and self.armed and req.url.path.endswith("services")):
            return False
        if bool(req.params.get("watch")) != self.watch:
            return False
        self.chosen.add(id(req))
        return True


NO_SERVICES = {"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}}
BOOKMARK = {"type": "BOOKMARK", "object": {"kind": "Service", "metadata": {"resourceVersion": "1"}}}
GONE = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}


def three_services(api: KubeApi) -> None:
    for name in ("web", "api", "db"):
        api.create(service(name))
        api.create(endpoint_slice(f"{name}-1", name, [endpoint("10.0.0.1")], [("http", 8080)]))


def holding_calls(rec: Recorder) -> list[tuple[Any, ...]]:
    """Every catalog.set_holding call, recorded."""
    calls: list[tuple[Any, ...]] = []
    original = rec.catalog.set_holding

    def record(*args: Any) -> None:
        calls.append(args)
        original(*args)

    rec.catalog.set_holding = record  # type: ignore[method-assign]
    return calls


async def test_a_relist_that_empties_the_view_is_held_and_a_restore_publishes_nothing(
    api: KubeApi, tmp_path: Path
) -> None:
    three_services(api)
    relist, empty = FirstWatch("services", armed=False), WhileArmed(watch=False)
    api.script(lambda k: k[k.action.WATCH, k.resource(SERVICES), relist] << 410 << GONE)
    api.script(lambda k: k[k.action.LIST, k.resource(SERVICES), empty] << NO_SERVICES)
    rec = Recorder()
    calls = holding_calls(rec)
    source = make_source(api, tmp_path, rec, hold=HoldPolicy(threshold=0.5, period=60))
    async with running_task(source.run()):
        await async_wait_for(lambda: len(rec.catalog.merged()) == 3, WAIT, message="synced")
        before, changes = dict(rec.catalog.merged()), rec.changes
        empty.armed = relist.armed = True
        # The services watch reconnects, gets 410 and relists: no Service at all. The
        # next watch, from that list's resourceVersion, brings every Service back.
        api.cut()
        api.restore()
        await async_wait_for(lambda: len(calls) >= 2, WAIT, message="a hold, then its end")
        assert calls[0][0] == "kubernetes" and calls[0][2] == 3, calls
        assert "3 of 3 services would be removed at once" in calls[0][1], calls
        assert calls[-1] == ("kubernetes", None, 0), calls
        assert dict(rec.catalog.merged()) == before
        assert rec.changes == changes  # held, then restored: nothing published


async def test_an_empty_view_that_lasts_is_applied_when_the_hold_ends(
    api: KubeApi, tmp_path: Path
) -> None:
    three_services(api)
    relist = FirstWatch("services", armed=False)
    lists_, watches_ = WhileArmed(watch=False), WhileArmed(watch=True)
    api.script(lambda k: k[k.action.WATCH, k.resource(SERVICES), relist] << 410 << GONE)
    api.script(lambda k: k[k.action.LIST, k.resource(SERVICES), lists_] << NO_SERVICES)
    api.script(lambda k: k[k.action.WATCH, k.resource(SERVICES), watches_] << (BOOKMARK,))
    rec = Recorder()
    calls = holding_calls(rec)
    source = make_source(api, tmp_path, rec, hold=HoldPolicy(threshold=0.5, period=1.0))
    async with running_task(source.run()):
        await async_wait_for(lambda: len(rec.catalog.merged()) == 3, WAIT, message="synced")
        lists_.armed = watches_.armed = relist.armed = True
        api.cut()
        api.restore()
        status = await async_wait_for(
            lambda: (s := rec.status())["holding"] and s, WAIT, message=lambda: f"HOLDING: {calls}"
        )
        assert status["held_removals"] == 3 and len(rec.catalog.merged()) == 3
        await async_wait_for(
            lambda: not rec.catalog.merged(), WAIT, message="removed after the hold"
        )
        assert not rec.status()["holding"]
