"""End to end: `xds-server --kubernetes` (real subprocesses) writes HTTPRoute status.

Two replicas watch the same kmock API server (the writable emulator: resourceVersions,
409 on a stale one, the `/status` subresource); only the holder of the Lease writes.
A route whose backends all exist is `Accepted` and `ResolvedRefs`; one naming a Service
that does not exist gets `ResolvedRefs=False` with reason `BackendNotFound`; each route's
status is PATCHed exactly once although two servers see it. (That the Lease, not only the
compare before a write, keeps two writers apart when they race is proven against kmock in
tests/test_kube_route_status_kmock.py, where both start at once.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.e2e import WAIT
from tests.harness.kubeapi import HTTP_ROUTES, WritableKubeApi, endpoint, endpoint_slice, service
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for
from tests.test_e2e_kubernetes_policies import canary

pytest_plugins = ["tests.harness.fixtures"]
pytestmark = pytest.mark.timeout(120)

CONTROLLER = "xds-server.io/mesh"
SOURCE = "kubernetes-policies"


@pytest.fixture
def writable_api() -> Iterator[WritableKubeApi]:
    api = WritableKubeApi().start()
    try:
        yield api
    finally:
        api.stop()


def conditions(api: WritableKubeApi, name: str) -> dict[str, tuple[str, str]] | None:
    """Our entry's conditions on route `name`: type → (status, reason); None if unwritten."""
    obj = api.get_object(HTTP_ROUTES, "default", name)
    parents = ((obj or {}).get("status") or {}).get("parents") or []
    ours = [p for p in parents if p.get("controllerName") == CONTROLLER]
    if not ours:
        return None
    return {c["type"]: (c["status"], c["reason"]) for c in ours[0]["conditions"]}


def test_two_replicas_write_each_route_status_once(
    tmp_path: Path,
    writable_api: WritableKubeApi,
    xds_server_factory: Callable[..., XdsServerProcess],
) -> None:
    api = writable_api
    api.serve_crds()
    for name in ("web", "web-v1", "web-v2"):
        api.create(service(name))
        api.create(endpoint_slice(name, name, [endpoint()], [("http", 8080)]))
    good: dict[str, Any] = canary("web-canary", 90, 10)
    ghost: dict[str, Any] = canary("web-ghost", 90, 0, ghost=10)  # Service ghost: none
    api.put_object(HTTP_ROUTES, good)
    api.put_object(HTTP_ROUTES, ghost)
    config = api.kubeconfig(tmp_path / "kubeconfig")
    servers = [
        xds_server_factory("--kubernetes", "--kubeconfig", str(config), name=f"replica-{i}")
        for i in range(2)
    ]

    assert wait_for(lambda: conditions(api, "web-canary"), WAIT, message="status written") == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }
    assert wait_for(lambda: conditions(api, "web-ghost"), WAIT, message="status written") == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("False", "BackendNotFound"),
    }

    # Both replicas have read both routes and report the writer; one of them writes.
    def writer_notes(server: XdsServerProcess) -> list[str]:
        policies = next(s for s in server.get("/debug/sources") if s["name"] == SOURCE)
        return [n for n in policies.get("notes", []) if n.startswith("route status")]

    notes = [wait_for(lambda s=s: writer_notes(s), WAIT, message="writer notes") for s in servers]
    assert sum("written by this replica" in n[0] for n in notes) == 1, notes
    # A few debounce periods later there was still one PATCH per route, from one replica.
    time.sleep(3.0)
    patches = api.writes("PATCH", "/status")
    assert sorted(r["path"].rsplit("/", 2)[1] for r in patches) == ["web-canary", "web-ghost"]
