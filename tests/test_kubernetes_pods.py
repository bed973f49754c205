"""Pod labels on Kubernetes endpoints: the metadata-only Pod watch against kmock's emulator.

DestinationRule subsets select endpoints by their pod's labels; the source joins an
EndpointSlice endpoint's `targetRef` to a `PartialObjectMetadata` watch of Pods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sources.kube_mapping import KubeSlice, parse_slice
from sources.kube_pods import METADATA_LIST, METADATA_WATCH, PodLabels, parse_pod
from sources.kubernetes import KubernetesSource
from tests.harness.kubeapi import PODS, FirstWatch, KubeApi, endpoint, endpoint_slice, pod, service
from tests.harness.waiting import async_wait_for, running_task
from tests.test_kubernetes_source import (
    GONE,
    WAIT,
    WEB,
    Recorder,
    gets,
    make_source,
    relist_after_gone,
)
from xds_server.model import ServiceEntry, ServiceKey

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ["tests.harness.kube_fixtures"]

API = ServiceKey("default", "api")


@pytest.fixture
def api(kube_api: KubeApi) -> KubeApi:
    return kube_api


def labels_by_ip(entry: ServiceEntry | None) -> dict[str, dict[str, str]]:
    assert entry is not None
    return {e.ip: dict(e.labels) for e in entry.endpoints}


def create_service(api: KubeApi, name: str, *pods: tuple[str, str]) -> None:
    """Service `name` with one slice whose endpoints are (ip, pod name)."""
    api.create(service(name))
    eps = [endpoint(ip, pod=p) for ip, p in pods]
    api.create(endpoint_slice(f"{name}-1", name, eps, [("http", 8080)]))


def published(source: KubernetesSource) -> list[set[ServiceKey]]:
    """The keys of every incremental publish (publisher.update), recorded."""
    calls: list[set[ServiceKey]] = []
    original = source.publisher.update

    def record(changes: Any) -> None:
        calls.append(set(changes))
        original(changes)

    source.publisher.update = record  # type: ignore[method-assign]
    return calls


async def test_endpoints_carry_their_pods_labels_from_a_metadata_only_watch(
    api: KubeApi, tmp_path: Path
) -> None:
    api.create(pod("web-a", {"app": "web", "version": "v1"}))
    api.create(pod("web-b", {"app": "web", "version": "v2"}))
    create_service(api, "web", ("10.0.0.1", "web-a"), ("10.0.0.2", "web-b"))
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: rec.entry(), WAIT, message="initial state")
        assert labels_by_ip(rec.entry()) == {
            "10.0.0.1": {"app": "web", "version": "v1"},
            "10.0.0.2": {"app": "web", "version": "v2"},
        }
        await async_wait_for(lambda: any(r["query"].get("watch") for r in gets(api, "pods")), WAIT)
    # Every Pod request asked for metadata only: the API server never sends specs.
    pod_gets = gets(api, "pods")
    assert [r["path"] for r in pod_gets][:2] == ["/api/v1/pods", "/api/v1/pods"]
    for r in pod_gets:
        want = METADATA_WATCH if r["query"].get("watch") else METADATA_LIST
        assert r["headers"]["Accept"] == want
    # Identical label sets are one tuple in the store.
    web_a, web_b = source.pods.labels("default", "web-a"), source.pods.labels("default", "web-b")
    assert web_a != web_b
    source.pods.set(
        ("default", "web-c"), parse_pod(pod("web-c", {"version": "v1", "app": "web"}))[1]
    )
    assert source.pods.labels("default", "web-c") is web_a


async def test_a_label_change_republishes_only_the_services_of_that_pod(
    api: KubeApi, tmp_path: Path
) -> None:
    api.create(pod("web-a", {"version": "v1"}))
    api.create(pod("api-a", {"version": "v1"}))
    api.create(pod("lonely", {"version": "v1"}))  # no endpoint names it
    create_service(api, "web", ("10.0.0.1", "web-a"))
    create_service(api, "api", ("10.0.0.2", "api-a"))
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    calls = published(source)
    async with running_task(source.run()):
        await async_wait_for(lambda: rec.entry() and rec.entry(API), WAIT, message="initial")
        api_before = rec.entry(API)
        # Churn that changes no label (a status update) and an unreferenced pod's change:
        # nothing to publish.
        api.patch("pods", "web-a", {"status": {"phase": "Running", "podIP": "10.0.0.1"}})
        api.patch("pods", "lonely", {"metadata": {"labels": {"version": "v2"}}})
        await async_wait_for(
            lambda: source.pods.labels("default", "lonely") == (("version", "v2"),), WAIT
        )
        api.patch("pods", "web-a", {"metadata": {"labels": {"version": "v2"}}})
        await async_wait_for(
            lambda: labels_by_ip(rec.entry()) == {"10.0.0.1": {"version": "v2"}}, WAIT
        )
        assert [c for c in calls if c] == [{WEB}]
        assert rec.entry(API) is api_before


async def test_an_unknown_pod_has_no_labels_until_it_appears(api: KubeApi, tmp_path: Path) -> None:
    create_service(api, "web", ("10.0.0.1", "web-a"))
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: rec.entry(), WAIT, message="initial state")
        assert labels_by_ip(rec.entry()) == {"10.0.0.1": {}}
        api.create(pod("web-a", {"version": "v1"}))
        await async_wait_for(
            lambda: labels_by_ip(rec.entry()) == {"10.0.0.1": {"version": "v1"}}, WAIT
        )
        api.delete("pods", "web-a")
        await async_wait_for(lambda: labels_by_ip(rec.entry()) == {"10.0.0.1": {}}, WAIT)


async def test_nothing_is_published_before_the_first_pod_list(api: KubeApi, tmp_path: Path) -> None:
    create_service(api, "web", ("10.0.0.1", "web-a"))
    forbidden = {"kind": "Status", "code": 403, "message": "pods is forbidden"}
    api.script(lambda k: k[k.action.LIST, k.resource(PODS)] << 403 << forbidden)
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        reasons = await async_wait_for(
            lambda: [r for r in rec.catalog.not_ready() if "pods is forbidden" in r], WAIT
        )
        assert "list/watch on pods" in reasons[0]
        assert rec.entry() is None and rec.changes == 0


async def test_gone_on_the_pod_watch_relists_and_catches_up(api: KubeApi, tmp_path: Path) -> None:
    api.create(pod("web-a", {"version": "v1"}))
    create_service(api, "web", ("10.0.0.1", "web-a"))
    once = FirstWatch("pods", armed=False)
    api.script(lambda k: k[k.action.WATCH, k.resource(PODS), once] << 410 << GONE)
    rec = Recorder()
    source = make_source(api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: rec.entry(), WAIT, message="initial state")
        changes = rec.changes
        await relist_after_gone(api, rec, once, "pods", 2)
        assert rec.changes == changes  # the same pods again: nothing to push
        pod_lists = [r for r in gets(api, "pods") if not r["query"].get("watch")]
        assert [r["headers"]["Accept"] for r in pod_lists] == [METADATA_LIST] * 2
        api.patch("pods", "web-a", {"metadata": {"labels": {"version": "v2"}}})
        await async_wait_for(
            lambda: labels_by_ip(rec.entry()) == {"10.0.0.1": {"version": "v2"}}, WAIT
        )
        # A pod deleted while the source is not watching (kmock's stream ended with the
        # cut): only the relist can tell; the emulator's new watch replays what exists,
        # never what went away.
        await relist_after_gone(api, rec, once, "pods", 3, lambda: api.delete("pods", "web-a"))
        await async_wait_for(lambda: labels_by_ip(rec.entry()) == {"10.0.0.1": {}}, WAIT)


def test_pod_labels_store_counts_references() -> None:
    """Slices naming a pod are counted per service: the endpoint slice controller moves
    endpoints between slices non-atomically, and a pod can back several Services."""
    store = PodLabels()
    web, api = ("default", "web"), ("default", "api")
    v1, v2 = (("version", "v1"),), (("version", "v2"),)
    assert store.set(("default", "a"), v1) == set()  # no endpoint names it yet

    def named_by(service: str, name: str) -> KubeSlice:
        eps = [endpoint(pod="a")]
        return parse_slice(endpoint_slice(name, service, eps, [("http", 80)]))

    one, two, api_one = named_by("web", "web-1"), named_by("web", "web-2"), named_by("api", "api-1")
    store.ref(web, one)
    store.ref(web, two)
    store.ref(api, api_one)
    assert store.set(("default", "a"), v2) == {web, api}
    store.unref(web, one)  # still named by web-2
    assert store.set(("default", "a"), v1) == {web, api}
    store.unref(web, two)
    assert store.set(("default", "a"), v2) == {api}
    store.unref(api, api_one)
    assert store.set(("default", "a"), v1) == set()
    store.set(("default", "a"), None)
    assert len(store) == 0 and store.labels("default", "a") == ()


def test_only_a_pod_target_ref_names_a_pod() -> None:
    """A targetRef of another kind (an Endpoints' Node, a VM's WorkloadEntry) gives the
    endpoint no pod, hence no labels."""
    eps = [endpoint("10.0.0.1", pod="a"), endpoint("10.0.0.2", pod="b"), endpoint("10.0.0.3")]
    eps[1]["targetRef"]["kind"] = "WorkloadEntry"
    sl = parse_slice(endpoint_slice("web-1", "web", eps, [("http", 80)]))
    assert [ep.pod for ep in sl.endpoints] == ["a", "", ""]
