"""Pytest fixtures over the harness; every process/server they start is stopped in ``finally``.

Enable with ``pytest_plugins = ["tests.harness.fixtures"]`` in a test module or the
top-level conftest. Each fixture is a factory, so a test can start several.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .backends import GrpcBackend, HttpBackend, RequestLoop
from .envoy import EnvoyProcess
from .grpc_xds import GrpcXdsClient
from .server_proc import XdsServerProcess

T = TypeVar("T")
EnvoyFactory = Callable[..., EnvoyProcess]


class Started:
    """What one factory fixture started: every stop runs at teardown even if one raises."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.count = 0

    def keep(self, thing: T, stop: Callable[[], object]) -> T:
        """Register `stop` before the thing starts, so a failed start is cleaned up too."""
        self.count += 1
        self.stack.callback(stop)
        return thing


@contextlib.contextmanager
def started() -> Iterator[Started]:
    with contextlib.ExitStack() as stack:
        yield Started(stack)


@pytest.fixture
def envoy_factory(tmp_path: Path) -> Iterator[EnvoyFactory]:
    """``start(bootstrap, name="envoy", wait="admin"|"ready"|None, timeout=15, **opts)``.

    ``opts`` go to :class:`EnvoyProcess` (``log_level``, ``extra_args``, ...).
    Logs land in ``tmp_path/<name>-<n>.log``; all Envoys are stopped at teardown.
    """

    def start(
        bootstrap: dict[str, Any],
        name: str = "envoy",
        wait: str | None = "admin",
        timeout: float = 15.0,
        **opts: Any,
    ) -> EnvoyProcess:
        env = EnvoyProcess(**opts)
        kept.keep(env, env.stop)
        env.start(bootstrap, tmp_path / f"{name}-{kept.count}.log")
        if wait == "admin":
            env.wait_admin(timeout)
        elif wait == "ready":
            env.wait_ready(timeout)
        elif wait is not None:
            raise ValueError(f"wait must be 'admin', 'ready' or None, not {wait!r}")
        return env

    with started() as kept:
        yield start


@pytest.fixture
def http_backend_factory() -> Iterator[Callable[..., HttpBackend]]:
    """``start(name, **kwargs) -> HttpBackend`` (started); all stopped at teardown."""

    def start(name: str, **kwargs: Any) -> HttpBackend:
        backend = HttpBackend(name, **kwargs)
        return kept.keep(backend, backend.stop).start()

    with started() as kept:
        yield start


@pytest.fixture
def grpc_backend_factory() -> Iterator[Callable[..., GrpcBackend]]:
    """``start(name, **kwargs) -> GrpcBackend`` (started); all stopped at teardown."""

    def start(name: str, **kwargs: Any) -> GrpcBackend:
        backend = GrpcBackend(name, **kwargs)
        return kept.keep(backend, backend.stop).start()

    with started() as kept:
        yield start


@pytest.fixture
def request_loop_factory() -> Iterator[Callable[..., RequestLoop]]:
    """``start(url, host_header=None, **kwargs) -> RequestLoop`` (running); stopped at teardown."""

    def start(url: str, host_header: str | None = None, **kwargs: Any) -> RequestLoop:
        loop = RequestLoop(url, host_header, **kwargs)
        return kept.keep(loop, loop.stop).start()

    with started() as kept:
        yield start


@pytest.fixture
def grpc_xds_client_factory(tmp_path: Path) -> Iterator[Callable[..., GrpcXdsClient]]:
    """``start(bootstrap, target, name="grpc-client", **kwargs) -> GrpcXdsClient`` (running).

    Each client is its own subprocess (gRPC caches the xDS bootstrap per
    process); logs in ``tmp_path/<name>-<n>.log``; all stopped at teardown.
    """

    def start(
        bootstrap: dict[str, Any], target: str, name: str = "grpc-client", **kwargs: Any
    ) -> GrpcXdsClient:
        kwargs.setdefault("log_path", tmp_path / f"{name}-{kept.count + 1}.log")
        client = GrpcXdsClient(bootstrap, target, **kwargs)
        return kept.keep(client, client.close).start()

    with started() as kept:
        yield start


@pytest.fixture
def xds_server_factory(tmp_path: Path) -> Iterator[Callable[..., XdsServerProcess]]:
    """``start(*args, name="xds-server", wait_ready=True, timeout=20, **kwargs)``.

    ``args`` are xds-server flags (the xDS and admin addresses are added on free ports);
    ``kwargs`` go to :class:`XdsServerProcess`. Logs in ``tmp_path/<name>-<n>.log``;
    all stopped at teardown.
    """

    def start(
        *args: str,
        name: str = "xds-server",
        wait_ready: bool = True,
        timeout: float = 20.0,
        **kwargs: Any,
    ) -> XdsServerProcess:
        kwargs.setdefault("log_path", tmp_path / f"{name}-{kept.count + 1}.log")
        server = XdsServerProcess(*args, **kwargs)
        return kept.keep(server, server.stop).start(timeout=timeout, wait_ready=wait_ready)

    with started() as kept:
        yield start
