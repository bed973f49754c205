"""gRPC transport: wires sans-IO sessions to `grpc.aio` streams.

Only moves messages. Responses are written as pre-encoded bytes (identity serialiser),
the same `bytes` object for every stream that sends the same push (DESIGN §5). Each
stream has one writer loop: it waits for its turn on the shared `WriteBudget` (bytes in
flight across streams), drains received requests, reads the *latest* snapshot if one was
published, then writes; bursts of snapshots while a proxy is slow collapse into one
update per type (DESIGN §4.13).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.status.v3 import csds_pb2

from xds_server import csds, csds_service, metrics, types
from xds_server.cache import SnapshotCache, Watch
from xds_server.response import Response
from xds_server.session import ProtocolError, Session
from xds_server.session_delta import DeltaSession
from xds_server.session_sotw import SotwSession
from xds_server.snapshot import Snapshot
from xds_server.status import ProxyRegistry
from xds_server.write_budget import WriteBudget

log = logging.getLogger(__name__)

_SERVICES: dict[str, tuple[str | None, str, str]] = {
    # service name: (fixed type or None for ADS, SotW method, delta method)
    "envoy.service.discovery.v3.AggregatedDiscoveryService": (
        None,
        "StreamAggregatedResources",
        "DeltaAggregatedResources",
    ),
    "envoy.service.cluster.v3.ClusterDiscoveryService": (
        types.CLUSTER,
        "StreamClusters",
        "DeltaClusters",
    ),
    "envoy.service.endpoint.v3.EndpointDiscoveryService": (
        types.ENDPOINT,
        "StreamEndpoints",
        "DeltaEndpoints",
    ),
    "envoy.service.listener.v3.ListenerDiscoveryService": (
        types.LISTENER,
        "StreamListeners",
        "DeltaListeners",
    ),
    "envoy.service.route.v3.RouteDiscoveryService": (
        types.ROUTE,
        "StreamRoutes",
        "DeltaRoutes",
    ),
    # SDS on its own stream: what a static cluster can use (Envoy 1.40 crashes loading
    # a static cluster whose SDS config is ADS).
    "envoy.service.secret.v3.SecretDiscoveryService": (
        types.SECRET,
        "StreamSecrets",
        "DeltaSecrets",
    ),
}


@dataclass
class ServerOptions:
    """Transport settings; defaults suit a few thousand proxies per replica."""

    address: str = "0.0.0.0:18000"
    keepalive_time: float = 30.0  # seconds between server pings on idle connections
    keepalive_timeout: float = 10.0
    # Rebalances proxies across replicas: the connection is closed (GOAWAY) after
    # this age and the proxy reconnects, possibly elsewhere. None = never.
    max_connection_age: float | None = None
    max_connection_age_grace: float = 10.0
    # Token bucket on new streams, so a reconnect storm cannot starve live streams.
    new_streams_per_second: float = 200.0
    new_streams_burst: int = 400
    shutdown_grace: float = 5.0
    # Bytes of large responses handed to gRPC and not yet written, across all streams
    # (gRPC copies each message): bounds a fan-out's memory. 0 = unbounded.
    max_bytes_in_flight: int = 32 * 1024 * 1024
    # A write holds its share of that budget at most this long (a proxy that stops
    # reading must not stall the others).
    write_hold: float = 1.0
    # SO_REUSEPORT on the listener: several processes may then bind the same port and
    # the kernel spreads new connections across them. Off by default, so a second
    # server started by mistake on a busy port fails instead of silently sharing it.
    so_reuseport: bool = False


class _TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class _Wake:
    """A stream's wake-up flag: `asyncio.Event` without its loop lookup per wait (a
    getpid() system call each, once per stream per push in the profile)."""

    __slots__ = ("_flag", "_loop", "_waiter")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._flag = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_and_clear(self) -> None:
        if not self._flag:
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        self._flag = False


class _Stream:
    """One open xDS stream: a session plus its wake-up plumbing."""

    def __init__(self, session: Session, cache: SnapshotCache, context: Any, budget: WriteBudget):
        self.session = session
        self.cache = cache
        self.context = context
        self.budget = budget
        self.requests: deque[Any] = deque()
        self.wake = _Wake()
        self.snapshot_dirty = False
        self.reader_done = False
        self.closing: tuple[grpc.StatusCode, str] | None = None
        self.watch: Watch | None = None
        session.wake = self._on_secrets  # its identity's secrets changed (SDS)

    def _on_secrets(self) -> None:
        self.snapshot_dirty = True
        self.wake.set()

    def _on_snapshot(self, _snap: Snapshot) -> None:
        self.snapshot_dirty = True
        self.wake.set()

    def shutdown(self, code: grpc.StatusCode, message: str) -> None:
        self.closing = (code, message)
        self.wake.set()

    async def _read(self, request_iterator: AsyncIterator[Any]) -> None:
        # context.read() rather than the iterator: grpc.aio's request iterator (an async
        # generator) and an `async for` variable both pin the last request while waiting
        # for the next one, and an Envoy's SotW EDS ACK names every cluster (34-56 KB
        # for 1,000 names): tens of MB of idle memory per 1,000 proxies.
        del request_iterator
        try:
            while True:
                req = await self.context.read()
                if req is grpc.aio.EOF:
                    break
                self.requests.append(req)
                del req
                self.wake.set()
        except (asyncio.CancelledError, grpc.RpcError, grpc.aio.AioRpcError):
            pass
        finally:
            self.reader_done = True
            self.wake.set()

    def _log_end(self, reason: str, detail: str) -> None:
        """One line per ended stream, naming the node, so operators can find it."""
        metrics.STREAMS_REJECTED.labels(reason).inc()
        st = self.session.status
        log.warning(
            "ending %s stream from node %r (%s): %s", st.kind, st.node_id or "?", st.peer, detail
        )

    def _step(self) -> list[Response]:
        """What to send now: the requests received so far, then the latest snapshot."""
        session = self.session
        responses = []
        while self.requests:
            responses.extend(session.on_request(self.requests.popleft()))
            if self.watch is None and session.group is not None:
                self.watch = self.cache.watch(session.group, self._on_snapshot)
        if self.snapshot_dirty and session.group is not None:
            self.snapshot_dirty = False
            responses.extend(session.on_snapshot(self.cache.get(session.group)))
        return responses

    async def run(self, request_iterator: AsyncIterator[Any]) -> None:
        session = self.session
        budget = self.budget
        reader = asyncio.create_task(self._read(request_iterator))
        try:
            while True:
                await self.wake.wait_and_clear()
                if self.closing is not None:
                    await self.context.abort(*self.closing)
                # The turn comes before deciding what to send: after a wait, the stream
                # sends the latest snapshot, never the one it was woken for.
                woken = await budget.turn()
                try:
                    responses = self._step()
                    charges = [budget.charge(len(r.data)) for r in responses]
                finally:
                    budget.pass_on(woken)
                for resp, charge in zip(responses, charges, strict=True):
                    try:
                        await self.context.write(resp.data)
                    finally:
                        if charge is not None:
                            charge.release()
                if self.reader_done and not self.requests:
                    return
        except ProtocolError as exc:
            self._log_end("protocol", exc.message)
            await self.context.abort(exc.code, exc.message)
        except grpc.aio.AbortError:
            raise  # how grpc.aio ends an RPC after abort(); not an error of ours
        except Exception as exc:
            # e.g. the peer vanished mid-write: end this stream only, say so once.
            self._log_end("transport", f"{type(exc).__name__}: {exc}")
        finally:
            reader.cancel()
            if self.watch is not None:
                self.watch.cancel()
            session.close()


class XdsServer:
    """The gRPC xDS server: ADS and per-type services, SotW and delta."""

    def __init__(
        self,
        cache: SnapshotCache,
        registry: ProxyRegistry | None = None,
        options: ServerOptions | None = None,
    ):
        self.cache = cache
        self.registry = registry if registry is not None else ProxyRegistry()
        self.options = options or ServerOptions()
        self._server: grpc.aio.Server | None = None
        self._streams: set[_Stream] = set()
        self._closing = False
        self._drained = asyncio.Event()
        self._bucket = _TokenBucket(
            self.options.new_streams_per_second, self.options.new_streams_burst
        )
        self.budget = WriteBudget(self.options.max_bytes_in_flight, self.options.write_hold)
        self.port: int | None = None

    def _grpc_options(self) -> list[tuple[str, int]]:
        o = self.options
        opts = [
            ("grpc.keepalive_time_ms", int(o.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(o.keepalive_timeout * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # Envoy and gRPC clients may ping every few seconds; do not GOAWAY them.
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.so_reuseport", int(o.so_reuseport)),
        ]
        if o.max_connection_age:
            opts.append(("grpc.max_connection_age_ms", int(o.max_connection_age * 1000)))
            opts.append(
                ("grpc.max_connection_age_grace_ms", int(o.max_connection_age_grace * 1000))
            )
        return opts

    def _handlers(self) -> list[grpc.GenericRpcHandler]:
        handlers: list[grpc.GenericRpcHandler] = []
        for service, (type_url, sotw, delta) in _SERVICES.items():
            handlers.append(
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        sotw: grpc.stream_stream_rpc_method_handler(
                            self._handler(SotwSession, type_url),
                            # The session parses it: it compares the subscription as
                            # received (SotwSession.on_request).
                            request_deserializer=_identity,
                            response_serializer=_identity,
                        ),
                        delta: grpc.stream_stream_rpc_method_handler(
                            self._handler(DeltaSession, type_url),
                            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                            response_serializer=_identity,
                        ),
                    },
                )
            )
        handlers.append(csds_service.handler(self._client_configs))
        return handlers

    # CSDS (xds_server.csds): read-only, from the open streams' own state.

    def stream_states(self) -> list[csds.StreamState]:
        """Every open stream that has named its node: CSDS and /debug/diff read these."""
        states = (csds.of_session(s.session) for s in self._streams)
        return [st for st in states if st is not None]

    def _client_configs(
        self, request: csds_pb2.ClientStatusRequest
    ) -> Iterator[csds_pb2.ClientConfig]:
        return csds.client_configs(request, self.stream_states(), self.cache.get)

    def _handler(
        self, session_cls: type[SotwSession] | type[DeltaSession], type_url: str | None
    ) -> Callable[[AsyncIterator[Any], Any], Any]:
        async def handle(request_iterator: AsyncIterator[Any], context: Any) -> None:
            if self._closing:
                metrics.STREAMS_REJECTED.labels("shutdown").inc()
                await context.abort(grpc.StatusCode.UNAVAILABLE, "xds-server is shutting down")
            if not self._bucket.take():
                metrics.STREAMS_REJECTED.labels("rate_limited").inc()
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "too many new xDS streams; retry with backoff",
                )
            session = session_cls(
                self.cache, type_url=type_url, peer=context.peer(), registry=self.registry
            )
            stream = _Stream(session, self.cache, context, self.budget)
            self._streams.add(stream)
            try:
                await stream.run(request_iterator)
            finally:
                self._streams.discard(stream)
                if not self._streams:
                    self._drained.set()

        return handle

    async def start(self) -> int:
        server = grpc.aio.server(options=self._grpc_options())
        server.add_generic_rpc_handlers(self._handlers())
        port = server.add_insecure_port(self.options.address)
        if port == 0:
            raise OSError(f"cannot listen for xDS on {self.options.address}")
        await server.start()
        self._server = server
        self.port = int(port)
        log.info("xDS server listening on %s (port %d)", self.options.address, port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting streams, end open ones with UNAVAILABLE so proxies reconnect
        (to another replica), then close the listener."""
        if self._server is None:
            return
        self._closing = True
        for stream in list(self._streams):
            stream.shutdown(grpc.StatusCode.UNAVAILABLE, "xds-server is shutting down")
        grace = self.options.shutdown_grace if grace is None else grace
        if self._streams:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        await self._server.stop(grace=min(1.0, grace))
        self._server = None

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    @property
    def stream_count(self) -> int:
        return len(self._streams)


def _identity(data: bytes) -> bytes:
    return data
