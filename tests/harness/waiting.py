"""Polling helpers with hard timeouts for sync and async tests."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def _failure(message: str, timeout: float, last_exc: BaseException | None, last: object) -> str:
    text = f"timed out after {timeout:.1f}s: {message}"
    if last_exc is not None:
        text += f" (last exception: {type(last_exc).__name__}: {last_exc})"
    elif last is not None:
        text += f" (last value: {last!r})"
    return text


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Exceptions raised by ``predicate`` count as "not yet". On timeout raise
    AssertionError naming ``message`` and the last exception or falsy value.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as exc:
            last_exc = exc
        else:
            if value:
                return value
            last_exc, last = None, value
        if time.monotonic() >= deadline:
            raise AssertionError(_failure(message, timeout, last_exc, last))
        time.sleep(interval)


async def async_wait_for(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float,
    interval: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Async twin of :func:`wait_for`; ``predicate`` may be sync or async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_exc: BaseException | None = None
    last: object = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                remaining = max(deadline - loop.time(), 0.001)
                value: T = await asyncio.wait_for(result, remaining)
            else:
                value = result
        except Exception as exc:
            last_exc = exc
        else:
            if value:
                return value
            last_exc, last = None, value
        if loop.time() >= deadline:
            raise AssertionError(_failure(message, timeout, last_exc, last))
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_task(coro: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """Run ``coro`` as a task for the block; cancel it after and check it did not die."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled()  # it ran until cancelled, never died of an exception
