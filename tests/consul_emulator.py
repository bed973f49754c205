"""An in-process emulator of Consul's HTTP API, for tests and benchmarks.

No Consul binary can be installed on the test machines, so this module serves the
part of Consul's HTTP API that the Consul source and its tests use, following
Consul's documented semantics:

* Blocking queries: ``?index=N&wait=D`` holds the request until the query's index
  is greater than ``N`` or the wait (a Go duration; default 5m, capped at 10m,
  plus a uniform random jitter of up to wait/16) elapses. ``index`` absent or 0
  answers at once. Every read carries ``X-Consul-Index`` (never below 1, as Consul
  clamps it), ``X-Consul-KnownLeader`` and ``X-Consul-LastContact``. A snapshot
  restore (:meth:`ConsulEmulator.reset_index`) wakes every blocked query, which
  then answers with the new, smaller index (Consul abandons its state store's
  watches on restore); a query whose index is ahead of the server's blocks until
  the query's index passes it or the wait elapses.
* Indexes: each write is one raft index. ``/v1/catalog/services`` moves only when a
  service is registered, changed or deregistered (not on health check updates);
  ``/v1/health/service/<name>`` moves whenever that service's result changes
  (instances, checks, node address or meta). A write that changes nothing still
  uses a raft index but moves no query's index. A service that was never
  registered reports the current raft index.
* Reads: ``GET /v1/catalog/services`` (``tag``, ``node-meta``),
  ``/v1/catalog/service/<name>``, ``/v1/health/service/<name>`` and
  ``/v1/health/connect/<name>`` (repeated ``tag``, ``passing``, ``node-meta``),
  ``/v1/status/leader``,
  ``/v1/status/peers``, ``/v1/agent/self``, ``/v1/agent/services``,
  ``/v1/agent/checks``, ``/v1/catalog/datacenters``. ``dc`` other than the
  emulator's datacenter answers 500 ``No path to datacenter``.
* Writes: ``PUT /v1/agent/service/register``, ``/v1/agent/service/deregister/<id>``,
  ``/v1/agent/service/maintenance/<id>``, ``/v1/agent/check/register``,
  ``/v1/agent/check/deregister/<id>``, ``/v1/agent/check/pass|warn|fail/<id>``,
  ``/v1/agent/check/update/<id>``, ``/v1/catalog/register``,
  ``/v1/catalog/deregister``. Agent endpoints act on the emulator's own node,
  which has a passing ``serfHealth`` check; nodes written through
  ``/v1/catalog/register`` have no ``serfHealth`` check, as in Consul. JSON keys
  are matched case-insensitively and ``snake_case`` keys are accepted, as Consul
  does (py-consul sends ``{"name": ..., "checks": [...]}``).
* Connect: a registration's ``Connect.SidecarService`` registers its sidecar proxy
  with Consul's defaults (``_register_sidecar``); ``Kind``/``Proxy`` are kept and
  served; deregistering a service removes its sidecar.
* Config entries (tests.consul_emulator_config): ``PUT /v1/config`` (``?cas``),
  ``GET /v1/config/<kind>`` (blocking), ``GET|DELETE /v1/config/<kind>/<name>``;
  ``config_kinds=None`` emulates a Consul without that API (404).
* ACLs (only when ``acl_tokens`` is given): an unknown token gets 403
  ``ACL not found``; no token is the anonymous token, whose reads are filtered to
  nothing (``X-Consul-Results-Filtered-By-ACLs: true``) and whose writes get 403
  ``Permission denied``. A known token may read every service unless
  :meth:`~ConsulEmulator.set_service_read` limits it (at run time, as a policy edit
  does): like ``service_prefix "<p>" { policy = "read" }`` rules, services outside the
  prefixes are filtered out of list endpoints (``/v1/catalog/services``,
  ``/v1/health/service/<name>``, ``/v1/catalog/service/<name>``, the agent's lists)
  with the filtered header and the same index — Consul filters list results rather
  than answering 403. A policy edit moves no index, so blocked queries see it when
  their wait ends, as in Consul.
* Faults: :meth:`~ConsulEmulator.pause`/:meth:`~ConsulEmulator.resume`,
  :meth:`~ConsulEmulator.fail_next`, :meth:`~ConsulEmulator.drop_next`,
  :meth:`~ConsulEmulator.set_no_leader`, :meth:`~ConsulEmulator.reset_index`,
  :meth:`~ConsulEmulator.slow`,
  :meth:`~ConsulEmulator.zero_index_next`.

Not emulated: HTTP/TCP/gRPC/script checks are never run and TTL checks never
expire (a check keeps its status until a write changes it; agent TTL updates are
accepted for TTL checks only, as in Consul); anti-entropy delay (agent writes are
in the catalog at once); the ``filter`` expression language, ``near``, ``hash``
blocking, ``cached``, namespaces, partitions, peers, Connect, KV, sessions,
prepared queries and ACL policies (a known token may do everything); several
datacenters; gzip. As an extension, ``/v1/catalog/register`` also takes node
meta from ``?node-meta=key:value`` (py-consul's ``node_meta`` argument sends it
there, where real Consul ignores it).

Standalone: ``python -m tests.consul_emulator --port 8500 --services 2000
--instances 5`` prints ``listening on http://127.0.0.1:8500`` once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tests.consul_emulator_config import KINDS as CONFIG_KINDS
from tests.consul_emulator_config import ConfigEntries, ConfigEntryError
from tests.harness.loop_thread import LoopThread

__all__ = ["ConsulEmulator", "Request", "parse_duration"]

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
JITTER_FRACTION = 16
MAX_LOG = 200_000

PASSING, WARNING, CRITICAL, MAINTENANCE = "passing", "warning", "critical", "maintenance"
CONNECT_PROXY = "connect-proxy"
# The index of /v1/health/connect/<name> is kept as a service's, under a name no service
# can have (service names have no "/").
CONNECT_KEY = "connect/"
# Consul's agent config ports.sidecar_min_port / sidecar_max_port.
SIDECAR_MIN_PORT, SIDECAR_MAX_PORT = 21000, 21255
STATUSES = (PASSING, WARNING, CRITICAL)

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Parse a Go duration (``10s``, ``100ms``, ``1m30s``) into seconds; ValueError if bad."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {text!r}")
    return total


@dataclasses.dataclass
class Request:
    """One request the emulator received (``status`` 0: dropped or still open)."""

    method: str
    path: str
    query: dict[str, list[str]]
    token: str | None
    start: float
    end: float = 0.0
    status: int = 0


class _HTTPError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


# ---------------------------------------------------------------------------------
# State


def _norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def _get(d: dict[str, Any] | None, *names: str, default: Any = None) -> Any:
    """Look a field up as Consul's decoder does: case-insensitively, snake_case too."""
    if not d:
        return default
    wanted = {_norm(n) for n in names}
    for k, v in d.items():
        if _norm(k) in wanted:
            return v
    return default


def _check_type(defn: dict[str, Any]) -> str:
    for field, kind in (
        ("TTL", "ttl"),
        ("HTTP", "http"),
        ("TCP", "tcp"),
        ("GRPC", "grpc"),
        ("UDP", "udp"),
        ("H2PING", "h2ping"),
        ("DockerContainerID", "docker"),
        ("Args", "script"),
        ("ScriptArgs", "script"),
        ("AliasService", "alias"),
        ("AliasNode", "alias"),
        ("OSService", "os_service"),
    ):
        if _get(defn, field):
            return kind
    return ""


@dataclasses.dataclass
class _Node:
    name: str
    id: str
    address: str
    datacenter: str
    tagged_addresses: dict[str, str]
    meta: dict[str, str]
    create_index: int
    modify_index: int
    agent: bool = False

    def same(self, other: _Node) -> bool:
        return (self.id, self.address, self.tagged_addresses, self.meta) == (
            other.id,
            other.address,
            other.tagged_addresses,
            other.meta,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Node": self.name,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": self.tagged_addresses,
            "Meta": self.meta,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclasses.dataclass
class _Service:
    node: str
    id: str
    name: str
    tags: list[str]
    address: str
    port: int
    meta: dict[str, str]
    weights: dict[str, int]
    enable_tag_override: bool
    kind: str
    tagged_addresses: dict[str, Any]
    create_index: int = 0
    modify_index: int = 0
    # A connect-proxy's Proxy block (DestinationServiceName/ID, LocalServiceAddress/Port).
    proxy: dict[str, Any] = dataclasses.field(default_factory=dict)

    def content(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.tags,
            self.address,
            self.port,
            self.meta,
            self.weights,
            self.enable_tag_override,
            self.kind,
            self.tagged_addresses,
            self.proxy,
        )

    @property
    def destination(self) -> str:
        """The service a connect-proxy fronts ("" for other kinds)."""
        if self.kind != CONNECT_PROXY:
            return ""
        return str(self.proxy.get("DestinationServiceName") or "")

    def to_json(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Service": self.name,
            "Tags": list(self.tags),
            "Address": self.address,
            "TaggedAddresses": self.tagged_addresses,
            "Meta": self.meta,
            "Port": self.port,
            "Weights": self.weights,
            "EnableTagOverride": self.enable_tag_override,
            "Kind": self.kind,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}, **self.proxy},
            "Connect": {},
            "PeerName": "",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


@dataclasses.dataclass
class _Check:
    node: str
    id: str
    name: str
    status: str
    notes: str
    output: str
    service_id: str
    service_name: str
    service_tags: list[str]
    type: str
    interval: str = ""
    timeout: str = ""
    create_index: int = 0
    modify_index: int = 0

    def content(self) -> tuple[Any, ...]:
        return (
            self.name,
            self.status,
            self.notes,
            self.output,
            self.service_id,
            self.service_name,
            self.service_tags,
            self.type,
            self.interval,
            self.timeout,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "Node": self.node,
            "CheckID": self.id,
            "Name": self.name,
            "Status": self.status,
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(self.service_tags),
            "Type": self.type,
            "Interval": self.interval,
            "Timeout": self.timeout,
            "ExposedPort": 0,
            "Definition": {},
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }


class _State:
    """The catalog. Only touched from the emulator's event loop (or before start)."""

    def __init__(self, datacenter: str) -> None:
        self.datacenter = datacenter
        self.raft = 0
        self.catalog_index = 0
        self.nodes: dict[str, _Node] = {}
        self.services: dict[tuple[str, str], _Service] = {}
        self.checks: dict[tuple[str, str], _Check] = {}
        self.by_name: dict[str, set[tuple[str, str]]] = {}
        self.node_services: dict[str, set[str]] = {}
        self.svc_checks: dict[tuple[str, str], set[str]] = {}  # (node, service id or "")
        self.service_index: dict[str, int] = {}
        self.config = ConfigEntries()
        # Set by the emulator: called with the changed keys after every write.
        self.on_change: Callable[[set[str]], None] = lambda keys: None
        self._changed: set[str] = set()
        self._moved = False

    # -- write transactions ----------------------------------------------------
    def begin(self) -> int:
        self.raft += 1
        self._changed = set()
        self._moved = False
        return self.raft

    def commit(self) -> None:
        for key in self._changed:
            if key == "catalog":
                self.catalog_index = self.raft
            elif key.startswith("svc:"):
                self.service_index[key[4:]] = self.raft
            # "config:<kind>": the config table keeps its own index (ConfigEntries)
        self.on_change(self._changed)

    def touch_service(self, name: str) -> None:
        self._changed.add("svc:" + name)

    def touch_connect(self, svc: _Service) -> None:
        """A connect-proxy changed: /v1/health/connect/<its destination> moves."""
        if svc.destination:
            self.touch_service(CONNECT_KEY + svc.destination)

    def touch_config(self, kind: str) -> None:
        self._changed.add("config:" + kind)

    def touch_catalog(self) -> None:
        self._changed.add("catalog")

    def touch_node_services(self, node: str) -> None:
        for sid in self.node_services.get(node, ()):
            self.touch_service(self.services[(node, sid)].name)

    # -- entities --------------------------------------------------------------
    def ensure_node(
        self,
        name: str,
        address: str,
        *,
        node_id: str | None = None,
        meta: dict[str, str] | None = None,
        tagged: dict[str, str] | None = None,
        agent: bool = False,
    ) -> _Node:
        old = self.nodes.get(name)
        tagged_addresses = (
            tagged
            if tagged is not None
            else {"lan": address, "lan_ipv4": address, "wan": address, "wan_ipv4": address}
        )
        new = _Node(
            name=name,
            id=node_id or (old.id if old else str(uuid.uuid5(uuid.NAMESPACE_DNS, name))),
            address=address,
            datacenter=self.datacenter,
            tagged_addresses=tagged_addresses,
            meta=dict(meta or {}),
            create_index=old.create_index if old else self.raft,
            modify_index=self.raft,
            agent=agent or bool(old and old.agent),
        )
        if old is not None and old.same(new):
            return old
        self.nodes[name] = new
        if old is None and new.agent:
            self.put_check(
                _Check(
                    node=name,
                    id="serfHealth",
                    name="Serf Health Status",
                    status=PASSING,
                    notes="",
                    output="Agent alive and reachable",
                    service_id="",
                    service_name="",
                    service_tags=[],
                    type="",
                )
            )
        if old is not None:
            self.touch_node_services(name)
        return new

    def put_service(self, svc: _Service) -> None:
        key = (svc.node, svc.id)
        old = self.services.get(key)
        if old is not None and old.content() == svc.content():
            return
        if old is not None and old.name != svc.name:
            self.remove_service(svc.node, svc.id, keep_checks=True)
            old = None
        svc.create_index = old.create_index if old else self.raft
        svc.modify_index = self.raft
        self.services[key] = svc
        self.node_services.setdefault(svc.node, set()).add(svc.id)
        self.by_name.setdefault(svc.name, set()).add(key)
        self.touch_service(svc.name)
        self.touch_connect(svc)
        if old is not None:
            self.touch_connect(old)
        self.touch_catalog()
        # Checks carry the service's name and tags.
        for cid in list(self.svc_checks.get(key, ())):
            ck = self.checks[(svc.node, cid)]
            self.put_check(
                dataclasses.replace(ck, service_name=svc.name, service_tags=list(svc.tags))
            )

    def remove_service(self, node: str, sid: str, *, keep_checks: bool = False) -> bool:
        svc = self.services.pop((node, sid), None)
        if svc is None:
            return False
        self.node_services[node].discard(sid)
        keys = self.by_name.get(svc.name)
        if keys is not None:
            keys.discard((node, sid))
            if not keys:
                del self.by_name[svc.name]
        if not keep_checks:
            for cid in list(self.svc_checks.get((node, sid), ())):
                self._unindex_check(self.checks.pop((node, cid)))
        self.touch_service(svc.name)
        self.touch_connect(svc)
        self.touch_catalog()
        return True

    def _unindex_check(self, ck: _Check) -> None:
        ids = self.svc_checks.get((ck.node, ck.service_id))
        if ids is not None:
            ids.discard(ck.id)
            if not ids:
                del self.svc_checks[(ck.node, ck.service_id)]

    def put_check(self, ck: _Check) -> None:
        key = (ck.node, ck.id)
        old = self.checks.get(key)
        if old is not None and old.content() == ck.content():
            return
        ck.create_index = old.create_index if old else self.raft
        ck.modify_index = self.raft
        if old is not None:
            self._unindex_check(old)
        self.checks[key] = ck
        self.svc_checks.setdefault((ck.node, ck.service_id), set()).add(ck.id)
        self._touch_for_check(ck)
        if old is not None and old.service_id != ck.service_id:
            self._touch_for_check(old)

    def remove_check(self, node: str, cid: str) -> bool:
        ck = self.checks.pop((node, cid), None)
        if ck is None:
            return False
        self._unindex_check(ck)
        self._touch_for_check(ck)
        return True

    def _touch_for_check(self, ck: _Check) -> None:
        if ck.service_id:
            svc = self.services.get((ck.node, ck.service_id))
            if svc is not None:
                self.touch_service(svc.name)
        else:
            self.touch_node_services(ck.node)

    def remove_node(self, name: str) -> bool:
        if name not in self.nodes:
            return False
        for sid in list(self.node_services.get(name, ())):
            self.remove_service(name, sid)
        self.node_services.pop(name, None)
        for key in [k for k in self.checks if k[0] == name]:
            self._unindex_check(self.checks.pop(key))
        del self.nodes[name]
        return True

    def reset(self, to: int) -> None:
        """A snapshot restore: every index now at most ``to``."""
        to = max(to, 0)
        self.raft = to
        self.catalog_index = min(self.catalog_index, to)
        self.config.reset(to)
        for name in self.service_index:
            self.service_index[name] = min(self.service_index[name], to)
        for ent in (*self.nodes.values(), *self.services.values(), *self.checks.values()):
            ent.create_index = min(ent.create_index, to)
            ent.modify_index = min(ent.modify_index, to)

    # -- reads -------------------------------------------------------------------
    def index_of(self, key: str) -> int:
        if key == "catalog":
            idx = self.catalog_index
        elif key.startswith("config:"):
            idx = self.config.index
        else:
            idx = self.service_index.get(key[4:], self.raft)
        return max(idx, 1)

    def checks_for(self, node: str, sid: str) -> list[_Check]:
        node_level = sorted(self.svc_checks.get((node, ""), ()))
        own = sorted(self.svc_checks.get((node, sid), ()))
        return [self.checks[(node, cid)] for cid in (*node_level, *own)]

    def instances(self, name: str) -> list[_Service]:
        return sorted(
            (self.services[k] for k in self.by_name.get(name, ())),
            key=lambda s: (s.node, s.id),
        )


# ---------------------------------------------------------------------------------
# The emulator


def _check_definitions(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The non-empty check definitions of a registration: its `Check` and its `Checks`."""
    defs: list[dict[str, Any]] = []
    one = _get(data, "Check")
    if isinstance(one, dict) and one:
        defs.append(one)
    many = _get(data, "Checks")
    if isinstance(many, list):
        defs.extend(d for d in many if isinstance(d, dict) and d)
    return defs


class ConsulEmulator:
    """A Consul HTTP API emulator serving from a background thread; see the module doc."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        datacenter: str = "dc1",
        node: str = "node-1",
        node_address: str = "127.0.0.1",
        acl_tokens: Iterable[str] | None = None,
        jitter: bool = True,
        config_kinds: Iterable[str] | None = CONFIG_KINDS,
    ) -> None:
        """`config_kinds`: the config entry kinds this Consul knows; None: no config
        entry API at all (Consul before 1.5: `/v1/config` answers 404)."""
        self.host = host
        self._port = port
        self.datacenter = datacenter
        self.node = node
        self.node_address = node_address
        self.acl_tokens: frozenset[str] | None = (
            frozenset(acl_tokens) if acl_tokens is not None else None
        )
        self._service_read: dict[str, tuple[str, ...]] = {}  # token → readable prefixes
        self.jitter = jitter
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._fail: list[tuple[str, int, int, str]] = []  # [prefix, remaining, status, body]
        self._drop: list[tuple[str, int]] = []
        self._slow: dict[str, float] = {}  # path prefix → seconds each answer is held back
        self._zero_next = 0
        self._no_leader = False
        self._state = _State(datacenter)
        self._state.on_change = self._on_change
        self._config_api = config_kinds is not None
        self._state.config = ConfigEntries(config_kinds or ())
        self._events: dict[str, asyncio.Event] = {}
        self._abandon = 0
        self._cache: dict[tuple[Any, ...], tuple[int, bytes]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: LoopThread | None = None
        self._web: web.Server | None = None
        self._server: asyncio.AbstractServer | None = None
        self._state.begin()
        self._state.ensure_node(node, node_address, agent=True)
        self._state.commit()

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> ConsulEmulator:
        if self._thread is not None:
            raise RuntimeError("already started")
        thread = LoopThread("consul-emulator").start()
        try:
            thread.run(self._listen())
        except BaseException:
            thread.stop()
            raise
        self._thread, self._loop = thread, thread.loop
        return self

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        try:
            thread.run(self._shutdown())
        finally:
            thread.stop()
            self._thread = None
            self._loop = None

    def __enter__(self) -> ConsulEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    def pause(self) -> None:
        """Consul unreachable: stop listening and abort every open connection."""
        self._call(self._pause())

    def resume(self) -> None:
        """Listen again on the same port, with the same state and indexes."""
        self._call(self._listen())

    # -- fault injection -------------------------------------------------------------
    def fail_next(
        self, n: int, status: int = 500, body: str = "No cluster leader", path_prefix: str = "/v1/"
    ) -> None:
        with self._lock:
            self._fail.append((path_prefix, n, status, body))

    def drop_next(self, n: int, path_prefix: str = "/v1/") -> None:
        with self._lock:
            self._drop.append((path_prefix, n))

    def slow(self, seconds: float, path_prefix: str = "/v1/") -> None:
        """Hold back every answer on ``path_prefix`` by ``seconds`` (0: no longer), blocked
        queries included: decides which of two watches woken by one write answers first."""
        with self._lock:
            if seconds > 0:
                self._slow[path_prefix] = seconds
            else:
                self._slow.pop(path_prefix, None)

    def set_no_leader(self, on: bool) -> None:
        with self._lock:
            self._no_leader = on

    def reset_index(self, to: int) -> None:
        """Snapshot restore: indexes restart from ``to``; blocked queries answer now."""

        def do() -> None:
            self._state.reset(to)
            self._cache.clear()
            self._abandon += 1
            for ev in self._events.values():
                ev.set()
            self._events.clear()

        self._run(do)

    def set_service_read(self, token: str, prefixes: Iterable[str] | None) -> None:
        """What ``token`` may read: services whose names start with one of ``prefixes``
        (``[""]``: all, ``[]``: none — the token lost ``service:read``), or None: all."""
        with self._lock:
            if prefixes is None:
                self._service_read.pop(token, None)
            else:
                self._service_read[token] = tuple(prefixes)

    def _reader(self, token: str | None) -> Callable[[str], bool] | None:
        """None if ``token`` reads every service, else which service names it reads."""
        if self.acl_tokens is None:
            return None
        with self._lock:
            prefixes = () if token is None else self._service_read.get(token)
        if prefixes is None:
            return None
        return lambda name: any(name.startswith(p) for p in prefixes)

    def zero_index_next(self, n: int) -> None:
        with self._lock:
            self._zero_next += n

    # -- observation -------------------------------------------------------------------
    def request_log(self) -> list[Request]:
        with self._lock:
            return [dataclasses.replace(r) for r in self.requests]

    def clear_request_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def index(self) -> int:
        return self._run(lambda: self._state.raft)

    # -- convenience -----------------------------------------------------------------------
    def populate(self, services: int, instances: int, *, base_port: int = 20000) -> None:
        """Register ``svc-0000``.. with ``instances`` passing instances each, on this node."""

        def do() -> None:
            st = self._state
            for s in range(services):
                name = f"svc-{s:04d}"
                st.begin()
                for i in range(instances):
                    sid = f"{name}-{i}"
                    st.put_service(
                        _Service(
                            node=self.node,
                            id=sid,
                            name=name,
                            tags=[],
                            address="127.0.0.1",
                            port=base_port + (s * instances + i) % 40000,
                            meta={},
                            weights={"Passing": 1, "Warning": 1},
                            enable_tag_override=False,
                            kind="",
                            tagged_addresses={},
                        )
                    )
                    st.put_check(
                        _Check(
                            node=self.node,
                            id=f"service:{sid}",
                            name=f"Service '{name}' check",
                            status=PASSING,
                            notes="",
                            output="",
                            service_id=sid,
                            service_name=name,
                            service_tags=[],
                            type="ttl",
                        )
                    )
                st.commit()

        self._run(do)

    def config_write(self, entry: dict[str, Any], cas: int | None = None) -> Any:
        """As `PUT /v1/config` (`consul config write`): True, or False on a cas mismatch."""
        query = {} if cas is None else {"cas": [str(cas)]}
        return self._run(lambda: self._config_apply("config_put", "", query, entry))

    def config_delete(self, kind: str, name: str) -> None:
        """As `DELETE /v1/config/<kind>/<name>` (`consul config delete`)."""
        self._run(lambda: self._config_apply("config", f"{kind}/{name}", {}, {}))

    def _config_apply(
        self, name: str, arg: str, query: dict[str, list[str]], data: dict[str, Any]
    ) -> Any:
        st = self._state
        st.begin()
        try:
            return self._config_write(name, arg, query, data)
        finally:
            st.commit()

    # -- thread plumbing -----------------------------------------------------------------------
    def _run(self, fn: Callable[[], Any]) -> Any:
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn()

        async def coro() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(coro(), loop).result(timeout=30)

    def _call(self, coro: Any) -> Any:
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("not started")
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=30)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        if self._web is None:
            self._web = web.Server(self._handle, handler_cancellation=True, access_log=None)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._server = await loop.create_server(self._web, sock=sock, backlog=4096)

    async def _pause(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        if self._web is not None:
            for handler in self._web.connections:
                self._abort(handler)
        if server is not None:
            await server.wait_closed()

    @staticmethod
    def _abort(handler: RequestHandler) -> None:
        transport = handler.transport
        if transport is not None:
            transport.abort()

    async def _shutdown(self) -> None:
        await self._pause()
        if self._web is not None:
            await self._web.shutdown(0.1)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_change(self, keys: set[str]) -> None:
        # Every write wakes the waiters on never-registered services ("*"), whose index
        # is the raft index; otherwise only those whose query changed.
        for key in (*keys, "*"):
            ev = self._events.pop(key, None)
            if ev is not None:
                ev.set()

    # -- HTTP --------------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        query: dict[str, list[str]] = {}
        for k, v in request.query.items():
            query.setdefault(k, []).append(v)
        token = _token(request)
        rec = Request(request.method, request.path, query, token, time.monotonic())
        with self._lock:
            self.requests.append(rec)
            if len(self.requests) > MAX_LOG:
                del self.requests[: MAX_LOG // 2]
            drop = _take(self._drop, request.path)
            fail = None if drop else _take_fail(self._fail, request.path)
        try:
            if drop:
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            if fail is not None:
                resp = _text(fail[0], fail[1])
            else:
                try:
                    resp = await self._dispatch(request, query, token)
                except _HTTPError as exc:
                    resp = _text(exc.status, exc.body)
                with self._lock:
                    delay = max(
                        (d for p, d in self._slow.items() if request.path.startswith(p)),
                        default=0.0,
                    )
                if delay:
                    await asyncio.sleep(delay)
            rec.status = resp.status
            return resp
        finally:
            rec.end = time.monotonic()

    async def _dispatch(
        self, request: web.BaseRequest, query: dict[str, list[str]], token: str | None
    ) -> web.Response:
        path, method = request.path, request.method
        dc = _q(query, "dc")
        if dc and dc != self.datacenter:
            raise _HTTPError(500, "No path to datacenter")
        route = _route(path)
        if route is not None and route[0].startswith("config") and not self._config_api:
            route = None
        if route is None:
            raise _HTTPError(404, "404 page not found")
        name, arg, methods = route
        if method not in methods:
            raise _HTTPError(405, f"method {method} not allowed")
        if name in ("status_leader", "status_peers"):
            leader = "" if self._no_leader else "127.0.0.1:8300"
            body: Any = leader if name == "status_leader" else ([leader] if leader else [])
            return _json(body, None)
        anonymous = self._check_token(token)
        if method == "GET":
            if self._no_leader and name not in ("agent_self", "agent_services", "agent_checks"):
                raise _HTTPError(500, "No cluster leader")
            return await self._read(name, arg, query, self._reader(token))
        if anonymous:
            raise _HTTPError(403, "Permission denied")
        if self._no_leader and name.startswith(("catalog_", "config")):
            raise _HTTPError(500, "No cluster leader")
        raw = await request.read()
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise _HTTPError(400, f"Request decode failed: {exc}") from None
        if data is not None and not isinstance(data, dict):
            raise _HTTPError(400, "Request decode failed: expected an object")
        try:
            return self._write(name, arg, query, data or {})
        except ConfigEntryError as exc:
            raise _HTTPError(exc.status, exc.body) from None

    def _check_token(self, token: str | None) -> bool:
        """True for the anonymous token; 403 for an unknown one."""
        if self.acl_tokens is None:
            return False
        if token is None:
            return True
        if token not in self.acl_tokens:
            raise _HTTPError(403, "ACL not found")
        return False

    # -- reads ---------------------------------------------------------------------------------
    async def _read(
        self,
        name: str,
        arg: str,
        query: dict[str, list[str]],
        reads: Callable[[str], bool] | None,
    ) -> web.Response:
        st = self._state
        if name == "agent_self":
            return _json(
                {
                    "Config": {
                        "Datacenter": self.datacenter,
                        "NodeName": self.node,
                        "NodeID": st.nodes[self.node].id,
                        "Server": True,
                        "Version": "1.19.0",
                    },
                    "Member": {
                        "Name": self.node,
                        "Addr": self.node_address,
                        "Port": 8301,
                        "Tags": {"dc": self.datacenter, "role": "consul"},
                        "Status": 1,
                    },
                    "Meta": {},
                },
                None,
            )
        if name == "catalog_datacenters":
            return _json([self.datacenter], None)
        if name == "agent_services":
            return _json(
                {
                    s.id: {**s.to_json(), "Datacenter": self.datacenter}
                    for s in st.services.values()
                    if s.node == self.node and (reads is None or reads(s.name))
                },
                None,
            )
        if name == "agent_checks":
            return _json(
                {
                    c.id: c.to_json()
                    for c in st.checks.values()
                    if c.node == self.node
                    and c.id != "serfHealth"
                    and (reads is None or reads(c.service_name))
                },
                None,
            )

        if name == "config":
            return await self._config_read(arg, query, reads)
        key = "catalog" if name == "catalog_services" else "svc:" + arg
        if name == "health_connect":
            key = "svc:" + CONNECT_KEY + arg
        await self._blocking(key, query)
        index = st.index_of(key)
        if reads is not None and name != "catalog_services" and not reads(arg):
            return _raw_json(b"[]", self._index_header(index), filtered=True)
        tags = tuple(query.get("tag", ()))
        node_meta = tuple(query.get("node-meta", ()))
        passing = "passing" in query and _q(query, "passing") not in ("0", "false")
        ckey = (name, arg, tags, node_meta, passing)
        # Node meta changes move no catalog/services index: no cache for that filter.
        cached = None if node_meta and name == "catalog_services" else self._cache.get(ckey)
        if cached is not None and cached[0] == index:
            data = cached[1]
        else:
            if name == "catalog_services":
                result: Any = self._catalog_services(tags, node_meta)
            elif name == "health_service":
                result = self._health_service(arg, tags, node_meta, passing)
            elif name == "health_connect":
                result = self._health_connect(arg, tags, node_meta, passing)
            else:
                result = self._catalog_service(arg, tags, node_meta)
            data = json.dumps(result, separators=(",", ":")).encode()
            self._cache[ckey] = (index, data)
        if reads is not None and name == "catalog_services":
            services = json.loads(data)
            kept = {k: v for k, v in services.items() if reads(k)}
            if len(kept) < len(services):
                data = json.dumps(kept, separators=(",", ":")).encode()
                return _raw_json(data, self._index_header(index), filtered=True)
        return _raw_json(data, self._index_header(index))

    async def _config_read(
        self, arg: str, query: dict[str, list[str]], reads: Callable[[str], bool] | None
    ) -> web.Response:
        """`GET /v1/config/:kind` (blocking) or `/v1/config/:kind/:name`."""
        kind, _, entry_name = arg.partition("/")
        st = self._state
        try:
            st.config.check_kind(kind)
            if entry_name:
                return _json(st.config.get(kind, entry_name, reads), st.index_of("config:"))
            key = "config:" + kind
            await self._blocking(key, query)
            entries, filtered = st.config.list(kind, reads)
        except ConfigEntryError as exc:
            raise _HTTPError(exc.status, exc.body) from None
        data = json.dumps(entries, separators=(",", ":")).encode()
        return _raw_json(data, self._index_header(st.index_of(key)), filtered=filtered)

    def _index_header(self, index: int) -> int:
        with self._lock:
            if self._zero_next > 0:
                self._zero_next -= 1
                return 0
        return index

    async def _blocking(self, key: str, query: dict[str, list[str]]) -> None:
        """A read with ``?index=N`` (N > 0) is a blocking query on ``key``."""
        try:
            min_index = int(_q(query, "index") or 0)
        except ValueError:
            raise _HTTPError(400, "Invalid index") from None
        if min_index > 0:
            await self._block(key, min_index, query)

    async def _block(self, key: str, min_index: int, query: dict[str, list[str]]) -> None:
        wait_text = _q(query, "wait")
        try:
            wait = parse_duration(wait_text) if wait_text else DEFAULT_WAIT
        except ValueError:
            raise _HTTPError(400, f"Invalid wait time: {wait_text!r}") from None
        if wait <= 0:
            wait = DEFAULT_WAIT
        wait = min(wait, MAX_WAIT)
        if self.jitter:
            wait += random.uniform(0, wait / JITTER_FRACTION)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        abandon = self._abandon
        st = self._state
        while st.index_of(key) <= min_index and self._abandon == abandon:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            known = key == "catalog" or key[:7] == "config:" or key[4:] in st.service_index
            ev_key = key if known else "*"
            ev = self._events.get(ev_key)
            if ev is None:
                ev = self._events[ev_key] = asyncio.Event()
            try:
                async with asyncio.timeout(remaining):
                    await ev.wait()
            except TimeoutError:
                return

    def _node_meta_ok(self, node: _Node, node_meta: tuple[str, ...]) -> bool:
        for item in node_meta:
            k, _, v = item.partition(":")
            if node.meta.get(k) != v:
                return False
        return True

    def _catalog_services(
        self, tags: tuple[str, ...], node_meta: tuple[str, ...]
    ) -> dict[str, list[str]]:
        st = self._state
        out: dict[str, list[str]] = {}
        for name in sorted(st.by_name):
            union: list[str] = []
            seen: set[str] = set()
            matched = False
            for svc in st.instances(name):
                if node_meta and not self._node_meta_ok(st.nodes[svc.node], node_meta):
                    continue
                if tags and not all(t in svc.tags for t in tags):
                    continue
                matched = True
                for t in svc.tags:
                    if t not in seen:
                        seen.add(t)
                        union.append(t)
            if matched:
                out[name] = union
        return out

    def _matching(
        self, name: str, tags: tuple[str, ...], node_meta: tuple[str, ...]
    ) -> Iterator[tuple[_Service, _Node]]:
        """The instances of `name` (with their nodes) that carry every tag and node meta."""
        st = self._state
        for svc in st.instances(name):
            node = st.nodes[svc.node]
            if tags and not all(t in svc.tags for t in tags):
                continue
            if node_meta and not self._node_meta_ok(node, node_meta):
                continue
            yield svc, node

    def _health_service(
        self, name: str, tags: tuple[str, ...], node_meta: tuple[str, ...], passing: bool
    ) -> list[dict[str, Any]]:
        st = self._state
        out = []
        for svc, node in self._matching(name, tags, node_meta):
            checks = st.checks_for(svc.node, svc.id)
            if passing and any(c.status != PASSING for c in checks):
                continue
            out.append(
                {
                    "Node": node.to_json(),
                    "Service": svc.to_json(),
                    "Checks": [c.to_json() for c in checks],
                }
            )
        return out

    def _health_connect(
        self, name: str, tags: tuple[str, ...], node_meta: tuple[str, ...], passing: bool
    ) -> list[dict[str, Any]]:
        """``/v1/health/connect/<name>``: the connect-proxy instances fronting `name`,
        in the shape of ``/v1/health/service`` (Consul's "List Service Instances for
        Mesh-enabled Service")."""
        proxies = {
            svc.name for svc in self._state.services.values() if svc.destination == name
        }
        out = []
        for proxy in sorted(proxies):
            out += [
                e for e in self._health_service(proxy, tags, node_meta, passing)
                if e["Service"]["Proxy"].get("DestinationServiceName") == name
            ]
        return out

    def _catalog_service(
        self, name: str, tags: tuple[str, ...], node_meta: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        out = []
        for svc, node in self._matching(name, tags, node_meta):
            out.append(
                {
                    "ID": node.id,
                    "Node": node.name,
                    "Address": node.address,
                    "Datacenter": node.datacenter,
                    "TaggedAddresses": node.tagged_addresses,
                    "NodeMeta": node.meta,
                    "ServiceKind": svc.kind,
                    "ServiceID": svc.id,
                    "ServiceName": svc.name,
                    "ServiceTags": list(svc.tags),
                    "ServiceAddress": svc.address,
                    "ServiceTaggedAddresses": svc.tagged_addresses,
                    "ServiceWeights": svc.weights,
                    "ServiceMeta": svc.meta,
                    "ServicePort": svc.port,
                    "ServiceEnableTagOverride": svc.enable_tag_override,
                    "ServiceProxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
                    "ServiceConnect": {},
                    "CreateIndex": svc.create_index,
                    "ModifyIndex": svc.modify_index,
                }
            )
        return out

    # -- writes ---------------------------------------------------------------------------------
    def _write(
        self, name: str, arg: str, query: dict[str, list[str]], data: dict[str, Any]
    ) -> web.Response:
        st = self._state
        st.begin()
        try:
            result: Any = self._apply(name, arg, query, data)
        finally:
            st.commit()
        return _json(result, None)

    def _apply(self, name: str, arg: str, query: dict[str, list[str]], data: dict[str, Any]) -> Any:
        st = self._state
        node = self.node
        if name == "agent_service_register":
            self._agent_register(
                data, replace_checks=_q(query, "replace-existing-checks") in ("true", "1")
            )
            return None
        if name == "agent_service_deregister":
            if (node, arg) not in st.services:
                raise _HTTPError(
                    404,
                    f'Unknown service ID "{arg}". Ensure that the service '
                    "ID is passed, not the service name.",
                )
            st.remove_service(node, arg)
            st.remove_service(node, f"{arg}-sidecar-proxy")  # Consul removes its sidecar
            return None
        if name == "agent_service_maintenance":
            svc = st.services.get((node, arg))
            if svc is None:
                raise _HTTPError(404, f'Unknown service ID "{arg}"')
            enable = _q(query, "enable")
            if enable not in ("true", "false", "True", "False", "1", "0"):
                raise _HTTPError(400, "Missing value for enable")
            cid = f"_service_maintenance:{arg}"
            if enable in ("true", "True", "1"):
                reason = _q(query, "reason") or (
                    "Maintenance mode is enabled for this service, "
                    "but no reason was provided. This is a default message."
                )
                st.put_check(
                    _Check(
                        node=node,
                        id=cid,
                        name="Service Maintenance Mode",
                        status=CRITICAL,
                        notes=reason,
                        output="",
                        service_id=arg,
                        service_name=svc.name,
                        service_tags=list(svc.tags),
                        type="maintenance",
                    )
                )
            else:
                st.remove_check(node, cid)
            return None
        if name == "agent_check_register":
            sid = _get(data, "ServiceID") or ""
            svc = st.services.get((node, sid)) if sid else None
            if sid and svc is None:
                raise _HTTPError(400, f'ServiceID "{sid}" does not exist')
            cid = _get(data, "CheckID", "ID") or _get(data, "Name")
            if not cid:
                raise _HTTPError(400, "Missing check name")
            self._put_agent_check(data, cid, svc, _get(data, "Name") or cid)
            return None
        if name == "agent_check_deregister":
            if not st.remove_check(node, arg):
                raise _HTTPError(404, f'Unknown check ID "{arg}"')
            return None
        if name in (
            "agent_check_pass",
            "agent_check_warn",
            "agent_check_fail",
            "agent_check_update",
        ):
            ck = st.checks.get((node, arg))
            if ck is None or arg == "serfHealth":
                raise _HTTPError(404, f'Unknown check ID "{arg}"')
            if ck.type != "ttl":
                raise _HTTPError(500, f'CheckID "{arg}" does not have associated TTL')
            if name == "agent_check_update":
                status = _get(data, "Status") or ""
                if status not in STATUSES:
                    raise _HTTPError(400, f'Invalid check status: "{status}"')
                output = _get(data, "Output") or ""
            else:
                status = {
                    "agent_check_pass": PASSING,
                    "agent_check_warn": WARNING,
                    "agent_check_fail": CRITICAL,
                }[name]
                output = _q(query, "note") or ""
            st.put_check(dataclasses.replace(ck, status=status, output=output))
            return None
        if name == "catalog_register":
            return self._catalog_register(query, data)
        if name in ("config_put", "config"):
            return self._config_write(name, arg, query, data)
        if name == "catalog_deregister":
            nname = _get(data, "Node") or ""
            if not nname:
                raise _HTTPError(400, "Missing node name")
            sid = _get(data, "ServiceID")
            cid = _get(data, "CheckID")
            if sid:
                st.remove_service(nname, sid)
            elif cid:
                st.remove_check(nname, cid)
            else:
                st.remove_node(nname)
            return True
        raise _HTTPError(404, "404 page not found")

    def _config_write(
        self, name: str, arg: str, query: dict[str, list[str]], data: dict[str, Any]
    ) -> Any:
        st = self._state
        try:
            cas = int(c) if (c := _q(query, "cas")) is not None else None
        except ValueError:
            raise _HTTPError(400, "Invalid cas index") from None
        if name == "config_put":
            done = st.config.put(data, cas, st.raft)
            kind = str(_get(data, "Kind") or "")
        else:
            kind, _, entry_name = arg.partition("/")
            if not entry_name:
                raise _HTTPError(405, "method DELETE not allowed")
            done = st.config.delete(kind, entry_name, cas, st.raft)
        if done:  # blocking queries on the kind wake up
            st.touch_config(kind)
        if name != "config_put" and cas is None:
            return {}  # Consul answers an unconditional delete with an empty object
        return done

    def _agent_register(self, data: dict[str, Any], *, replace_checks: bool) -> None:
        st = self._state
        name = _get(data, "Name", "Service")
        if not name:
            raise _HTTPError(400, "Missing service name")
        svc = self._service_from(data, self.node, name)
        defs = _check_definitions(data)
        st.put_service(svc)
        sidecar = _get(_get(data, "Connect") or {}, "SidecarService")
        if isinstance(sidecar, dict):
            self._register_sidecar(svc, sidecar)
        wanted: set[str] = set()
        for i, defn in enumerate(defs):
            cid = _get(defn, "CheckID", "ID") or (
                f"service:{svc.id}:{i + 1}" if len(defs) > 1 else f"service:{svc.id}"
            )
            wanted.add(cid)
            self._put_agent_check(
                defn, cid, svc, _get(defn, "Name") or f"Service '{svc.name}' check"
            )
        if replace_checks:
            for (n, cid), ck in list(st.checks.items()):
                if n == self.node and ck.service_id == svc.id and cid not in wanted:
                    st.remove_check(n, cid)

    def _register_sidecar(self, parent: _Service, defn: dict[str, Any]) -> None:
        """``connect { sidecar_service {} }``: the proxy registration with Consul's
        defaults (ID and name ``<parent>-sidecar-proxy``, the parent's tags and meta, a
        port from the sidecar range, Kind connect-proxy, the parent as destination,
        LocalServiceAddress 127.0.0.1 and the parent's port), overridden by `defn`.
        Its default checks (TCP and alias) are not emulated."""
        st = self._state
        used = {s.port for s in st.services.values() if s.node == self.node}
        port = _get(defn, "Port") or next(
            (p for p in range(SIDECAR_MIN_PORT, SIDECAR_MAX_PORT + 1) if p not in used), 0
        )
        proxy: dict[str, Any] = {
            "DestinationServiceName": parent.name,
            "DestinationServiceID": parent.id,
            "LocalServiceAddress": "127.0.0.1",
            "LocalServicePort": parent.port,
        }
        given = _get(defn, "Proxy") or {}
        for key in list(proxy):
            value = _get(given, key)
            if value is not None:
                proxy[key] = value
        data = {
            "Tags": _get(defn, "Tags") or parent.tags, "Meta": _get(defn, "Meta") or parent.meta,
            "Address": _get(defn, "Address") or "", "Weights": _get(defn, "Weights"),
            "ID": f"{parent.id}-sidecar-proxy", "Kind": CONNECT_PROXY, "Port": port,
            "Proxy": proxy,
        }
        name = _get(defn, "Name") or f"{parent.name}-sidecar-proxy"
        st.put_service(self._service_from(data, self.node, name))

    def _put_agent_check(
        self, defn: dict[str, Any], cid: str, svc: _Service | None, check_name: str
    ) -> None:
        st = self._state
        old = st.checks.get((self.node, cid))
        status = _get(defn, "Status") or (old.status if old else CRITICAL)
        if status not in STATUSES:
            raise _HTTPError(400, f'Invalid check status: "{status}"')
        st.put_check(
            _Check(
                node=self.node,
                id=cid,
                name=check_name,
                status=status,
                notes=_get(defn, "Notes") or "",
                output=old.output if old else "",
                service_id=svc.id if svc else "",
                service_name=svc.name if svc else "",
                service_tags=list(svc.tags) if svc else [],
                type=_check_type(defn),
                interval=str(_get(defn, "Interval") or ""),
                timeout=str(_get(defn, "Timeout") or ""),
            )
        )

    def _service_from(self, data: dict[str, Any], node: str, name: str) -> _Service:
        weights_in = _get(data, "Weights") or {}
        weights = {
            "Passing": int(_get(weights_in, "Passing", default=1) or 1),
            "Warning": int(_get(weights_in, "Warning", default=1) or 1),
        }
        try:
            port = int(_get(data, "Port", default=0) or 0)
        except (TypeError, ValueError):
            raise _HTTPError(400, "Request decode failed: bad Port") from None
        return _Service(
            node=node,
            id=_get(data, "ID") or name,
            name=name,
            tags=[str(t) for t in (_get(data, "Tags") or [])],
            address=_get(data, "Address") or "",
            port=port,
            meta=dict(_get(data, "Meta") or {}),
            weights=weights,
            enable_tag_override=bool(_get(data, "EnableTagOverride")),
            kind=_get(data, "Kind") or "",
            tagged_addresses=dict(_get(data, "TaggedAddresses") or {}),
            proxy=dict(_get(data, "Proxy") or {}),
        )

    def _catalog_register(self, query: dict[str, list[str]], data: dict[str, Any]) -> bool:
        st = self._state
        nname = _get(data, "Node") or ""
        address = _get(data, "Address") or ""
        if not nname:
            raise _HTTPError(400, "Missing node name")
        if not address:
            raise _HTTPError(400, "Missing node address")
        dc = _get(data, "Datacenter")
        if dc and dc != self.datacenter:
            raise _HTTPError(500, "No path to datacenter")
        meta = dict(_get(data, "NodeMeta") or {})
        for item in query.get("node-meta", ()):
            k, _, v = item.partition(":")
            meta[k] = v
        if not _get(data, "SkipNodeUpdate") or nname not in st.nodes:
            st.ensure_node(
                nname,
                address,
                node_id=_get(data, "ID") or None,
                meta=meta,
                tagged=_get(data, "TaggedAddresses") or None,
            )
        svc_data = _get(data, "Service")
        svc: _Service | None = None
        if isinstance(svc_data, dict) and svc_data:
            sname = _get(svc_data, "Service", "Name")
            if not sname:
                raise _HTTPError(400, "Invalid service: missing service name")
            svc = self._service_from(svc_data, nname, sname)
            st.put_service(svc)
        defs = _check_definitions(data)
        for defn in defs:
            cid = _get(defn, "CheckID", "ID") or _get(defn, "Name")
            if not cid:
                raise _HTTPError(400, "Missing check ID")
            sid = _get(defn, "ServiceID") or ""
            target = st.services.get((nname, sid)) if sid else None
            if sid and target is None:
                raise _HTTPError(500, f'Unknown service ID "{sid}" for check "{cid}"')
            status = _get(defn, "Status") or CRITICAL
            if status not in STATUSES:
                raise _HTTPError(400, f'Invalid check status: "{status}"')
            st.put_check(
                _Check(
                    node=nname,
                    id=cid,
                    name=_get(defn, "Name") or cid,
                    status=status,
                    notes=_get(defn, "Notes") or "",
                    output=_get(defn, "Output") or "",
                    service_id=sid,
                    service_name=target.name if target else "",
                    service_tags=list(target.tags) if target else [],
                    type=_get(defn, "Type") or _check_type(_get(defn, "Definition") or {}),
                )
            )
        return True


# ---------------------------------------------------------------------------------
# Helpers

_ROUTES: list[tuple[str, str, tuple[str, ...], bool]] = [
    # (name, path or prefix, methods, is_prefix)
    ("catalog_services", "/v1/catalog/services", ("GET",), False),
    ("catalog_datacenters", "/v1/catalog/datacenters", ("GET",), False),
    ("catalog_service", "/v1/catalog/service/", ("GET",), True),
    ("health_service", "/v1/health/service/", ("GET",), True),
    ("health_connect", "/v1/health/connect/", ("GET",), True),
    ("status_leader", "/v1/status/leader", ("GET",), False),
    ("status_peers", "/v1/status/peers", ("GET",), False),
    ("agent_self", "/v1/agent/self", ("GET",), False),
    ("agent_services", "/v1/agent/services", ("GET",), False),
    ("agent_checks", "/v1/agent/checks", ("GET",), False),
    ("agent_service_register", "/v1/agent/service/register", ("PUT",), False),
    ("agent_service_deregister", "/v1/agent/service/deregister/", ("PUT",), True),
    ("agent_service_maintenance", "/v1/agent/service/maintenance/", ("PUT",), True),
    ("agent_check_register", "/v1/agent/check/register", ("PUT",), False),
    ("agent_check_deregister", "/v1/agent/check/deregister/", ("PUT",), True),
    ("agent_check_pass", "/v1/agent/check/pass/", ("PUT",), True),
    ("agent_check_warn", "/v1/agent/check/warn/", ("PUT",), True),
    ("agent_check_fail", "/v1/agent/check/fail/", ("PUT",), True),
    ("agent_check_update", "/v1/agent/check/update/", ("PUT",), True),
    ("catalog_register", "/v1/catalog/register", ("PUT",), False),
    ("catalog_deregister", "/v1/catalog/deregister", ("PUT",), False),
    ("config_put", "/v1/config", ("PUT",), False),
    ("config", "/v1/config/", ("GET", "DELETE"), True),
]


def _route(path: str) -> tuple[str, str, tuple[str, ...]] | None:
    for name, pattern, methods, prefix in _ROUTES:
        if prefix:
            if path.startswith(pattern) and len(path) > len(pattern):
                return name, path[len(pattern) :], methods
        elif path == pattern:
            return name, "", methods
    return None


def _q(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _token(request: web.BaseRequest) -> str | None:
    token = request.headers.get("X-Consul-Token")
    if not token:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
    if not token:
        token = request.query.get("token")
    return token or None


def _take(entries: list[tuple[str, int]], path: str) -> bool:
    for i, (prefix, n) in enumerate(entries):
        if path.startswith(prefix):
            if n <= 1:
                del entries[i]
            else:
                entries[i] = (prefix, n - 1)
            return n >= 1
    return False


def _take_fail(entries: list[tuple[str, int, int, str]], path: str) -> tuple[int, str] | None:
    for i, (prefix, n, status, body) in enumerate(entries):
        if path.startswith(prefix):
            if n <= 1:
                del entries[i]
            else:
                entries[i] = (prefix, n - 1, status, body)
            return (status, body) if n >= 1 else None
    return None


def _headers(index: int | None) -> dict[str, str]:
    headers = {
        "X-Consul-Default-Acl-Policy": "allow",
        "X-Consul-Effective-Consistency": "leader",
        "X-Consul-KnownLeader": "true",
        "X-Consul-LastContact": "0",
    }
    if index is not None:
        headers["X-Consul-Index"] = str(index)
    return headers


def _text(status: int, body: str) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/plain")


def _json(body: Any, index: int | None) -> web.Response:
    return _raw_json(json.dumps(body).encode(), index)


def _raw_json(data: bytes, index: int | None, *, filtered: bool = False) -> web.Response:
    headers = _headers(index)
    if filtered:
        headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
    return web.Response(body=data, headers=headers, content_type="application/json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--services", type=int, default=0)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--datacenter", default="dc1")
    parser.add_argument("--no-jitter", action="store_true")
    args = parser.parse_args(argv)
    emu = ConsulEmulator(
        args.host, args.port, datacenter=args.datacenter, jitter=not args.no_jitter
    )
    if args.services:
        emu.populate(args.services, args.instances)
    emu.start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"listening on {emu.url}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
