"""Policy benchmark: one VirtualService's weight shifted in the policy file → every
simulated proxy ACKed, through the real ``xds-server --file REGISTRY --policy POLICY``,
SotW and delta.

    python -m bench.policy --services 1000 --endpoints 5 --proxies 1000 --mode both --edits 5

For each mode it writes to a temporary directory a registry file of ``--services``
services (namespace ``bench``, one http port 80, ``--endpoints`` endpoints labelled
``version: v1`` and as many labelled ``version: v2``, on 10.x.y.z:8080, never dialled)
and a policy file with, per service, a VirtualService sending 90 % to subset v1 and
10 % to subset v2 and a DestinationRule defining the two subsets. It starts
``xds-server --file <registry> --policy <policy> --file-interval <--file-interval>``
with its default debounce settings, and measures:

1. startup: process start → ``/readyz`` answers 200 (both files parsed, the policy
   resolved); the server's ``xds_translate_seconds`` and ``xds_policy_objects`` at that
   point; and, **in the benchmark process** before the server starts, the same inputs
   through ``parse_registry``, ``parse_policy_file``, ``resolve_policies`` and
   ``translate`` for the proxies' group, each timed (the whole policy set's
   translation; the server does its share of it at start-up and the rest when the
   first proxy of the group arrives, which no server metric times);
2. ramp: the simulated Envoys (``bench.sim``) connect at ``--ramp-rate``/s until all
   have their full configuration (the first proxy's full-config time includes the
   group's first build); then ``--settle`` s idle;
3. edits: ``--edits`` edits of the policy file, each shifting ONE VirtualService (a
   different service each time) to 80/20, 70/30, 60/40, 50/50, 40/60, … Each is
   written as a whole new file renamed over the old one; latency = ``time.time()``
   just before ``os.replace`` → each proxy's ACK of the RouteConfiguration carrying
   the change, matched by its exact bytes against what the server's own parser,
   resolver and translators produce for the edited file (`sim.body_marker`). The next
   edit starts ``--edit-interval`` s after the previous one, and at least 0.5 s after
   it converged, plus a random 0 … ``--file-interval`` s. The figure includes the poll
   wait, reading and parsing the whole policy file, the debouncer, resolution and
   translation, the push and the ACK; the server's log gives the time the policy
   source published the change. Reported: the per-proxy latency (pooled over edits x
   proxies: p50/p99/max) and write → last proxy ACKed (median/max over the edits),
   the server's CPU per edit over that edit's window, and **what was sent**: the
   responses (and resources) of each type each proxy received after the write, and
   the server's own count and bytes per type (/metrics);
4. server RSS (psutil): at ready, connected and idle, after each edit (peak), at the
   end.

``--py-spy PREFIX`` records the server with py-spy during the edits
(``PREFIX-<mode>-changes.<ext>``). Prints a table; ``--json [PATH]`` also writes the
figures. Every wait has a timeout; the server and the workers are stopped on exit, on
error and on Ctrl-C. No thresholds are enforced; the issue's targets are printed next
to the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import changes, common
from bench.common import MB, fmt
from bench.run import PySpy
from bench.sim import body_marker
from sources.file import parse_registry
from sources.policy_file import parse_policy_file
from translators import ProxyGroup
from translators.policy_resolve import resolve_policies
from translators.translate import group_resources, translate
from xds_server import types
from xds_server.model import PolicyObject, ServiceEntry, ServiceKey

NAMESPACE = "bench"
SERVICE_PORT = 80
ENDPOINT_PORT = 8080
START_WEIGHT = 90  # subset v1's share at the start; v2 gets the rest
SOURCE = "file"  # the file source's name in the catalog
TARGET_P99_MS = 1000.0
TARGET_RSS_MB = 300.0


def _ip(n: int) -> str:
    return f"10.{(n >> 16) & 0xFF}.{(n >> 8) & 0xFF}.{n & 0xFF}"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# -- the registry and policy files --------------------------------------------------------


@dataclass
class Mesh:
    """The services (registry file) and their canaries (policy file): subset v1's weight
    per service, edited in place, the policy file written atomically. It also predicts
    the RouteConfiguration each version of the policy file makes the server send."""

    services: int
    endpoints: int  # per version
    v1_weight: dict[str, int] = field(default_factory=dict)
    catalog: dict[ServiceKey, ServiceEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.v1_weight = {self.name(i): START_WEIGHT for i in range(self.services)}

    @staticmethod
    def name(i: int) -> str:
        return f"svc-{i:04d}"

    def registry_text(self) -> str:
        out = ["services:\n"]
        per = 2 * self.endpoints
        for i in range(self.services):
            eps = "".join(
                f"      - {{address: {_ip(i * per + j + 1)}, port: {ENDPOINT_PORT}, "
                f"zone: z{j % 3}, labels: {{version: v{1 + j % 2}}}}}\n"
                for j in range(per)
            )
            out.append(
                f"  - name: {self.name(i)}\n"
                f"    namespace: {NAMESPACE}\n"
                f"    ports: [{{name: http, port: {SERVICE_PORT}, protocol: http}}]\n"
                f"    endpoints:\n{eps}"
            )
        return "".join(out)

    def policy_text(self) -> str:
        docs = []
        for name, w1 in self.v1_weight.items():
            meta = f"metadata: {{name: {name}, namespace: {NAMESPACE}}}\n"
            docs.append(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\n" + meta + "spec:\n"
                f"  hosts: [{name}]\n"
                "  http:\n"
                "  - route:\n"
                f"    - destination: {{host: {name}, subset: v1}}\n"
                f"      weight: {w1}\n"
                f"    - destination: {{host: {name}, subset: v2}}\n"
                f"      weight: {100 - w1}\n"
                "---\n"
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n" + meta + "spec:\n"
                f"  host: {name}\n"
                "  subsets:\n"
                "  - {name: v1, labels: {version: v1}}\n"
                "  - {name: v2, labels: {version: v2}}\n"
            )
        return "---\n".join(docs)

    def write_policy(self, path: Path) -> float:
        """Write the whole policy file beside `path` and rename it over `path`; the time
        just before the rename."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.policy_text())
        at = time.time()
        os.replace(tmp, path)
        return at

    def translate_all(self) -> dict[str, Any]:
        """The whole translation in this process, timed step by step: the registry
        parsed (kept as the catalog for `route_markers`), the policy file parsed and
        resolved, and the group's resources built (with their sizes)."""
        entries, parse_reg = _timed(lambda: parse_registry(self.registry_text(), "<b>", SOURCE))
        self.catalog = {e.key: e for e in entries}
        objects, parse_pol = _timed(lambda: parse_policy_file(self.policy_text(), "<bench>"))
        resolution, resolve = _timed(lambda: resolve_policies(self.catalog, objects, {}))
        tr, build = _timed(
            lambda: translate(self.catalog, ProxyGroup(), policies=resolution.services)
        )
        states = Counter(f"{s.key.kind} {s.state}" for s in resolution.statuses)
        return {
            "parse_registry_s": round(parse_reg, 3),
            "parse_policy_file_s": round(parse_pol, 3),
            "resolve_policies_s": round(resolve, 3),
            "translate_s": round(build, 3),
            "policy_total_s": round(parse_pol + resolve + build, 3),
            "objects": dict(states),
            "resources": {types.short_name(t): len(v) for t, v in tr.resources.items()},
            "bytes": {
                types.short_name(t): sum(m.ByteSize() for m in v) for t, v in tr.resources.items()
            },
        }

    def route_markers(self, objects: list[PolicyObject] | None = None) -> list[str]:
        """`body_marker` of every RouteConfiguration the proxies' group gets from the
        current policy file, built as the server builds it."""
        if objects is None:
            objects = parse_policy_file(self.policy_text(), "<bench>")
        resolution = resolve_policies(self.catalog, objects, {})
        services = [e.service for e in self.catalog.values()]
        _, routes, _ = group_resources(services, ProxyGroup(), resolution.services)
        return [body_marker(rc.name, rc.SerializeToString(deterministic=True)) for rc in routes]

    def shift(self, name: str, serial: int) -> str:
        """Edit `serial` (0, 1, …) shifts `name` to 80/20, 70/30, … (cycling through
        80 … 0 for v1); what it did."""
        before = self.v1_weight[name]
        after = 80 - 10 * (serial % 9)
        self.v1_weight[name] = after
        return f"{name}: v1/v2 {before}/{100 - before} → {after}/{100 - after}"


# -- one mode -----------------------------------------------------------------------------


@dataclass
class Options(common.RunOptions):
    services: int
    endpoints: int
    edits: int
    edit_interval: float
    file_interval: float
    py_spy: str | None
    py_spy_format: str


def _sent(updates: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """What the proxies received in [start, end): per type, responses, resources and
    the proxies that got one."""
    out: dict[str, dict[str, int]] = {}
    proxies: dict[str, set[str]] = {}
    for u in updates:
        if start <= u["recv_at"] < end:
            t = out.setdefault(u["type"], {"responses": 0, "resources": 0, "removed": 0})
            t["responses"] += 1
            t["resources"] += u["resources"]
            t["removed"] += u["removed"]
            proxies.setdefault(u["type"], set()).add(u["node_id"])
    for ty, t in out.items():
        t["proxies"] = len(proxies[ty])
    return out


def run_mode(mode: str, o: Options) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-policy-") as tmp,
        common.ServerRun(mode, o, "bench-policy") as run,
    ):
        mesh = Mesh(o.services, o.endpoints)
        reg_path, pol_path = Path(tmp) / "registry.yaml", Path(tmp) / "policy.yaml"
        reg_path.write_text(mesh.registry_text())
        mesh.write_policy(pol_path)
        run.out["files"] = {
            "registry_bytes": reg_path.stat().st_size,
            "policy_bytes": pol_path.stat().st_size,
        }
        run.out["in_process"] = mesh.translate_all()
        args = ["--file", str(reg_path), "--policy", str(pol_path)]
        server = run.start_server([*args, "--file-interval", str(o.file_interval)])
        ready_s = server.wait_ready(o.timeout)
        at_ready = server.samples()
        w = run.start_workers(server.xds_port)
        spy = None
        if o.py_spy:
            spy = PySpy(server.pid, o.py_spy, mode, "changes", o.py_spy_format, False)
            run.stack.callback(spy.close)
        run.out.update(_measure(o, mesh, pol_path, server, w, ready_s, at_ready, spy))
    return run.out


def _startup_server(at_ready: common.Samples) -> dict[str, Any]:
    """The server's own figures at /readyz: its translations so far, its policy states."""
    h = changes.histogram(at_ready, {}, "xds_translate_seconds")
    objects = {
        f"{dict(k[1])['kind']} {dict(k[1])['state']}": int(v)
        for k, v in at_ready.items()
        if k[0] == "xds_policy_objects" and v
    }
    total = h["mean_ms"] * h["count"] / 1000.0 if h["count"] else 0.0
    return {"translations": h["count"], "translate_s": round(total, 3), "objects": objects}


def _first_proxy(w: common.Workers) -> float | None:
    """Full-config time (ms) of the first proxy to start: it waited for the group's
    first build (the rest of the start-up translation)."""
    done = [r for r in w.data.results.values() if r["full"] is not None]
    if not done:
        return None
    first = min(done, key=lambda r: r["start"])
    return round(float(first["full"] - first["start"]) * 1000.0, 1)


def _measure(
    o: Options,
    mesh: Mesh,
    path: Path,
    server: common.RealServer,
    w: common.Workers,
    ready_s: float,
    at_ready: common.Samples,
    spy: PySpy | None,
) -> dict[str, Any]:
    data = w.data
    res = common.connect_all(server, w, o, ready_s)
    res["startup"]["server"] = _startup_server(at_ready)
    res["ramp"]["first_proxy_full_config_ms"] = _first_proxy(w)

    tr = changes.Tracker(w, server)
    rng = random.Random(o.seed)
    targets = rng.sample(sorted(mesh.v1_weight), min(o.edits, len(mesh.v1_weight)))
    edits: list[dict[str, Any]] = []
    if spy is not None:
        spy.enter("changes")
    next_at = time.time()
    for k in range(o.edits):
        # Predict what the edit must deliver before the clock starts.
        what = mesh.shift(targets[k % len(targets)], k)
        markers, predict_s = _timed(mesh.route_markers)
        w.pump_for(max(0.0, next_at - time.time()))

        def act(what: str = what, markers: list[str] = markers) -> changes.Edit:
            return changes.Edit("weight", what, [], markers, mesh.write_policy(path))

        rec = tr.measure(act, o.timeout)
        write_at = tr.edits[-1].write_at
        # As bench.registry: the next edit --edit-interval after this one and at least
        # 0.5 s after it converged, plus a random phase against the file polling.
        next_at = max(write_at + o.edit_interval, time.time())
        next_at += rng.uniform(0.0, o.file_interval)
        published = server.published_since(write_at, logger="sources.policy")
        edits.append(
            {
                **rec,
                **changes.published_split(write_at, published, rec["last_ack_ms"]),
                "predict_s_in_bench_process": round(predict_s, 3),
                "sent": _sent(data.updates, write_at, time.time()),
                "server_rss_mb": round(server.stats()["rss"] / MB, 1),
                "server_peak_rss_mb": round(server.stats()["peak_rss"] / MB, 1),
            }
        )
    if spy is not None:
        spy.close()
    res.update(tr.finish(edits, "edits"))
    return res


# -- reporting ----------------------------------------------------------------------------


def _per_proxy(e: dict[str, Any]) -> str:
    """Responses (resources) per proxy of each type one edit sent."""
    n = max(1, e["proxies"])
    return ", ".join(
        f"{ty} {s['responses'] / n:g} ({s['resources'] / n:g})"
        for ty, s in sorted(e["sent"].items())
    )


def _untouched(r: dict[str, Any]) -> str:
    types_sent = {ty for e in r["edits"] for ty in e["sent"]}
    server_types = set(r["edits_total"]["responses"])
    others = sorted((types_sent | server_types) - {"rds", "routes"})
    return "yes" if not others else "no: " + ", ".join(others)


def _target(value: float | None, limit: float, unit: str) -> str:
    if value is None:
        return "—"
    verdict = "met" if value <= limit else "MISSED"
    return f"{fmt(value, unit)} ≤ {fmt(limit, unit)}: {verdict}"


def print_table(results: list[dict[str, Any]], o: Options, info: dict[str, Any]) -> None:
    t = common.Table(results)
    row = t.row
    row(
        "files: registry / policy",
        lambda r: (
            f"{fmt(r['files']['registry_bytes'] / MB)} / {fmt(r['files']['policy_bytes'] / MB)} MB"
        ),
    )
    ip = "in the benchmark process"
    row(f"{ip}: parse_registry", lambda r: r["in_process"]["parse_registry_s"], " s")
    row(f"{ip}: parse_policy_file", lambda r: r["in_process"]["parse_policy_file_s"], " s")
    row(f"{ip}: resolve_policies", lambda r: r["in_process"]["resolve_policies_s"], " s")
    row(f"{ip}: translate (one Envoy group)", lambda r: r["in_process"]["translate_s"], " s")
    row(
        f"{ip}: the policy set, parse+resolve+translate",
        lambda r: r["in_process"]["policy_total_s"],
        " s",
    )
    row(
        f"{ip}: resources (KB) per proxy",
        lambda r: ", ".join(
            f"{ty} {n} ({r['in_process']['bytes'][ty] / 1024:,.0f})"
            for ty, n in r["in_process"]["resources"].items()
        ),
    )
    t.connect_rows()
    row(
        "startup: server xds_translate_seconds at ready (sum; count)",
        lambda r: (
            f"{fmt(r['startup']['server']['translate_s'], ' s')}; "
            f"{r['startup']['server']['translations']}"
        ),
    )
    row(
        "startup: policy objects at ready",
        lambda r: ", ".join(
            f"{k}={v}" for k, v in sorted(r["startup"]["server"]["objects"].items())
        ),
    )
    row(
        "ramp: first proxy's full config (group's first build)",
        lambda r: r["ramp"]["first_proxy_full_config_ms"],
        " ms",
    )
    changes.per_change_rows(t, "edits", "edit", "write")
    changes.change_rows(t, "weight edits", "write", "edits", lambda r: r["edits_summary"])
    row(
        "TARGET per-proxy p99 ≤ 1 s",
        lambda r: _target(r["edits_summary"]["per_proxy_ack_ms"]["p99"], TARGET_P99_MS, " ms"),
    )
    row(
        "TARGET last proxy ACKed (max over edits) ≤ 1 s",
        lambda r: _target(r["edits_summary"]["last_ack_ms"]["max"], TARGET_P99_MS, " ms"),
    )
    row("edits: proxy ACKs missing", lambda r: r["edits_summary"]["missing"])
    row(
        "write → policy source published, each edit",
        lambda r: ", ".join(fmt(e["write_to_published_ms"]) for e in r["edits"]) + " ms",
    )
    row(
        "published → last proxy ACKed, each edit",
        lambda r: ", ".join(fmt(e["published_to_last_ack_ms"]) for e in r["edits"]) + " ms",
    )
    row(
        "server: translate per edit (mean)",
        lambda r: changes.hist_cell(r["edits_total"]["translate"]),
    )
    changes.push_rows(t, "edits_total", ["routes"])
    row(
        "sent per edit: responses (resources) per proxy, by type",
        lambda r: "; ".join(_per_proxy(e) for e in r["edits"]),
    )
    row("clusters and endpoints untouched by the edits", _untouched)
    row(
        "server: RSS after each edit",
        lambda r: " / ".join(fmt(e["server_rss_mb"]) for e in r["edits"]) + " MB",
    )
    row("server: RSS at the end", lambda r: r["server"]["rss_end_mb"], " MB")
    row("server: peak RSS", lambda r: r["server"]["peak_rss_mb"], " MB")
    row(
        "TARGET peak RSS ≤ 300 MB",
        lambda r: _target(r["server"]["peak_rss_mb"], TARGET_RSS_MB, " MB"),
    )
    row("unexpected: streams ended", lambda r: r["server"]["streams_ended"])
    heading = (
        f"xds-server policy edits: {o.services} services x 2 x {o.endpoints} endpoints, "
        f"a VirtualService (90/10) and a DestinationRule (v1, v2) each, {o.proxies} proxies, "
        f"file interval {o.file_interval} s, default debounce"
    )
    changes.print_table(t, heading, o, info, "edits", "edit")


def main(argv: list[str] | None = None) -> int:
    def arguments(p: argparse.ArgumentParser) -> None:
        common.int_options(p, services=1000, endpoints=5, edits=5)
        common.file_edit_options(p)
        p.add_argument(
            "--py-spy", metavar="PREFIX", help="py-spy record the server during the edits"
        )
        p.add_argument(
            "--py-spy-format", choices=("flamegraph", "raw", "speedscope"), default="raw"
        )

    prog = "python -m bench.policy"
    return common.cli(prog, __doc__, Options, arguments, run_mode, print_table, argv)


if __name__ == "__main__":
    sys.exit(main())
