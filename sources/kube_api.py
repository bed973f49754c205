"""The Kubernetes API server as the Kubernetes source requests it: resource paths,
timeouts and backoff (`Timing`), one list+watch loop's state (`Resource`), how a
refused request or a failure reads (`check`, `describe`), and a watch stream's lines
(`watch_lines`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import aiohttp

Key = tuple[str, str]  # (namespace, name)
Kind = Literal[
    "services", "endpointslices", "pods",
    # custom resources the policy source watches (sources.kube_policies)
    "virtualservices", "destinationrules", "httproutes", "grpcroutes",
    "authorizationpolicies", "peerauthentications",
]  # fmt: skip


class Gone(Exception):
    """410 Gone: the resourceVersion is too old to watch from; relist."""


class ApiError(Exception):
    """The API server refused a request; the message is one line."""


class NotFound(ApiError):
    """404: the API server does not serve this resource (a CRD not installed)."""


CUSTOM_KINDS = frozenset(
    {"virtualservices", "destinationrules", "httproutes", "grpcroutes"}
    | {"authorizationpolicies", "peerauthentications"}
)


@dataclass(frozen=True)
class Timing:
    """Timeouts and backoff; the defaults suit a production API server."""

    connect_timeout: float = 10.0
    request_timeout: float = 60.0  # per read of a list response
    watch_timeout: float = 240.0  # timeoutSeconds is drawn from [this, 2 x this]
    watch_read_grace: float = 30.0  # a watch read waits timeoutSeconds + this
    backoff_initial: float = 0.5
    backoff_max: float = 5.0
    page_size: int = 500


DEFAULT_TIMING = Timing()


@dataclass
class Resource:
    """One list+watch loop: a resource kind in one namespace (or all)."""

    kind: Kind
    namespace: str | None
    path: str
    selector: str | None
    rv: str | None = None
    listed: bool = False
    error: str | None = None

    @property
    def label(self) -> str:
        return self.kind + (f" in namespace {self.namespace}" if self.namespace else "")

    def owns(self, key: Key) -> bool:
        return self.namespace is None or key[0] == self.namespace


def resource_path(kind: Kind, namespace: str | None) -> str:
    base = "/apis/discovery.k8s.io/v1" if kind == "endpointslices" else "/api/v1"
    return f"{base}/namespaces/{namespace}/{kind}" if namespace else f"{base}/{kind}"


async def check(resp: aiohttp.ClientResponse, what: str) -> None:
    if resp.status == 200:
        return
    if resp.status == 410:
        raise Gone
    try:
        body = json.loads(await resp.read())
        message = str(body.get("message") or body.get("reason") or "")
    except (ValueError, AttributeError, aiohttp.ClientError):
        message = ""
    hint = {
        401: " (check the token or client certificate)",
        403: " (needs get/list/watch on services and endpointslices, list/watch on pods)",
    }.get(resp.status, "")
    if resp.status == 403 and what.split()[1:2] and what.split()[1] in CUSTOM_KINDS:
        hint = f" (needs list/watch on {what.split()[1]})"
    if resp.status == 404 and "endpointslices" in what:
        hint = " (discovery.k8s.io/v1 EndpointSlices need Kubernetes 1.21+)"
    error = NotFound if resp.status == 404 else ApiError
    raise error(f"{what}: HTTP {resp.status}{': ' + message if message else ''}{hint}")


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


async def watch_lines(resp: aiohttp.ClientResponse) -> AsyncIterator[list[bytearray]]:
    """A watch response's complete lines (one event each), as they arrive, in batches.

    Split here rather than with readline(): aiohttp caps a line at 128 KiB, and one
    object with big annotations can exceed that."""
    pending = bytearray()
    async for chunk in resp.content.iter_any():
        pending += chunk
        if b"\n" not in chunk:
            continue
        *lines, rest = pending.split(b"\n")
        pending = bytearray(rest)
        yield lines
