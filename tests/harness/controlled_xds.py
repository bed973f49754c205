"""The real controller behind an in-process xDS server, for tests that plug in a
translator hook the CLI does not expose (e.g. ``controller.proxyless.rbac_of``, the
server-side authorization of proxyless gRPC).

:class:`ControlledXds`: an ``XdsServerThread`` (plaintext xDS on 127.0.0.1) whose cache
is fed by a ``Controller`` over a ``Catalog`` the test fills with `set_services`; with a
CA, the cache holds a secret store, as ``xds-server --ca-dir`` sets it up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

from xds_server import secret_rotation
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.identity.ca import CertificateAuthority
from xds_server.model import ServiceEntry

from .lifecycle import StartStop
from .waiting import wait_for
from .xds import XdsServerThread

SOURCE = "test"
T = TypeVar("T")


class ControlledXds(StartStop):
    def __init__(self, ca: CertificateAuthority | None = None, trust_domain: str = "cluster.local"):
        self.cache = SnapshotCache()
        self.catalog = Catalog()
        self.catalog.register(SOURCE, "file")
        self.controller = Controller(self.catalog, self.cache)
        self.cache.group_of = self.controller.group_of
        if ca is not None:
            self.cache.secrets = secret_rotation.open_store(ca, trust_domain, 3600.0)
        self.server = XdsServerThread(cache=self.cache)

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> Self:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop (the controller and cache live there)."""
        return self.server.call(fn)

    def set_services(self, entries: Sequence[ServiceEntry], timeout: float = 10.0) -> None:
        """Replace the catalog and rebuild every group, as the debouncer would."""

        def apply() -> asyncio.Task[None]:
            self.catalog.replace(SOURCE, entries)
            return asyncio.get_running_loop().create_task(self.controller.rebuild())

        task = self.call(apply)
        wait_for(lambda: self.call(task.done), timeout=timeout, message="controller rebuild")
        self.call(task.result)  # its exception, if any

    def proxies(self) -> list[dict[str, Any]]:
        return self.server.proxies()
