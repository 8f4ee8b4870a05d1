"""Calls that arrive while one like them is in flight go together in the next: a group commit.

A store's turn writes and reads of people's words come in bursts (the members of a board speak at once, in
every room of the process): done one by one, each is a transaction of its own, with its round trips and, on
PostgreSQL, its commit. `Together` runs the first call at once, alone, and queues those that arrive while it
runs; the next run takes them all. A call alone costs what it did; under load, many cost about one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")


class Together(Generic[A, R]):
    """`await together(item)`: `run` is given every item waiting, in arrival order, and returns one outcome
    per item (its result, or the exception its caller gets). A caller cancelled before its run began is left
    out; once its run began, its item goes through with the others."""

    def __init__(self, run: Callable[[list[A]], Awaitable[Sequence[R | BaseException]]], name: str) -> None:
        self._run = run
        self._name = name
        self._waiting: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: A) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        if self._task is not None and (self._task.done() or self._task.get_loop() is not loop):
            self._task, self._waiting = None, []  # left by a loop that closed under it: nobody waits there
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=self._name)
        return await future

    async def idle(self) -> None:
        """Returns once nothing waits or runs (a store closing lets its last writes end first)."""
        while self._task is not None and self._task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait({self._task})

    async def _drain(self) -> None:
        batch: list[tuple[A, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                batch = [(item, future) for item, future in self._waiting if not future.done()]
                self._waiting = []
                if not batch:
                    continue
                try:
                    outcomes = await self._run([item for item, _ in batch])
                except Exception as exc:  # `run` gives outcomes; this is a bug, told to every caller
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        except BaseException:  # cancelled (the loop is closing): nobody is left waiting for nothing
            for _, future in [*batch, *self._waiting]:
                future.cancel()
            self._waiting = []
            raise
        finally:
            if self._task is asyncio.current_task():
                self._task = None
