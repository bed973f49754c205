"""The admin HTTP server: health, readiness, Prometheus metrics and read-only debug views.

It runs in the xDS server's asyncio loop (aiohttp), so handlers read the cache and the
proxy registry directly; only the CPU-heavy part of a snapshot dump (protobuf → JSON)
runs in a worker thread, on immutable `Resource`s. `xdsctl` is a client of these routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import prometheus_client
from aiohttp import web
from google.protobuf import json_format

from xds_server import admin_auth, diff, events_report, explain, types
from xds_server.cache import SnapshotCache
from xds_server.csds import StreamState
from xds_server.explain_match import Client, Request
from xds_server.snapshot import Resource, Snapshot, TypeSnapshot
from xds_server.status import ProxyRegistry, ProxyStatus, target_version

log = logging.getLogger(__name__)

# What `?type=` accepts: the short names, the xDS service abbreviations and type URLs.
TYPE_ALIASES: Final[dict[str, str]] = {
    **{short: url for url, short in types.SHORT_NAMES.items()},
    **{url: url for url in types.SHORT_NAMES},
    "cds": types.CLUSTER,
    "eds": types.ENDPOINT,
    "lds": types.LISTENER,
    "rds": types.ROUTE,
}

INDEX: Final = """xds-server admin
  /healthz          process is alive
  /readyz           ready to serve (503 and the reasons when not; ?verbose for JSON);
                    200 with warnings while a source serves its last good state
                    or HOLDING a mass removal (xdsctl sources says why)
  /metrics          Prometheus metrics
  /debug/snapshot   what the server would send: ?node=ID or ?group=KEY, &type=clusters|...
  /debug/proxies    connected proxies and their per-type sync state
  /debug/sources    service registry sources
  /debug/policies   traffic policy objects: ACCEPTED, WARNING or REJECTED, and why
  /debug/diff       ?node=ID[&type=...]: what that proxy acknowledged versus what it
                    would get now, per resource (added, removed, changed fields)
  /debug/explain    ?node=ID&host=H[&path=P][&header=K=V]...[&method=M][&port=N], or
                    &target=xds:///name for a proxyless client: why that request goes
                    where it goes (listener, virtual host, route, policy, endpoints)
  /debug/events     registry and policy changes followed to every proxy's ACK:
                    ?since=ID&limit=N; seen, pushed, ACKed by n of m, convergence,
                    NACKs with Envoy's error, proxies still pending
"""


def parse_address(address: str) -> tuple[str | None, int]:
    """Parse "host:port", "[v6]:port" or ":port" (all interfaces) into (host, port)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"admin address must be host:port, not {address!r}")
    host = host.removeprefix("[").removesuffix("]")
    return host or None, int(port_text)


def envoy_json(resource: Resource) -> dict[str, Any]:
    """A resource as Envoy's config_dump shows it: proto field names and an "@type"."""
    doc: dict[str, Any] = {"@type": resource.type_url}
    doc.update(json_format.MessageToDict(resource.message(), preserving_proto_field_name=True))
    return doc


def render_snapshot(group: str, versions: dict[str, str], resources: Sequence[Resource]) -> bytes:
    """The /debug/snapshot document, encoded (CPU-bound: run it off the event loop)."""
    items = []
    for r in resources:
        item: dict[str, Any] = {
            "type": types.short_name(r.type_url),
            "name": r.name,
            "version": r.version,
        }
        try:
            item["resource"] = envoy_json(r)
        except Exception as exc:  # e.g. an Any whose type is not in the descriptor pool
            item["resource"] = {"@type": r.type_url}
            item["error"] = f"cannot render as JSON: {exc}"
        items.append(item)
    doc = {"group": group, "versions": versions, "resources": items}
    return json.dumps(doc, indent=2).encode()


def _type_param(request: web.Request) -> Sequence[str] | None:
    """`?type=` as a one-type tuple (None: every type); ValueError for an unknown type."""
    if "type" not in request.query:
        return None
    raw = request.query["type"].strip()
    type_url = TYPE_ALIASES.get(raw) or TYPE_ALIASES.get(raw.lower())
    if type_url is None:
        valid = ", ".join(types.SHORT_NAMES.values())
        raise ValueError(f"unknown resource type {request.query['type']!r} (one of: {valid})")
    return (type_url,)


def _json(data: Any, status: int = 200) -> web.Response:
    body = json.dumps(data, indent=2, default=str).encode()
    return web.Response(body=body, status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class AdminServer:
    def __init__(
        self,
        address: str,
        *,
        cache: SnapshotCache,
        registry: ProxyRegistry,
        readiness: Callable[[], list[str]],
        sources: Callable[[], list[dict[str, Any]]],
        snapshot_for: Callable[[str], Awaitable[Snapshot]],
        default_group: str,
        warnings: Callable[[], list[str]] = list,
        policies: Callable[[], list[dict[str, Any]]] = list,
        token: str | None = None,
        streams: Callable[[], Iterable[StreamState]] = tuple,
        subset_labels: Callable[[str, str], Mapping[str, str] | None] = lambda svc, sub: None,
        rule_writer: Callable[[str, int], tuple[str, str, str] | None] = lambda s, i: None,
    ) -> None:
        self.host, self.port = parse_address(address)
        self.cache = cache
        self.registry = registry
        self.readiness = readiness
        self.sources = sources
        self.snapshot_for = snapshot_for
        self.default_group = default_group
        self.warnings = warnings
        self.policies = policies
        self.token = token  # admin_auth: required, when set, for all but OPEN_PATHS
        self.streams = streams  # the open streams' held views, for /debug/diff
        self.subset_labels = subset_labels  # for /debug/explain: what a subset selects
        self.rule_writer = rule_writer  # for /debug/explain: who wrote a merged rule
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        from xds_server import status_page  # here, not at the top: it imports this module

        middlewares = [] if self.token is None else [admin_auth.middleware(self.token)]
        app = web.Application(middlewares=middlewares)
        status_page.install(app, self, text_index=self._index)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/debug/snapshot", self._snapshot)
        app.router.add_get("/debug/proxies", self._proxies)
        app.router.add_get("/debug/sources", self._sources)
        app.router.add_get("/debug/policies", self._policies)
        app.router.add_get("/debug/diff", self._diff)
        app.router.add_get("/debug/explain", self._explain)
        app.router.add_get("/debug/events", self._events)
        return app

    async def start(self) -> int:
        """Listen; returns the bound port. OSError (e.g. port in use) propagates."""
        # No access log: probes and scrapes would flood the server's log.
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info(
            "admin server listening on %s:%d%s",
            self.host or "*",
            self.port,
            " (bearer token required)" if self.token is not None else "",
        )
        return self.port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # -- routes -------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=INDEX)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        reasons = list(self.readiness())
        # A stale or HOLDING source does not make the server unready: its last good state
        # is still served, and taking every replica out of rotation during a registry outage
        # would cut proxies off from config they can still use.
        warnings = list(self.warnings())
        status = 503 if reasons else 200
        if "verbose" in request.query:
            doc: dict[str, Any] = {"ready": not reasons, "reasons": reasons}
            if warnings:
                doc["warnings"] = warnings
            return _json(doc, status)
        text = "".join(f"{r}\n" for r in reasons) if reasons else "ready\n"
        text += "".join(f"warning: {w}\n" for w in warnings)
        return web.Response(text=text, status=status)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = prometheus_client.generate_latest(prometheus_client.REGISTRY)
        return web.Response(
            body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    async def _snapshot(self, request: web.Request) -> web.Response:
        q = request.query
        node, group = q.get("node"), q.get("group")
        if node is not None and group is not None:
            return _error(400, "give either node or group, not both")
        try:
            type_urls = _type_param(request)
        except ValueError as exc:
            return _error(400, str(exc))
        if node is not None:
            proxies = self.registry.by_node(node)
            if not proxies:
                return _error(404, f"no connected proxy with node id {node!r}")
            group = max(proxies, key=lambda p: p.stream_id).group  # the newest stream
        key = self.default_group if group is None else group
        try:
            snap = await self.snapshot_for(key)
        except ValueError as exc:
            message = str(exc) if repr(key) in str(exc) else f"bad group {key!r}: {exc}"
            return _error(400, message)
        if type_urls is None:
            type_urls = sorted({*types.PUSH_ORDER, *snap.types}, key=types.push_rank)
        tsnaps: list[TypeSnapshot] = [snap.get(t) for t in type_urls]
        versions = {types.short_name(ts.type_url): ts.version for ts in tsnaps}
        resources = [r for ts in tsnaps for r in ts.resources.values()]  # name order
        body = await asyncio.to_thread(render_snapshot, key, versions, resources)
        return web.Response(body=body, content_type="application/json")

    async def _proxies(self, request: web.Request) -> web.Response:
        proxies = sorted(self.registry.all(), key=lambda p: (p.node_id, p.stream_id))
        return _json([self._proxy_dict(p) for p in proxies])

    def _proxy_dict(self, proxy: ProxyStatus) -> dict[str, Any]:
        doc = proxy.as_dict()
        snap = self.cache.get(proxy.group)
        for type_url, ts in proxy.types.items():
            target = target_version(snap, ts)
            entry = doc["types"][types.short_name(type_url)]
            entry["target_version"] = target
            entry["state"] = ts.state(target)
        return doc

    async def _diff(self, request: web.Request) -> web.Response:
        node = request.query.get("node")
        if not node:
            return _error(400, "give node=ID (a connected proxy's node id)")
        try:
            type_urls = _type_param(request)
        except ValueError as exc:
            return _error(400, str(exc))
        streams = [s for s in self.streams() if s.node.id == node]
        if not streams:
            return _error(404, f"no connected proxy with node id {node!r}")
        group = max(streams, key=lambda s: s.status.stream_id).status.group
        found = diff.compare(streams, self.cache.get(group), type_urls)
        body = await asyncio.to_thread(diff.render, found, envoy_json)
        return web.Response(body=body, content_type="application/json")

    async def _sources(self, request: web.Request) -> web.Response:
        return _json(self.sources())

    async def _policies(self, request: web.Request) -> web.Response:
        return _json(self.policies())

    async def _explain(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            found = await self._explain_doc(q)
        except explain.ExplainError as exc:
            return _error(exc.status, str(exc))
        return _json(found)

    async def _explain_doc(self, q: Any) -> dict[str, Any]:
        """`/debug/explain` (xds_server/explain.py): the node's (or group's) snapshot now,
        walked for the request the query describes."""
        node, group, target = q.get("node"), q.get("group"), q.get("target")
        if (node is None) == (group is None):
            raise explain.ExplainError(400, "explain", "query", "give node=ID (or group=KEY)")
        if (target is None) == (q.get("host") is None):
            raise explain.ExplainError(
                400, "explain", "query", "give host=H (Envoy) or target=xds:///name (gRPC)"
            )
        port_text = q.get("port")
        if port_text is not None and not port_text.isdigit():
            raise explain.ExplainError(400, "explain", f"port {port_text!r}", "not a number")
        sync: dict[str, Any] | None = None
        if node is not None:
            proxies = self.registry.by_node(node)
            if not proxies:
                raise explain.ExplainError(
                    404, "explain", f"node {node!r}", "no connected proxy with this node id"
                )
            streams = sorted(proxies, key=lambda p: p.stream_id)
            group = streams[-1].group  # the newest stream's
            snap = self.cache.get(group)
            # Per type, the newest stream that carries it (a node without ADS has several).
            merged = {k: v for p in streams for k, v in self._proxy_dict(p)["types"].items()}
            sync = explain.sync_summary(merged)
        else:
            assert group is not None
            try:
                snap = await self.snapshot_for(group)
            except ValueError as exc:
                raise explain.ExplainError(400, "explain", f"group {group!r}", str(exc)) from None
        client: Client = "grpc" if group.split(";", 1)[0] == "grpc" else "envoy"
        if client == "grpc" and target is None:
            raise explain.ExplainError(
                400, "explain", f"group {group}", "a proxyless gRPC client: give target=xds:///name"
            )
        if client == "envoy" and target is not None:
            raise explain.ExplainError(
                400, "explain", f"group {group}", "an Envoy proxy: give host=H, not a target"
            )
        headers = explain.parse_headers(q.getall("header", []))
        host = explain.grpc_target_name(target) if target is not None else q["host"]
        req = Request(
            host=host,
            path=q.get("path") or "/",
            method=(q.get("method") or "GET").upper(),
            headers=headers,
            client=client,
        )
        doc = await asyncio.to_thread(
            explain.explain,
            snap,
            req,
            policies=self.policies(),
            port=int(port_text) if port_text is not None else None,
            target=target,
            subset_labels=self.subset_labels,
            rule_writer=self.rule_writer,
        )
        return {"node": node, "group": group, **({"sync": sync} if sync else {}), **doc}

    def events_doc(self, since: int = 0, limit: int | None = None) -> dict[str, Any]:
        """The /debug/events document (an empty history when events are not followed)."""
        log = self.cache.events
        if log is None:
            return {"history": 0, "events": []}
        return events_report.events_doc(log, since, limit)

    async def _events(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            since = int(q.get("since", "0"))
            limit = int(q["limit"]) if "limit" in q else None
        except ValueError:
            return _error(400, "since and limit must be integers (event ids, a count)")
        if limit is not None and limit < 1:
            return _error(400, "limit must be at least 1")
        return _json(self.events_doc(since, limit))
