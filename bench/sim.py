"""Simulated Envoy proxies speaking ADS (SotW or delta) over ``grpc.aio``.

Each simulated proxy opens one ADS stream and behaves like Envoy's xDS client:

* SotW: a wildcard CDS request carrying the node (unique id, cluster ``bench``); every
  response is ACKed with its ``version_info`` and ``nonce`` and the current subscription;
  after a CDS response, an EDS request naming every EDS cluster of that response (the
  ``Cluster`` Anys are decoded); after the first EDS response, a wildcard LDS request;
  after an LDS response, an RDS request for the route names found in the listeners' HTTP
  connection managers. As in Envoy, such a new subscription is sent *before* the ACK of
  the response that caused it (Envoy's mux pauses the dependent type while a response is
  applied and queues the ACK behind the resumed requests), so a server sees a new
  cluster's EDS subscription before that cluster's CDS ACK.
* Delta: the same sequence with ``DeltaDiscoveryRequest`` (``resource_names_subscribe`` /
  ``_unsubscribe``, ACK by ``response_nonce``).

A proxy has its *full configuration* when it has ACKed CDS, EDS, LDS and RDS and holds
every cluster's endpoints and every referenced route configuration. After that, every
response it receives is an *update*: it is reported with its receive and ACK times and,
for EDS, the ``fixtures.cla_marker`` of every ClusterLoadAssignment it carries (for RDS,
the ``fixtures.route_marker`` and the `body_marker` of every RouteConfiguration: the
latter tells apart route configurations that differ only in a weight), so the parent can
tell which change it delivered.

Every proxy of a worker receives the same large initial pushes, so a worker decodes
each of them once and caches the result (keyed by version, size and first/last names);
route configurations, one large resource that every proxy gets again on each change,
are cached the same way. That saves client CPU on the shared machine and changes
nothing on the wire.

Proxies run in worker processes (``worker_main``), several streams per channel and
several channels per worker (each channel is its own TCP connection), so one Python
client process is not the bottleneck. A worker talks to the parent over a
``multiprocessing`` pipe: it receives ``("start", ids, interval)``, ``("late", id)`` (a
proxy on a channel of its own, as a newly started Envoy: its time includes the TCP
connection and the HTTP/2 handshake) and
``("stop",)`` and sends batches of ``("full", [...])``, ``("update", [...])``,
``("ended", [...])`` and finally ``("bye", cpu_seconds)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from bench import fixtures
from xds_server import types

# Node metadata every simulated proxy sends (JSON object; e.g. NAMESPACE and
# SERVICE_ACCOUNT, so the server treats them as workloads with identities).
NODE_METADATA: dict[str, Any] = json.loads(os.environ.get("XDS_BENCH_NODE_METADATA") or "{}")

SOTW_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
CDS, EDS, LDS, RDS = types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE
SHORT = {CDS: "cds", EDS: "eds", LDS: "lds", RDS: "rds"}
_HCM_URL = types.PREFIX + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name

# A response with more resources than this is parsed once per worker and cached (the
# initial pushes, identical for every proxy); smaller ones are parsed every time.
_CACHE_MIN = 8
_FLUSH_INTERVAL = 0.1


class StreamEnded(Exception):
    pass


@dataclass(slots=True)
class ProxyResult:
    """How one proxy's initial configuration went."""

    node_id: str
    late: bool
    start: float
    first_response: float | None = None
    full: float | None = None
    error: str | None = None
    # Responses per type received before reaching full config (1 each is ideal).
    initial_responses: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Update:
    """A response received after full config, and when it was ACKed."""

    node_id: str
    type: str
    resources: int
    removed: int
    recv_at: float
    ack_at: float
    markers: list[str]


# -- per-worker parse caches -------------------------------------------------------
# Every proxy in a worker receives the same initial pushes; decode them once.

_parse_cache: dict[tuple[Any, ...], Any] = {}
_request_templates: dict[tuple[str, tuple[str, ...]], bytes] = {}


def body_marker(name: str, body: bytes) -> str:
    """``name@fingerprint`` of a resource's serialised bytes. The server serialises
    deterministically, so a benchmark predicts it from its own translation with
    ``SerializeToString(deterministic=True)``."""
    return f"{name}@{hashlib.blake2b(body, digest_size=6).hexdigest()}"


@dataclass(frozen=True, slots=True)
class RouteConfigs:
    """The RouteConfigurations of an RDS response and the markers of each (its
    `fixtures.route_marker`, then its `body_marker`)."""

    configs: list[route_pb2.RouteConfiguration]
    markers: list[str]

    @classmethod
    def parse(cls, values: Iterable[bytes]) -> RouteConfigs:
        configs, markers = [], []
        for v in values:
            rc = route_pb2.RouteConfiguration.FromString(v)
            configs.append(rc)
            markers += [fixtures.route_marker(rc), body_marker(rc.name, v)]
        return cls(configs, markers)


def _cached(n: int, type_url: str) -> bool:
    """Whether a response's parse is cached: large ones, and route configurations (few
    resources, but large, and the same for every proxy of a worker)."""
    return n > _CACHE_MIN or type_url == RDS


def _cluster_eds_name(value: bytes) -> str | None:
    c = cluster_pb2.Cluster.FromString(value)
    if c.WhichOneof("cluster_discovery_type") == "type" and c.type == cluster_pb2.Cluster.EDS:
        return str(c.eds_cluster_config.service_name or c.name)
    return None


def _cla_names_markers(values: Iterable[bytes]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        cla = endpoint_pb2.ClusterLoadAssignment.FromString(v)
        out.append((cla.cluster_name, fixtures.cla_marker(cla)))
    return out


def _route_names(listener_values: Iterable[bytes]) -> list[str]:
    names: set[str] = set()
    for v in listener_values:
        lis = listener_pb2.Listener.FromString(v)
        anys: list[any_pb2.Any] = [f.typed_config for fc in lis.filter_chains for f in fc.filters]
        if lis.HasField("api_listener"):
            anys.append(lis.api_listener.api_listener)
        for a in anys:
            if a.type_url == _HCM_URL:
                hcm = hcm_pb2.HttpConnectionManager.FromString(a.value)
                if hcm.HasField("rds"):
                    names.add(hcm.rds.route_config_name)
    return sorted(names)


def _sotw_parse(resp: discovery_pb2.DiscoveryResponse) -> Any:
    """Names (and for EDS, markers) a SotW response carries; cached for large ones."""
    n = len(resp.resources)
    key = (resp.type_url, resp.version_info, n)
    cached = _cached(n, resp.type_url)
    if cached:
        hit = _parse_cache.get(key)
        if hit is not None:
            return hit
    values = [a.value for a in resp.resources]
    t = resp.type_url
    result: Any
    if t == CDS:
        result = sorted({e for v in values if (e := _cluster_eds_name(v)) is not None})
    elif t == EDS:
        result = _cla_names_markers(values)
    elif t == LDS:
        result = _route_names(values)
    elif t == RDS:
        result = RouteConfigs.parse(values)
    else:
        result = []
    if cached:
        _parse_cache[key] = result
    return result


def _sotw_resubscribe(
    type_url: str,
    names: list[str],
    subscribed: dict[str, list[str]],
    last: dict[str, tuple[str, str]],
) -> bytes:
    """A SotW request naming `names`, carrying the type's last version and nonce, as
    Envoy sends when a CDS/LDS update changes what it needs from EDS/RDS."""
    version, nonce = last.get(type_url, ("", ""))
    subscribed[type_url] = names
    return _sotw_request(type_url, names, version, nonce)


def _delta_resubscribe(
    type_url: str, current: set[str], want: set[str]
) -> discovery_pb2.DeltaDiscoveryRequest | None:
    """The delta request that moves a subscription from `current` to `want`, if any."""
    sub, unsub = want - current, current - want
    if not sub and not unsub:
        return None
    return discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=sorted(sub),
        resource_names_unsubscribe=sorted(unsub),
    )


def _delta_parse(resp: discovery_pb2.DeltaDiscoveryResponse) -> dict[str, Any]:
    """name → what the proxy needs from each resource of a delta response: the EDS name
    of a cluster, the marker of a ClusterLoadAssignment, the route names of a listener,
    the markers of a route configuration (`RouteConfigs`).

    Large responses (the initial pushes, identical for every proxy) are parsed once per
    worker, keyed by the response's system version, size and first/last names and
    versions; route configurations too, keyed by every name and version.
    """
    n = len(resp.resources)
    key: tuple[Any, ...] | None = None
    if resp.type_url == RDS and all(r.version for r in resp.resources):
        # A few resources: every name and version (the server's content hash) is the key.
        key = (resp.type_url, *((r.name, r.version) for r in resp.resources))
    elif n > _CACHE_MIN and resp.system_version_info:
        first, last = resp.resources[0], resp.resources[n - 1]
        key = (
            resp.type_url,
            resp.system_version_info,
            n,
            first.name,
            first.version,
            last.name,
            last.version,
        )
    if key is not None:
        hit = _parse_cache.get(key)
        if hit is not None:
            return cast(dict[str, Any], hit)
    t = resp.type_url
    out: dict[str, Any] = {}
    for res in resp.resources:
        value = res.resource.value
        if t == CDS:
            out[res.name] = _cluster_eds_name(value)
        elif t == EDS:
            out[res.name] = fixtures.cla_marker(
                endpoint_pb2.ClusterLoadAssignment.FromString(value)
            )
        elif t == LDS:
            out[res.name] = _route_names([value])
        elif t == RDS:
            out[res.name] = RouteConfigs.parse([value]).markers
        else:
            out[res.name] = None
    if key is not None:
        _parse_cache[key] = out
    return out


def _sotw_request(
    type_url: str,
    names: Sequence[str],
    version: str = "",
    nonce: str = "",
    node: base_pb2.Node | None = None,
) -> bytes:
    """A serialised DiscoveryRequest with its fields in number order, as Envoy's encoder
    writes them; the names are encoded once per worker (concatenated protobuf encodings
    merge, so assembling the fields is exact)."""
    key = (type_url, tuple(names))
    tmpl = _request_templates.get(key)
    if tmpl is None:
        tmpl = discovery_pb2.DiscoveryRequest(resource_names=names).SerializeToString()
        if len(_request_templates) > 64:
            _request_templates.clear()
        _request_templates[key] = tmpl
    head = discovery_pb2.DiscoveryRequest(version_info=version)
    if node is not None:
        head.node.CopyFrom(node)
    tail = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=nonce)
    out: bytes = head.SerializeToString() + tmpl + tail.SerializeToString()
    return out


def _identity(b: bytes) -> bytes:
    return b


class Outbox:
    """Batches reports to the parent (sent from the event loop every 100 ms)."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.full: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.ended: list[dict[str, Any]] = []

    def flush(self) -> None:
        for kind, items in (("full", self.full), ("update", self.updates), ("ended", self.ended)):
            if items:
                self.conn.send((kind, list(items)))
                items.clear()


class SimProxy:
    """One simulated Envoy on one ADS stream."""

    def __init__(self, node_id: str, delta: bool, late: bool, outbox: Outbox):
        self.node = base_pb2.Node(id=node_id, cluster=fixtures.GROUP, user_agent_name="envoy-sim")
        if NODE_METADATA:
            self.node.metadata.update(NODE_METADATA)
        self.delta = delta
        self.outbox = outbox
        self.result = ProxyResult(node_id=node_id, late=late, start=0.0)
        self.acked: set[str] = set()
        self.reported = False

    @property
    def is_full(self) -> bool:
        return self.result.full is not None

    async def run(self, channel: grpc.aio.Channel, started: float | None = None) -> None:
        """Run the stream on `channel`; `started`: when this proxy began (default: now)."""
        self.result.start = time.time() if started is None else started
        try:
            if self.delta:
                await self._run_delta(channel)
            else:
                await self._run_sotw(channel)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            self._ended(f"{exc.code().name}: {exc.details()}")
        except StreamEnded:
            self._ended("stream closed by server")
        except Exception as exc:
            self._ended(repr(exc))

    def _ended(self, error: str) -> None:
        self.result.error = error
        if self.reported:
            self.outbox.ended.append({"node_id": self.result.node_id, "error": error})
        else:
            self.reported = True
            self.outbox.full.append(asdict(self.result))

    def _received(self, type_url: str) -> float:
        now = time.time()
        r = self.result
        if r.first_response is None:
            r.first_response = now
        if not self.is_full:
            short = SHORT.get(type_url, type_url)
            r.initial_responses[short] = r.initial_responses.get(short, 0) + 1
        return now

    def _acked_now(self, type_url: str, complete: bool) -> float:
        now = time.time()
        self.acked.add(type_url)
        if not self.is_full and complete and len(self.acked) == 4:
            self.result.full = now
            self.reported = True
            self.outbox.full.append(asdict(self.result))
        return now

    def _update(
        self, type_url: str, n: int, removed: int, recv: float, ack: float, markers: list[str]
    ) -> None:
        self.outbox.updates.append(
            asdict(
                Update(
                    self.result.node_id,
                    SHORT.get(type_url, type_url),
                    n,
                    removed,
                    recv,
                    ack,
                    markers,
                )
            )
        )

    async def _responses(self, call: Any) -> AsyncIterator[tuple[Any, float, bool]]:
        """Each response of the stream, when it was received, and whether the proxy had
        its full configuration before it; StreamEnded when the server closes it."""
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                raise StreamEnded
            recv = self._received(resp.type_url)
            yield resp, recv, self.is_full

    # -- SotW ------------------------------------------------------------------------

    async def _run_sotw(self, channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream(
            SOTW_METHOD,
            request_serializer=_identity,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )()
        eds, rds = _SotwDependent(EDS), _SotwDependent(RDS)
        subscribed: dict[str, list[str]] = {CDS: []}
        last: dict[str, tuple[str, str]] = {}  # type -> (accepted version, last nonce)
        await call.write(_sotw_request(CDS, [], node=self.node))
        async for resp, recv, was_full in self._responses(call):
            t = resp.type_url
            parsed = _sotw_parse(resp)
            followups: list[bytes | None] = []
            markers: list[str] = []
            last[t] = (resp.version_info, resp.nonce)
            if t == CDS:
                followups.append(eds.names_changed(parsed, subscribed, last))
            elif t == EDS:
                eds.have.update(name for name, _ in parsed)
                markers = [m for _, m in parsed] if was_full else []
                if LDS not in subscribed:
                    subscribed[LDS] = []
                    followups.append(_sotw_request(LDS, []))
            elif t == LDS:
                followups.append(rds.names_changed(parsed, subscribed, last))
            elif t == RDS:
                rds.have.update(rc.name for rc in parsed.configs)
                if was_full:
                    markers = list(parsed.markers)
            # Like Envoy's mux (the dependent type is paused while the response is
            # applied, the ACK queued behind it): new subscriptions first, then the ACK.
            for req in followups:
                if req is not None:
                    await call.write(req)
            await call.write(_sotw_request(t, subscribed.get(t, []), resp.version_info, resp.nonce))
            ack = self._acked_now(t, eds.complete and rds.complete)
            if was_full:
                self._update(t, len(resp.resources), 0, recv, ack, markers)

    # -- delta -----------------------------------------------------------------------

    async def _run_delta(self, channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream(
            DELTA_METHOD,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString,
        )()
        eds = _DeltaDependent(EDS, lambda clusters: {e for e in clusters.values() if e})
        rds = _DeltaDependent(RDS, lambda lis: {n for names in lis.values() for n in names})
        lds_subscribed = False
        await call.write(discovery_pb2.DeltaDiscoveryRequest(node=self.node, type_url=CDS))
        async for resp, recv, was_full in self._responses(call):
            t = resp.type_url
            followups: list[discovery_pb2.DeltaDiscoveryRequest | None] = []
            markers: list[str] = []
            parsed = _delta_parse(resp)
            if t == CDS:
                followups.append(eds.parents_changed(resp, parsed))
            elif t == EDS:
                eds.received(resp, parsed)
                if was_full:
                    markers = list(parsed.values())
                if not lds_subscribed:
                    lds_subscribed = True
                    followups.append(discovery_pb2.DeltaDiscoveryRequest(type_url=LDS))
            elif t == LDS:
                followups.append(rds.parents_changed(resp, parsed))
            elif t == RDS:
                rds.received(resp, parsed)
                if was_full:
                    markers = [m for ms in parsed.values() for m in ms]
            for req in followups:  # as in SotW: new subscriptions before the ACK
                if req is not None:
                    await call.write(req)
            await call.write(
                discovery_pb2.DeltaDiscoveryRequest(type_url=t, response_nonce=resp.nonce)
            )
            ack = self._acked_now(t, eds.complete and rds.complete)
            if was_full:
                self._update(
                    t, len(resp.resources), len(resp.removed_resources), recv, ack, markers
                )


class _SotwDependent:
    """SotW: a type subscribed to by name from another type's resources (EDS from the
    clusters, RDS from the listeners' route names), and which of those the proxy holds."""

    def __init__(self, type_url: str):
        self.type_url = type_url
        self.names: list[str] = []
        self.have: set[str] = set()

    def names_changed(
        self, names: list[str], subscribed: dict[str, list[str]], last: dict[str, tuple[str, str]]
    ) -> bytes | None:
        """The parent type's response needs `names`: the request for them, if new."""
        if names == self.names:
            return None
        self.names = names
        self.have &= set(names)
        return _sotw_resubscribe(self.type_url, names, subscribed, last)

    @property
    def complete(self) -> bool:
        return bool(self.names) and self.have.issuperset(self.names)


class _DeltaDependent:
    """Delta: a type subscribed to by name from another type's resources (EDS from the
    clusters, RDS from the listeners' route names), and which of those the proxy holds."""

    def __init__(self, type_url: str, wants: Callable[[dict[str, Any]], set[str]]):
        self.type_url = type_url
        self.wants = wants  # the names the parent resources need
        self.parents: dict[str, Any] = {}  # parent resource -> what `_delta_parse` made of it
        self.sub: set[str] = set()
        self.have: set[str] = set()

    def parents_changed(
        self, resp: discovery_pb2.DeltaDiscoveryResponse, parsed: dict[str, Any]
    ) -> discovery_pb2.DeltaDiscoveryRequest | None:
        """Apply a response of the parent type; the request changing the subscription."""
        self.parents.update(parsed)
        for name in resp.removed_resources:
            self.parents.pop(name, None)
        want = self.wants(self.parents)
        change = _delta_resubscribe(self.type_url, self.sub, want)
        if change is not None:
            self.have -= self.sub - want
            self.sub = want
        return change

    def received(self, resp: discovery_pb2.DeltaDiscoveryResponse, names: Iterable[str]) -> None:
        self.have.update(names)
        self.have.difference_update(resp.removed_resources)

    @property
    def complete(self) -> bool:
        return bool(self.sub) and self.have >= self.sub


class Worker:
    """A process's share of the simulated proxies."""

    def __init__(self, conn: Connection, port: int, delta: bool, streams_per_channel: int):
        self.conn = conn
        self.target = f"127.0.0.1:{port}"
        self.delta = delta
        self.streams_per_channel = max(1, streams_per_channel)
        self.outbox = Outbox(conn)
        self.channels: list[grpc.aio.Channel] = []  # shared by the ramp's streams
        self.late_channels: list[grpc.aio.Channel] = []  # one per late proxy
        self.streams_on_last = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def _new_channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(
            self.target,
            options=[
                # Own TCP connection per channel (no shared subchannel pool).
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ],
        )

    def _channel(self) -> grpc.aio.Channel:
        if not self.channels or self.streams_on_last >= self.streams_per_channel:
            self.channels.append(self._new_channel())
            self.streams_on_last = 0
        self.streams_on_last += 1
        return self.channels[-1]

    def _spawn(self, node_id: str, late: bool) -> None:
        proxy = SimProxy(node_id, self.delta, late, self.outbox)
        if late:
            # A newly connecting proxy, as a new Envoy: its own channel (TCP connection
            # and HTTP/2 handshake), its time counted from before the channel exists.
            started = time.time()
            channel = self._new_channel()
            self.late_channels.append(channel)
            coro = proxy.run(channel, started)
        else:
            coro = proxy.run(self._channel())
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _on_readable(self) -> None:
        try:
            while self.conn.poll():
                self.inbox.put_nowait(self.conn.recv())
        except (EOFError, OSError):
            self.inbox.put_nowait(("stop",))
            asyncio.get_running_loop().remove_reader(self.conn.fileno())

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(_FLUSH_INTERVAL)
            self.outbox.flush()

    async def _ramp(self, ids: Sequence[str], interval: float) -> None:
        t0 = time.monotonic()
        for i, node_id in enumerate(ids):
            if interval > 0:
                delay = t0 + i * interval - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._spawn(node_id, late=False)
            if interval <= 0 and i % 50 == 49:
                await asyncio.sleep(0)  # let the first streams start while spawning

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._on_readable)
        flusher = asyncio.create_task(self._flusher())
        ramp: asyncio.Task[None] | None = None
        self.conn.send(("hello", os.getpid()))
        try:
            while True:
                msg = await self.inbox.get()
                if msg[0] == "start":
                    ramp = asyncio.create_task(self._ramp(msg[1], float(msg[2])))
                elif msg[0] == "late":
                    self._spawn(msg[1], late=True)
                elif msg[0] == "stop":
                    break
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(self.conn.fileno())
            if ramp is not None:
                ramp.cancel()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            flusher.cancel()
            with contextlib.suppress(Exception):
                self.outbox.flush()
            for ch in self.channels + self.late_channels:
                with contextlib.suppress(Exception):
                    await ch.close(grace=None)


def worker_main(conn: Connection, port: int, delta: bool, streams_per_channel: int) -> None:
    """Entry point of a worker process (``multiprocessing`` spawn target)."""
    # Ctrl-C goes to the whole process group: the parent owns shutdown and tells us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(Worker(conn, port, delta, streams_per_channel).run())
    finally:
        t = os.times()
        with contextlib.suppress(Exception):
            conn.send(("bye", t.user + t.system))
        conn.close()
