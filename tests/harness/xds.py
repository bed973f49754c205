"""Run the real xds-server (gRPC, in-process) on its own event-loop thread for e2e tests.

Tests and harness helpers are synchronous (they block on Envoy, HTTP and subprocesses),
so the server gets its own loop in a thread; snapshot changes are marshalled onto it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from xds_server.cache import SnapshotCache
from xds_server.grpc_server import ServerOptions, XdsServer
from xds_server.status import ProxyRegistry

T = TypeVar("T")


class XdsServerThread:
    """An XdsServer on 127.0.0.1:port in a background thread. Restartable on the same port."""

    def __init__(self, port: int = 0, cache: SnapshotCache | None = None):
        self.port = port
        self.cache = cache if cache is not None else SnapshotCache()
        self.registry = ProxyRegistry()
        self.server: XdsServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> XdsServerThread:
        ready: Future[int] = Future()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self.server = XdsServer(
                    self.cache,
                    self.registry,
                    ServerOptions(address=f"127.0.0.1:{self.port}", shutdown_grace=1.0),
                )
                port = loop.run_until_complete(self.server.start())
                ready.set_result(port)
            except BaseException as exc:  # surface bind errors to the caller
                ready.set_exception(exc)
                loop.close()
                return
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="xds-server", daemon=True)
        self._thread.start()
        self.port = ready.result(timeout=timeout)
        return self

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `fn` on the server's loop (snapshot changes must happen there)."""
        assert self._loop is not None, "server not started"

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout)

    def set_snapshot(self, group: str, resources: Mapping[str, Iterable[Any]]) -> bool:
        return self.call(lambda: self.cache.set_snapshot(group, resources))

    def proxies(self) -> list[dict[str, Any]]:
        return self.call(lambda: [p.as_dict() for p in self.registry.all()])

    def stop(self, timeout: float = 10.0) -> None:
        loop, server = self._loop, self.server
        if loop is None or server is None or self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(timeout)
            self._loop = None
            self.server = None
            self._thread = None

    def __enter__(self) -> XdsServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
