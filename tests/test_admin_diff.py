"""`xds_server.diff` by hand-made stream states, and /debug/diff's answers to bad queries."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from envoy.config.core.v3 import base_pb2

from tests.harness.admin_state import AdminState
from tests.xds_util import CDS, EDS, cla, cluster
from xds_server import diff
from xds_server.admin import envoy_json
from xds_server.cache import SnapshotCache
from xds_server.csds import Held, StreamState
from xds_server.snapshot import Known, Resource, View
from xds_server.status import ProxyStatus

pytestmark = pytest.mark.timeout(30)


def res(type_url: str, message: Any) -> Resource:
    return Resource.from_message(type_url, message)


def view(*resources: Resource | Known) -> View:
    return View({r.name: r for r in resources})


def stream(held: dict[str, Held], names: frozenset[str] = frozenset()) -> StreamState:
    status = ProxyStatus(kind="ads-sotw", node_id="n1", group="g")
    for type_url in held:
        ts = status.type_status(type_url)
        ts.wildcard = type_url == CDS
        ts.names = names
        ts.sent_version = ts.acked_version = "x"
    return StreamState(base_pb2.Node(id="n1"), status, held)


def test_added_removed_changed_and_version_only() -> None:
    cache = SnapshotCache()
    cache.set_snapshot(
        "g",
        {CDS: [cluster("a", timeout=2.0), cluster("b")], EDS: [cla("a", 81), cla("b", 80)]},
    )
    old_a, gone = res(CDS, cluster("a")), res(CDS, cluster("z"))
    st = stream(
        {
            CDS: Held(acked=view(old_a, gone)),
            EDS: Held(acked=view(Known("a", "v0"), res(EDS, cla("b", 80)))),
        },
        names=frozenset({"a", "b"}),
    )
    found = diff.compare([st], cache.get("g"))
    got = {(diff_type(c), c.name): c.change for c in found.changes}
    assert got == {
        ("CDS", "a"): "changed",
        ("CDS", "b"): "added",
        ("CDS", "z"): "removed",
        ("EDS", "a"): "changed",
    }
    docs = {(diff_type(c), c.name): diff.describe(c, envoy_json) for c in found.changes}
    assert docs["CDS", "a"]["fields"] == ["connect_timeout"]
    assert docs["CDS", "z"]["fields"] == [] and docs["CDS", "z"]["now_version"] is None
    assert '-  "name": "z"' in docs["CDS", "z"]["patch"]
    assert docs["EDS", "a"]["fields"] is None and "only the version" in docs["EDS", "a"]["note"]
    only = diff.compare([st], cache.get("g"), only={EDS})
    assert list(only.types) == ["endpoints"] and len(only.changes) == 1


def diff_type(c: diff.Change) -> str:
    return "CDS" if c.type_url == CDS else "EDS"


def test_field_paths() -> None:
    old = {"a": 1, "b": {"c": [1, 2]}, "d": "x"}
    new = {"a": 1, "b": {"c": [1, 3, 4]}, "e": True}
    assert diff.field_paths(old, new) == ["b.c[1]", "b.c[2]", "d", "e"]
    assert diff.field_paths(old, old) == []
    assert diff.field_paths(1, 2) == ["."]


@pytest.mark.parametrize(
    ("query", "status", "error"),
    [
        ("", 400, "give node=ID (a connected proxy's node id)"),
        ("?node=ghost", 404, "no connected proxy with node id 'ghost'"),
        ("?node=n1&type=secrets", 400, "unknown resource type 'secrets'"),
    ],
)
async def test_debug_diff_bad_queries(query: str, status: int, error: str) -> None:
    server = AdminState().server()
    server.streams = lambda: [stream({CDS: Held()})]
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{port}/debug/diff{query}") as r:
                assert r.status == status
                assert (await r.json())["error"].startswith(error)
    finally:
        await server.stop()
