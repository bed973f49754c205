"""Registry benchmark: a registry file edit → every simulated proxy ACKed, through the real
``xds-server`` (file source, catalog, debouncer, controller, cache, gRPC), SotW and delta.

    python -m bench.registry --services 1000 --endpoints 10 --proxies 1000 --mode both --edits 5

For each mode it writes a registry file of ``--services`` services (namespace ``bench``,
one http port 80, ``--endpoints`` endpoints on 10.x.y.z:8080, never dialled) to a
temporary directory, starts ``xds-server --file <it> --file-interval <--file-interval>``
with its default debounce settings, and measures:

1. startup: process start → ``/readyz`` answers 200 (file parsed, resources built);
2. ramp: the simulated Envoys (``bench.sim`` worker processes) connect at
   ``--ramp-rate``/s (below the server's default admission rate of 200/s) until all
   have their full configuration; then ``--settle`` s idle;
3. edits: ``--edits`` edits of the file, cycling through ``--edit-kinds`` (each on a
   different service): ``move`` (one endpoint gets a new address), ``add``/``remove``
   (one endpoint), ``weight`` (one endpoint's weight) and ``service`` (a new service:
   clusters, endpoints and routes change). Each is written as a whole new file renamed
   over the old one; latency = ``time.time()`` just before ``os.replace`` → each proxy's
   ACK of the response(s) carrying the change (the changed ClusterLoadAssignment; for a
   new service also the RouteConfiguration with its virtual host), matched by content
   against what the translators produce for the edited registry. The next edit starts
   ``--edit-interval`` s after the previous one, and at least 0.5 s after it converged,
   plus a random 0 … ``--file-interval`` s (so the poll wait is sampled fairly).
   The figure includes the file poll interval (the edit waits on average half of it),
   reading and parsing the whole file, the debouncer, translation, the push and the ACK;
   the server log gives the time the file source published the change, which splits it
   into "file" and "the rest", and the server's /metrics give its own breakdown;
4. server RSS and CPU (psutil): at ready, connected and idle, per edit, peak.

Prints a table; ``--json [PATH]`` also writes the figures (``-`` = stdout). Every wait
has a timeout; the server and the workers are stopped on exit, on error and on Ctrl-C.
No thresholds are enforced.
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import fixtures
from bench.common import (
    MB,
    BenchError,
    MachineMeter,
    RealServer,
    RunOptions,
    Samples,
    Workers,
    add_run_arguments,
    dist_ms,
    fmt,
    options_from,
    parser,
    print_rows,
    run_and_report,
    server_log,
    tail,
)
from sources.file import parse_registry
from translators import ProxyGroup
from translators.services import service_load_assignments
from translators.translate import group_resources
from xds_server.model import ServiceEntry

NAMESPACE = "bench"
SERVICE_PORT = 80
ENDPOINT_PORT = 8080
EDIT_KINDS = ("move", "add", "remove", "weight", "service")
ENDPOINT_KINDS = frozenset(EDIT_KINDS) - {"service"}
SOURCE = "file"  # the file source's name in the catalog


def _ip(n: int, first: int = 10) -> str:
    return f"{first}.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF}"


# -- the registry file ------------------------------------------------------------------


@dataclass
class Endpoint:
    address: str
    zone: str
    weight: int = 1

    def yaml(self) -> str:
        weight = f", weight: {self.weight}" if self.weight != 1 else ""
        return f"{{address: {self.address}, port: {ENDPOINT_PORT}, zone: {self.zone}{weight}}}"


@dataclass
class Registry:
    """The registry file's services, edited in place and written atomically.

    It also predicts what each edit must deliver: the ``fixtures`` markers of the changed
    ClusterLoadAssignment and RouteConfiguration, built by the server's own parser and
    translators from the edited service (the route from every service).
    """

    services: dict[str, list[Endpoint]] = field(default_factory=dict)
    entries: dict[str, ServiceEntry] = field(default_factory=dict)
    fresh: int = 0  # addresses handed out by edits (200.x.y.z)
    added: int = 0  # services added by edits

    @classmethod
    def generate(cls, services: int, endpoints: int) -> Registry:
        reg = cls()
        for i in range(services):
            reg.services[f"svc-{i:04d}"] = [
                Endpoint(_ip(i * endpoints + j + 1), f"z{j % 3}") for j in range(endpoints)
            ]
        return reg

    def _service_yaml(self, name: str) -> str:
        eps = "".join(f"      - {ep.yaml()}\n" for ep in self.services[name])
        return (
            f"  - name: {name}\n"
            f"    namespace: {NAMESPACE}\n"
            f"    ports: [{{name: http, port: {SERVICE_PORT}, protocol: http}}]\n"
            f"    endpoints:\n{eps}"
        )

    def text(self, names: Iterable[str] | None = None) -> str:
        body = "".join(self._service_yaml(n) for n in (self.services if names is None else names))
        return "services:\n" + body

    def write(self, path: Path) -> float:
        """Write the whole file beside `path` and rename it over `path`; the time just
        before the rename."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.text())
        at = time.time()
        os.replace(tmp, path)
        return at

    def parse_all(self) -> float:
        """Parse the whole file as the server does (`parse_registry`); seconds taken."""
        t0 = time.perf_counter()
        for entry in parse_registry(self.text(), "<bench>", SOURCE):
            self.entries[entry.service.name] = entry
        return time.perf_counter() - t0

    def _reparse(self, name: str) -> ServiceEntry:
        entry = parse_registry(self.text([name]), "<bench>", SOURCE)[0]
        self.entries[name] = entry
        return entry

    def _fresh_ip(self) -> str:
        self.fresh += 1
        return _ip(self.fresh, first=200)

    def edit(self, kind: str, name: str, serial: int) -> tuple[str, list[str], list[str]]:
        """Apply one edit to service `name` (``service``: add a new service); its
        description and the markers a proxy must ACK to have it: of the
        ClusterLoadAssignments, and of the RouteConfigurations."""
        if kind == "service":
            self.added += 1
            name = f"new-{self.added:03d}"
            n = len(next(iter(self.services.values())))
            self.services[name] = [Endpoint(self._fresh_ip(), f"z{j % 3}") for j in range(n)]
            what = f"new service {name}"
        else:
            eps = self.services[name]
            if kind == "move":
                eps[0].address = self._fresh_ip()
                what = f"{name}: endpoint moved to {eps[0].address}"
            elif kind == "add":
                eps.append(Endpoint(self._fresh_ip(), "z0"))
                what = f"{name}: endpoint {eps[-1].address} added"
            elif kind == "remove":
                gone = eps.pop()
                what = f"{name}: endpoint {gone.address} removed"
            elif kind == "weight":
                eps[0].weight = 2 + serial
                what = f"{name}: endpoint {eps[0].address} weight {eps[0].weight}"
            else:
                raise BenchError(f"unknown edit kind {kind!r}")
        entry = self._reparse(name)
        clas = [fixtures.cla_marker(cla) for cla in service_load_assignments(entry)]
        routes: list[str] = []
        if kind == "service":
            ordered = sorted(self.entries.values(), key=lambda e: e.key)
            _, configs, _ = group_resources([e.service for e in ordered], ProxyGroup())
            routes = [fixtures.route_marker(rc) for rc in configs]
        return what, clas, routes


# -- /metrics ---------------------------------------------------------------------------


def _diff(after: Samples, before: Samples, name: str, **labels: str) -> float:
    """Sum of the increase of every sample `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(
        v - before.get(k, 0.0) for k, v in after.items() if k[0] == name and want <= set(k[1])
    )


def _label_values(samples: Samples, name: str, label: str) -> list[str]:
    return sorted({dict(k[1])[label] for k in samples if k[0] == name and label in dict(k[1])})


def _by_label(after: Samples, before: Samples, name: str, label: str) -> dict[str, int]:
    """The increase of counter `name` per value of `label` (values that increased)."""
    out = {}
    for value in _label_values(after, name, label):
        if n := _diff(after, before, name, **{label: value}):
            out[value] = int(n)
    return out


def histogram(after: Samples, before: Samples, name: str, **labels: str) -> dict[str, Any]:
    """Count, mean and bucket upper bounds of the p50/p99/max of a histogram's increase."""
    count = _diff(after, before, name + "_count", **labels)
    total = _diff(after, before, name + "_sum", **labels)
    bounds = sorted(
        {float(dict(k[1])["le"]) for k in after if k[0] == name + "_bucket"} - {math.inf}
    )
    cum = [(le, _diff(after, before, name + "_bucket", le=_le(le), **labels)) for le in bounds]

    def upper(q: float) -> float | None:
        for le, c in cum:
            if c >= q * count - 1e-9:
                return le * 1000.0
        return math.inf

    return {
        "count": int(count),
        "mean_ms": round(total / count * 1000.0, 1) if count else None,
        "p50_le_ms": upper(0.5) if count else None,
        "p99_le_ms": upper(0.99) if count else None,
        "max_le_ms": upper(1.0) if count else None,
    }


def _le(v: float) -> str:
    """The `le` label as prometheus_client writes it (0.1, 1.0, 10.0)."""
    return repr(float(v))


def server_breakdown(after: Samples, before: Samples) -> dict[str, Any]:
    """What the server's /metrics say happened between two scrapes."""
    out: dict[str, Any] = {
        "debounce_events": int(_diff(after, before, "xds_debounce_events_total")),
        "debounce_pushes": _by_label(after, before, "xds_debounce_pushes_total", "trigger"),
        "translate": histogram(after, before, "xds_translate_seconds"),
        "responses": _by_label(after, before, "xds_pushes_total", "type"),
        "response_mb": {
            t: round(n / MB, 1)
            for t, n in _by_label(after, before, "xds_push_bytes_total", "type").items()
        },
        "push": {},
        "convergence": {},
    }
    for key, metric in (
        ("push", "xds_push_latency_seconds"),
        ("convergence", "xds_convergence_latency_seconds"),
    ):
        for t in _label_values(after, metric + "_count", "type"):
            h = histogram(after, before, metric, type=t)
            if h["count"]:
                out[key][t] = h
    return out


# -- one mode -----------------------------------------------------------------------------


@dataclass
class Options(RunOptions):
    services: int
    endpoints: int
    edits: int
    edit_kinds: list[str]
    edit_interval: float
    file_interval: float


@dataclass
class Edit:
    kind: str
    what: str
    clas: list[str]
    routes: list[str]
    write_at: float
    # node id → marker → (recv_at, ack_at) of the first response carrying it
    seen: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @property
    def markers(self) -> list[str]:
        return self.clas + self.routes


class Tracker:
    """Matches the proxies' post-full-config updates against the edits' markers."""

    def __init__(self, w: Workers):
        self.w = w
        self.edits: list[Edit] = []
        self.by_marker: dict[str, Edit] = {}
        self.cursor = len(w.data.updates)
        self.live: set[str] = set()

    def add(self, edit: Edit) -> None:
        self.edits.append(edit)
        for m in edit.markers:
            if m in self.by_marker:
                raise BenchError(f"edit {edit.what!r} is indistinguishable from an earlier one")
            self.by_marker[m] = edit

    def absorb(self) -> None:
        ups = self.w.data.updates
        for u in ups[self.cursor :]:
            for m in u["markers"]:
                edit = self.by_marker.get(m)
                if edit is not None and u["recv_at"] >= edit.write_at:
                    edit.seen.setdefault(u["node_id"], {}).setdefault(
                        m, (u["recv_at"], u["ack_at"])
                    )
        self.cursor = len(ups)

    def complete(self, edit: Edit) -> bool:
        self.absorb()
        need = len(edit.markers)
        return all(len(edit.seen.get(n, ())) == need for n in self.live)

    def figures(self, edit: Edit) -> dict[str, Any]:
        acks, recvs = [], []
        early_routes = 0  # proxies sent the new routes before they ACKed the endpoints
        for node in self.live:
            got = edit.seen.get(node, {})
            if len(got) == len(edit.markers):
                acks.append(max(a for _, a in got.values()) - edit.write_at)
                recvs.append(max(r for r, _ in got.values()) - edit.write_at)
                if edit.routes and min(got[m][0] for m in edit.routes) < max(
                    got[m][1] for m in edit.clas
                ):
                    early_routes += 1
        return {
            "routes_before_endpoints_acked": early_routes,
            "proxies": len(self.live),
            "acked": len(acks),
            "missing": len(self.live) - len(acks),
            "ack_s": acks,
            "ack_ms": dist_ms(acks),
            "recv_ms": dist_ms(recvs),
        }


def _updates_by_type(updates: list[dict[str, Any]], start: float, end: float) -> dict[str, int]:
    return dict(Counter(u["type"] for u in updates if start <= u["recv_at"] < end))


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    meter = MachineMeter()
    out: dict[str, Any] = {"mode": mode}
    with (
        server_log(o.keep_logs, mode, prefix="bench-registry") as log,
        tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp,
    ):
        reg = Registry.generate(o.services, o.endpoints)
        path = Path(tmp) / "registry.yaml"
        reg.write(path)
        out["registry"] = {
            "file_bytes": path.stat().st_size,
            "parse_registry_s_in_bench_process": round(reg.parse_all(), 3),
        }
        server: RealServer | None = None
        workers: Workers | None = None
        try:
            server = RealServer(["--file", str(path), "--file-interval", str(o.file_interval)], log)
            ready_s = server.wait_ready(o.timeout)
            workers = Workers(o.workers, server.xds_port, mode == "delta", o.streams_per_channel)
            w = workers
            w.wait_started()
            out.update(_measure(o, reg, path, server, w, ready_s))
        except BenchError:
            print(tail(log.name), file=sys.stderr)
            raise
        finally:
            if workers is not None:
                workers.close()
            server_cpu = server.close() if server is not None else None
        if workers is not None:
            out["client_cpu_s"] = round(sum(workers.data.client_cpu.values()), 2)
        out["server_process_cpu_s"] = round(server_cpu, 2) if server_cpu is not None else None
    out["machine"] = meter.result((server_cpu or 0.0) + out.get("client_cpu_s", 0.0))
    return out


def _measure(
    o: Options, reg: Registry, path: Path, server: RealServer, w: Workers, ready_s: float
) -> dict[str, Any]:
    data = w.data
    res: dict[str, Any] = {}
    st_ready = server.stats()
    res["startup"] = {
        "ready_s": round(ready_s, 2),
        "rss_ready_mb": round(st_ready["rss"] / MB, 1),
        "cpu_s": round(st_ready["cpu"], 2),
    }

    # ramp, paced below the server's admission rate, then idle
    ids = [f"proxy-{i:05d}" for i in range(o.proxies)]
    t_ramp = time.time()
    interval = o.workers / o.ramp_rate if o.ramp_rate > 0 else 0.0
    for i in range(o.workers):
        w.send(i, ("start", ids[i :: o.workers], interval))
    ok = w.pump_until(lambda: len(data.results) >= o.proxies, o.timeout)
    done = [r for r in data.results.values() if r["full"] is not None]
    st_ramp = server.stats()
    res["ramp"] = {
        "proxies": o.proxies,
        "full_config": len(done),
        "timed_out": not ok,
        "errors": Counter(r["error"] for r in data.results.values() if r["error"]).most_common(3),
        "all_full_config_s": round(max(r["full"] for r in done) - t_ramp, 2) if done else None,
        "full_config_ms": dist_ms([r["full"] - r["start"] for r in done]),
        "server_cpu_s": round(st_ramp["cpu"] - st_ready["cpu"], 2),
    }
    if len(done) < o.proxies:
        raise BenchError(f"only {len(done)} of {o.proxies} proxies got their full config")
    w.pump_for(o.settle)
    st_idle = server.stats()
    res["idle"] = {
        "rss_connected_mb": round(st_idle["rss"] / MB, 1),
        "peak_rss_mb": round(st_idle["peak_rss"] / MB, 1),
        "server_cpu_s_per_s": round(
            (st_idle["cpu"] - st_ramp["cpu"]) / max(1e-9, st_idle["time"] - st_ramp["time"]), 3
        ),
        "updates_while_idle": len(data.updates),
    }

    # edits
    tr = Tracker(w)
    tr.live = {r["node_id"] for r in done} - {e["node_id"] for e in data.ended}
    rng = random.Random(o.seed)
    targets = rng.sample(sorted(reg.services), min(o.edits, len(reg.services)))
    m_start = m_before = server.metrics()
    st_edits = st_before = server.stats()
    edits: list[dict[str, Any]] = []
    next_at = time.monotonic()
    for k in range(o.edits):
        w.pump_for(max(0.0, next_at - time.monotonic()))
        kind = o.edit_kinds[k % len(o.edit_kinds)]
        what, clas, routes = reg.edit(kind, targets[k % len(targets)], k)
        edit = Edit(kind, what, clas, routes, reg.write(path))
        tr.add(edit)
        next_at = time.monotonic() + o.edit_interval
        converged = w.pump_until(lambda e=edit: tr.complete(e), o.timeout)
        end = time.time()
        w.pump_for(0.5)  # the last ACKs reach the server's metrics; anything that follows
        # A random phase against the server's file polling, so that the poll wait in the
        # figure is a fair sample of 0 … --file-interval rather than a fixed offset.
        next_at = max(next_at, time.monotonic()) + rng.uniform(0.0, o.file_interval)
        tr.absorb()
        m_after, st_after = server.metrics(), server.stats()
        published = server.published_since(edit.write_at)
        fig = tr.figures(edit)
        acks = fig.pop("ack_s")
        edits.append(
            {
                "kind": kind,
                "what": what,
                "converged": converged,
                **fig,
                "all_acked_ms": round(max(acks) * 1000.0, 1) if converged and acks else None,
                "write_to_published_ms": (
                    round((published - edit.write_at) * 1000.0, 1) if published else None
                ),
                "published_to_all_acked_ms": (
                    round((max(acks) - (published - edit.write_at)) * 1000.0, 1)
                    if published and converged and acks
                    else None
                ),
                "updates_by_type": _updates_by_type(data.updates, edit.write_at, time.time()),
                "server_cpu_s": round(st_after["cpu"] - st_before["cpu"], 3),
                "server_peak_rss_mb": round(st_after["peak_rss"] / MB, 1),
                "wall_s": round(end - edit.write_at, 3),
                "server": server_breakdown(m_after, m_before),
                "acks_s": acks,
            }
        )
        m_before, st_before = m_after, st_after
    res["edits"] = edits
    res["edits_total"] = server_breakdown(m_before, m_start)
    res["server"] = {
        "rss_after_edits_mb": round(st_before["rss"] / MB, 1),
        "peak_rss_mb": round(st_before["peak_rss"] / MB, 1),
        "cpu_during_edits_s": round(st_before["cpu"] - st_edits["cpu"], 2),
        "cpu_during_edits_s_per_s": round(
            (st_before["cpu"] - st_edits["cpu"]) / max(1e-9, st_before["time"] - st_edits["time"]),
            3,
        ),
        "streams_ended": len(data.ended),
    }
    for group, kinds in (("endpoint", ENDPOINT_KINDS), ("service", {"service"})):
        chosen = [e for e in edits if e["kind"] in kinds]
        res[f"{group}_edits"] = {
            "edits": len(chosen),
            "ack_ms": dist_ms([a for e in chosen for a in e["acks_s"]]),
            "missing": sum(e["missing"] for e in chosen),
        }
    for e in edits:
        del e["acks_s"]
    return res


# -- reporting ----------------------------------------------------------------------------


def _dist_cell(d: dict[str, float]) -> str:
    return " / ".join(fmt(d[q]) for q in ("p50", "p99", "max")) + " ms"


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None


def _hist_cell(h: dict[str, Any] | None) -> str:
    if not h:
        return "—"
    return f"{fmt(h['mean_ms'])} ms (n={h['count']}, p99 ≤ {fmt(h['p99_le_ms'])})"


def print_table(results: list[dict[str, Any]], o: Options, info: dict[str, Any]) -> None:
    modes = [r["mode"] for r in results]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Any, unit: str = "") -> None:
        rows.append((label, [v if isinstance(v := fn(r), str) else fmt(v, unit) for r in results]))

    row("registry file size", lambda r: r["registry"]["file_bytes"] / MB, " MB")
    row(
        "parse_registry of the file (bench process)",
        lambda r: r["registry"]["parse_registry_s_in_bench_process"],
        " s",
    )
    row("startup: process → /readyz 200", lambda r: r["startup"]["ready_s"], " s")
    row("startup: server RSS at ready", lambda r: r["startup"]["rss_ready_mb"], " MB")
    row(
        "ramp: proxies with full config",
        lambda r: f"{r['ramp']['full_config']} in {fmt(r['ramp']['all_full_config_s'], ' s')}",
    )
    row("idle: server RSS, all connected", lambda r: r["idle"]["rss_connected_mb"], " MB")
    row("idle: server CPU per second", lambda r: r["idle"]["server_cpu_s_per_s"], " s")
    n_edits = len(results[0]["edits"]) if results else 0
    for k in range(n_edits):
        row(
            f"edit {k + 1} ({results[0]['edits'][k]['kind']}): write→ACK p50/p99/max",
            lambda r, k=k: _dist_cell(r["edits"][k]["ack_ms"]),
        )
    row(
        "endpoint edits: write→ACK p50/p99/max", lambda r: _dist_cell(r["endpoint_edits"]["ack_ms"])
    )
    row("new service: write→ACK p50/p99/max", lambda r: _dist_cell(r["service_edits"]["ack_ms"]))
    row(
        "new service: routes sent before endpoints ACKed",
        lambda r: sum(e["routes_before_endpoints_acked"] for e in r["edits"]),
    )
    row(
        "edits: proxy ACKs missing",
        lambda r: r["endpoint_edits"]["missing"] + r["service_edits"]["missing"],
    )
    row(
        "write → file source published (mean/max)",
        lambda r: " / ".join(
            fmt(f(v), " ms")
            for f, v in (
                (_mean, [e["write_to_published_ms"] for e in r["edits"]]),
                (
                    lambda vs: max((x for x in vs if x is not None), default=None),
                    [e["write_to_published_ms"] for e in r["edits"]],
                ),
            )
        ),
    )
    row(
        "published → all proxies ACKed (mean)",
        lambda r: _mean(e["published_to_all_acked_ms"] for e in r["edits"]),
        " ms",
    )
    row(
        "server: debounce triggers",
        lambda r: ",".join(
            f"{k}={v}" for k, v in sorted(r["edits_total"]["debounce_pushes"].items())
        ),
    )
    for group in ("endpoint", "service"):
        kinds = ENDPOINT_KINDS if group == "endpoint" else {"service"}
        row(
            f"server: translate, {group} edits (mean)",
            lambda r, kinds=kinds: _mean(
                e["server"]["translate"]["mean_ms"] for e in r["edits"] if e["kind"] in kinds
            ),
            " ms",
        )
    for t in ("clusters", "endpoints", "routes"):
        row(
            f"server: push latency, {t} (mean)",
            lambda r, t=t: _hist_cell(r["edits_total"]["push"].get(t)),
        )
        row(
            f"server: convergence, {t} (mean)",
            lambda r, t=t: _hist_cell(r["edits_total"]["convergence"].get(t)),
        )
    row(
        "server: responses / MB sent, all edits",
        lambda r: ", ".join(
            f"{t} {n} / {r['edits_total']['response_mb'].get(t, 0):g}"
            for t, n in sorted(r["edits_total"]["responses"].items())
        ),
    )
    row("server: CPU per edit (mean)", lambda r: _mean(e["server_cpu_s"] for e in r["edits"]), " s")
    row("server: RSS after edits", lambda r: r["server"]["rss_after_edits_mb"], " MB")
    row(
        "server: peak RSS: connected / after each edit",
        lambda r: (
            " / ".join(
                fmt(v)
                for v in [r["idle"]["peak_rss_mb"], *(e["server_peak_rss_mb"] for e in r["edits"])]
            )
            + " MB"
        ),
    )
    row(
        "responses per proxy, per edit kind",
        lambda r: "; ".join(
            f"{e['kind']}: "
            + ",".join(f"{t}={n / e['proxies']:g}" for t, n in sorted(e["updates_by_type"].items()))
            for e in r["edits"]
        ),
    )
    row("unexpected: updates while idle", lambda r: r["idle"]["updates_while_idle"])
    row("unexpected: streams ended", lambda r: r["server"]["streams_ended"])
    row("clients CPU: whole run", lambda r: r.get("client_cpu_s"), " s")
    row("machine: not the benchmark's CPU", lambda r: r["machine"]["other_processes_cpu_s"], " s")
    heading = (
        f"xds-server registry edits: {o.services} services x {o.endpoints} endpoints, "
        f"{o.proxies} proxies, file interval {o.file_interval} s, default debounce "
        "(quiet 100 ms, max 1 s)"
    )
    print_rows(heading, o, info, modes, rows)
    for r in results:
        for k, e in enumerate(r["edits"]):
            print(f"{r['mode']} edit {k + 1}: {e['what']}")
        if r["ramp"]["errors"]:
            print(f"{r['mode']} stream errors: {r['ramp']['errors']}")


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m bench.registry", __doc__)
    p.add_argument("--services", type=int, default=1000)
    p.add_argument("--endpoints", type=int, default=10)
    p.add_argument("--edits", type=int, default=5)
    p.add_argument(
        "--edit-kinds",
        default=",".join(EDIT_KINDS),
        help=f"edit kinds, cycled (default {','.join(EDIT_KINDS)})",
    )
    p.add_argument("--edit-interval", type=float, default=2.0, help="seconds between edits")
    p.add_argument(
        "--file-interval",
        type=float,
        default=0.1,
        help="xds-server --file-interval, seconds (default 0.1; the server's own default is 1)",
    )
    add_run_arguments(
        p, 150.0, "new proxies per second (the server admits 200/s after a burst of 400)"
    )
    a = p.parse_args(argv)
    kinds = [k.strip() for k in a.edit_kinds.split(",") if k.strip()]
    if not kinds or any(k not in EDIT_KINDS for k in kinds):
        p.error(f"--edit-kinds: choose from {', '.join(EDIT_KINDS)}")
    a.edit_kinds = kinds
    o = options_from(Options, a)
    return run_and_report(a, o, lambda mode: run_mode(mode, o), print_table)


if __name__ == "__main__":
    sys.exit(main())
