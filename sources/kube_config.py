"""How to reach the Kubernetes API: a kubeconfig file, or the in-cluster service account.

Parsed here rather than with the `kubernetes` client's config loader: that loader pulls
in the whole client (and its slow models, DESIGN §6) to produce a URL, TLS settings and
a bearer token, which is all the source needs. Supported: `server`,
`certificate-authority(-data)`, `insecure-skip-tls-verify`, `client-certificate(-data)`
+ `client-key(-data)`, `token`, `tokenFile`, `username`/`password`, contexts with their
`namespace`, `current-context`, and several files in `KUBECONFIG` (the first file to set
a name wins, as kubectl merges them). `exec` and `auth-provider` plugins are refused
with a clear message. Every problem is one line naming the file and what is wrong.

Where the configuration comes from, in order: an explicit path (`--kubeconfig`), the
`KUBECONFIG` variable, `~/.kube/config` if it exists, else the in-cluster service
account (`KUBERNETES_SERVICE_HOST`/`_PORT` and
`/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`).
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeConfigError(Exception):
    """The API server cannot be configured; the message is one line for the operator."""


@dataclass(frozen=True)
class KubeConnection:
    """Where the API server is and how to authenticate to it."""

    server: str  # base URL, no trailing slash
    ssl_context: ssl.SSLContext | None  # None: plain http (only for local emulators)
    token: str | None = None
    token_file: Path | None = None  # re-read on every request: projected tokens rotate
    basic_auth: tuple[str, str] | None = None
    namespace: str = "default"  # the context's (or service account's) namespace
    origin: str = ""  # "kubeconfig <path> context <name>" or "in-cluster", for logs

    def headers(self) -> dict[str, str]:
        token = self.token
        if self.token_file is not None:
            try:
                token = self.token_file.read_text().strip()
            except OSError as exc:
                raise KubeConfigError(
                    f"cannot read token file {self.token_file}: {exc.strerror}"
                ) from exc
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self.basic_auth is not None:
            raw = f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        return {}


def resolve(
    kubeconfig: Path | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
) -> KubeConnection:
    """The connection the settings and the environment call for (see the module doc)."""
    env = os.environ if environ is None else environ
    if kubeconfig is not None:
        return from_kubeconfig([kubeconfig], context)
    if env.get("KUBECONFIG"):
        paths = [Path(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
        return from_kubeconfig(paths, context)
    default = (home if home is not None else Path.home()) / ".kube" / "config"
    if default.exists():
        return from_kubeconfig([default], context)
    if env.get("KUBERNETES_SERVICE_HOST"):
        if context:
            raise KubeConfigError(f"--context {context}: no kubeconfig to choose it from")
        return in_cluster(env, service_account_dir)
    raise KubeConfigError(
        "no Kubernetes configuration: give --kubeconfig, set KUBECONFIG, create "
        "~/.kube/config, or run in a pod (KUBERNETES_SERVICE_HOST)"
    )


def in_cluster(
    environ: Mapping[str, str], service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> KubeConnection:
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = service_account_dir / "token"
    ca = service_account_dir / "ca.crt"
    if not token.exists():
        raise KubeConfigError(f"in-cluster: service account token {token} is missing")
    if ":" in host:  # an IPv6 address needs brackets in a URL
        host = f"[{host}]"
    try:
        ctx = ssl.create_default_context(cafile=str(ca) if ca.exists() else None)
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(f"in-cluster: cannot load {ca}: {exc}") from exc
    try:
        namespace = (service_account_dir / "namespace").read_text().strip() or "default"
    except OSError:
        namespace = "default"
    return KubeConnection(
        server=f"https://{host}:{port}",
        ssl_context=ctx,
        token_file=token,
        namespace=namespace,
        origin="in-cluster service account",
    )


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise KubeConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KubeConfigError(f"{path}: not a kubeconfig (expected a mapping)")
    return data


def _named(doc: dict[str, Any], key: str, path: Path, into: dict[str, tuple[Path, Any]]) -> None:
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise KubeConfigError(f"{path}: {key}: expected a list")
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise KubeConfigError(f"{path}: {key}: every entry needs a name")
        into.setdefault(item["name"], (path, item.get(key[:-1]) or {}))


def from_kubeconfig(paths: list[Path], context: str | None = None) -> KubeConnection:
    """The connection of `context` (default: current-context) in the merged files."""
    contexts: dict[str, tuple[Path, Any]] = {}
    clusters: dict[str, tuple[Path, Any]] = {}
    users: dict[str, tuple[Path, Any]] = {}
    current: str | None = None
    where = ", ".join(str(p) for p in paths)
    for path in paths:
        if len(paths) > 1 and not path.exists():
            continue  # kubectl ignores missing files in a KUBECONFIG list
        doc = _load(path)
        _named(doc, "contexts", path, contexts)
        _named(doc, "clusters", path, clusters)
        _named(doc, "users", path, users)
        if current is None and doc.get("current-context"):
            current = str(doc["current-context"])
    name = context or current
    if not name:
        raise KubeConfigError(f"{where}: no current-context; choose one with --context")
    if name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise KubeConfigError(f"{where}: no context {name!r} (known: {known})")
    ctx_path, ctx = contexts[name]
    if not isinstance(ctx, dict) or not ctx.get("cluster"):
        raise KubeConfigError(f"{ctx_path}: context {name!r} names no cluster")
    cluster_name = ctx["cluster"]
    if cluster_name not in clusters:
        raise KubeConfigError(f"{ctx_path}: context {name!r}: no cluster {cluster_name!r}")
    cl_path, cluster = clusters[cluster_name]
    user_name = ctx.get("user")
    user: dict[str, Any] = {}
    us_path = ctx_path
    if user_name:
        if user_name not in users:
            raise KubeConfigError(f"{ctx_path}: context {name!r}: no user {user_name!r}")
        us_path, user = users[user_name]
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith(("https://", "http://")):
        raise KubeConfigError(
            f"{cl_path}: cluster {cluster_name!r}: server must be an http(s) URL, "
            f"got {server or 'nothing'!r}"
        )
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            raise KubeConfigError(
                f"{us_path}: user {user_name!r} uses an {plugin} credential plugin, which "
                "xds-server does not run; use a token, tokenFile or client certificate"
            )
    ssl_context = None
    if server.startswith("https://"):
        ssl_context = _tls(cluster, user, cl_path, us_path, cluster_name, user_name)
    token_file = user.get("tokenFile")
    basic = None
    if user.get("username") is not None:
        basic = (str(user["username"]), str(user.get("password") or ""))
    return KubeConnection(
        server=server,
        ssl_context=ssl_context,
        token=str(user["token"]) if user.get("token") else None,
        token_file=_relative(us_path, token_file) if token_file else None,
        basic_auth=basic,
        namespace=str(ctx.get("namespace") or "default"),
        origin=f"kubeconfig {ctx_path} context {name}",
    )


def _relative(base: Path, value: Any) -> Path:
    """kubeconfig paths are relative to the file that names them."""
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else base.parent / p


def _data(value: Any, what: str, where: Path) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KubeConfigError(f"{where}: {what}: not valid base64") from exc


def _tls(
    cluster: dict[str, Any],
    user: dict[str, Any],
    cl_path: Path,
    us_path: Path,
    cluster_name: str,
    user_name: str | None,
) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    try:
        if cluster.get("insecure-skip-tls-verify"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif cluster.get("certificate-authority-data"):
            what = f"cluster {cluster_name!r} certificate-authority-data"
            pem = _data(cluster["certificate-authority-data"], what, cl_path)
            ctx.load_verify_locations(cadata=pem.decode("ascii", "replace"))
        elif cluster.get("certificate-authority"):
            ca = _relative(cl_path, cluster["certificate-authority"])
            ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(
            f"{cl_path}: cluster {cluster_name!r}: cannot load its certificate authority: {exc}"
        ) from exc
    cert = _pem(user, "client-certificate", us_path, user_name)
    key = _pem(user, "client-key", us_path, user_name)
    if (cert is None) != (key is None):
        raise KubeConfigError(
            f"{us_path}: user {user_name!r}: client-certificate and client-key go together"
        )
    if cert is not None and key is not None:
        # ssl loads a certificate chain from files only: write inline data to a private
        # temporary directory for the moment it takes.
        with tempfile.TemporaryDirectory(prefix="xds-kube-") as tmp:
            cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            for p, content in ((cert_path, cert), (key_path, key)):
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(content)
            try:
                ctx.load_cert_chain(str(cert_path), str(key_path))
            except (OSError, ssl.SSLError) as exc:
                raise KubeConfigError(
                    f"{us_path}: user {user_name!r}: unusable client certificate/key: {exc}"
                ) from exc
    return ctx


def _pem(user: dict[str, Any], key: str, where: Path, user_name: str | None) -> bytes | None:
    if user.get(key + "-data"):
        return _data(user[key + "-data"], f"user {user_name!r} {key}-data", where)
    if user.get(key):
        path = _relative(where, user[key])
        try:
            return path.read_bytes()
        except OSError as exc:
            raise KubeConfigError(
                f"{where}: user {user_name!r}: cannot read {key} {path}: {exc.strerror}"
            ) from exc
    return None
