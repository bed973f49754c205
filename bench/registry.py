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
   plus a random 0 … ``--file-interval`` s (so a polling server's wait is sampled
   fairly). The figure includes the server noticing the edit (OS file notifications;
   with ``--file-watch poll`` the poll interval, on average half of it), reading the
   file and parsing the services whose text changed, the debouncer, translation, the
   push and the ACK;
   the server log gives the time the file source published the change, which splits it
   into "file" and "the rest", and the server's /metrics give its own breakdown.
   Reported per group (endpoint edits, new service): the *per-proxy* latency (one
   proxy's ACK, pooled over edits x proxies: p50/p99/max) and *write → last proxy
   ACKed* (per edit: median and max over the edits), and the server's CPU per edit
   from just before the write to when the benchmark saw the last ACK (psutil; the
   waits between edits and the /metrics scrapes are outside it);
4. server RSS and CPU (psutil): at ready, connected and idle, per edit, peak.

``--py-spy PREFIX`` records the server with py-spy during the edits (as bench.policy).

Prints a table; ``--json [PATH]`` also writes the figures (``-`` = stdout). Every wait
has a timeout; the server and the workers are stopped on exit, on error and on Ctrl-C.
No thresholds are enforced.
"""

from __future__ import annotations

import argparse
import json
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

from bench import changes, common, fixtures
from bench.common import MB, fmt
from bench.run import PySpy
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
                raise common.BenchError(f"unknown edit kind {kind!r}")
        entry = self._reparse(name)
        clas = [fixtures.cla_marker(cla) for cla in service_load_assignments(entry)]
        routes: list[str] = []
        if kind == "service":
            ordered = sorted(self.entries.values(), key=lambda e: e.key)
            _, configs, _ = group_resources([e.service for e in ordered], ProxyGroup())
            routes = [fixtures.route_marker(rc) for rc in configs]
        return what, clas, routes


# -- one mode -----------------------------------------------------------------------------


MESH_IDENTITY = {"NAMESPACE": "bench", "SERVICE_ACCOUNT": "sim"}


@dataclass
class Options(common.RunOptions):
    services: int
    endpoints: int
    edits: int
    edit_kinds: list[str]
    edit_interval: float
    file_interval: float
    py_spy: str | None
    py_spy_format: str
    mesh_identity: bool


def _updates_by_type(updates: list[dict[str, Any]], start: float, end: float) -> dict[str, int]:
    return dict(Counter(u["type"] for u in updates if start <= u["recv_at"] < end))


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp,
        common.ServerRun(mode, o, "bench-registry") as run,
    ):
        reg = Registry.generate(o.services, o.endpoints)
        path = Path(tmp) / "registry.yaml"
        reg.write(path)
        run.out["registry"] = {
            "file_bytes": path.stat().st_size,
            "parse_registry_s_in_bench_process": round(reg.parse_all(), 3),
        }
        args = ["--file", str(path), "--file-interval", str(o.file_interval)]
        if o.mesh_identity:  # the CA on, and every proxy a workload with an identity
            args += ["--ca-dir", str(Path(tmp) / "ca")]
            os.environ["XDS_BENCH_NODE_METADATA"] = json.dumps(MESH_IDENTITY)
        server = run.start_server(args)
        ready_s = server.wait_ready(o.timeout)
        w = run.start_workers(server.xds_port)
        spy = None
        if o.py_spy:
            spy = PySpy(server.pid, o.py_spy, mode, "changes", o.py_spy_format, False)
            run.stack.callback(spy.close)
        run.out.update(_measure(o, reg, path, server, w, ready_s, spy))
    return run.out


def _measure(
    o: Options,
    reg: Registry,
    path: Path,
    server: common.RealServer,
    w: common.Workers,
    ready_s: float,
    spy: PySpy | None = None,
) -> dict[str, Any]:
    data = w.data
    # startup, then the ramp paced below the server's admission rate, then idle
    res = common.connect_all(server, w, o, ready_s)
    if spy is not None:
        spy.enter("changes")

    # edits
    tr = changes.Tracker(w, server)
    rng = random.Random(o.seed)
    targets = rng.sample(sorted(reg.services), min(o.edits, len(reg.services)))
    edits: list[dict[str, Any]] = []
    next_at = time.time()
    for k in range(o.edits):
        w.pump_for(max(0.0, next_at - time.time()))
        kind = o.edit_kinds[k % len(o.edit_kinds)]

        def act(kind: str = kind, k: int = k) -> changes.Edit:
            what, clas, routes = reg.edit(kind, targets[k % len(targets)], k)
            return changes.Edit(kind, what, clas, routes, reg.write(path))

        rec = tr.measure(act, o.timeout)
        write_at = tr.edits[-1].write_at
        # The next edit --edit-interval after this one, and at least 0.5 s after it
        # converged (`measure`), plus a random phase against the server's file polling, so
        # that the poll wait in the figure is a fair sample of 0 … --file-interval.
        next_at = max(write_at + o.edit_interval, time.time())
        next_at += rng.uniform(0.0, o.file_interval)
        published = server.published_since(write_at)
        edits.append(
            {
                **rec,
                **changes.published_split(write_at, published, rec["last_ack_ms"]),
                "updates_by_type": _updates_by_type(data.updates, write_at, time.time()),
                "server_peak_rss_mb": round(server.stats()["peak_rss"] / MB, 1),
            }
        )
    if spy is not None:
        spy.close()
    for group, kinds in (("endpoint", ENDPOINT_KINDS), ("service", {"service"})):
        res[f"{group}_edits"] = changes.summary([e for e in edits if e["kind"] in kinds])
    res.update(tr.finish(edits, "edits"))
    return res


# -- reporting ----------------------------------------------------------------------------


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return sum(vs) / len(vs) if vs else None


def print_table(results: list[dict[str, Any]], o: Options, info: dict[str, Any]) -> None:
    t = common.Table(results)
    row = t.row
    row("registry file size", lambda r: r["registry"]["file_bytes"] / MB, " MB")
    row(
        "parse_registry of the file (bench process)",
        lambda r: r["registry"]["parse_registry_s_in_bench_process"],
        " s",
    )
    t.connect_rows()
    changes.per_change_rows(t, "edits", "edit", "write")
    changes.change_rows(t, "endpoint edits", "write", "edits", lambda r: r["endpoint_edits"])
    changes.change_rows(t, "new service", "write", "edits", lambda r: r["service_edits"])
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
        "published → last proxy ACKed (mean over edits)",
        lambda r: _mean(e["published_to_last_ack_ms"] for e in r["edits"]),
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
    changes.push_rows(t, "edits_total", ["clusters", "endpoints", "routes"])
    row("server: RSS after edits", lambda r: r["server"]["rss_end_mb"], " MB")
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
            + ",".join(
                f"{ty}={n / e['proxies']:g}" for ty, n in sorted(e["updates_by_type"].items())
            )
            for e in r["edits"]
        ),
    )
    row("unexpected: streams ended", lambda r: r["server"]["streams_ended"])
    heading = (
        f"xds-server registry edits: {o.services} services x {o.endpoints} endpoints, "
        f"{o.proxies} proxies, file interval {o.file_interval} s, default debounce "
        "(quiet 100 ms, max 1 s)"
    )
    changes.print_table(t, heading, o, info, "edits", "edit")


def main(argv: list[str] | None = None) -> int:
    def arguments(p: argparse.ArgumentParser) -> None:
        common.int_options(p, services=1000, endpoints=10, edits=5)
        p.add_argument(
            "--edit-kinds",
            default=",".join(EDIT_KINDS),
            help=f"edit kinds, cycled (default {','.join(EDIT_KINDS)})",
        )
        common.file_edit_options(p)
        p.add_argument(
            "--py-spy", metavar="PREFIX", help="py-spy record the server during the edits"
        )
        p.add_argument(
            "--mesh-identity",
            action="store_true",
            help="start the server with its CA (--ca-dir) and give every proxy an identity"
            " (node metadata NAMESPACE, SERVICE_ACCOUNT): mesh clusters with SDS references",
        )
        p.add_argument(
            "--py-spy-format", choices=("flamegraph", "raw", "speedscope"), default="raw"
        )

    def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
        kinds = [k.strip() for k in a.edit_kinds.split(",") if k.strip()]
        if not kinds or any(k not in EDIT_KINDS for k in kinds):
            p.error(f"--edit-kinds: choose from {', '.join(EDIT_KINDS)}")
        a.edit_kinds = kinds

    prog = "python -m bench.registry"
    return common.cli(prog, __doc__, Options, arguments, run_mode, print_table, argv, check=check)


if __name__ == "__main__":
    sys.exit(main())
