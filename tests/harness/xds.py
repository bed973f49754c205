"""Run the real xds-server (gRPC, in-process) on its own event-loop thread for e2e tests.

Tests and harness helpers are synchronous (they block on Envoy, HTTP and subprocesses),
so the server gets its own loop in a thread; snapshot changes are marshalled onto it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from tests.harness.lifecycle import StartStop
from tests.harness.loop_thread import LoopThread
from xds_server.cache import SnapshotCache
from xds_server.grpc_server import ServerOptions, XdsServer
from xds_server.status import ProxyRegistry

T = TypeVar("T")


class XdsServerThread(StartStop):
    """An XdsServer on 127.0.0.1:port in a background thread. Restartable on the same port."""

    def __init__(self, port: int = 0, cache: SnapshotCache | None = None):
        self.port = port
        self.cache = cache if cache is not None else SnapshotCache()
        self.registry = ProxyRegistry()
        self.server: XdsServer | None = None
        self._thread: LoopThread | None = None

    def start(self, timeout: float = 10.0) -> XdsServerThread:
        thread = LoopThread("xds-server").start()
        options = ServerOptions(address=f"127.0.0.1:{self.port}", shutdown_grace=1.0)
        try:
            # Made on its loop: grpc.aio binds a server to the loop it is created on.
            server = thread.call(lambda: XdsServer(self.cache, self.registry, options))
            self.port = thread.run(server.start(), timeout)
        except BaseException:  # a bind error is the caller's to see; leave nothing behind
            thread.stop()
            raise
        self.server, self._thread = server, thread
        return self

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `fn` on the server's loop (snapshot changes must happen there)."""
        assert self._thread is not None, "server not started"
        return self._thread.call(fn, timeout)

    def set_snapshot(self, group: str, resources: Mapping[str, Iterable[Any]]) -> bool:
        return self.call(lambda: self.cache.set_snapshot(group, resources))

    def proxies(self) -> list[dict[str, Any]]:
        return self.call(lambda: [p.as_dict() for p in self.registry.all()])

    def stop(self, timeout: float = 10.0) -> None:
        thread, server = self._thread, self.server
        if thread is None or server is None:
            return
        try:
            thread.run(server.stop(), timeout)
        finally:
            thread.stop(timeout)
            self._thread = None
            self.server = None
