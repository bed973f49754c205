"""Loopback HTTP and gRPC backends that answer with their name, and a traffic generator.

``HttpBackend`` writes each response in one ``send`` with TCP_NODELAY set, so
keep-alive requests through Envoy do not stall on Nagle + delayed ACK
(DESIGN.md §7). ``RequestLoop`` drives continuous traffic through Envoy and
counts failures, for "zero failed requests" assertions.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter, deque
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import grpc

from .lifecycle import StartStop
from .waiting import wait_for

ECHO_SERVICE = "xdstest.Echo"
WHOAMI_METHOD = f"/{ECHO_SERVICE}/Whoami"


# ------------------------------------------------------------------------------ HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _BackendServer

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def _answer(self, with_body: bool = True) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        backend = self.server.backend
        status, body = backend.respond(self)
        reason = self.responses.get(status, ("",))[0]
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Backend: {backend.name}\r\n"
            "\r\n"
        ).encode("latin-1")
        # One write: status line, headers and body together.
        self.wfile.write(head + body if with_body else head)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _BackendServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # keep-alive handlers are closed by stop(), not joined
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], backend: HttpBackend) -> None:
        self.backend = backend
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client (Envoy after a timeout or reset) that hung up on a slow answer is
        # ordinary here, not worth a traceback on stderr; anything else is.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Seen:
    """One request as an :class:`HttpBackend` received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased (the last value of a repeated header)."""
    attempt: int
    """1 for the first time this ``x-request-id`` arrived, 2 for its first retry, ..."""

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


class HttpBackend(StartStop):
    """HTTP/1.1 server on 127.0.0.1 answering every request with body = ``name``.

    Its behaviour can be changed at any time: ``status`` (e.g. 503 to fake a broken
    backend, 500 for one that fails every request), ``delay`` (seconds to sleep before
    answering: a slow backend), and ``fail_attempts`` (answer ``fail_status`` to the
    first that many attempts of each request, told apart by the ``x-request-id`` header
    Envoy sets and keeps across retries). ``seen`` records every request (method, path,
    headers, attempt). ``stop()`` also closes open keep-alive connections; ``start()``
    after ``stop()`` listens on the same port again.
    """

    def __init__(
        self,
        name: str,
        port: int = 0,
        status: int = 200,
        *,
        delay: float = 0.0,
        fail_attempts: int = 0,
        fail_status: int = 503,
    ) -> None:
        self.name = name
        self.status = status
        self.delay = delay
        self.fail_attempts = fail_attempts
        self.fail_status = fail_status
        self._port = port
        self._server: _BackendServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.requests = 0
        self.paths: Counter[str] = Counter()
        self.last_headers: dict[str, str] = {}
        self.seen: list[Seen] = []
        self._attempts: Counter[str] = Counter()

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"HttpBackend {self.name!r} has no port before start()")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def respond(self, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        request_id = headers.get("x-request-id", "")
        with self._lock:
            self.requests += 1
            self.paths[handler.path] += 1
            self.last_headers = dict(handler.headers.items())
            attempt = 1
            if request_id:
                self._attempts[request_id] += 1
                attempt = self._attempts[request_id]
            self.seen.append(Seen(handler.command, handler.path, headers, attempt))
            status, delay = self.status, self.delay
            if attempt <= self.fail_attempts:
                status = self.fail_status
        if delay > 0:
            time.sleep(delay)
        return status, self.name.encode()

    def reset(self) -> None:
        """Back to answering 200 at once, and forget what was seen."""
        with self._lock:
            self.status, self.delay, self.fail_attempts, self.fail_status = 200, 0.0, 0, 503
            self.requests = 0
            self.paths.clear()
            self.last_headers = {}
            self.seen = []
            self._attempts.clear()

    def seen_since(self, index: int = 0) -> list[Seen]:
        """The requests received since ``len(seen)`` was ``index``."""
        with self._lock:
            return self.seen[index:]

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = _BackendServer(("127.0.0.1", self._port), self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"http-backend-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(5)

    @property
    def running(self) -> bool:
        return self._server is not None

    def __repr__(self) -> str:
        return f"HttpBackend({self.name!r}, port={self._port})"


# ------------------------------------------------------------------------------ gRPC


class GrpcBackend(StartStop):
    """gRPC server on 127.0.0.1 whose unary ``/xdstest.Echo/Whoami`` returns ``name``.

    Uses the generic-handler API with raw bytes (no .proto). Threaded server, so
    it is independent of any asyncio loop in the test.

    Misbehaviour on demand (attributes, changeable at any time): ``delay`` seconds of
    sleep before answering (cut short when the caller goes away), and ``fail_attempts``:
    the first that many attempts of every call fail with ``fail_code``. An attempt's
    number comes from gRPC's ``grpc-previous-rpc-attempts`` header (gRFC A6), so a client
    that retries gets through on attempt ``fail_attempts + 1``. ``attempts`` counts the
    attempts seen by number; ``metadata`` keeps the last calls' request metadata.
    """

    MAX_KEPT = 1000

    def __init__(
        self,
        name: str,
        port: int = 0,
        *,
        delay: float = 0.0,
        fail_attempts: int = 0,
        fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        workers: int = 4,
    ) -> None:
        self.name = name
        self._port = port
        self._server: grpc.Server | None = None
        self._lock = threading.Lock()
        self.requests = 0
        self.delay = delay
        self.fail_attempts = fail_attempts
        self.fail_code = fail_code
        self.workers = workers
        self.attempts: Counter[int] = Counter()
        self.metadata: deque[dict[str, str]] = deque(maxlen=self.MAX_KEPT)

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError(f"GrpcBackend {self.name!r} has no port before start()")
        return self._port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _whoami(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        seen = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        attempt = int(seen.get("grpc-previous-rpc-attempts", "0")) + 1
        with self._lock:
            self.requests += 1
            self.attempts[attempt] += 1
            self.metadata.append(seen)
            delay, fail_attempts, fail_code = self.delay, self.fail_attempts, self.fail_code
        until = time.monotonic() + delay
        while context.is_active() and (left := until - time.monotonic()) > 0:
            time.sleep(min(left, 0.01))
        if attempt <= fail_attempts:
            context.abort(fail_code, f"{self.name} fails attempt {attempt} of {fail_attempts}")
        return self.name.encode()

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix=f"grpc-{self.name}"
            ),
            options=[("grpc.so_reuseport", 0)],
        )
        handler = grpc.method_handlers_generic_handler(
            ECHO_SERVICE,
            {"Whoami": grpc.unary_unary_rpc_method_handler(self._whoami)},
        )
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port(f"127.0.0.1:{self._port}")
        if port == 0:
            raise RuntimeError(f"GrpcBackend {self.name!r} could not bind 127.0.0.1:{self._port}")
        self._port = port
        server.start()
        self._server = server
        return self

    def stop(self, grace: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(5)

    def __repr__(self) -> str:
        return f"GrpcBackend({self.name!r}, port={self._port})"


def grpc_whoami(target: str, timeout: float = 2.0) -> str:
    """Call ``/xdstest.Echo/Whoami`` once on ``target`` (e.g. ``127.0.0.1:port``)."""
    with grpc.insecure_channel(target) as channel:
        reply: bytes = channel.unary_unary(WHOAMI_METHOD)(b"", timeout=timeout)
        return reply.decode()


# ---------------------------------------------------------------------------- client


def _split(url: str) -> tuple[str, int, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"need an http:// URL, got {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


def http_get(url: str, host: str | None = None, timeout: float = 2.0) -> tuple[int, str]:
    """One GET on a fresh connection; returns (status, body). Errors raise OSError."""
    hostname, port, path = _split(url)
    conn = http.client.HTTPConnection(hostname, port, timeout=timeout)
    try:
        headers = {"Host": host} if host else {}
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


@dataclass
class LoopSummary:
    """Counts from a :class:`RequestLoop` (all of them, or since a mark)."""

    total: int = 0
    ok: int = 0
    non_2xx: int = 0
    errors: int = 0
    bodies: Counter[str] = field(default_factory=Counter)
    """Bodies of 2xx responses (backend names)."""
    statuses: Counter[int] = field(default_factory=Counter)
    error_kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    """The first few failure descriptions (non-2xx and errors), for messages."""

    @property
    def failed(self) -> int:
        return self.non_2xx + self.errors

    def __str__(self) -> str:
        return (
            f"total={self.total} ok={self.ok} non_2xx={self.non_2xx} errors={self.errors} "
            f"bodies={dict(self.bodies)} statuses={dict(self.statuses)} "
            f"error_kinds={dict(self.error_kinds)} first_failures={self.failures[:5]}"
        )


@dataclass(frozen=True)
class _Result:
    t: float
    status: int | None  # None = transport error
    text: str  # body, or error description


class RequestLoop(StartStop):
    """Background thread sending GETs to ``url`` every ``interval`` s and counting outcomes.

    With ``keep_alive=True`` (default) one connection is reused; if a *reused*
    connection turns out to be closed by the peer before any response byte
    (the ordinary keep-alive race, e.g. Envoy draining a listener), the request
    is retried once on a new connection, as HTTP clients do for idempotent
    requests; ``stale_retries`` counts those. Every other failure counts.
    """

    MAX_KEPT = 200_000

    def __init__(
        self,
        url: str,
        host_header: str | None = None,
        *,
        interval: float = 0.01,
        timeout: float = 2.0,
        keep_alive: bool = True,
    ) -> None:
        self.url = url
        self.host_header = host_header
        self.interval = interval
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._host, self._port, self._path = _split(url)
        self._results: list[_Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._conn_used = False
        self.stale_retries = 0

    # ---- lifecycle

    def start(self) -> Self:
        if self._thread is not None:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="request-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> LoopSummary:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout * 2 + 5)
            self._thread = None
        self._close()
        return self.snapshot()

    # ---- results

    def mark(self) -> int:
        """An index into the results; pass it to ``snapshot(since=...)``."""
        with self._lock:
            return len(self._results)

    def snapshot(self, since: int = 0) -> LoopSummary:
        with self._lock:
            results = self._results[since:]
        summary = LoopSummary()
        for r in results:
            summary.total += 1
            if r.status is None:
                summary.errors += 1
                summary.error_kinds[r.text.split(":", 1)[0]] += 1
            elif 200 <= r.status < 300:
                summary.ok += 1
                summary.bodies[r.text] += 1
                summary.statuses[r.status] += 1
            else:
                summary.non_2xx += 1
                summary.statuses[r.status] += 1
            if (r.status is None or not 200 <= r.status < 300) and len(summary.failures) < 20:
                summary.failures.append(f"{r.status or 'error'}: {r.text[:200]}")
        return summary

    def last_bodies(self, n: int = 20) -> list[str]:
        with self._lock:
            return [r.text for r in self._results[-n:] if r.status is not None]

    def wait_for_body(self, body: str, timeout: float, since: int | None = None) -> int:
        """Wait until a 2xx response with ``body`` arrives (after ``since``); return its index."""
        start = self.mark() if since is None else since

        def found() -> int | None:
            with self._lock:
                for i in range(start, len(self._results)):
                    r = self._results[i]
                    if r.status is not None and 200 <= r.status < 300 and r.text == body:
                        return i + 1  # 1-based so that index 0 is truthy
            return None

        def missing() -> str:
            return f"no {body!r} response; since mark: {self.snapshot(start)}"

        return wait_for(found, timeout, interval=0.02, message=missing) - 1

    def wait_for_requests(self, n: int, timeout: float) -> None:
        """Wait until ``n`` more requests have completed."""
        target = self.mark() + n
        wait_for(
            lambda: self.mark() >= target,
            timeout,
            interval=0.02,
            message=lambda: f"request loop made no progress: {self.snapshot()}",
        )

    def results(self, since: int = 0) -> list[tuple[float, int | None, str]]:
        """(monotonic start time, status or None for an error, body or error text)."""
        with self._lock:
            items = self._results[since:]
        return [(r.t, r.status, r.text) for r in items]

    # ---- worker

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _once(self) -> tuple[int, str]:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
            self._conn_used = False
        headers = {}
        if self.host_header:
            headers["Host"] = self.host_header
        if not self.keep_alive:
            headers["Connection"] = "close"
        reused = self._conn_used
        try:
            self._conn.request("GET", self._path, headers=headers)
            self._conn_used = True
            resp = self._conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self._close()
            if not reused:
                raise
            self.stale_retries += 1
            return self._once()
        if resp.will_close or not self.keep_alive:
            self._close()
        return resp.status, body

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                status, text = self._once()
                result = _Result(started, status, text)
            except Exception as exc:
                self._close()
                result = _Result(started, None, f"{type(exc).__name__}: {exc}")
            with self._lock:
                if len(self._results) < self.MAX_KEPT:
                    self._results.append(result)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
