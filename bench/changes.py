"""Changes through the real server, as the registry, Consul and Kubernetes benches make
them: one change at a time (a file write, a health flip, an EndpointSlice PATCH), followed
to every simulated proxy's ACK, with the server's CPU over exactly that window and its
own /metrics breakdown; and the two latency figures every bench reports about them.

The two figures are different things and are labelled as such:

* **per-proxy ACK latency**: change → one proxy's ACK, for every proxy of every change,
  pooled (p50/p99/max over changes x proxies). Its p99 says how long the slowest 1% of
  proxies waited, not how long it took until all had the change;
* **change → last proxy ACKed**: per change, the time until every proxy had ACKed it
  (the slowest proxy of that change); median and max over the changes.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench import common
from bench.common import MB, BenchError, RealServer, Samples, Table, Workers, dist_ms, fmt

# -- the server's own breakdown (/metrics) ------------------------------------------------


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
    # The `le` label as prometheus_client writes it (0.1, 1.0, 10.0).
    cum = [(le, _diff(after, before, name + "_bucket", le=repr(le), **labels)) for le in bounds]

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


def gc_full(m: Samples) -> float:
    """The server's full (generation 2) garbage collections so far."""
    return m.get(("python_gc_collections_total", frozenset({("generation", "2")})), 0.0)


# -- following a change to every proxy ----------------------------------------------------


class HasCpu(Protocol):
    """A server process whose CPU seconds can be read (`RealServer`, bench.run's)."""

    def cpu(self) -> float: ...


@dataclass
class Edit:
    """One change and the markers (``bench.fixtures``) a proxy must ACK to have it."""

    kind: str
    what: str
    clas: list[str]
    routes: list[str]
    write_at: float  # time.time() just before the change was made
    # node id → marker → (recv_at, ack_at) of the first response carrying it
    seen: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    @property
    def markers(self) -> list[str]:
        return self.clas + self.routes


@dataclass
class Followed:
    """A change followed until every proxy ACKed it (or the timeout)."""

    edit: Edit
    converged: bool
    # Server CPU from just before the change was made until the benchmark saw the last
    # proxy's ACK (the workers report every 100 ms): the change's work, its pushes and
    # the ACKs, and at most that long of the server's idle activity.
    cpu_s: float
    window_s: float


class Tracker:
    """Matches the proxies' post-full-config updates against the changes' markers."""

    def __init__(self, w: Workers, server: RealServer | None = None):
        self.w = w
        self.edits: list[Edit] = []
        self.by_marker: dict[str, Edit] = {}
        self.cursor = len(w.data.updates)
        # The proxies expected to ACK every change: all with their full config, still on.
        full = {r["node_id"] for r in w.data.results.values() if r["full"] is not None}
        self.live = full - {e["node_id"] for e in w.data.ended}
        self.server = server  # for `measure`: its /metrics before the first change
        self.m_start = self.m_last = server.samples() if server is not None else {}

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

    def follow(self, server: HasCpu, act: Callable[[], Edit], timeout: float) -> Followed:
        """Make a change with `act` and pump until every live proxy ACKed it."""
        t0, cpu0 = time.time(), server.cpu()
        edit = act()
        self.add(edit)
        converged = self.w.pump_until(lambda: self.complete(edit), timeout)
        cpu1, t1 = server.cpu(), time.time()
        return Followed(edit, converged, cpu1 - cpu0, t1 - t0)

    def measure(
        self, act: Callable[[], Edit], timeout: float, interval: float = 0.0
    ) -> dict[str, Any]:
        """`follow` a change through `self.server`, let the last ACKs reach the server's
        metrics (0.5 s), `record` it with the server's breakdown since the last; then
        pump until `interval` s have passed since the change (the next one's start)."""
        assert self.server is not None, "Tracker(…, server) to measure"
        followed = self.follow(self.server, act, timeout)
        rec = self.record(followed, settle=0.5)
        m = self.server.samples()
        rec["server"] = server_breakdown(m, self.m_last)
        rec["full_gcs"] = int(gc_full(m) - gc_full(self.m_last))
        self.m_last = m
        self.w.pump_for(max(0.0, interval - (time.time() - followed.edit.write_at)))
        return rec

    def finish(self, records: list[dict[str, Any]], key: str) -> dict[str, Any]:
        """The figures of the measured changes `records`: themselves as `key` (without
        the raw latencies), their `summary` as ``key_summary``, the server's breakdown
        over all of them as ``key_total``, and the server's state at the end."""
        assert self.server is not None
        out = {
            f"{key}_summary": summary(records),
            f"{key}_total": server_breakdown(self.m_last, self.m_start),
            "server": common.server_end(self.server, self.w),
        }
        drop_raw(records)
        return {key: records, **out}

    def record(self, f: Followed, settle: float = 0.0) -> dict[str, Any]:
        """The figures of a followed change (``ack_s``, ``recv_s``: the raw latencies,
        for `summary`; `drop_raw` removes them before the figures are written), after
        `settle` s more of pumping the workers (what follows a change)."""
        self.w.pump_for(settle)
        self.absorb()
        edit = f.edit
        acks, recvs = [], []
        early_routes = 0  # proxies sent the new routes before they ACKed the endpoints
        for node in self.live:
            got = edit.seen.get(node, {})
            if len(got) == len(edit.markers):
                acks.append(max(a for _, a in got.values()) - edit.write_at)
                recvs.append(max(r for r, _ in got.values()) - edit.write_at)
                # Only for a change with both (a route-only change has no endpoints).
                if (
                    edit.routes
                    and edit.clas
                    and min(got[m][0] for m in edit.routes) < max(got[m][1] for m in edit.clas)
                ):
                    early_routes += 1
        return {
            "kind": edit.kind,
            "what": edit.what,
            "converged": f.converged,
            "routes_before_endpoints_acked": early_routes,
            "proxies": len(self.live),
            "acked": len(acks),
            "missing": len(self.live) - len(acks),
            "ack_ms": dist_ms(acks),
            "recv_ms": dist_ms(recvs),
            "last_ack_ms": round(max(acks) * 1000.0, 1) if f.converged and acks else None,
            "server_cpu_s": round(f.cpu_s, 3),
            "cpu_window_s": round(f.window_s, 3),
            "ack_s": acks,
            "recv_s": recvs,
        }


def published_split(
    write_at: float, published: float | None, last_ack_ms: float | None
) -> dict[str, float | None]:
    """A file edit's latency split where its source published it (`published`: from the
    server log, `RealServer.published_since`): write → published, published → the last
    proxy's ACK (`last_ack_ms`, counted from the write)."""
    if published is None:
        return {"write_to_published_ms": None, "published_to_last_ack_ms": None}
    to_published = (published - write_at) * 1000.0
    rest = None if last_ack_ms is None else round(last_ack_ms - to_published, 1)
    return {"write_to_published_ms": round(to_published, 1), "published_to_last_ack_ms": rest}


def summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Both latency figures over `records` (see the module's docstring), and the server's
    CPU per change over each change's window."""
    pooled = [a for e in records for a in e["ack_s"]]
    lasts = [e["last_ack_ms"] for e in records]
    every = bool(lasts) and all(v is not None for v in lasts)
    cpu = [e["server_cpu_s"] for e in records]
    return {
        "changes": len(records),
        "acks": len(pooled),
        "missing": sum(e["missing"] for e in records),
        "per_proxy_ack_ms": dist_ms(pooled),
        "per_proxy_recv_ms": dist_ms([r for e in records for r in e["recv_s"]]),
        "last_ack_ms": {
            "each": lasts,
            "median": statistics.median(lasts) if every else None,
            "max": max(lasts) if every else None,
        },
        "server_cpu_s": {
            "each": cpu,
            "mean": round(statistics.mean(cpu), 3) if cpu else None,
            "window_s_mean": (
                round(statistics.mean(e["cpu_window_s"] for e in records), 3) if cpu else None
            ),
        },
    }


def drop_raw(records: Sequence[dict[str, Any]]) -> None:
    for e in records:
        e.pop("ack_s", None)
        e.pop("recv_s", None)


# -- reporting ----------------------------------------------------------------------------


def ack_labels(action: str, changes: str) -> tuple[str, str]:
    """The row labels of the two figures, e.g. ``ack_labels("PATCH", "edits")``."""
    return (
        f"{action}→ACK per proxy, p50/p99/max (pooled: {changes} x proxies)",
        f"{action}→last proxy ACKed, median/max over {changes}",
    )


def per_change_rows(t: Table, key: str, noun: str, action: str) -> None:
    """One row per change: its per-proxy latency distribution (its max: the last proxy)."""
    records = t.results[0][key] if t.results else []
    for k, e in enumerate(records):
        t.row(
            f"{noun} {k + 1} ({e['kind']}): {action}→ACK per proxy p50/p99/max (max: last)",
            lambda r, k=k: dist_cell(r[key][k]["ack_ms"]),
        )


def change_rows(
    t: Table, prefix: str, action: str, changes: str, get: Callable[[dict[str, Any]], Any]
) -> None:
    """The rows of the `summary` that `get(result)` gives: both latency figures and the
    server's CPU per change."""
    per, last = ack_labels(action, changes)
    t.row(f"{prefix}: {per}", lambda r: per_proxy_cell(get(r)))
    t.row(f"{prefix}: {last}", lambda r: last_ack_cell(get(r)))
    t.row(f"{prefix}: {cpu_label(changes)}", lambda r: cpu_cell(get(r)))


def push_rows(t: Table, total: str, types: Sequence[str]) -> None:
    """The server's own view of the pushes of all changes (``result[total]``, a
    `server_breakdown`): push latency and convergence of `types`, responses and MB sent."""
    for ty in types:
        for what, metric in (("push latency", "push"), ("convergence", "convergence")):
            t.row(
                f"server: {what}, {ty} (mean)",
                lambda r, ty=ty, metric=metric: hist_cell(r[total][metric].get(ty)),
            )
    t.row(
        "server: responses / MB sent, all changes",
        lambda r: ", ".join(
            f"{ty} {n} / {r[total]['response_mb'].get(ty, 0):g}"
            for ty, n in sorted(r[total]["responses"].items())
        ),
    )


def per_proxy_cell(s: dict[str, Any]) -> str:
    d = s["per_proxy_ack_ms"]
    return f"{fmt(d['p50'])} / {fmt(d['p99'])} / {fmt(d['max'])} ms (n={s['acks']})"


def last_ack_cell(s: dict[str, Any]) -> str:
    d = s["last_ack_ms"]
    return f"{fmt(d['median'])} / {fmt(d['max'])} ms (n={s['changes']})"


def cpu_label(changes: str) -> str:
    return f"server CPU per {changes[:-1]}, change→last ACK seen (mean)"


def cpu_cell(s: dict[str, Any]) -> str:
    c = s["server_cpu_s"]
    mean = None if c["mean"] is None else c["mean"] * 1000.0
    return f"{fmt(mean, ' ms')} (window {fmt(c['window_s_mean'], ' s')})"


def print_table(t: Table, heading: str, o: Any, info: dict[str, Any], key: str, noun: str) -> None:
    """End the table `t` with the whole-run rows and print it; then what each change
    (``result[key]``) was, and the ramp's stream errors."""
    t.whole_run()
    t.print(heading, o, info)
    for r in t.results:
        for k, e in enumerate(r[key]):
            print(f"{r['mode']} {noun} {k + 1}: {e['what']}")
        if r["ramp"]["errors"]:
            print(f"{r['mode']} stream errors: {r['ramp']['errors']}")


def dist_cell(d: dict[str, float]) -> str:
    return " / ".join(fmt(d[q]) for q in ("p50", "p99", "max")) + " ms"


def hist_cell(h: dict[str, Any] | None) -> str:
    if not h:
        return "—"
    return f"{fmt(h['mean_ms'])} ms (n={h['count']}, p99 ≤ {fmt(h['p99_le_ms'])})"
