"""The Kubernetes registry source: Services, EndpointSlices and Pods by list + watch.

One list-then-watch loop per (resource, namespace) — all namespaces by default — over
`aiohttp`, reading raw JSON (DESIGN §6: the official client's model deserialisation is
what makes large clusters slow). The loops are `sources.kube_listwatch`'s, with
client-go's reflector's semantics (bookmarks, resume, 410 relist, backoff, one outage
prober). Here:

- a relist rebuilds and publishes with `catalog.replace`, which notifies only about
  services that really changed, so a relist of an unchanged cluster pushes nothing;
- a failure keeps the last good state served: the catalog never sees an empty state
  because the API server is unreachable;
- an update (a relist, or one read of watch events) that would remove more than the
  threshold of the published services is held (sources.hold): the previous state is
  served for the hold period, then what is still gone is removed.

Nothing is published until every initial list (in every namespace) has succeeded, so
readiness waits for the whole first state. The label selector applies to Services;
EndpointSlices are joined to them through their `kubernetes.io/service-name` label;
Pods are watched as metadata only, for their labels (`sources.kube_pods`).
Mapping rules: `sources.kube_mapping`; connection settings: `sources.kube_config`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sources.base import Catalog
from sources.hold import DEFAULT_HOLD, GuardedPublisher, HoldPolicy
from sources.kube_api import DEFAULT_TIMING, Key, Resource, Timing, resource_path
from sources.kube_config import KubeConnection
from sources.kube_listwatch import ListWatchSource
from sources.kube_mapping import (
    DEFAULT_CLUSTER_DOMAIN,
    KubeService,
    KubeSlice,
    build_entry,
    object_key,
    parse_service,
    parse_slice,
)
from sources.kube_pods import METADATA_LIST, METADATA_WATCH, PodLabels, parse_pod
from xds_server import metrics
from xds_server.model import ServiceEntry, ServiceKey

log = logging.getLogger("sources.kubernetes")

KIND = "kubernetes"


class KubernetesSource(ListWatchSource[Key]):
    """Lists and watches Services, EndpointSlices and Pods; publishes to the catalog."""

    def __init__(
        self,
        connection: KubeConnection,
        catalog: Catalog,
        *,
        namespaces: Iterable[str] = (),
        label_selector: str | None = None,
        name: str = "kubernetes",
        cluster_domain: str = DEFAULT_CLUSTER_DOMAIN,
        timing: Timing = DEFAULT_TIMING,
        hold: HoldPolicy = DEFAULT_HOLD,
    ) -> None:
        super().__init__(connection, catalog, name, timing)
        self.cluster_domain = cluster_domain
        scopes: list[str | None] = list(dict.fromkeys(namespaces)) or [None]
        self.resources = [
            Resource(
                kind, ns, resource_path(kind, ns), label_selector if kind == "services" else None
            )
            for kind in ("services", "endpointslices", "pods")
            for ns in scopes
        ]
        self._services: dict[Key, KubeService] = {}
        self._slices: dict[Key, KubeSlice] = {}
        self._slices_of: dict[Key, set[Key]] = {}  # service key -> its slices' keys
        self.pods = PodLabels()
        self.publisher = GuardedPublisher(catalog, name, hold, self._lookup)
        self._skipped: dict[Key, str] = {}
        catalog.register(name, KIND)

    def _closed(self) -> None:
        self.publisher.close()

    def _headers(self, res: Resource, watching: bool) -> dict[str, str]:
        headers = self.connection.headers()
        if res.kind == "pods":  # their metadata only: see sources.kube_pods
            headers = {**headers, "Accept": METADATA_WATCH if watching else METADATA_LIST}
        return headers

    # --- state ---------------------------------------------------------------------

    def _apply(self, res: Resource, kind: str, obj: dict[str, Any]) -> set[Key]:
        """Apply one watch event to the store; the service keys it may have changed."""
        if res.kind == "pods":
            key, labels = parse_pod(obj)
            return self.pods.set(key, None if kind == "DELETED" else labels)
        key = object_key(obj)
        if res.kind == "services":
            return self._set_service(key, None if kind == "DELETED" else parse_service(obj))
        return self._set_slice(key, None if kind == "DELETED" else parse_slice(obj))

    def _set_service(self, key: Key, svc: KubeService | None) -> set[Key]:
        if svc is None:
            return {key} if self._services.pop(key, None) is not None else set()
        if self._services.get(key) == svc:
            return set()
        self._services[key] = svc
        return {key}

    def _set_slice(self, key: Key, sl: KubeSlice | None) -> set[Key]:
        old = self._slices.get(key)
        if old == sl:
            return set()
        changed: set[Key] = set()
        if old is not None:
            owner = (old.namespace, old.service)
            self._slices.pop(key)
            self.pods.unref(owner, old)
            members = self._slices_of.get(owner)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._slices_of[owner]
            changed.add(owner)
        if sl is not None:
            self._slices[key] = sl
            owner = (sl.namespace, sl.service)
            self._slices_of.setdefault(owner, set()).add(key)
            self.pods.ref(owner, sl)
            changed.add(owner)
        return changed

    def _rebuild(self, res: Resource, objs: list[dict[str, Any]]) -> None:
        if res.kind == "pods":
            self.pods.replace(res.owns, map(parse_pod, objs))
        elif res.kind == "services":
            for key in [k for k in self._services if res.owns(k)]:
                self._set_service(key, None)
            for obj in objs:
                self._set_service(object_key(obj), parse_service(obj))
        else:
            for key in [k for k in self._slices if res.owns(k)]:
                self._set_slice(key, None)
            for obj in objs:
                self._set_slice(object_key(obj), parse_slice(obj))

    def _entry(self, key: Key) -> ServiceEntry | None:
        svc = self._services.get(key)
        reason = None if svc is None else svc.skip
        if reason != self._skipped.get(key):
            if reason is None:
                self._skipped.pop(key, None)
            else:
                self._skipped[key] = reason
                log.warning("%s: service %s.%s skipped: %s", self.name, key[1], key[0], reason)
            metrics.KUBE_SKIPPED_SERVICES.labels(self.name).set(len(self._skipped))
        if svc is None or reason is not None:
            return None
        slices = [self._slices[k] for k in self._slices_of.get(key, ())]
        return build_entry(svc, slices, self.name, self.cluster_domain, self.pods.labels)

    def _publish_all(self) -> None:
        entries: dict[Key, ServiceEntry] = {}
        for key in list(self._services) + list(self._skipped):
            entry = self._entry(key)
            if entry is not None:
                entries[key] = entry
        first = not self._synced
        self._synced = True
        # catalog.replace marks the source synced and clears its error
        self.publisher.replace({ServiceKey(*k): e for k, e in entries.items()})
        self._report_failing()
        if first:
            endpoints = sum(len(e.endpoints) for e in entries.values())
            log.info(
                "%s: synced: %d services, %d endpoints (%d skipped)",
                self.name, len(entries), endpoints, len(self._skipped),
            )  # fmt: skip

    def _publish(self, keys: set[Key]) -> None:
        self.publisher.update({ServiceKey(*key): self._entry(key) for key in keys})

    def _lookup(self, key: ServiceKey) -> ServiceEntry | None:
        return self._entry((key.namespace, key.name))
