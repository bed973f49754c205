"""The side-by-side benchmark's printed table: both servers, their ratio and the issue's
targets, line by line."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bench import common

# -- the table ----------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


Row = tuple[str, str, str, str, str, str]
Check = Callable[[float, float], bool]


def rows(out: dict[str, Any]) -> list[Row]:
    """(what, xds-server, sovereign, sovereign / xds-server, target, met) per line."""
    r = out["results"]
    ours, sov = r.get("xds-server"), r.get("sovereign")
    limit_ms = 50.0 if out["options"]["services"] <= 100 else 80.0

    def line(
        what: str,
        fn: Callable[[dict[str, Any]], float],
        unit: str,
        target: str = "",
        check: Check | None = None,
        scale: float = 1.0,
    ) -> Row:
        a = None if ours is None else fn(ours) * scale
        b = None if sov is None else fn(sov) * scale
        ratio = _ratio(b, a)
        met = "" if check is None or a is None or b is None else ("yes" if check(a, b) else "NO")
        cells = (common.fmt(a, unit), common.fmt(b, unit))
        return (what, *cells, "—" if ratio is None else f"{ratio:.2f}x", target, met)

    def vs_floor(res: dict[str, Any] | None) -> str:
        return "—" if res is None else f"{res['fresh_over_floor']:.2f}x"

    fresh_ok = "" if ours is None else ("yes" if ours["fresh_over_floor"] <= 1.1 else "NO")
    return [
        line(
            "edit → Envoy applied, median",
            lambda x: x["edit_applied_ms"]["median"],
            " ms",
            f"≥ 10x and ≤ {limit_ms:g} ms",
            lambda a, b: b >= 10 * a and a <= limit_ms,
        ),
        line("edit → Envoy applied, max", lambda x: x["edit_applied_ms"]["max"], " ms"),
        line(
            "server CPU per edit, mean",
            lambda x: x["edit_cpu_s"]["mean"],
            " ms",
            "≥ 5x",
            lambda a, b: b >= 5 * a,
            scale=1000.0,
        ),
        line(
            "hot add → all clusters active",
            lambda x: x["hot_add_s"],
            " s",
            "≥ 1.5x",
            lambda a, b: b >= 1.5 * a,
        ),
        line("server CPU, hot add", lambda x: x["hot_add_cpu_s"], " ms", scale=1000.0),
        line(
            "fresh Envoy → all active, median",
            lambda x: x["fresh_median_s"],
            " s",
            "≥ 1x",
            lambda a, b: a <= b,
        ),
        line("static floor → all active, median", lambda x: x["floor_median_s"], " s"),
        (
            "fresh Envoy / floor, paired, median",
            vs_floor(ours),
            vs_floor(sov),
            "",
            "≤ 1.10",
            fresh_ok,
        ),
        line("steady CPU (ms per s)", lambda x: x["steady_cpu_s_per_s"], " ms", scale=1000.0),
        line("RSS (process + children)", lambda x: x["rss_mb"], " MB"),
        line("start → serving", lambda x: x["ready_s"], " s"),
    ]


def print_table(out: dict[str, Any], info: dict[str, Any]) -> None:
    o = out["options"]
    table = rows(out)
    sov = f"sovereign {out.get('sovereign_version', '')}".strip()
    head = ("", "xds-server", sov, "sov/xds", "target", "met")
    widths = [max(len(row[i]) for row in [head, *table]) + 2 for i in range(len(head))]
    print()
    print(
        f"side by side: {o['services']} services x {o['endpoints']} endpoints (+ seed), "
        f"{o['edits']} edits, {o['format']} file, one Envoy each; "
        f"sovereign: {o['sovereign_workers']} worker, file refresh and Envoy REST refresh "
        f"{o['refresh']:g} s; CPU in CPU-ms"
    )
    print(
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), code {info['git']}, "
        f"load average at end {os.getloadavg()[0]:.2f} (shared machine: noisy)"
    )
    for row in [head, *table]:
        print(
            row[0].ljust(widths[0])
            + "".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        )
    for name, res in out["results"].items():
        edits = ", ".join(f"{e['applied_ms']:.0f}" for e in res["edits"])
        print(
            f"{name}: edits applied after {edits} ms; fresh Envoy {res['fresh_s']} s, "
            f"floor {res['floor_s']} s"
        )
        print(f"  Envoy counters: {res['envoy']}")
