"""Polling helpers with hard timeouts for sync and async tests.

A predicate's exception means "not yet", except :class:`GiveUp`: a predicate raises it
when waiting longer cannot help (the process it waits for has exited), and the helpers
re-raise it at once instead of spending the whole timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
Message = str | Callable[[], str]


class GiveUp(AssertionError):
    """Raised by a predicate when the condition can no longer come true; ends the wait."""


def _failure(message: Message, timeout: float, last_exc: BaseException | None, last: object) -> str:
    text = f"timed out after {timeout:.1f}s: {message() if callable(message) else message}"
    if last_exc is not None:
        text += f" (last exception: {type(last_exc).__name__}: {last_exc})"
    elif last is not None:
        text += f" (last value: {last!r})"
    return text


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: Message = "condition not met",
) -> T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Exceptions raised by ``predicate`` count as "not yet", except :class:`GiveUp`, which
    is re-raised at once. On timeout raise AssertionError naming ``message`` (a string,
    or a callable giving one, evaluated only then) and the last exception or falsy value.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    last: object = None
    while True:
        try:
            value = predicate()
        except GiveUp:
            raise
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
    message: Message = "condition not met",
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
        except GiveUp:
            raise
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
