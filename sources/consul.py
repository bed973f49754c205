"""The Consul source: Consul's catalog and health, followed by blocking queries.

One watch on `/v1/catalog/services` decides which services exist; each selected
service gets its own watch on `/v1/health/service/<name>`, mapped to the model by
sources.consul_mapping. Blocking-query rules (Consul's "Blocking Queries" page and
DESIGN §6), each kept here:

- send `?index=N&wait=…`; the HTTP read timeout is wait * 17/16 plus a margin, since
  Consul adds up to wait/16 of jitter to the wait;
- an index that goes backwards (snapshot restore, a new cluster behind the same
  address) resets the watch to 0: the next query answers at once with fresh data;
- an index of 0 is clamped to 1, so a buggy answer cannot turn the loop into a busy one;
- a response is not a change: the mapped result is compared with what was published;
- each watch waits at least `_MIN_INTERVAL` between its queries, and backs off
  exponentially with jitter after errors;
- new watches (startup, or after an outage) start at `watch_rate` per second, so
  thousands of services do not hit the agent at the same instant.

Outages: any failed query marks the source stale (catalog.set_error) and the last good
state stays served; service watches that fail wait for the catalog watch to reach
Consul again before retrying, so an agent that is down sees one probe per backoff
step rather than one per service. When Consul answers again with what it had,
nothing is re-published. The first full state is published at once, when the
catalog and every selected service have answered (readiness, DESIGN §6).

Configuration follows the Consul CLI: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN(_FILE),
CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CLIENT_CERT and
CONSUL_CLIENT_KEY apply where no flag or config key says otherwise.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import consul
import consul.aio

from sources.base import Backoff, Catalog
from sources.consul_mapping import to_entry
from xds_server import metrics
from xds_server.model import DEFAULT_NAMESPACE, ServiceEntry, ServiceKey

log = logging.getLogger("sources.consul")

KIND = "consul"
DEFAULT_ADDRESS = "http://127.0.0.1:8500"
_DEFAULT_PORTS = {"http": 8500, "https": 8501}
_MIN_INTERVAL = 0.1  # between two queries of one watch: Consul asks clients to rate-limit
_CATALOG = "/v1/catalog/services"
# Consul's own servers register as service "consul" (server RPC, port 8300): not a service
# anyone routes HTTP to.
_SKIPPED = frozenset({"consul"})


class ConsulConfigError(ValueError):
    """A Consul setting that cannot be used; the message is one line."""


@dataclass(frozen=True)
class ConsulConfig:
    """Where Consul is and what to watch, resolved from settings and CONSUL_* variables."""

    address: str = DEFAULT_ADDRESS
    token: str | None = None
    cacert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    verify: bool = True
    datacenter: str | None = None
    services: tuple[str, ...] = ("*",)
    tags: tuple[str, ...] = ()
    wait: float = 60.0
    watch_rate: float = 500.0

    @property
    def read_timeout(self) -> float:
        return self.wait * 17 / 16 + 5.0

    @property
    def wait_param(self) -> str:
        return f"{max(1, round(self.wait * 1000))}ms"

    @classmethod
    def resolve(
        cls,
        environ: Mapping[str, str],
        *,
        address: str | None = None,
        token: str | None = None,
        cacert: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        **rest: Any,
    ) -> ConsulConfig:
        """Settings first, then the Consul CLI's environment variables, then defaults."""
        ssl = environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
        raw = address or environ.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDRESS
        origin = (
            "--consul-address" if address else "CONSUL_HTTP_ADDR" if raw != DEFAULT_ADDRESS else ""
        )
        if token is None:
            token = environ.get("CONSUL_HTTP_TOKEN") or None
        if token is None and environ.get("CONSUL_HTTP_TOKEN_FILE"):
            token_file = environ["CONSUL_HTTP_TOKEN_FILE"]
            try:
                token = Path(token_file).read_text().strip() or None
            except OSError as exc:
                raise ConsulConfigError(
                    f"cannot read CONSUL_HTTP_TOKEN_FILE {token_file}: {exc.strerror}"
                ) from exc
        cacert = cacert or _env_path(environ, "CONSUL_CACERT")
        client_cert = client_cert or _env_path(environ, "CONSUL_CLIENT_CERT")
        client_key = client_key or _env_path(environ, "CONSUL_CLIENT_KEY")
        if (client_cert is None) != (client_key is None):
            raise ConsulConfigError(
                "a Consul client certificate needs its key and the key its certificate"
                " (--consul-client-cert/CONSUL_CLIENT_CERT, --consul-client-key/CONSUL_CLIENT_KEY)"
            )
        for path in (cacert, client_cert, client_key):
            if path is not None and not path.is_file():
                raise ConsulConfigError(f"Consul TLS file {path} does not exist")
        verify = environ.get("CONSUL_HTTP_SSL_VERIFY", "").lower() not in ("0", "false")
        return cls(
            address=_normalise(raw, ssl, origin),
            token=token,
            cacert=cacert,
            client_cert=client_cert,
            client_key=client_key,
            verify=verify,
            **rest,
        )


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    return Path(environ[name]) if environ.get(name) else None


def _normalise(address: str, ssl: bool, origin: str) -> str:
    """`host:port`, `http://host:port` or `https://host` → `scheme://host:port`."""
    where = f" (from {origin})" if origin else ""
    text = address if "://" in address else ("https://" if ssl else "http://") + address
    parts = urlsplit(text)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ConsulConfigError(
            f"Consul address {address!r}{where}: scheme must be http or https"
            " (unix sockets are not supported)"
        )
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ConsulConfigError(f"Consul address {address!r}{where}: invalid port") from exc
    if not parts.hostname:
        raise ConsulConfigError(f"Consul address {address!r}{where}: no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


class BlockingIndex:
    """A watch's X-Consul-Index, with Consul's rules for resets and the 0 bug."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, header: str | int | None) -> bool:
        """Takes the index of a response; False if it went backwards (watch reset)."""
        try:
            new = int(header) if header is not None else 0
        except ValueError:
            new = 0
        if new < self.value:
            self.value = 0
            return False
        self.value = max(new, 1)
        return True


class Pacer:
    """Spreads starts evenly at `rate` per second, in the order they asked."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


@dataclass
class _Watch:
    task: asyncio.Task[None]
    answered: bool = False
    port: int | None = None  # the service's port number so far (consul_mapping.service_port)
    published: ServiceEntry | None = field(default=None)


class ConsulSource:
    """Publishes the services of one Consul datacenter to the catalog."""

    def __init__(self, catalog: Catalog, config: ConsulConfig, *, name: str = "consul") -> None:
        self.catalog = catalog
        self.config = config
        self.name = name
        self._watches: dict[str, _Watch] = {}
        self._failing: dict[str, str] = {}  # watch ("catalog" or a service) → its error
        self._catalog_answered = False
        self._unanswered = 0  # watches that have not answered once (a count: O(1) per answer)
        self._synced = False
        self._pacer = Pacer(config.watch_rate)
        self._up = asyncio.Event()  # Consul answered the catalog watch's last query
        self._client: consul.aio.Consul | None = None
        catalog.register(name, KIND)

    @property
    def synced(self) -> bool:
        return self._synced

    async def run(self) -> None:
        """Forever: watch Consul and publish what changed."""
        self._client = self._connect()
        log.info("watching Consul at %s (services %s)", self.config.address, self._selection())
        try:
            await self._watch_catalog(self._client)
        finally:
            # Stopping is not deregistering: cancel the watches and publish nothing.
            tasks = [w.task for w in self._watches.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._watches.clear()
            metrics.CONSUL_WATCHES.labels(self.name).set(0)
            await self._client.close()

    def _connect(self) -> consul.aio.Consul:
        c = self.config
        parts = urlsplit(c.address)
        verify: bool | str = str(c.cacert) if c.cacert else c.verify
        cert = (str(c.client_cert), str(c.client_key)) if c.client_cert and c.client_key else None
        with warnings.catch_warnings():  # py-consul passes aiohttp deprecated arguments
            warnings.simplefilter("ignore", DeprecationWarning)
            client = consul.aio.Consul(
                host=parts.hostname,
                port=parts.port,
                scheme=parts.scheme,
                verify=verify,
                cert=cert,
                dc=c.datacenter,
                # One connection per blocking query: aiohttp's default pool of 100 would
                # queue the rest for a whole wait, and the queueing counts against the
                # read timeout.
                connections_limit=1 << 20,
                connections_timeout=c.read_timeout,
            )
        # py-consul lets CONSUL_HTTP_TOKEN override its argument; ours is already resolved
        # with the flag first.
        client.token = c.token
        return client

    def _selection(self) -> str:
        out = ",".join(self.config.services)
        return out + (f" tagged {','.join(self.config.tags)}" if self.config.tags else "")

    # -- the catalog watch -----------------------------------------------------------

    async def _watch_catalog(self, client: consul.aio.Consul) -> None:
        index = BlockingIndex()
        backoff = Backoff()
        wanted: set[str] = set()
        while True:
            started = time.monotonic()
            try:
                header, services = await client.catalog.services(
                    index=index.value, wait=self.config.wait_param
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._up.clear()
                self._failed(_CATALOG, exc)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self._up.set()
            if not index.update(header):
                self._reset(_CATALOG)
            now_wanted = self._select(services or {})
            if now_wanted != wanted:
                for name in sorted(now_wanted - wanted):
                    self._start_watch(client, name)
                for name in sorted(wanted - now_wanted):
                    self._stop_watch(name, deregistered=True)
                wanted = now_wanted
            self._catalog_answered = True
            self._succeeded(_CATALOG)
            await _pause(started)

    def _select(self, services: Mapping[str, Sequence[str] | None]) -> set[str]:
        required = set(self.config.tags)
        return {
            name
            for name, tags in services.items()
            if name not in _SKIPPED
            and any(fnmatch.fnmatchcase(name, p) for p in self.config.services)
            and required <= set(tags or ())
        }

    def _start_watch(self, client: consul.aio.Consul, name: str) -> None:
        task = asyncio.create_task(self._watch_service(client, name), name=f"consul:{name}")
        self._watches[name] = _Watch(task)
        self._unanswered += 1
        metrics.CONSUL_WATCHES.labels(self.name).set(len(self._watches) + 1)

    def _stop_watch(self, name: str, deregistered: bool = False) -> None:
        watch = self._watches.pop(name, None)
        if watch is None:
            return
        watch.task.cancel()
        if not watch.answered:
            self._unanswered -= 1
        self._clear_failure(name)
        metrics.CONSUL_WATCHES.labels(self.name).set(len(self._watches) + 1)
        if deregistered and self._synced and watch.published is not None:
            log.info("consul: service %s deregistered", name)
            self.catalog.remove(self.name, entry_key(name))
        self._maybe_synced()

    # -- one service's watch -----------------------------------------------------------

    async def _watch_service(self, client: consul.aio.Consul, name: str) -> None:
        index = BlockingIndex()
        backoff = Backoff()
        path = f"/v1/health/service/{name}"
        while True:
            if index.value == 0:
                await self._pacer.wait()
            started = time.monotonic()
            try:
                header, instances = await client.health.service(
                    name,
                    index=index.value,
                    wait=self.config.wait_param,
                    tag=list(self.config.tags) or None,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(path, exc, watch=name)
                await asyncio.sleep(backoff.next())
                await self._up.wait()  # while Consul is down, only the catalog watch probes
                await self._pacer.wait()
                continue
            backoff.reset()
            if not index.update(header):
                self._reset(path)
            try:
                self._publish(name, instances or [])
            except Exception:  # a bug in mapping must not end the watch
                log.exception("consul: cannot map service %s", name)
            self._succeeded(name)
            await _pause(started)

    def _publish(self, name: str, instances: Sequence[Mapping[str, Any]]) -> None:
        watch = self._watches.get(name)
        if watch is None:
            return
        entry = to_entry(
            name,
            instances,
            source=self.name,
            datacenter=self.config.datacenter or "",
            previous_port=watch.port,
        )
        if not watch.answered:
            watch.answered = True
            self._unanswered -= 1
        if entry is None:  # only sidecars/gateways, or nothing matching the tags
            if watch.published is not None and self._synced:
                self.catalog.remove(self.name, entry_key(name))
            watch.published = None
            return
        watch.port = entry.service.ports[0].port
        if entry == watch.published:
            return  # a response is not a change
        watch.published = entry
        if self._synced:
            self.catalog.upsert(self.name, entry)

    # -- state of the source -----------------------------------------------------------

    def _failed(self, what: str, exc: BaseException, watch: str | None = None) -> None:
        message = describe(exc, self.config)
        first = not self._failing
        self._failing[watch or what] = message
        if first:
            log.warning("%s (%s); keeping the last good state", message, what)
        else:
            log.debug("%s (%s)", message, what)
        self.catalog.set_error(self.name, message)

    def _succeeded(self, watch: str) -> None:
        self._clear_failure(watch)
        self._maybe_synced()

    def _clear_failure(self, watch: str) -> None:
        if self._failing.pop(watch, None) is not None and not self._failing:
            log.info("Consul at %s answers again", self.config.address)
            if self._synced:
                self.catalog.mark_synced(self.name)  # clears the stale mark

    def _maybe_synced(self) -> None:
        if self._synced or not self._catalog_answered:
            return
        if self._unanswered:
            return
        # The first full state in one piece: proxies get every service at once.
        self._synced = True
        entries = [w.published for w in self._watches.values() if w.published is not None]
        self.catalog.replace(self.name, entries)
        if self._failing:
            self.catalog.set_error(self.name, next(iter(self._failing.values())))
        endpoints = sum(len(e.endpoints) for e in entries)
        log.info(
            "consul: synced %d services, %d endpoints from %s",
            len(entries),
            endpoints,
            self.config.address,
        )

    def _reset(self, what: str) -> None:
        metrics.CONSUL_INDEX_RESETS.labels(self.name).inc()
        log.info("consul: index of %s went backwards; starting that watch over", what)


def entry_key(name: str) -> ServiceKey:
    return ServiceKey(DEFAULT_NAMESPACE, name)


async def _pause(started: float) -> None:
    delay = started + _MIN_INTERVAL - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def describe(exc: BaseException, config: ConsulConfig) -> str:
    """One line an operator can act on, for any error a query can end with."""
    where = f"Consul at {config.address}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return f"cannot reach {where}: {reason}"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return f"{where} closed the connection"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer from {where} within {config.read_timeout:g}s"
    if isinstance(exc, (consul.ACLPermissionDenied, consul.ACLDisabled)):
        return (
            f"{where} refused the request: {exc}"
            " (check --consul-token / CONSUL_HTTP_TOKEN and its policy)"
        )
    if isinstance(exc, consul.ConsulException):
        return f"{where}: {exc}"
    if isinstance(exc, aiohttp.ClientError):
        return f"{where}: {type(exc).__name__}: {exc}"
    return f"{where}: unexpected {type(exc).__name__}: {exc}"
