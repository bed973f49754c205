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
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from bench import common, sovereign_peer, sovereign_templates
from bench.common import MB, BenchError
from bench.envoy_admin import DYNAMIC, STATIC, EnvoyWaitError, EnvoyWatch
from bench.registry import ENDPOINT_PORT, NAMESPACE, SERVICE_PORT, Endpoint, Registry
from tests.harness import envoy as harness_envoy
from tests.harness.envoy import EnvoyProcess
from tests.harness.ports import free_port

SEED = "seed"
PEERS = ("xds-server", "sovereign")
FORMATS = ("json", "yaml")


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


# -- the file -----------------------------------------------------------------------------


def registry(services: int, endpoints: int) -> Registry:
    """``seed`` plus `services` services; the same for every server (so are its edits)."""
    full = Registry.generate(services, endpoints)
    seed = [Endpoint(f"192.0.2.{j + 1}", f"z{j % 3}") for j in range(endpoints)]
    return Registry(services={SEED: seed, **full.services})


def seed_only(reg: Registry) -> Registry:
    return Registry(services={SEED: reg.services[SEED]})


def entries(reg: Registry) -> list[dict[str, Any]]:
    """The registry's services as data: what its YAML text holds under ``services:``."""
    return [
        {
            "name": name,
            "namespace": NAMESPACE,
            "ports": [{"name": "http", "port": SERVICE_PORT, "protocol": "http"}],
            "endpoints": [
                {
                    "address": ep.address,
                    "port": ENDPOINT_PORT,
                    "zone": ep.zone,
                    **({"weight": ep.weight} if ep.weight != 1 else {}),
                }
                for ep in eps
            ],
        }
        for name, eps in reg.services.items()
    ]


def file_text(reg: Registry, fmt: str, wrapped: bool) -> str:
    """The registry in `fmt` (json or yaml): under ``services:`` as xds-server's registry
    file (`wrapped`), or as the bare list sovereign's file source reads."""
    if fmt == "json":
        data = entries(reg)
        return json.dumps({"services": data} if wrapped else data)
    text = reg.text()
    if wrapped:
        return text
    header = "services:\n"
    assert text.startswith(header)
    return text[len(header) :] or "[]\n"


def cluster_of(service: str) -> str:
    return sovereign_templates.cluster_name(
        {"name": service, "namespace": NAMESPACE}, {"port": SERVICE_PORT}
    )


def expected(reg: Registry) -> dict[str, int]:
    """Cluster → how many endpoints Envoy must have for it."""
    return {cluster_of(name): len(eps) for name, eps in reg.services.items()}


def write_atomically(path: Path, text: str) -> float:
    """Write beside `path`, rename over it; ``time.monotonic()`` just before the rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    at = time.monotonic()
    os.replace(tmp, path)
    return at


# -- the servers --------------------------------------------------------------------------


class Peer(Protocol):
    name: str
    path: Path

    def text(self, reg: Registry) -> str: ...
    def start(self) -> float: ...
    def bootstrap(self, admin_port: int) -> dict[str, Any]: ...
    def cpu(self) -> float: ...
    def rss(self) -> float: ...
    def close(self) -> float | None: ...
    def tail(self) -> str: ...


class XdsServerPeer:
    """``xds-server --file PATH`` with its defaults (`common.RealServer`)."""

    name = "xds-server"

    def __init__(self, workdir: Path, timeout: float, fmt: str = "json"):
        self.path = workdir / f"registry.{fmt}"
        self.fmt = fmt
        self.server = common.RealServer(["--file", str(self.path)], workdir / "xds-server.log")
        self.timeout = timeout
        self.listener_port = free_port()

    def text(self, reg: Registry) -> str:
        return file_text(reg, self.fmt, wrapped=True)

    def start(self) -> float:
        self.server.start()
        return self.server.wait_ready(self.timeout)

    def bootstrap(self, admin_port: int) -> dict[str, Any]:
        return harness_envoy.bootstrap(
            self.server.xds_port,
            admin_port,
            "side-by-side",
            "bench",
            metadata={"http_listener_port": self.listener_port},
        )

    def cpu(self) -> float:
        return sovereign_peer.tree_cpu(self.server.ps)

    def rss(self) -> float:
        return sovereign_peer.tree_rss(self.server.ps)

    def close(self) -> float | None:
        return self.server.close()

    def tail(self) -> str:
        return self.server.tail()


class SovereignPeer:
    name = "sovereign"

    def __init__(self, workdir: Path, o: Options):
        self.path = workdir / f"services.{o.format}"
        self.fmt = o.format
        self.peer = sovereign_peer.Sovereign(
            Path(o.sovereign_venv), workdir, self.path, o.refresh, o.sovereign_workers, o.format
        )
        self.timeout = o.timeout
        self.refresh = o.refresh
        self.listener_port = free_port()

    def text(self, reg: Registry) -> str:
        return file_text(reg, self.fmt, wrapped=False)

    def start(self) -> float:
        self.peer.start()
        try:
            return self.peer.wait_ready(self.timeout)
        except sovereign_peer.PeerError as exc:
            raise BenchError(str(exc)) from None

    def bootstrap(self, admin_port: int) -> dict[str, Any]:
        return sovereign_peer.bootstrap(
            self.peer.port, admin_port, self.listener_port, self.refresh
        )

    def cpu(self) -> float:
        return self.peer.cpu()

    def rss(self) -> float:
        return self.peer.rss()

    def close(self) -> float | None:
        return self.peer.close()

    def tail(self) -> str:
        return self.peer.tail()


# -- Envoy --------------------------------------------------------------------------------


@contextlib.contextmanager
def envoy(bootstrap: Callable[[int], dict[str, Any]], log: Path) -> Iterator[EnvoyProcess]:
    """An Envoy started (spawned, not waited for) with ``bootstrap(admin_port)``; stopped
    after, whatever happens."""
    env = EnvoyProcess(log_level="warn")
    try:
        env.start(bootstrap(free_port()), log)
        yield env
    finally:
        env.stop()


def time_to_active(
    bootstrap: Callable[[int], dict[str, Any]],
    log: Path,
    want: dict[str, int],
    dump: str,
    timeout: float,
) -> float:
    """Seconds from a new Envoy's spawn to every cluster of `want` active."""
    with envoy(bootstrap, log) as env:
        t0 = time.monotonic()
        return EnvoyWatch(env, dump).wait_all_active(want, timeout) - t0


def static_bootstrap(reg: Registry) -> Callable[[int], dict[str, Any]]:
    """The floor's Envoy: the registry's clusters, endpoints inline, in its bootstrap."""
    clusters = sovereign_templates.clusters(entries(reg))

    def bootstrap(admin_port: int) -> dict[str, Any]:
        admin = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}}
        return {
            "node": {"id": "side-by-side-static", "cluster": "bench"},
            "static_resources": {"clusters": clusters},
            "admin": admin,
        }

    return bootstrap


# -- one server ---------------------------------------------------------------------------


def _sleep_until(at: float) -> None:
    time.sleep(max(0.0, at - time.monotonic()))


def run_peer(peer: Peer, o: Options, workdir: Path) -> dict[str, Any]:
    reg = registry(o.services, o.endpoints)
    res: dict[str, Any] = {"server": peer.name}
    write_atomically(peer.path, peer.text(seed_only(reg)))
    res["ready_s"] = round(peer.start(), 3)

    with envoy(peer.bootstrap, workdir / f"envoy-{peer.name}.log") as env:
        watch = EnvoyWatch(env, DYNAMIC)
        watch.wait_all_active(expected(seed_only(reg)), o.timeout)

        # hot add
        c0 = peer.cpu()
        t0 = write_atomically(peer.path, peer.text(reg))
        res["hot_add_s"] = round(watch.wait_all_active(expected(reg), o.timeout) - t0, 3)
        res["hot_add_cpu_s"] = round(peer.cpu() - c0, 3)
        time.sleep(o.settle)

        # edits
        rng = random.Random(o.seed)
        targets = rng.sample(sorted(n for n in reg.services if n != SEED), o.edits)
        edits = []
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
            edits.append(
                {
                    "service": name,
                    "address": address,
                    "applied_ms": round((applied - t0) * 1000, 1),
                    "cpu_s": round(c1 - c0, 3),
                    "window_s": round(t1 - t0, 3),
                }
            )
            next_at = max(t0 + o.edit_interval, time.monotonic()) + rng.uniform(0.0, 1.0)
        res["edits"] = edits

        # steady
        c0, t0 = peer.cpu(), time.monotonic()
        time.sleep(o.steady)
        res["steady_cpu_s_per_s"] = round((peer.cpu() - c0) / (time.monotonic() - t0), 4)
        res["rss_mb"] = round(peer.rss() / MB, 1)
        res["envoy"] = envoy_counters(env)

    # Fresh Envoys, each paired with a floor run just before it (so the machine's load
    # drifts alike for both): the server is up and idle meanwhile.
    log = workdir / f"envoy-{peer.name}-fresh.log"
    floor_log = workdir / "envoy-static.log"
    want = expected(reg)
    floor, fresh = [], []
    for _ in range(o.fresh_runs):
        floor.append(time_to_active(static_bootstrap(reg), floor_log, want, STATIC, o.timeout))
        fresh.append(time_to_active(peer.bootstrap, log, want, DYNAMIC, o.timeout))
    res["floor_s"] = [round(t, 3) for t in floor]
    res["fresh_s"] = [round(t, 3) for t in fresh]
    res["fresh_over_floor"] = round(
        statistics.median(a / b for a, b in zip(fresh, floor, strict=True)), 3
    )
    res["rss_end_mb"] = round(peer.rss() / MB, 1)
    return res


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
                else SovereignPeer(peer_dir, o)
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
