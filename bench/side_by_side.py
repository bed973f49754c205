"""Side-by-side benchmark: xds-server and sovereign serving the same services file to one
real Envoy each, in one run, with Envoy's own static-bootstrap time as the floor.

    python -m bench.side_by_side --services 1000 --edits 5      # make bench-sovereign

sovereign (PyPI ``sovereign``, Python templates, file source refreshed every second,
Envoy polling it over REST every second: its best case; `bench.sovereign_peer`) needs its
own virtualenv, ``--sovereign-venv`` (``make bench-sovereign`` creates it).

The registry: ``--services`` services ``svc-NNNN`` (namespace ``bench``, one http port
80, ``--endpoints`` endpoints, never dialled) plus one ``seed`` service, in ``--format``
json (default: the format sovereign parses fastest, its best case) or yaml. xds-server
reads it as its registry file (``xds-server --file``, its defaults); sovereign reads the
same entries as a bare list (its file source wants a list). Each server in turn, alone:

1. start with only the ``seed`` service; one Envoy connects (ADS gRPC to xds-server,
   REST polling to sovereign; node metadata ``http_listener_port`` = a free port);
2. **hot add**: the file gains all ``--services`` services at once; write (the time
   before ``os.replace``) → Envoy has every cluster active with its endpoints;
3. **edits**: ``--edits`` times one endpoint of one service moves to a new address (the
   whole file rewritten beside it and renamed over it, as an editor saves); write →
   Envoy's hosts of that cluster include the new address (polled every 5 ms). Edits are
   ``--edit-interval`` s apart at least, and ``--settle`` s after the last was applied,
   plus a random 0 to 1 s so each server's 1 s loops are sampled at every phase. **CPU per
   edit**: the server's CPU seconds (process and children, psutil) from just before the
   write to ``--settle`` s after Envoy applied it; the same window for both, so a
   server's idle cost inside it counts (sovereign's polling is how it finds the edit).
   psutil counts CPU in 10 ms ticks, so the table gives the mean over the edits;
4. **steady CPU**: CPU seconds per second over ``--steady`` s with Envoy connected and
   nothing changing; then **RSS** (process and children, summed);
5. **fresh Envoy**: the Envoy is stopped; ``--fresh-runs`` times a new one starts
   (process spawned → every cluster active with its endpoints), median reported.

The **floor**: before each fresh Envoy, an Envoy from a static bootstrap holding the same
clusters (endpoints inline), measured the same way; the table gives the median of the
paired ratios fresh / floor, so a drift of the shared machine's load hits both alike.
"Active" is `bench.envoy_admin.EnvoyWatch.wait_all_active` for all of them.

Prints a table with both servers, the ratios and the issue's targets; ``--json [PATH]``
writes every figure. Every wait has a timeout (``--timeout``); every process started is
stopped on exit, on error and on Ctrl-C. Figures on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bench import common, sovereign_peer
from bench.common import MB, BenchError
from bench.envoy_admin import DYNAMIC, STATIC, EnvoyWaitError, EnvoyWatch
from bench.registry import Registry
from bench.side_by_side_peers import (
    FORMATS,
    SEED,
    Peer,
    SovereignPeer,
    XdsServerPeer,
    cluster_of,
    envoy,
    expected,
    registry,
    seed_only,
    static_bootstrap,
    time_to_active,
    write_atomically,
)
from bench.side_by_side_report import print_table
from tests.harness.envoy import EnvoyProcess

PEERS = ("xds-server", "sovereign")


@dataclass
class Options:
    services: int = 1000
    endpoints: int = 3
    edits: int = 5
    edit_interval: float = 1.5
    settle: float = 0.5
    steady: float = 5.0
    fresh_runs: int = 5
    refresh: float = 1.0
    sovereign_venv: str = str(sovereign_peer.DEFAULT_VENV)
    sovereign_workers: int = 1
    only: str = "both"
    timeout: float = 60.0
    seed: int = 1
    format: str = "json"
    keep_logs: bool = False


# -- one server ---------------------------------------------------------------------------


def _sleep_until(at: float) -> None:
    time.sleep(max(0.0, at - time.monotonic()))


def run_peer(peer: Peer, o: Options, workdir: Path) -> dict[str, Any]:
    """Every figure of one server (see the module): it starts with the seed service, one
    Envoy follows the hot add, the edits and the steady state, then fresh Envoys."""
    reg = registry(o.services, o.endpoints)
    res: dict[str, Any] = {"server": peer.name}
    write_atomically(peer.path, peer.text(seed_only(reg)))
    res["ready_s"] = round(peer.start(), 3)
    with envoy(peer.bootstrap, workdir / f"envoy-{peer.name}.log") as env:
        watch = EnvoyWatch(env, DYNAMIC)
        watch.wait_all_active(expected(seed_only(reg)), o.timeout)
        res.update(hot_add(peer, watch, reg, o))
        time.sleep(o.settle)
        res["edits"] = edits(peer, watch, reg, o)
        c0, t0 = peer.cpu(), time.monotonic()
        time.sleep(o.steady)
        res["steady_cpu_s_per_s"] = round((peer.cpu() - c0) / (time.monotonic() - t0), 4)
        res["rss_mb"] = round(peer.rss() / MB, 1)
        res["envoy"] = envoy_counters(env)
    res.update(fresh_envoys(peer, reg, o, workdir))
    res["rss_end_mb"] = round(peer.rss() / MB, 1)
    return res


def hot_add(peer: Peer, watch: EnvoyWatch, reg: Registry, o: Options) -> dict[str, Any]:
    """The file gains every service: write → all clusters active, and the CPU meanwhile."""
    c0 = peer.cpu()
    t0 = write_atomically(peer.path, peer.text(reg))
    active = watch.wait_all_active(expected(reg), o.timeout)
    return {"hot_add_s": round(active - t0, 3), "hot_add_cpu_s": round(peer.cpu() - c0, 3)}


def edits(peer: Peer, watch: EnvoyWatch, reg: Registry, o: Options) -> list[dict[str, Any]]:
    """`o.edits` endpoint moves, each on another service: write → Envoy applied, and the
    CPU from the write to `o.settle` s after."""
    rng = random.Random(o.seed)
    targets = rng.sample(sorted(n for n in reg.services if n != SEED), o.edits)
    out = []
    next_at = time.monotonic() + rng.uniform(0.0, 1.0)
    for k, name in enumerate(targets):
        _sleep_until(next_at)
        reg.edit("move", name, k)
        address = reg.services[name][0].address
        c0 = peer.cpu()
        t0 = write_atomically(peer.path, peer.text(reg))
        applied = watch.wait_applied(cluster_of(name), address, o.timeout)
        _sleep_until(applied + o.settle)
        c1, t1 = peer.cpu(), time.monotonic()
        out.append(
            {
                "service": name,
                "address": address,
                "applied_ms": round((applied - t0) * 1000, 1),
                "cpu_s": round(c1 - c0, 3),
                "window_s": round(t1 - t0, 3),
            }
        )
        # A random phase against both servers' 1 s loops.
        next_at = max(t0 + o.edit_interval, time.monotonic()) + rng.uniform(0.0, 1.0)
    return out


def fresh_envoys(peer: Peer, reg: Registry, o: Options, workdir: Path) -> dict[str, Any]:
    """Fresh Envoys, each paired with a floor run just before it (so the machine's load
    drifts alike for both); the server is up and idle meanwhile."""
    log = workdir / f"envoy-{peer.name}-fresh.log"
    floor_log = workdir / "envoy-static.log"
    want = expected(reg)
    floor, fresh = [], []
    for _ in range(o.fresh_runs):
        floor.append(time_to_active(static_bootstrap(reg), floor_log, want, STATIC, o.timeout))
        fresh.append(time_to_active(peer.bootstrap, log, want, DYNAMIC, o.timeout))
    pairs = [a / b for a, b in zip(fresh, floor, strict=True)]
    return {
        "floor_s": [round(t, 3) for t in floor],
        "fresh_s": [round(t, 3) for t in fresh],
        "fresh_over_floor": round(statistics.median(pairs), 3),
    }


def envoy_counters(env: EnvoyProcess) -> dict[str, int]:
    """What Envoy accepted and rejected, and its listeners: the servers served alike."""
    pattern = (
        r"^(cluster_manager\.cds|listener_manager\.lds)\.update_(success|rejected)$"
        r"|^listener_manager\.total_listeners_active$|\.rds\..*\.update_rejected$"
    )
    try:
        return env.stats(pattern)
    except (OSError, AssertionError):
        return {}


# -- the run ------------------------------------------------------------------------------


def summarize(res: dict[str, Any]) -> None:
    applied = [e["applied_ms"] for e in res["edits"]]
    cpu = [e["cpu_s"] for e in res["edits"]]
    res["edit_applied_ms"] = {
        "median": statistics.median(applied),
        "max": max(applied),
        "min": min(applied),
    }
    # psutil's CPU times tick every 10 ms: the mean over the edits is the finer figure.
    res["edit_cpu_s"] = {
        "mean": round(statistics.fmean(cpu), 4),
        "median": statistics.median(cpu),
        "max": max(cpu),
    }
    res["fresh_median_s"] = statistics.median(res["fresh_s"])
    res["floor_median_s"] = statistics.median(res["floor_s"])


def run(o: Options) -> dict[str, Any]:
    """Each server in turn; every figure."""
    keep = tempfile.mkdtemp(prefix="bench-side-by-side-")
    workdir = Path(keep)
    out: dict[str, Any] = {"options": asdict(o), "workdir": keep}
    names = PEERS if o.only == "both" else (o.only,)
    try:
        if "sovereign" in names:  # fail before any measuring if it is not installed
            sovereign_peer.sovereign_script(Path(o.sovereign_venv))
            out["sovereign_version"] = sovereign_version(Path(o.sovereign_venv))
        out["results"] = {}
        for name in names:
            print(f"{name} …", file=sys.stderr, flush=True)
            peer_dir = workdir / name
            peer_dir.mkdir()
            peer: Peer = (
                XdsServerPeer(peer_dir, o.timeout, o.format)
                if name == "xds-server"
                else SovereignPeer(
                    peer_dir,
                    Path(o.sovereign_venv),
                    o.timeout,
                    o.refresh,
                    o.sovereign_workers,
                    o.format,
                )
            )
            try:
                res = run_peer(peer, o, peer_dir)
            except (BenchError, EnvoyWaitError, sovereign_peer.PeerError, AssertionError) as exc:
                raise BenchError(f"{name}: {exc}\n--- {name} log tail:\n{peer.tail()}") from None
            finally:
                res_cpu = peer.close()
            res["process_cpu_s"] = res_cpu
            summarize(res)
            out["results"][name] = res
    finally:
        if o.keep_logs:
            print(f"logs and files: {keep}", file=sys.stderr)
        else:
            shutil.rmtree(keep, ignore_errors=True)
    return out


def sovereign_version(venv: Path) -> str:
    for dist in venv.glob("lib/python*/site-packages/sovereign-*.dist-info"):
        return dist.name.removeprefix("sovereign-").removesuffix(".dist-info")
    return "?"


# -- command line -------------------------------------------------------------------------


def parse(argv: list[str] | None) -> tuple[Options, str | None]:
    d = Options()
    p = argparse.ArgumentParser(
        prog="python -m bench.side_by_side", description=__doc__.splitlines()[0]
    )
    p.add_argument("--services", type=int, default=d.services)
    p.add_argument("--endpoints", type=int, default=d.endpoints)
    p.add_argument("--edits", type=int, default=d.edits, help="endpoint moves (default 5)")
    p.add_argument("--edit-interval", type=float, default=d.edit_interval, help="seconds, at least")
    p.add_argument(
        "--settle", type=float, default=d.settle, help="seconds after applied (CPU window)"
    )
    p.add_argument("--steady", type=float, default=d.steady, help="seconds of steady CPU")
    p.add_argument(
        "--fresh-runs", type=int, default=d.fresh_runs, help="fresh Envoys (and floor runs)"
    )
    p.add_argument("--refresh", type=float, default=d.refresh, help="sovereign's refresh (s)")
    p.add_argument("--sovereign-venv", default=d.sovereign_venv)
    p.add_argument("--sovereign-workers", type=int, default=d.sovereign_workers)
    p.add_argument("--only", choices=("both", *PEERS), default=d.only)
    p.add_argument("--timeout", type=float, default=d.timeout, help="limit of each wait (s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=d.format,
        help="the services file's format, for both (default json: sovereign parses it "
        "fastest, its best case; yaml: PyYAML's pure-Python loader, every second)",
    )
    p.add_argument("--keep-logs", action="store_true", help="keep the work directory")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH")
    a = p.parse_args(argv)
    if a.services < a.edits or a.edits < 1 or a.fresh_runs < 1 or a.endpoints < 1:
        p.error("need --edits >= 1, --services >= --edits, --fresh-runs >= 1, --endpoints >= 1")
    json_path = a.json
    del a.json
    return Options(**vars(a)), json_path


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    o, json_path = parse(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        out = run(o)
    except KeyboardInterrupt:
        print("interrupted; child processes stopped", file=sys.stderr)
        return 130
    except (BenchError, EnvoyWaitError, sovereign_peer.PeerError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    info = common.machine_info()
    out["machine"] = info
    text = json.dumps(out, indent=2, default=str)
    if json_path and json_path != "-":
        Path(json_path).write_text(text + "\n")
    print_table(out, info)
    if json_path == "-":
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
