"""Small async helpers shared by the server and the in-process API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

T = TypeVar("T")


async def merge_async_iterators(*iterators: AsyncIterator[T]) -> AsyncIterator[tuple[int, T]]:
    """Yield ``(index, item)`` from several async iterators in completion order.

    When the consumer stops early (cancel, error, close), every pending
    iterator is cancelled and closed, which aborts its engine request.
    """
    if len(iterators) == 1:
        async for item in iterators[0]:
            yield 0, item
        return

    queue: asyncio.Queue[tuple[int, T] | tuple[int, BaseException] | None] = asyncio.Queue()
    done = object()

    async def drain(index: int, it: AsyncIterator[T]) -> None:
        try:
            async for item in it:
                queue.put_nowait((index, item))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # forwarded to the consumer
            queue.put_nowait((index, _Failure(exc)))  # type: ignore[arg-type]
        finally:
            queue.put_nowait((index, done))  # type: ignore[arg-type]

    tasks = [asyncio.create_task(drain(i, it)) for i, it in enumerate(iterators)]
    remaining = len(tasks)
    try:
        while remaining:
            index, item = await queue.get()  # type: ignore[misc]
            if item is done:
                remaining -= 1
                continue
            if isinstance(item, _Failure):
                raise item.exc
            yield index, item  # type: ignore[misc]
    finally:
        # Cancel first (the CancelledError reaches each generator where it
        # awaits, so the engine aborts its request), then close what is left.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for it in iterators:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    pass


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException):
        self.exc = exc


async def merge_async_iterators_as_added(
    sources: AsyncIterator[AsyncIterator[T]],
) -> AsyncIterator[tuple[int, T]]:
    """Like ``merge_async_iterators``, for iterators that become available over time.

    ``sources`` yields the iterators (the i-th one gets index i); each starts
    being drained as soon as it is yielded, so its items flow while later
    ones are still being produced (a plugin streaming prompts as it decodes
    its input). An error from ``sources`` ends the merge with that error;
    stopping early cancels and closes everything, like the fixed version.
    """
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    done = object()
    tasks: list[asyncio.Task[None]] = []
    iterators: list[AsyncIterator[T]] = []

    async def drain(index: int, it: AsyncIterator[T]) -> None:
        try:
            async for item in it:
                queue.put_nowait((index, item))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # forwarded to the consumer
            queue.put_nowait((index, _Failure(exc)))
        finally:
            queue.put_nowait((index, done))

    async def feed() -> None:
        try:
            async for it in sources:
                iterators.append(it)
                tasks.append(asyncio.create_task(drain(len(iterators) - 1, it)))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            queue.put_nowait((-1, _Failure(exc)))
        finally:
            queue.put_nowait((-1, done))

    feeder = asyncio.create_task(feed())
    feeding = True
    finished = 0
    try:
        while feeding or finished < len(tasks):
            index, item = await queue.get()
            if item is done:
                if index < 0:
                    feeding = False
                else:
                    finished += 1
                continue
            if isinstance(item, _Failure):
                raise item.exc
            yield index, item
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for it in [*iterators, sources]:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:
                    pass
