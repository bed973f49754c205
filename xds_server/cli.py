"""`xds-server` entry point: settings, logging, wiring the parts together, signals.

sources → catalog → debouncer → controller → snapshot cache → gRPC sessions, with the
admin HTTP server beside them (DESIGN §2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from sources.consul import ConsulConfig, ConsulConfigError, ConsulSource
from sources.file import FileRegistryError, FileSource
from sources.hold import HoldPolicy
from sources.kube_config import KubeConfigError
from sources.kube_config import resolve as kube_connection
from sources.kube_policies import KubePolicySource
from sources.kube_route_status import service_ports
from sources.kube_route_status_writer import RouteStatusWriter
from sources.kubernetes import KubernetesSource
from sources.policy_file import PolicyFileError, PolicyFileSource
from translators import ProxyGroup
from translators.authz_inbound import SecurityPolicies
from translators.inbound import InboundPolicy, mesh_mode
from xds_server import __version__, admin_auth, gc_tuning, secret_rotation
from xds_server.admin import AdminServer, parse_address
from xds_server.cache import SnapshotCache
from xds_server.catalog import Catalog
from xds_server.controller import Controller
from xds_server.debounce import Debouncer
from xds_server.events import EventLog
from xds_server.grpc_server import ServerOptions, XdsServer
from xds_server.identity import cli as ca_cli
from xds_server.identity.ca import CertificateAuthority
from xds_server.identity.ca_store import open_ca
from xds_server.identity.pki import CaError
from xds_server.identity.server_tls import ServerTls, TlsFiles
from xds_server.identity.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeIdError
from xds_server.settings import Settings, SettingsError, admin_token, load
from xds_server.status import ProxyRegistry

log = logging.getLogger("xds_server")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other startup error (argparse prints the usage too).
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="xds-server",
        description="Envoy xDS control plane: registries in, SotW and delta ADS out.",
        epilog="Every setting can also be given as XDS_SERVER_<NAME> in the environment or "
        "as <name> in the --config file; flags win over the environment, which wins over "
        "the file. Durations take seconds or units: 100ms, 1s, 2m.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--version", action="version", version=f"xds-server {__version__}")
    p.add_argument(
        "--config", type=Path, metavar="PATH", help="YAML/JSON file of settings (XDS_SERVER_CONFIG)"
    )
    for key, field in Settings.model_fields.items():
        extra = field.json_schema_extra
        assert isinstance(extra, dict)
        flag = "--" + key.replace("_", "-")
        if field.annotation is bool:
            # A switch: given means true (XDS_SERVER_<NAME>=true or the file say the same).
            p.add_argument(flag, action="store_const", const=True, help=field.description)
            continue
        if key == "policy":  # repeatable: every --policy adds one more file or directory
            p.add_argument(flag, action="append", metavar="PATH", help=field.description)
            continue
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default) or "none"
        if default is None:
            default = "off"
        elif extra["metavar"] == "DURATION":
            default = f"{default * 1000:g}ms" if default < 1 else f"{default:g}s"
        help = str(field.description)
        if "(else " not in help:  # the help already says what applies when it is not set
            help += f" (default {default})"
        p.add_argument(flag, metavar=str(extra["metavar"]), help=help)
    return p


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def _fail(message: str) -> int:
    print(f"xds-server: {message}", file=sys.stderr)
    return 2


def _admin_access(settings: Settings) -> str | None:
    """The admin API's token; refuses (SettingsError) a non-loopback address without one,
    before anything starts: the debug views show every service and endpoint."""
    token = admin_token(settings)
    try:
        host, _port = parse_address(settings.admin_address)
    except ValueError as exc:
        raise SettingsError(f"invalid admin_address: {exc}") from exc
    if token is None and not admin_auth.is_loopback(host):
        raise SettingsError(
            f"admin address {settings.admin_address} is not loopback: set --admin-token or"
            " --admin-token-file (XDS_SERVER_ADMIN_TOKEN, XDS_SERVER_ADMIN_TOKEN_FILE), or"
            " bind it to 127.0.0.1"
        )
    return token


def _xds_tls(settings: Settings) -> ServerTls | None:
    """The xDS port's TLS, None for plaintext: refuses (SettingsError) to pick either for
    the operator, since plaintext lets any client read any node's configuration."""
    cert, key, client_ca = settings.xds_tls_cert, settings.xds_tls_key, settings.xds_client_ca
    if settings.xds_insecure:
        if cert is not None or key is not None or client_ca is not None:
            raise SettingsError("xds_insecure: plaintext, so give no --xds-tls-*/--xds-client-ca")
        return None
    if cert is None and key is None:
        raise SettingsError(
            "the xDS port needs --xds-tls-cert and --xds-tls-key (TLS; add --xds-client-ca"
            " for mutual TLS) or --xds-insecure (plaintext, unauthenticated)"
        )
    if cert is None or key is None:
        raise SettingsError("xds_tls_cert and xds_tls_key: give both (certificate and key)")
    try:
        return ServerTls(TlsFiles(cert, key, client_ca))
    except CaError as exc:
        raise SettingsError(f"xDS TLS: {exc}") from exc


def _certificate_authority(settings: Settings) -> CertificateAuthority | None:
    try:
        return open_ca(
            ca_dir=settings.ca_dir,
            ca_cert=settings.ca_cert,
            ca_key=settings.ca_key,
            trust_domain=settings.trust_domain or DEFAULT_TRUST_DOMAIN,
        )
    except (CaError, OSError) as exc:
        raise SettingsError(f"CA: {exc}") from exc


async def serve(
    settings: Settings,
    token: str | None = None,
    tls: ServerTls | None = None,
    ca: CertificateAuthority | None = None,
) -> int:
    catalog = Catalog()
    cache = SnapshotCache()
    registry = ProxyRegistry()
    controller = Controller(catalog, cache, http_listener_port=settings.http_listener_port)
    cache.events = EventLog(settings.events_history, clock=time.monotonic, wall=time.time)
    if ca is not None:  # workload certificates over SDS (xds_server.secrets)
        try:
            cache.secrets = secret_rotation.open_store(
                ca, settings.trust_domain, settings.workload_cert_ttl
            )
        except SpiffeIdError as exc:
            return _fail(f"--trust-domain: {exc}")
    cache.group_of = controller.group_of
    controller.inbound = InboundPolicy(mode_of=mesh_mode(settings.mesh_mtls_mode))
    controller.policy.security = SecurityPolicies(settings.mesh_mtls_mode, settings.root_namespace)
    file_source = None
    if settings.file is not None:
        file_source = FileSource(
            settings.file, catalog, interval=settings.file_interval, watch=settings.file_watch
        )
        try:
            file_source.load_once()
        except FileRegistryError as exc:
            return _fail(str(exc))
    policy_source = None
    if settings.policy:
        policy_source = PolicyFileSource(
            settings.policy, catalog, interval=settings.file_interval, watch=settings.file_watch
        )
        try:
            policy_source.load_once()
        except PolicyFileError as exc:
            return _fail(str(exc))
    hold = HoldPolicy(settings.registry_hold_threshold, settings.registry_hold)
    consul_source = None
    if settings.consul:
        try:
            consul_config = ConsulConfig.resolve(
                os.environ,
                address=settings.consul_address,
                token=settings.consul_token,
                cacert=settings.consul_cacert,
                client_cert=settings.consul_client_cert,
                client_key=settings.consul_client_key,
                datacenter=settings.consul_datacenter,
                services=settings.consul_services,
                tags=settings.consul_tags,
                wait=settings.consul_wait,
                watch_rate=settings.consul_watch_rate,
            )
        except ConsulConfigError as exc:
            return _fail(str(exc))
        consul_source = ConsulSource(catalog, consul_config, hold=hold)
        consul_source.entries.default_allow = settings.consul_default_intention == "allow"
    kube_source = None
    kube_policy_source = None
    if settings.kubernetes:
        try:
            connection = kube_connection(settings.kubeconfig, settings.context)
        except KubeConfigError as exc:
            return _fail(str(exc))
        log.info("kubernetes: API server %s (%s)", connection.server, connection.origin)
        kube_source = KubernetesSource(
            connection,
            catalog,
            namespaces=settings.namespaces,
            label_selector=settings.label_selector,
            hold=hold,
        )
        kube_policy_source = KubePolicySource(
            connection,
            catalog,
            namespaces=settings.namespaces,
            recheck=settings.kubernetes_crd_recheck,
        )
        # HTTPRoute/GRPCRoute status.parents: written by the replica holding the Lease.
        status_writer = RouteStatusWriter(connection, on_notes=kube_policy_source.set_writer_notes)
        ports = service_ports(catalog.merged)
        kube_policy_source.on_routes = lambda routes: status_writer.update(routes, ports)
        catalog.on_change(status_writer.refresh)
    if file_source is None and consul_source is None and kube_source is None:
        log.warning(
            "no registry configured (--file, --consul, --kubernetes): proxies will receive"
            " no services"
        )
    await controller.rebuild()
    # What start-up built lives for the whole run: keep it out of every later garbage
    # collection, so no collection pauses a push for long (issue 12: ≤ 20 ms).
    gc_tuning.tune_for_serving()

    server = XdsServer(
        cache,
        registry,
        options=ServerOptions(
            address=settings.xds_address,
            keepalive_time=settings.keepalive_time,
            max_connection_age=settings.max_connection_age,
            new_streams_per_second=settings.new_streams_per_second,
            shutdown_grace=settings.shutdown_grace,
            tls=tls,
        ),
    )
    if ca is not None:
        log.info(
            "CA: %s (trust domain %s)", ca.certificate.subject.rfc4514_string(), ca.trust_domain
        )
    admin = AdminServer(
        settings.admin_address,
        cache=cache,
        registry=registry,
        readiness=lambda: catalog.not_ready() + controller.not_ready(),
        warnings=lambda: catalog.stale() + catalog.holding(),
        sources=lambda: [s.as_dict() for s in catalog.sources()],
        snapshot_for=controller.snapshot_for,
        default_group=ProxyGroup(http_listener_port=settings.http_listener_port).key,
        policies=controller.policy_statuses,
        token=token,
        streams=server.stream_states,
        subset_labels=controller.subset_labels,
        rule_writer=controller.rule_writer,
    )
    try:
        await server.start()
    except (OSError, RuntimeError) as exc:
        return _fail(f"cannot listen on {settings.xds_address} (xDS): {exc}")
    try:
        await admin.start()
    except OSError as exc:
        await server.stop(0)
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return _fail(f"cannot listen on {settings.admin_address} (admin): {reason}")
    log.info("serving xDS on %s, admin on %s", settings.xds_address, settings.admin_address)

    debouncer = Debouncer(
        controller.rebuild, quiet=settings.debounce_quiet, max_delay=settings.debounce_max_delay
    )
    catalog.on_change(debouncer.notify)
    tasks = [asyncio.create_task(debouncer.run(), name="debouncer")]
    if file_source is not None:
        tasks.append(asyncio.create_task(file_source.run(), name="file-source"))
    if policy_source is not None:
        tasks.append(asyncio.create_task(policy_source.run(), name="policy-source"))
    if consul_source is not None:
        tasks.append(asyncio.create_task(consul_source.run(), name="consul-source"))
    if kube_source is not None:
        tasks.append(asyncio.create_task(kube_source.run(), name="kubernetes-source"))
    if kube_policy_source is not None:
        tasks.append(asyncio.create_task(kube_policy_source.run(), name="kubernetes-policies"))
        tasks.append(asyncio.create_task(status_writer.run(), name="kubernetes-route-status"))
    if cache.secrets is not None and settings.ca_dir is not None:
        ca_dir = secret_rotation.CaDir(settings.ca_dir)
        tasks.append(asyncio.create_task(secret_rotation.run(cache.secrets, ca_dir), name="ca"))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: ending %d streams with UNAVAILABLE", server.stream_count)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await server.stop()
    await admin.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ca"]:  # the CA's own commands (xds_server/identity/cli.py)
        return ca_cli.main(argv[1:])
    args = vars(_parser().parse_args(argv))
    config = args.pop("config", None)
    try:
        settings = load(args, config=config)
        token = _admin_access(settings)
        tls = _xds_tls(settings)
        _setup_logging(settings)  # the CA may log its creation
        ca = _certificate_authority(settings)
    except SettingsError as exc:
        return _fail(str(exc))
    return asyncio.run(serve(settings, token, tls, ca))


if __name__ == "__main__":
    sys.exit(main())
