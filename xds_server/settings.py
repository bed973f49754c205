"""`xds-server` settings: one set of keys from a config file, `XDS_SERVER_*` and flags.

Precedence is the usual one: command-line flags over environment variables over the
config file (`--config`, YAML or JSON) over defaults. Keys are the flag names with
underscores (`xds_address`; `xds-address` is accepted in the file too). Every value
is validated by one pydantic model, and an error names the setting, where it came
from and why, on one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

from xds_server import admin_auth

ENV_PREFIX = "XDS_SERVER_"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


class SettingsError(Exception):
    """A setting that cannot be used; the message is one line for the operator."""


def _duration(value: Any) -> Any:
    """Seconds as a number, or a Go/Envoy-style duration string: `100ms`, `1.5s`, `2m`."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"not a duration: {value!r} (e.g. 100ms, 1s, 2m)")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


def _names(value: Any) -> Any:
    """A list, or the same as one comma-separated string (how flags and env vars give it)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
Names = Annotated[tuple[str, ...], BeforeValidator(_names)]
Paths = Annotated[tuple[Path, ...], BeforeValidator(_names)]


def _setting(default: Any, metavar: str, help: str, **constraints: Any) -> Any:
    """A setting's default, and how `xds-server --help` presents it."""
    return Field(default, description=help, json_schema_extra={"metavar": metavar}, **constraints)


class Settings(BaseModel):
    """Every setting; `xds-server` derives its flags and their help from these fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    xds_address: str = _setting("0.0.0.0:18000", "HOST:PORT", "gRPC xDS listen address")
    admin_address: str = _setting(
        "127.0.0.1:19000",
        "HOST:PORT",
        "admin HTTP listen address: health, metrics, debug; anything but loopback needs"
        " --admin-token or --admin-token-file",
    )
    admin_token: SecretStr | None = _setting(
        None,
        "TOKEN",
        "bearer token the admin API requires (Authorization: Bearer TOKEN; xdsctl reads"
        " XDSCTL_TOKEN) for all but /healthz, /readyz and /metrics; required when"
        " --admin-address is not loopback",
    )
    admin_token_file: Path | None = _setting(
        None,
        "PATH",
        "read --admin-token from this file at start, e.g. a mounted Kubernetes Secret;"
        " surrounding whitespace is ignored",
    )
    xds_tls_cert: Path | None = _setting(
        None,
        "PATH",
        "TLS on the xDS port: the server certificate chain (PEM), re-read when it changes;"
        " with --xds-tls-key",
    )
    xds_tls_key: Path | None = _setting(
        None, "PATH", "the private key (PEM) of --xds-tls-cert, re-read when it changes"
    )
    xds_client_ca: Path | None = _setting(
        None,
        "PATH",
        "mutual TLS on the xDS port: CA bundle (PEM) that verifies client certificates;"
        " each node's metadata NAMESPACE and SERVICE_ACCOUNT must then match its"
        " certificate's SPIFFE ID",
    )
    xds_insecure: bool = _setting(
        False,
        "",
        "serve xDS in plaintext: no encryption, and any client may ask for any node's"
        " configuration; without it the xDS port needs --xds-tls-cert/--xds-tls-key",
    )
    ca_dir: Path | None = _setting(
        None,
        "DIR",
        "the built-in CA in Istio's cacerts layout (root-cert.pem, ca-cert.pem, ca-key.pem,"
        " cert-chain.pem); created on the first start if empty (xds-server ca init); serves"
        " workload certificates over SDS; reloaded when its files change (ca rotate)",
    )
    ca_cert: Path | None = _setting(
        None,
        "PATH",
        "plug in an existing CA: its certificate (root-cert.pem and cert-chain.pem beside"
        " it are used when present); with --ca-key; serves workload certificates over SDS",
    )
    ca_key: Path | None = _setting(None, "PATH", "the private key of --ca-cert")
    file: Path | None = _setting(None, "PATH", "file registry: YAML/JSON services, watched")
    file_interval: Duration = _setting(
        1.0,
        "DURATION",
        "safety re-check of the watched --file and --policy files; the poll interval "
        "where OS file notifications are unavailable",
    )
    file_watch: Literal["auto", "poll"] = _setting(
        "auto",
        "MODE",
        "auto: OS file notifications, polling where unavailable (or WATCHFILES_FORCE_POLLING "
        "is set); poll: always poll",
    )
    policy: Paths = _setting(
        (),
        "PATH",
        "Istio VirtualService/DestinationRule YAML: a file or a directory of *.yaml/*.yml/"
        "*.json, watched; repeatable (comma-separated in XDS_SERVER_POLICY)",
    )
    consul: bool = _setting(
        False, "", "watch Consul's catalog, health and config entries (blocking queries)"
    )
    consul_address: str | None = _setting(
        None, "URL", "Consul HTTP API address (else CONSUL_HTTP_ADDR, else http://127.0.0.1:8500)"
    )
    consul_token: str | None = _setting(
        None, "TOKEN", "Consul ACL token (else CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE)"
    )
    consul_cacert: Path | None = _setting(
        None, "PATH", "CA bundle for Consul's TLS certificate (else CONSUL_CACERT)"
    )
    consul_client_cert: Path | None = _setting(
        None, "PATH", "client certificate for Consul mTLS (else CONSUL_CLIENT_CERT)"
    )
    consul_client_key: Path | None = _setting(
        None, "PATH", "client key for Consul mTLS (else CONSUL_CLIENT_KEY)"
    )
    consul_datacenter: str | None = _setting(
        None, "DC", "Consul datacenter to watch, if not the agent's own"
    )
    consul_services: Names = _setting(
        ("*",), "PATTERNS", "Consul services to watch: comma-separated name globs"
    )
    consul_tags: Names = _setting(
        (), "TAGS", "only Consul instances carrying all these tags (comma-separated)"
    )
    consul_wait: Duration = _setting(
        60.0, "DURATION", "Consul blocking-query wait (Consul caps it at 10m)", le=600
    )
    consul_watch_rate: float = _setting(
        500.0, "N", "new Consul blocking queries per second when many watches start", gt=0
    )
    consul_default_intention: Literal["allow", "deny"] = _setting(
        "allow",
        "ACTION",
        "what Consul intentions do with a caller none matches (Consul's ACL default"
        " policy): allow or deny",
    )
    kubernetes: bool = _setting(
        False, "", "Kubernetes: watch Services, EndpointSlices, Pod labels and the policy CRDs"
    )
    kubeconfig: Path | None = _setting(
        None, "PATH", "kubeconfig file (else KUBECONFIG, ~/.kube/config, else in-cluster)"
    )
    context: str | None = _setting(None, "NAME", "kubeconfig context (else its current-context)")
    namespaces: Names = _setting(
        (), "NS[,NS...]", "Kubernetes namespaces to watch, comma-separated (else all)"
    )
    label_selector: str | None = _setting(
        None, "SELECTOR", "only Kubernetes Services matching this label selector"
    )
    kubernetes_crd_recheck: Duration = _setting(
        300.0, "DURATION", "how often to look again for a policy CRD the cluster lacked", gt=0
    )
    registry_hold_threshold: float = _setting(
        0.5,
        "FRACTION",
        "hold a Consul/Kubernetes update that would remove more than this fraction of the"
        " source's services (0: never hold; the file registry is never held)",
        ge=0,
        le=1,
    )
    registry_hold: Duration = _setting(
        60.0, "DURATION", "how long such a removal is held before it applies, if still true"
    )
    debounce_quiet: Duration = _setting(
        0.1, "DURATION", "after a change, coalesce more until none arrived for this long"
    )
    debounce_max_delay: Duration = _setting(
        1.0, "DURATION", "push coalesced changes at the latest after this"
    )
    events_history: int = _setting(
        1000,
        "N",
        "registry/policy change events kept for /debug/events and xdsctl events, each"
        " followed to every proxy's ACK (the oldest is dropped first)",
        ge=1,
    )
    http_listener_port: Port = _setting(
        10000, "PORT", "Envoy HTTP listener port (node metadata http_listener_port overrides it)"
    )
    keepalive_time: Duration = _setting(30.0, "DURATION", "gRPC keepalive ping interval")
    max_connection_age: Duration | None = _setting(
        None, "DURATION", "ask proxies to reconnect after this long (rebalancing)"
    )
    new_streams_per_second: float = _setting(200.0, "N", "admission rate of new streams", gt=0)
    shutdown_grace: Duration = _setting(5.0, "DURATION", "time to drain streams on SIGTERM")
    trust_domain: str | None = _setting(
        None, "DOMAIN", "SPIFFE trust domain (else the CA's organization, else cluster.local)"
    )
    mesh_mtls_mode: Literal["STRICT", "PERMISSIVE", "DISABLE"] = _setting(
        "PERMISSIVE",
        "MODE",
        "sidecars' inbound mutual TLS where no PeerAuthentication applies (Istio's modes):"
        " STRICT, PERMISSIVE (TLS and plaintext) or DISABLE",
    )
    root_namespace: str = _setting(
        "istio-system",
        "NAMESPACE",
        "the namespace whose PeerAuthentication and AuthorizationPolicy objects apply"
        " mesh-wide (Istio's meshConfig.rootNamespace)",
    )
    workload_cert_ttl: Duration = _setting(
        86400.0,
        "DURATION",
        "lifetime of workload certificates; renewed at half life plus up to 10%% jitter",
        gt=0,
    )
    log_level: Literal["debug", "info", "warning", "error"] = _setting(
        "info", "LEVEL", "debug, info, warning or error"
    )
    log_format: Literal["text", "json"] = _setting("text", "FORMAT", "text or json")


KEYS: tuple[str, ...] = tuple(Settings.model_fields)
# Never quoted back in an error message.
SECRETS = frozenset({"admin_token", "consul_token"})


def admin_token(settings: Settings) -> str | None:
    """The admin API's bearer token from --admin-token or --admin-token-file, if any."""
    if settings.admin_token is not None and settings.admin_token_file is not None:
        raise SettingsError("give admin_token or admin_token_file, not both")
    if settings.admin_token_file is not None:
        path = settings.admin_token_file
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise SettingsError(f"cannot read admin_token_file {path}: {reason}") from exc
        where = f"admin_token_file {path}"
    elif settings.admin_token is not None:
        token, where = settings.admin_token.get_secret_value(), "admin_token"
    else:
        return None
    why = admin_auth.valid_token(token)
    if why is not None:
        raise SettingsError(f"invalid {where}: {why}")
    return token


def _read_config(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise SettingsError(f"{where}: invalid YAML: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{path}: expected a mapping of settings at the top level")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load(
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config: Path | None = None,
) -> Settings:
    """Settings from `flags` (only those given), the environment and a config file."""
    env = os.environ if environ is None else environ
    if config is None and env.get(ENV_PREFIX + "CONFIG"):
        config = Path(env[ENV_PREFIX + "CONFIG"])
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if config is not None:
        for key, value in _read_config(config).items():
            values[key] = value
            origin[key] = f"config file {config}"
    for key in KEYS:
        name = ENV_PREFIX + key.upper()
        if name in env:
            values[key] = env[name] if env[name] != "" else None
            origin[key] = f"environment variable {name}"
    for key, value in flags.items():
        values[key] = value
        origin[key] = "--" + key.replace("_", "-")
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "settings"
        if err["type"] == "extra_forbidden":
            raise SettingsError(
                f"unknown setting {key!r} in {origin.get(key, 'settings')}"
                f" (known: {', '.join(KEYS)})"
            ) from exc
        msg = err["msg"].removeprefix("Value error, ")
        raise SettingsError(
            f"invalid {key} from {origin.get(key, 'defaults')}: {msg}"
            + (
                f" (got {err['input']!r})"
                if err["type"] != "value_error" and key in values and key not in SECRETS
                else ""
            )
        ) from exc
