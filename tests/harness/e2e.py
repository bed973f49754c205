"""What the end-to-end tests share: the server, Envoy and the traffic, seen from outside.

* Traffic through Envoy to ``backends`` (a :class:`RequestLoop` per host):
  ``stop_served`` (all 2xx), ``finish`` (and Envoy rejected nothing), ``outcomes``/``runs``
  of its answers, ``wait_for_status``, ``wait_for_switch`` (a host goes from one status to
  another and never through a third: DESIGN §4.9, no 503 caused by ordering) and ``only``
  (every answer from these backends).
* Envoy's own counters: the xDS update counter names, ``counters``, ``xds_updates``
  (every ``update_success``/``update_rejected``: "Envoy was sent nothing new") and
  ``rejected`` (what Envoy refused).
* The server's per-proxy status (in-process or subprocess alike): ``proxy_types``,
  ``all_synced``, ``wait_synced``; :class:`Mesh`, an `xds-server` subprocess with the
  HTTP listener its Envoys serve, and its sources, pushes and versions.
* ``answered_rounds``: from the Consul emulator's request log, the blocking-query rounds a
  watch has taken in (evidence for "a round happened, and nothing changed").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tests.consul_emulator import Request
from tests.harness.backends import HttpBackend, LoopSummary, RequestLoop
from tests.harness.envoy import EnvoyProcess, bootstrap
from tests.harness.ports import free_port
from tests.harness.server_proc import XdsServerProcess
from tests.harness.waiting import wait_for

WAIT = 10.0  # generous but finite wait for anything Envoy or the server must do

# Envoy's xDS counters (each accepted response adds one to ``update_success``, even when
# its content is identical to what Envoy already has).
CDS_OK = "cluster_manager.cds.update_success"
CDS_REJECTED = "cluster_manager.cds.update_rejected"
LDS_OK = "listener_manager.lds.update_success"
LDS_REJECTED = "listener_manager.lds.update_rejected"

ADS_TYPES = frozenset({"clusters", "endpoints", "listeners", "routes"})

Proxies = Iterable[Mapping[str, Any]]


def eds_ok(cluster: str) -> str:
    """The EDS ``update_success`` counter of ``cluster``."""
    return f"cluster.{cluster}.update_success"


def counters(env: EnvoyProcess, *names: str) -> dict[str, int | None]:
    """These stats of Envoy's (None for one it does not have)."""
    return {name: env.stat(name) for name in names}


def xds_updates(env: EnvoyProcess) -> dict[str, int]:
    """Every xDS update counter Envoy has (CDS, LDS, each RDS route config, each cluster's
    EDS; accepted and rejected): unchanged means Envoy was sent nothing."""
    return env.stats(r"\.update_(success|rejected)$")


def rejected(env: EnvoyProcess) -> dict[str, int]:
    """The xDS updates Envoy rejected (CDS, LDS, each RDS and EDS), by counter: {} if none."""
    return {k: v for k, v in xds_updates(env).items() if k.endswith("_rejected") and v}


# --------------------------------------------------------------------------- traffic


def backends(factory: Callable[..., HttpBackend], *names: str) -> list[HttpBackend]:
    """One started loopback HTTP backend per name (each answers with its name)."""
    return [factory(name) for name in names]


def stop_served(loop: RequestLoop) -> LoopSummary:
    """Stop ``loop``; every request it made was answered with a 2xx."""
    summary = loop.stop()
    assert summary.failed == 0, f"{loop.host_header or loop.url}: {summary}"
    return summary


def finish(env: EnvoyProcess, *loops: RequestLoop) -> None:
    """The end of a clean run: every request of ``loops`` answered 2xx (they are stopped),
    and Envoy rejected no update."""
    for loop in loops:
        stop_served(loop)
    assert rejected(env) == {}, rejected(env)


def outcomes(loop: RequestLoop, since: int = 0) -> list[int | str]:
    """Each result since ``since``: the HTTP status, or the transport error's text."""
    return [code if code is not None else text for _t, code, text in loop.results(since)]


def runs(items: Sequence[Any]) -> list[tuple[Any, int]]:
    """Run-length encoding, for readable assertion messages: [(404, 37), (200, 120)]."""
    out: list[tuple[Any, int]] = []
    for item in items:
        if out and out[-1][0] == item:
            out[-1] = (item, out[-1][1] + 1)
        else:
            out.append((item, 1))
    return out


def wait_for_status(loop: RequestLoop, status: int, since: int, timeout: float = WAIT) -> int:
    """Index of the first result with HTTP ``status`` at or after ``since``."""

    def find() -> int | None:
        for i, (_t, code, _text) in enumerate(loop.results(since)):
            if code == status:
                return since + i
        return None

    try:
        wait_for(lambda: find() is not None, timeout, interval=0.01)  # index 0 is falsy
    except AssertionError:
        where = loop.host_header or loop.url
        raise AssertionError(f"no HTTP {status} on {where}: {loop.snapshot(since)}") from None
    index = find()
    assert index is not None
    return index


def wait_for_switch(
    loop: RequestLoop,
    since: int,
    old: int,
    new: int,
    *,
    via: int | None = None,
    timeout: float = WAIT,
) -> int:
    """Wait until ``loop`` answers ``new`` at or after ``since`` and then 20 more times;
    check that its answers since ``since`` were ``old`` until they were ``new``, and only
    ``new`` after that (a route and its cluster come and go together: never a 503, nor a
    transport error, on the way). ``via``: a status allowed between the two, for a
    documented limit. Returns the index of the first ``new``."""
    first = wait_for_status(loop, new, since, timeout)
    loop.wait_for_requests(20, timeout)
    seen = outcomes(loop, since)
    phases = [status for status, _count in runs(seen)]
    between = [] if via is None else [[via]]
    allowed = [[*head, *mid, new] for head in ([], [old]) for mid in ([], *between)]
    assert phases in allowed, (
        f"{loop.host_header or loop.url}: expected {old} then {new}"
        f"{'' if via is None else f' (maybe {via} between)'}, got {runs(seen)}"
    )
    return first


def only(loop: RequestLoop, *bodies: str, n: int = 10, timeout: float = WAIT) -> None:
    """Wait until the last ``n`` answers all come from ``bodies``, then check that the
    next 30 do too (round robin would have mixed in any other backend)."""
    want = set(bodies)

    def settled() -> bool:
        last = loop.last_bodies(n)
        return len(last) == n and set(last) <= want

    try:
        wait_for(settled, timeout)
    except AssertionError:
        raise AssertionError(f"not only {sorted(want)}: {loop.last_bodies(n)}") from None
    mark = loop.mark()
    loop.wait_for_requests(30, timeout)
    seen = loop.snapshot(mark)
    assert seen.failed == 0 and set(seen.bodies) <= want, f"not only {sorted(want)}: {seen}"


# ----------------------------------------------------------------- the server's status


def proxy_types(proxies: Proxies, node: str) -> dict[str, dict[str, Any]] | None:
    """The status of each type on ``node``'s one stream; None if it has none (or several)."""
    mine = [p for p in proxies if p["node_id"] == node]
    if len(mine) != 1:
        return None
    return dict(mine[0]["types"])


def all_synced(proxies: Proxies, node: str) -> dict[str, dict[str, Any]] | None:
    """``proxy_types`` if all four ADS types are subscribed and SYNCED, else None."""
    status = proxy_types(proxies, node)
    if status is None or set(status) != ADS_TYPES:
        return None
    return status if all(s["state"] == "SYNCED" for s in status.values()) else None


def wait_synced(
    proxies: Callable[[], Proxies], node: str, timeout: float = WAIT
) -> dict[str, dict[str, Any]]:
    """Until every type of ``node`` is SYNCED (all pushes ACKed); its per-type status."""
    last: list[object] = []

    def synced() -> dict[str, dict[str, Any]] | None:
        current = list(proxies())
        last[:] = [proxy_types(current, node)]
        return all_synced(current, node)

    try:
        status = wait_for(synced, timeout, message=f"{node} not synced")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its last status: {last}") from None
    assert status is not None
    return status


class Mesh:
    """An `xds-server` subprocess, the HTTP listener port its Envoys serve on (Host header
    = service name), and node ``node``'s view of it."""

    def __init__(self, server: XdsServerProcess, listener_port: int, node: str) -> None:
        self.server = server
        self.listener_port = listener_port
        self.node = node

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}/"

    def envoy(
        self,
        envoy_factory: Callable[..., EnvoyProcess],
        delta: bool = False,
        *,
        node: str | None = None,
        metadata: dict[str, Any] | None = None,
        locality: dict[str, str] | None = None,
    ) -> EnvoyProcess:
        """A ready Envoy on ADS (SotW, or delta) to this server (in `locality`, if given)."""
        node = node or self.node
        boot = bootstrap(
            self.server.xds_port,
            free_port(),
            node,
            delta=delta,
            metadata=metadata,
            locality=locality,
        )
        return envoy_factory(boot, name=node, wait="ready", timeout=WAIT)

    def proxies(self) -> list[dict[str, Any]]:
        proxies: list[dict[str, Any]] = self.server.get("/debug/proxies")
        return proxies

    def wait_synced(self, node: str | None = None) -> dict[str, dict[str, Any]]:
        return wait_synced(self.proxies, node or self.node)

    def sources(self) -> dict[str, dict[str, Any]]:
        """Each source's status (/debug/sources) by name."""
        return {s["name"]: dict(s) for s in self.server.get("/debug/sources")}

    def source(self) -> dict[str, Any]:
        """The status of the server's one source."""
        (source,) = self.sources().values()
        return source

    def metric(self, name: str) -> float:
        return self.server.metrics().get(name, 0.0)

    def pushes(self) -> float:
        """Responses the server sent, over every type and proxy."""
        return sum(v for k, v in self.server.metrics().items() if k.startswith("xds_pushes_total{"))

    def versions(self, node: str | None = None) -> dict[str, str]:
        """The version of each type in the snapshot ``node`` gets."""
        out = self.server.xdsctl("snapshot", "--node", node or self.node, "-o", "json").stdout
        return dict(json.loads(out)["versions"])


# ----------------------------------------------------------------------------- snapshots


# -------------------------------------------------------------------------------- Consul


def answered_rounds(log: Sequence[Request], path: str) -> list[Request]:
    """The requests on ``path`` that Consul answered (200) and that the client followed
    with another request on ``path``: a watch asks again only after it has handled an
    answer, so each is a round the watch has taken in."""
    on_path = [r for r in log if r.path == path]
    return [
        r
        for i, r in enumerate(on_path)
        if r.status == 200 and any(later.start >= r.end for later in on_path[i + 1 :])
    ]
