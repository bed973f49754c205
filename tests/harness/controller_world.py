"""A controller over a fresh catalog and snapshot cache, wired as `xds-server serve`
wires them (the cache asks the controller for a node's group), for in-process tests."""

from __future__ import annotations

import types as pytypes

from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller


def controller_world(
    *sources: tuple[str, str], trust_domain: str | None = None
) -> tuple[Catalog, SnapshotCache, Controller]:
    """`sources`: (name, kind) registered in the catalog; `trust_domain`: a stand-in for
    the CA's secret store (the mesh is on), None for no CA."""
    catalog = Catalog()
    for name, kind in sources:
        catalog.register(name, kind)
    cache = SnapshotCache()
    if trust_domain is not None:
        cache.secrets = pytypes.SimpleNamespace(trust_domain=trust_domain)  # type: ignore[assignment]
    controller = Controller(catalog, cache)
    cache.group_of = controller.group_of
    return catalog, cache, controller
