"""The Kubernetes policy source against kmock: VirtualServices, DestinationRules,
HTTPRoutes and GRPCRoutes by list+watch, with the registry source's rules (first list
before anything is published, 410 relist without a change, outage keeps the last good
state), CRDs the cluster lacks (a note, not an error, looked for again), and Istio
served only as v1beta1.

The source runs in the test's event loop and publishes to the real Catalog.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from sources.kube_api import Timing
from sources.kube_config import from_kubeconfig
from sources.kube_policies import KubePolicySource
from tests.gateway_objects import route, to
from tests.harness.kubeapi import FirstWatch, KubeApi, policy_crds
from tests.harness.policy import destination, destination_rule, subsets, virtual_service
from tests.harness.waiting import async_wait_for, running_task
from xds_server.catalog import Catalog
from xds_server.model import PolicyObject

pytestmark = pytest.mark.timeout(60)
pytest_plugins = ["tests.harness.kube_fixtures"]

WAIT = 10.0
FAST = Timing(connect_timeout=2, request_timeout=5, backoff_initial=0.05, backoff_max=0.3)
ISTIO_V1 = "networking.istio.io/v1"
ROUTE_API = "gateway.networking.k8s.io/v1"
HTTP_ROUTES = policy_crds(None)[0]
GONE = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}


class Recorder:
    """A catalog, how many times it told its listeners of a change, and the raw routes
    the source handed to `on_routes`."""

    def __init__(self) -> None:
        self.catalog = Catalog()
        self.changes = 0
        self.catalog.on_change(self._changed)
        self.routes: list[list[dict[str, Any]]] = []

    def _changed(self) -> None:
        self.changes += 1

    def on_routes(self, objects: Sequence[dict[str, Any]]) -> None:
        self.routes.append(list(objects))

    def policies(self) -> dict[str, PolicyObject]:
        return {f"{o.key.kind} {o.key.namespace}/{o.key.name}": o for o in self.catalog.policies()}

    def status(self) -> dict[str, Any]:
        (status,) = self.catalog.sources()
        return status.as_dict()


def make_source(api: KubeApi, tmp_path: Path, rec: Recorder, **kwargs: Any) -> KubePolicySource:
    conn = from_kubeconfig([api.kubeconfig(tmp_path / "kubeconfig")])
    return KubePolicySource(conn, rec.catalog, timing=FAST, on_routes=rec.on_routes, **kwargs)


def gets(api: KubeApi, plural: str) -> list[dict[str, Any]]:
    return [r for r in api.requests() if r["method"] == "GET" and r["path"].endswith(plural)]


def lists(api: KubeApi, plural: str) -> list[str]:
    return [r["path"] for r in gets(api, plural) if not r["query"].get("watch")]


def vs(weight_v1: int = 90) -> dict[str, Any]:
    split = [destination("web", "v1", weight_v1), destination("web", "v2", 100 - weight_v1)]
    http = [{"route": split}]
    return virtual_service("web", ["web"], http)


async def test_lists_and_follows_every_kind(kube_api: KubeApi, tmp_path: Path) -> None:
    kube_api.serve_crds()
    kube_api.create_custom(destination_rule("web", "web", subsets("v1", "v2")))
    kube_api.create_custom(vs(90))
    kube_api.create_custom(route(to("web-v1", "web-v2")))
    rec = Recorder()
    source = make_source(kube_api, tmp_path, rec)
    async with running_task(source.run()):
        await async_wait_for(lambda: len(rec.policies()) == 3, WAIT, message="first list")
        got = rec.policies()
        assert sorted(got) == [
            "DestinationRule default/web", "HTTPRoute shop/web", "VirtualService default/web",
        ]  # fmt: skip
        assert got["HTTPRoute shop/web"].origin == "kubernetes:shop/web"
        assert all(o.policy is not None and not o.error for o in got.values()), got
        assert rec.status()["synced"] and rec.status()["notes"] == []
        assert [r["metadata"]["name"] for r in rec.routes[-1]] == ["web"]
        # An edit is followed, and a deletion.
        kube_api.patch_custom(
            ISTIO_V1, "VirtualService", "web", {"spec": vs(50)["spec"]}, "default"
        )
        await async_wait_for(
            lambda: (
                rec.policies()["VirtualService default/web"] != got["VirtualService default/web"]
            ),
            WAIT,
            message="the edited weight",
        )
        kube_api.delete_custom(ROUTE_API, "HTTPRoute", "web", "shop")
        await async_wait_for(lambda: len(rec.policies()) == 2, WAIT, message="route deleted")
        assert rec.routes[-1] == []


async def test_invalid_object_is_rejected_with_its_reason(
    kube_api: KubeApi, tmp_path: Path
) -> None:
    kube_api.serve_crds()
    bad = vs(90)
    bad["spec"]["http"][0]["route"][0]["weight"] = -5
    kube_api.create_custom(bad)
    rec = Recorder()
    async with running_task(make_source(kube_api, tmp_path, rec).run()):
        await async_wait_for(lambda: rec.policies(), WAIT, message="first list")
        (obj,) = rec.policies().values()
        assert obj.policy is None
        assert obj.error.startswith("kubernetes:default/web: VirtualService default/web: "), obj
        assert "spec.http[0].route[0].weight" in obj.error, obj.error


async def test_nothing_is_published_before_every_kind_has_listed(
    kube_api: KubeApi, tmp_path: Path
) -> None:
    kube_api.serve_crds()
    kube_api.create_custom(vs(90))
    forbidden = {"kind": "Status", "code": 403, "message": "httproutes is forbidden"}
    kube_api.script(lambda k: k[k.action.LIST, k.resource(HTTP_ROUTES)] << 403 << forbidden)
    rec = Recorder()
    async with running_task(make_source(kube_api, tmp_path, rec).run()):
        await async_wait_for(
            lambda: len(lists(kube_api, "httproutes")) >= 2, WAIT, message="retried"
        )
        assert rec.catalog.not_ready() and rec.catalog.policies() == ()
        assert "httproutes" in rec.status()["error"] and "403" in rec.status()["error"]


async def test_missing_crds_are_a_note_not_an_error_and_are_looked_for_again(
    kube_api: KubeApi, tmp_path: Path
) -> None:
    rec = Recorder()  # no policy CRD installed at all
    async with running_task(make_source(kube_api, tmp_path, rec, recheck=0.3).run()):
        await async_wait_for(lambda: rec.status()["synced"], WAIT, message="synced")
        status = rec.status()
        assert not status["stale"] and status["error"] is None and not rec.catalog.not_ready()
        assert [n.split()[0] for n in status["notes"]] == [
            "authorizationpolicies.security.istio.io",
            "destinationrules.networking.istio.io", "grpcroutes.gateway.networking.k8s.io",
            "httproutes.gateway.networking.k8s.io", "peerauthentications.security.istio.io",
            "virtualservices.networking.istio.io",
        ]  # fmt: skip
        assert "not served by the cluster" in status["notes"][0]
        assert rec.catalog.policies() == ()
        # Looked for again every `recheck`, and still missing: nothing published anew.
        changes, looked = rec.changes, len(lists(kube_api, "httproutes"))
        await async_wait_for(
            lambda: len(lists(kube_api, "httproutes")) >= looked + 2, WAIT, message="rechecks"
        )
        assert rec.changes == changes and len(rec.status()["notes"]) == 6
        # Installed later: found at the next look, the notes go.
        kube_api.serve_crds(gateway=False)
        kube_api.create_custom(vs(90))
        await async_wait_for(lambda: rec.policies(), WAIT, message="found after install")
        # Each kind is looked for on its own: the others' notes go at their next look.
        await async_wait_for(
            lambda: [n.split()[0] for n in rec.status()["notes"]] == [
                "grpcroutes.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
            ],
            WAIT,
            message="the installed kinds' notes gone",
        )  # fmt: skip


async def test_istio_served_only_as_v1beta1_is_used(kube_api: KubeApi, tmp_path: Path) -> None:
    kube_api.serve_crds(istio="v1beta1")
    old = {**vs(90), "apiVersion": "networking.istio.io/v1beta1"}
    kube_api.create_custom(old)
    once = FirstWatch("virtualservices", armed=False)
    resource = policy_crds("v1beta1", gateway=False)[0]
    kube_api.script(lambda k: k[k.action.WATCH, k.resource(resource), once] << 410 << GONE)
    rec = Recorder()
    async with running_task(make_source(kube_api, tmp_path, rec).run()):
        await async_wait_for(lambda: rec.policies(), WAIT, message="listed")
        (obj,) = rec.policies().values()
        assert obj.policy is not None and not obj.error, obj
        assert rec.status()["notes"] == []
        assert lists(kube_api, "virtualservices")[:2] == [
            "/apis/networking.istio.io/v1/virtualservices",
            "/apis/networking.istio.io/v1beta1/virtualservices",
        ]
        watch = [r["path"] for r in gets(kube_api, "virtualservices") if r["query"].get("watch")]
        assert watch[0] == "/apis/networking.istio.io/v1beta1/virtualservices"
        # A relist (after a 410) asks the version in use first: no 404 on the way.
        once.armed = True
        kube_api.cut()
        kube_api.restore()
        await async_wait_for(
            lambda: len(lists(kube_api, "virtualservices")) >= 3, WAIT, message="relisted"
        )
        assert lists(kube_api, "virtualservices")[2:] == [
            "/apis/networking.istio.io/v1beta1/virtualservices"
        ]


async def test_gone_on_the_route_watch_relists_without_a_change(
    kube_api: KubeApi, tmp_path: Path
) -> None:
    kube_api.serve_crds()
    kube_api.create_custom(route(to("web-v1", "web-v2")))
    once = FirstWatch("httproutes", armed=False)
    error = ({"type": "ERROR", "object": GONE},)
    kube_api.script(lambda k: k[k.action.WATCH, k.resource(HTTP_ROUTES), once] << error)
    rec = Recorder()
    async with running_task(make_source(kube_api, tmp_path, rec).run()):
        await async_wait_for(lambda: rec.policies(), WAIT, message="first list")
        changes, published = rec.changes, rec.catalog.policies()
        once.armed = True
        kube_api.cut()
        kube_api.restore()
        await async_wait_for(
            lambda: len(lists(kube_api, "httproutes")) >= 2, WAIT, message="relisted"
        )
        await async_wait_for(lambda: not rec.status()["stale"], WAIT, message="recovered")
        assert rec.changes == changes and rec.catalog.policies() == published
        # Still following changes after the relist.
        edit = {"spec": route(to("web-v1"))["spec"]}
        kube_api.patch_custom(ROUTE_API, "HTTPRoute", "web", edit, "shop")
        await async_wait_for(lambda: rec.changes > changes, WAIT, message="edit after relist")


async def test_outage_keeps_the_last_good_policies(kube_api: KubeApi, tmp_path: Path) -> None:
    kube_api.serve_crds()
    kube_api.create_custom(vs(90))
    rec = Recorder()
    async with running_task(make_source(kube_api, tmp_path, rec).run()):
        await async_wait_for(lambda: rec.policies(), WAIT, message="first list")
        before, changes = rec.catalog.policies(), rec.changes
        kube_api.cut()
        await async_wait_for(lambda: rec.status()["stale"], WAIT, message="stale")
        assert rec.catalog.policies() == before
        kube_api.restore()
        await async_wait_for(lambda: not rec.status()["stale"], WAIT, message="recovered")
        assert rec.catalog.policies() == before and rec.changes == changes
        assert rec.status()["services"] == 1


async def test_a_status_write_tells_the_route_hook_but_pushes_nothing(
    kube_api: KubeApi, tmp_path: Path
) -> None:
    kube_api.serve_crds()
    kube_api.create_custom(route(to("web-v1")))
    rec = Recorder()
    async with running_task(make_source(kube_api, tmp_path, rec).run()):
        await async_wait_for(lambda: rec.routes, WAIT, message="first list")
        changes, told = rec.changes, len(rec.routes)
        status = {"status": {"parents": [{"controllerName": "example.com/x", "conditions": []}]}}
        kube_api.patch_custom(ROUTE_API, "HTTPRoute", "web", status, "shop")
        await async_wait_for(lambda: len(rec.routes) > told, WAIT, message="route hook")
        assert rec.routes[-1][0]["status"] == status["status"]
        assert rec.changes == changes
