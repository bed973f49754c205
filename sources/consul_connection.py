"""Where Consul is and how to reach it: the Consul source's settings, resolved as the
Consul CLI resolves them (flags first, then CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN(_FILE),
CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CLIENT_CERT and
CONSUL_CLIENT_KEY), the one-line description of a failed query, and the pieces of a
blocking-query watch every Consul watch shares (its index, pacing, the pause between
queries, and which errors mean Consul is down).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import consul

DEFAULT_ADDRESS = "http://127.0.0.1:8500"
_DEFAULT_PORTS = {"http": 8500, "https": 8501}
# Retries after errors: exponential from BACKOFF_BASE, at most BACKOFF_CAP apart.
BACKOFF_BASE = 0.2
BACKOFF_CAP = 10.0
MIN_INTERVAL = 0.1  # between two queries of one watch: Consul asks clients to rate-limit


class ConsulConfigError(ValueError):
    """A Consul setting that cannot be used; the message is one line."""


@dataclass(frozen=True)
class ConsulConfig:
    """Where Consul is and what to watch, resolved from settings and CONSUL_* variables."""

    address: str = DEFAULT_ADDRESS
    token: str | None = None
    cacert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    verify: bool = True
    datacenter: str | None = None
    services: tuple[str, ...] = ("*",)
    tags: tuple[str, ...] = ()
    wait: float = 60.0
    watch_rate: float = 500.0

    @property
    def read_timeout(self) -> float:
        return self.wait * 17 / 16 + 5.0

    @property
    def wait_param(self) -> str:
        return f"{max(1, round(self.wait * 1000))}ms"

    @classmethod
    def resolve(
        cls,
        environ: Mapping[str, str],
        *,
        address: str | None = None,
        token: str | None = None,
        cacert: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        **rest: Any,
    ) -> ConsulConfig:
        """Settings first, then the Consul CLI's environment variables, then defaults."""
        ssl = environ.get("CONSUL_HTTP_SSL", "").lower() in ("1", "true")
        raw = address or environ.get("CONSUL_HTTP_ADDR") or DEFAULT_ADDRESS
        origin = (
            "--consul-address" if address else "CONSUL_HTTP_ADDR" if raw != DEFAULT_ADDRESS else ""
        )
        if token is None:
            token = environ.get("CONSUL_HTTP_TOKEN") or None
        if token is None and environ.get("CONSUL_HTTP_TOKEN_FILE"):
            token_file = environ["CONSUL_HTTP_TOKEN_FILE"]
            try:
                token = Path(token_file).read_text().strip() or None
            except OSError as exc:
                raise ConsulConfigError(
                    f"cannot read CONSUL_HTTP_TOKEN_FILE {token_file}: {exc.strerror}"
                ) from exc
        cacert = cacert or _env_path(environ, "CONSUL_CACERT")
        client_cert = client_cert or _env_path(environ, "CONSUL_CLIENT_CERT")
        client_key = client_key or _env_path(environ, "CONSUL_CLIENT_KEY")
        if (client_cert is None) != (client_key is None):
            raise ConsulConfigError(
                "a Consul client certificate needs its key and the key its certificate"
                " (--consul-client-cert/CONSUL_CLIENT_CERT, --consul-client-key/CONSUL_CLIENT_KEY)"
            )
        for path in (cacert, client_cert, client_key):
            if path is not None and not path.is_file():
                raise ConsulConfigError(f"Consul TLS file {path} does not exist")
        verify = environ.get("CONSUL_HTTP_SSL_VERIFY", "").lower() not in ("0", "false")
        return cls(
            address=_normalise(raw, ssl, origin),
            token=token,
            cacert=cacert,
            client_cert=client_cert,
            client_key=client_key,
            verify=verify,
            **rest,
        )


def _env_path(environ: Mapping[str, str], name: str) -> Path | None:
    return Path(environ[name]) if environ.get(name) else None


def _normalise(address: str, ssl: bool, origin: str) -> str:
    """`host:port`, `http://host:port` or `https://host` → `scheme://host:port`."""
    where = f" (from {origin})" if origin else ""
    text = address if "://" in address else ("https://" if ssl else "http://") + address
    parts = urlsplit(text)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ConsulConfigError(
            f"Consul address {address!r}{where}: scheme must be http or https"
            " (unix sockets are not supported)"
        )
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ConsulConfigError(f"Consul address {address!r}{where}: invalid port") from exc
    if not parts.hostname:
        raise ConsulConfigError(f"Consul address {address!r}{where}: no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{port}"


def describe(exc: BaseException, config: ConsulConfig) -> str:
    """One line an operator can act on, for any error a query can end with."""
    where = f"Consul at {config.address}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return f"cannot reach {where}: {reason}"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return f"{where} closed the connection"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer from {where} within {config.read_timeout:g}s"
    if isinstance(exc, (consul.ACLPermissionDenied, consul.ACLDisabled)):
        return (
            f"{where} refused the request: {exc}"
            " (check --consul-token / CONSUL_HTTP_TOKEN and its policy)"
        )
    if isinstance(exc, consul.ConsulException):
        return f"{where}: {exc}"
    if isinstance(exc, aiohttp.ClientError):
        return f"{where}: {type(exc).__name__}: {exc}"
    return f"{where}: unexpected {type(exc).__name__}: {exc}"


class BlockingIndex:
    """A watch's X-Consul-Index, with Consul's rules for resets and the 0 bug."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, header: str | int | None) -> bool:
        """Takes the index of a response; False if it went backwards (watch reset)."""
        try:
            new = int(header) if header is not None else 0
        except ValueError:
            new = 0
        if new < self.value:
            self.value = 0
            return False
        self.value = max(new, 1)
        return True


class Pacer:
    """Spreads starts evenly at `rate` per second, in the order they asked."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


async def pause(started: float) -> None:
    """Keeps a watch `MIN_INTERVAL` between two queries."""
    delay = started + MIN_INTERVAL - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def consul_down(exc: BaseException) -> bool:
    """Whether a failed query means Consul itself cannot answer (every watch would fail
    the same way), rather than this query failing."""
    if isinstance(exc, consul.ConsulException) and str(exc)[:1] == "5":
        return True  # "500 No cluster leader", "500 rpc error" from a server going away
    return isinstance(exc, (aiohttp.ClientConnectionError, asyncio.TimeoutError, consul.Timeout))
