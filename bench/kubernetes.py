"""Kubernetes source benchmark: Services + EndpointSlices in kmock → the real ``xds-server
--kubernetes`` → simulated proxies; start → ready, memory, one EndpointSlice change → all ACKed.

    python -m bench.kubernetes --services 5000 --endpoints 5 --proxies 100 --mode both --edits 5

For each mode it starts kmock's Kubernetes emulator (``tests.harness.kubeapi``: a real HTTP
server on loopback, in a thread of this process) holding ``--services`` Services (namespace
``bench``, one port ``http`` 80) and as many EndpointSlices of ``--endpoints`` ready
endpoints (10.x.y.z:8080, never dialled), writes a kubeconfig for it, starts
``xds-server --kubernetes`` and measures:

1. startup: process start → ``/readyz`` 200 (both lists read, every service built);
   server RSS then;
2. ramp: the simulated Envoys (``bench.sim``) connect at ``--ramp-rate``/s until all have
   their full configuration; then ``--settle`` s idle (kmock replays every object as ADDED
   when a watch starts: the server finds nothing new in them);
3. edits: ``--edits`` EndpointSlice PATCHes, each on a different service, moving one
   endpoint to a new address. Latency = ``time.time()`` just before the PATCH is sent →
   each proxy's ACK of the EDS response carrying the new ClusterLoadAssignment (matched
   by content against what ``sources.kube_mapping`` + the translators produce for it).
   This includes kmock's handling of the PATCH and its watch event, the source, catalog,
   debouncer, translation, push and ACK. The next edit starts ``--edit-interval`` s after
   the previous one, and at least 0.5 s after it converged.

Prints a table; ``--json [PATH]`` also writes the figures. Every wait has a timeout; the
server, the emulator and the workers are stopped on exit, on error and on Ctrl-C. No
thresholds are enforced.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock

from bench import fixtures
from bench.common import (
    MB,
    BenchError,
    MachineMeter,
    RealServer,
    RunOptions,
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
from bench.registry import Edit, Tracker, server_breakdown
from sources.kube_mapping import build_entry, parse_service, parse_slice
from tests.harness.kubeapi import SERVICES, SLICES, KubeApi, endpoint, endpoint_slice, service
from translators.services import service_load_assignments

NAMESPACE = "bench"
ENDPOINT_PORT = 8080
SOURCE = "kubernetes"


def _ip(n: int, first: int = 10) -> str:
    return f"{first}.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF}"


class Cluster:
    """The Services and EndpointSlices held by the emulator, and what an edit must deliver."""

    def __init__(self, api: KubeApi, services: int, endpoints: int) -> None:
        self.api = api
        self.services: dict[str, dict[str, Any]] = {}
        self.slices: dict[str, dict[str, Any]] = {}
        self.fresh = 0
        for i in range(services):
            name = f"svc-{i:05d}"
            self.services[name] = service(name, namespace=NAMESPACE)
            eps = [
                endpoint(_ip(i * endpoints + j + 1), zone=f"z{j % 3}", ready=True)
                for j in range(endpoints)
            ]
            self.slices[name] = endpoint_slice(
                f"{name}-abcde", name, eps, [("http", ENDPOINT_PORT)], namespace=NAMESPACE
            )

        def load(k: kmock.KubernetesEmulator) -> None:
            # Straight into the emulator's store: 10,000 POSTs would only time kmock.
            svc_res, slice_res = kmock.resource(SERVICES), kmock.resource(SLICES)
            for name, obj in self.services.items():
                k.objects[svc_res, NAMESPACE, name] = obj
            for obj in self.slices.values():
                k.objects[slice_res, NAMESPACE, obj["metadata"]["name"]] = obj

        api.script(load)

    def move_endpoint(self, name: str) -> tuple[str, list[str], float]:
        """PATCH the service's slice: its first endpoint gets a new address. The edit's
        description, the marker of the ClusterLoadAssignment it must produce, and the
        time just before the PATCH was sent."""
        self.fresh += 1
        sl = self.slices[name]
        eps = [dict(e) for e in sl["endpoints"]]
        eps[0] = {**eps[0], "addresses": [_ip(self.fresh, first=200)]}
        sl["endpoints"] = eps
        entry = build_entry(parse_service(self.services[name]), [parse_slice(sl)], SOURCE)
        clas = [fixtures.cla_marker(cla) for cla in service_load_assignments(entry)]
        at = time.time()
        self.api.patch("endpointslices", sl["metadata"]["name"], {"endpoints": eps}, NAMESPACE)
        return f"{name}: endpoint moved to {eps[0]['addresses'][0]}", clas, at


@dataclass
class Options(RunOptions):
    services: int
    endpoints: int
    edits: int
    edit_interval: float


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    meter = MachineMeter()
    out: dict[str, Any] = {"mode": mode}
    api = KubeApi().start()
    server: RealServer | None = None
    workers: Workers | None = None
    try:
        with (
            server_log(o.keep_logs, mode, prefix="bench-kubernetes") as log,
            tempfile.TemporaryDirectory(prefix="bench-kubernetes-") as tmp,
        ):
            t0 = time.perf_counter()
            cluster = Cluster(api, o.services, o.endpoints)
            out["emulator_load_s"] = round(time.perf_counter() - t0, 2)
            config = api.kubeconfig(Path(tmp) / "kubeconfig")
            try:
                server = RealServer(["--kubernetes", "--kubeconfig", str(config)], log)
                ready_s = server.wait_ready(o.timeout)
                workers = Workers(
                    o.workers, server.xds_port, mode == "delta", o.streams_per_channel
                )
                w = workers
                w.wait_started()
                out.update(_measure(o, cluster, server, w, ready_s))
            except BenchError:
                print(tail(log.name), file=sys.stderr)
                raise
            finally:
                if workers is not None:
                    workers.close()
                server_cpu = server.close() if server is not None else None
    finally:
        api.stop()
    if workers is not None:
        out["client_cpu_s"] = round(sum(workers.data.client_cpu.values()), 2)
    out["server_process_cpu_s"] = round(server_cpu, 2) if server_cpu is not None else None
    out["machine"] = meter.result((server_cpu or 0.0) + out.get("client_cpu_s", 0.0))
    return out


def _measure(
    o: Options, cluster: Cluster, server: RealServer, w: Workers, ready_s: float
) -> dict[str, Any]:
    data = w.data
    res: dict[str, Any] = {}
    st_ready = server.stats()
    res["startup"] = {
        "ready_s": round(ready_s, 2),
        "rss_ready_mb": round(st_ready["rss"] / MB, 1),
        "cpu_s": round(st_ready["cpu"], 2),
    }
    ids = [f"proxy-{i:05d}" for i in range(o.proxies)]
    t_ramp = time.time()
    interval = o.workers / o.ramp_rate if o.ramp_rate > 0 else 0.0
    for i in range(o.workers):
        w.send(i, ("start", ids[i :: o.workers], interval))
    ok = w.pump_until(lambda: len(data.results) >= o.proxies, o.timeout)
    done = [r for r in data.results.values() if r["full"] is not None]
    if len(done) < o.proxies or not ok:
        raise BenchError(f"only {len(done)} of {o.proxies} proxies got their full config")
    res["ramp"] = {
        "proxies": o.proxies,
        "all_full_config_s": round(max(r["full"] for r in done) - t_ramp, 2),
        "full_config_ms": dist_ms([r["full"] - r["start"] for r in done]),
    }
    w.pump_for(o.settle)
    st_idle = server.stats()
    res["idle"] = {
        "rss_connected_mb": round(st_idle["rss"] / MB, 1),
        "peak_rss_mb": round(st_idle["peak_rss"] / MB, 1),
        "updates_while_idle": len(data.updates),
    }

    tr = Tracker(w)
    tr.live = {r["node_id"] for r in done} - {e["node_id"] for e in data.ended}
    rng = random.Random(o.seed)
    targets = rng.sample(sorted(cluster.services), min(o.edits, len(cluster.services)))
    m_start = m_before = server.metrics()
    edits: list[dict[str, Any]] = []
    all_acks: list[float] = []
    for k in range(o.edits):
        what, clas, at = cluster.move_endpoint(targets[k % len(targets)])
        edit = Edit("move", what, clas, [], at)
        tr.add(edit)
        converged = w.pump_until(lambda e=edit: tr.complete(e), o.timeout)
        w.pump_for(max(0.5, o.edit_interval - (time.time() - at)))
        tr.absorb()
        m_after = server.metrics()
        fig = tr.figures(edit)
        acks = fig.pop("ack_s")
        all_acks.extend(acks)
        edits.append(
            {
                "what": what,
                "converged": converged,
                **fig,
                "all_acked_ms": round(max(acks) * 1000.0, 1) if converged and acks else None,
                "server": server_breakdown(m_after, m_before),
            }
        )
        m_before = m_after
    st_end = server.stats()
    res["edits"] = edits
    res["edits_total"] = server_breakdown(m_before, m_start)
    res["slice_edits"] = {
        "edits": len(edits),
        "ack_ms": dist_ms(all_acks),
        "missing": sum(e["missing"] for e in edits),
    }
    res["server"] = {
        "rss_after_edits_mb": round(st_end["rss"] / MB, 1),
        "peak_rss_mb": round(st_end["peak_rss"] / MB, 1),
        "streams_ended": len(data.ended),
    }
    return res


def print_table(results: list[dict[str, Any]], o: Options, info: dict[str, Any]) -> None:
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Any) -> None:
        rows.append((label, [cell(r) for r in results]))

    def acks(r: dict[str, Any]) -> str:
        d = r["slice_edits"]["ack_ms"]
        return f"{fmt(d.get('p50'))} / {fmt(d.get('p99'))} / {fmt(d.get('max'))} ms"

    row("start -> /readyz 200", lambda r: fmt(r["startup"]["ready_s"], " s"))
    row("server RSS at ready", lambda r: fmt(r["startup"]["rss_ready_mb"], " MB"))
    row("server RSS, all connected", lambda r: fmt(r["idle"]["rss_connected_mb"], " MB"))
    row("ramp: all proxies full config", lambda r: fmt(r["ramp"]["all_full_config_s"], " s"))
    row("updates while idle", lambda r: fmt(r["idle"]["updates_while_idle"]))
    row("slice PATCH -> all ACKed p50/p99/max", acks)
    row("proxies that missed an edit", lambda r: fmt(r["slice_edits"]["missing"]))
    row("server peak RSS", lambda r: fmt(r["server"]["peak_rss_mb"], " MB"))
    row("server CPU, whole run", lambda r: fmt(r["server_process_cpu_s"], " s"))
    heading = (
        f"Kubernetes source: {o.services} Services + {o.services} EndpointSlices x "
        f"{o.endpoints} endpoints, {o.proxies} proxies, {o.edits} slice edits"
    )
    print_rows(heading, o, info, [r["mode"] for r in results], rows)


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m bench.kubernetes", __doc__)
    p.add_argument("--services", type=int, default=5000)
    p.add_argument("--endpoints", type=int, default=5)
    p.add_argument("--edits", type=int, default=5)
    p.add_argument("--edit-interval", type=float, default=2.0)
    add_run_arguments(p, ramp_rate=150.0, ramp_help="new proxies per second")
    p.set_defaults(proxies=100)
    a = p.parse_args(argv)
    o = options_from(Options, a)
    return run_and_report(a, o, lambda mode: run_mode(mode, o), print_table)


if __name__ == "__main__":
    sys.exit(main())
