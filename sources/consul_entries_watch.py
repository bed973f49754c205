"""Consul's config entries, read by blocking queries and compiled as the discovery chain.

One blocking query per kind (service-defaults, proxy-defaults, service-router,
service-splitter, service-resolver, and service-intentions, compiled on their own into
AuthorizationPolicies: sources.consul_config.intentions) on `/v1/config/<kind>`, run
by the Consul source's shared loop (`ConsulSource.follow`: the catalog watch's index,
reset, backoff and outage rules). Each kind's last good list is kept; a change to any
kind compiles all of them together (sources.consul_config) with the protocols the
source's instances declare.

What is published, as the policy objects of a catalog source of its own
(``<source>-config``, kind consul, so the Consul source's service count and sync state
stay its own): the compiled ``discovery-chain``/``discovery-chain-resolver`` objects
for the resolver, and one object per config entry for `xdsctl policies` (accepted with
its notices, or rejected with its reason; the resolver lists kinds it does not resolve
without resolving them). Nothing is published before every kind has answered once.

A kind this Consul does not have (404 from a Consul without the config API, or 400
``invalid config entry kind`` from one older than the kind) counts as no entries of that
kind: logged once, and asked again once per wait so an upgraded Consul is picked up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import consul.aio
from consul.callback import CB
from consul.exceptions import BadRequest, NotFound

from sources.base import Catalog
from sources.consul_config import (
    INTENTIONS_KIND,
    KINDS,
    WATCHED_KINDS,
    compile_entries,
    compile_intentions,
)
from sources.consul_connection import ConsulConfig
from xds_server.model import ServiceKey

log = logging.getLogger("sources.consul")

_INDEXES = ("CreateIndex", "ModifyIndex")  # Raft bookkeeping: a rewrite is not a change


class ConfigEntriesWatch:
    """Each kind's last good list; compiles and publishes them (see the module doc)."""

    def __init__(
        self, catalog: Catalog, source: str, kind: str, default_allow: bool = True
    ) -> None:
        self.catalog = catalog
        self.default_allow = default_allow  # Consul's default intention (see intentions)
        self.name = f"{source}-config"
        self.lists: dict[str, list[Any]] = {}
        self.unsupported: set[str] = set()
        self.published = False
        self.on_change: Callable[[], None] = lambda: None
        catalog.register(self.name, kind)

    @property
    def listed(self) -> bool:
        """Every kind has answered once."""
        return len(self.lists) == len(WATCHED_KINDS)

    @staticmethod
    def path(kind: str) -> str:
        return f"/v1/config/{kind}"

    async def query(
        self, client: consul.aio.Consul, config: ConsulConfig, kind: str, index: int
    ) -> tuple[str | int | None, Any]:
        """`GET /v1/config/<kind>` as a blocking query: (X-Consul-Index, entries)."""
        if kind in self.unsupported and index:
            await asyncio.sleep(config.wait)  # what a blocking query would wait
        params: list[tuple[str, Any]] = [("dc", config.datacenter)] if config.datacenter else []
        if index:
            params += [("index", index), ("wait", config.wait_param)]
        try:
            answer: tuple[str | int | None, Any] = await client.http.get(
                CB.json(index=True, allow_404=False),
                self.path(kind),
                params=params,
                headers=client.prepare_headers(),
            )
        except (NotFound, BadRequest) as exc:
            if isinstance(exc, BadRequest) and "config entry kind" not in str(exc):
                raise
            if kind not in self.unsupported:
                self.unsupported.add(kind)
                log.warning(
                    "consul: %s: this Consul has no config entries of kind %s (%s);"
                    " read as none, rechecked every wait",
                    self.path(kind),
                    kind,
                    str(exc).strip(),
                )
            return max(index, 1), []
        if kind in self.unsupported:
            self.unsupported.discard(kind)
            log.info("consul: config entries of kind %s are served now", kind)
        return answer

    def answer(self, kind: str, entries: Any) -> None:
        """One kind's answer: kept, and `on_change` called when it changes anything once
        every kind has answered."""
        items = entries if isinstance(entries, list) else []
        kept = [_without_indexes(e) for e in items]
        if self.lists.get(kind) == kept:
            return  # a response is not a change
        self.lists[kind] = kept
        if self.listed:
            self.on_change()

    def compile(self, meta_protocols: Mapping[ServiceKey, str]) -> dict[ServiceKey, str]:
        """Compiles every kind's entries, publishes the result; the protocols they set."""
        compiled = compile_entries(
            (e for kind in KINDS for e in self.lists.get(kind, ())), meta_protocols
        )
        intentions = compile_intentions(self.lists.get(INTENTIONS_KIND, ()), self.default_allow)
        self.catalog.replace_policies(
            self.name, (*compiled.policies, *compiled.entries, *intentions)
        )
        self.published = True
        return dict(compiled.protocols)


def _without_indexes(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return entry  # the compiler reports what is not an object
    return {k: v for k, v in entry.items() if k not in _INDEXES}
