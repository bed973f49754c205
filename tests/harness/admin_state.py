"""Admin-server state made by hand, shared by the admin and xdsctl tests.

`AdminState`: a filled cache (groups GROUP and OTHER), a registry with hand-made proxy
statuses (one of them NACKing listeners with NACK_ERROR), the sources list and the
callbacks the admin server takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.harness.loop_thread import LoopThread
from translators.resources import (
    VirtualHost,
    eds_cluster,
    http_listener,
    load_assignment,
    route_configuration,
)
from xds_server import types
from xds_server.admin import AdminServer
from xds_server.cache import SnapshotCache
from xds_server.model import Endpoint, Locality
from xds_server.snapshot import Snapshot
from xds_server.status import ProxyRegistry, ProxyStatus

GROUP = "web"
OTHER = "batch"
NACK_ERROR = "Proto constraint validation failed: listener 'http': port_value must be > 0"
SOURCES = [
    {"name": "consul", "kind": "consul", "synced": True, "stale": False, "error": None,
     "services": 2, "rejected": []},
    {"name": "k8s", "kind": "kubernetes", "synced": False, "stale": True,
     "error": "watch failed: connection reset", "services": 1, "rejected": ["bad-svc"]},
]  # fmt: skip


POLICIES = [
    {"kind": "DestinationRule", "namespace": "default", "name": "web", "origin": "p.yaml:19:1",
     "state": "ACCEPTED", "reasons": [], "services": ["web.default"], "source": "file"},
    {"kind": "VirtualService", "namespace": "shop", "name": "api", "origin": "p.yaml:30:1",
     "state": "REJECTED",
     "reasons": ["p.yaml:36:17: VirtualService shop/api: spec.http[0].route[0].weight: must "
                 "be at least 0", "serving its last valid version (p.yaml:30:1)"],
     "services": ["api.shop", "api2.shop"], "source": "kubernetes"},
]  # fmt: skip


class AdminState:
    """Server state as the admin server sees it: cache, registry and callbacks."""

    def __init__(self) -> None:
        self.cache = SnapshotCache()
        self.cache.set_snapshot(
            GROUP,
            {
                types.CLUSTER: [eds_cluster("backend"), eds_cluster("api")],
                types.ENDPOINT: [
                    load_assignment("backend", [Endpoint("10.0.0.1", 8080)]),
                    load_assignment(
                        "api", [Endpoint("10.0.0.2", 9090, locality=Locality(zone="z1"))]
                    ),
                ],
                types.LISTENER: [http_listener("http", 10000, "local")],
                types.ROUTE: [route_configuration("local", [VirtualHost("all", ["*"], "backend")])],
            },
        )
        self.cache.set_snapshot(OTHER, {types.CLUSTER: [eds_cluster("jobs")]})
        self.registry = ProxyRegistry()
        self.reasons: list[str] = ["source k8s has not synced yet"]
        self.warnings: list[str] = []
        self.snap = self.cache.get(GROUP)

        # envoy-1: clusters and endpoints acked at the current snapshot, listeners NACKed.
        p1 = ProxyStatus(kind="ads-sotw", peer="ipv4:127.0.0.1:40001", node_id="envoy-1")
        p1.cluster, p1.group = "web-cluster", GROUP
        cds = p1.type_status(types.CLUSTER)
        cds.wildcard = True
        cds.sent_version = cds.acked_version = self.version(types.CLUSTER)
        eds = p1.type_status(types.ENDPOINT)
        eds.subscribed, eds.names = 2, frozenset({"backend", "api"})
        eds.sent_version = eds.acked_version = self.version(types.ENDPOINT)
        lds = p1.type_status(types.LISTENER)
        lds.wildcard = True
        lds.sent_version = lds.error_version = self.version(types.LISTENER)
        lds.acked_version = "0000000000000000"
        lds.last_error, lds.nacks = NACK_ERROR, 1
        # envoy-2: acked what it was sent, but the snapshot has moved on since.
        p2 = ProxyStatus(kind="ads-delta", peer="ipv4:127.0.0.1:40002", node_id="envoy-2")
        p2.cluster, p2.group = "batch-cluster", OTHER
        cds2 = p2.type_status(types.CLUSTER)
        cds2.wildcard = True
        cds2.sent_version = cds2.acked_version = "1111111111111111"
        self.proxies = [p1, p2]

    def version(self, type_url: str) -> str:
        return self.snap.get(type_url).version

    async def snapshot_for(self, key: str) -> Snapshot:
        if key not in self.cache.groups():
            raise ValueError(f"unknown proxy group {key!r}")
        return self.cache.get(key)

    def readiness(self) -> list[str]:
        return list(self.reasons)

    def server(self, address: str = "127.0.0.1:0") -> AdminServer:
        return AdminServer(
            address,
            cache=self.cache,
            registry=self.registry,
            readiness=self.readiness,
            sources=lambda: SOURCES,
            snapshot_for=self.snapshot_for,
            default_group=GROUP,
            warnings=lambda: list(self.warnings),
            policies=lambda: POLICIES,
        )

    def connect(self) -> None:
        for p in self.proxies:
            self.registry.add(p)

    def disconnect(self) -> None:
        for p in self.proxies:
            self.registry.remove(p)


@contextlib.contextmanager
def serving(state: AdminState) -> Iterator[str]:
    """The admin server over `state` on its own loop thread; yields its base URL."""
    thread = LoopThread("admin").start()
    server = state.server()
    try:
        yield f"http://127.0.0.1:{thread.run(server.start())}"
        thread.run(server.stop())
    finally:
        thread.stop()
