"""Drives one run from the terminal: events to a sink, Ctrl-C to a pause, typed lines to interventions.

Nothing here decides anything about the discussion; it only connects the engine to the process. A stored
run (`DurableRun`) is driven the same way; it only stores a typed line before the run takes it in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from rich.console import Console
from rich.text import Text

from moot.cli._labels import labels
from moot.cli._render import Renderer
from moot.events import Event, RoomPaused, RoomStarted, event_json
from moot.exceptions import MootError

if TYPE_CHECKING:
    from moot.durable import DurableRun
    from moot.engine import Run

Driven: TypeAlias = "Run | DurableRun"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...

    def notice(self, message: str, style: str = "") -> None: ...

    def close(self) -> None: ...


class JsonSink:
    """One JSON line per event on stdout, flushed at once so a pipe sees each event as it happens."""

    def __init__(self, errors: Console) -> None:
        self.errors = errors
        self.language = "en"

    def handle(self, event: Event) -> None:
        sys.stdout.write(event_json(event) + "\n")
        sys.stdout.flush()
        if isinstance(event, RoomStarted):
            self.language = event.language
        elif isinstance(event, RoomPaused):
            paused = labels(self.language).paused.format(n=event.round, reason=event.reason)
            self.notice(paused, "yellow")

    def notice(self, message: str, style: str = "") -> None:
        self.errors.print(Text(message, style=style))

    def close(self) -> None:
        """Nothing is held back: every line is already written."""


class RichSink:
    """The terminal view; notices go to the same console so they sit in order with the text."""

    def __init__(self, console: Console, *, interactive: bool = False) -> None:
        self.console = console
        self.renderer = Renderer(console)
        self.interactive = interactive

    def handle(self, event: Event) -> None:
        self.renderer.handle(event)
        if isinstance(event, RoomStarted) and self.interactive:
            self.notice(labels(event.language).interactive, "dim")

    def notice(self, message: str, style: str = "") -> None:
        self.console.print(Text(message, style=style))

    def close(self) -> None:
        self.renderer.close()


def drive(run: Driven, sink: Sink, *, interactive: bool = False) -> int:
    """Runs to the end and returns the exit code: 0 completed, 1 failed, 130 paused by Ctrl-C."""
    return run_main(steer(run, sink, interactive=interactive))


def run_main(main: Coroutine[Any, Any, int]) -> int:
    """Runs a command's coroutine to its exit code; a closed stdout ends it quietly."""
    try:
        return asyncio.run(main)
    except BrokenPipeError:  # the reader of stdout went away (`moot demo --json | head`)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


async def steer(run: Driven, sink: Sink, *, interactive: bool = False) -> int:
    """`drive` inside a running loop, for commands that open a store on that loop first."""
    from moot.engine import Run  # loaded already: the run was built from it

    loop = asyncio.get_running_loop()
    if isinstance(run, Run):
        run.start()
    presses = 0
    # A run pauses only once its first event is out: a Run cancelled before its task's first step never ends
    # its stream, and a DurableRun reads the store for a while before it starts its Run.
    begun = False

    def interrupt() -> None:
        nonlocal presses
        presses += 1
        if presses > 1:  # a second Ctrl-C: the person does not want to wait for a clean pause
            os.write(2, b"\n")
            os._exit(EXIT_INTERRUPTED)
        if begun:
            run.pause("interrupted")

    with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises KeyboardInterrupt instead
        loop.add_signal_handler(signal.SIGINT, interrupt)
    storing: set[asyncio.Task[None]] = set()
    if interactive:
        _read_lines(loop, run, sink, storing)
    try:
        async for event in run:
            if not begun:
                begun = True
                if presses:
                    run.pause("interrupted")
            sink.handle(event)
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
        if storing:  # lines typed at the very end are stored before the store closes
            await asyncio.gather(*storing, return_exceptions=True)
        sink.close()
    status = run.result.status if run.result is not None else "error"
    if status == "completed":
        return EXIT_OK
    if status == "paused":
        return EXIT_INTERRUPTED
    return EXIT_FAILED


def _taking_words(run: Driven) -> bool:
    """A run takes words while it runs; a stored one also before it starts (it reads them from the store)."""
    from moot.engine import Run

    if isinstance(run, Run):
        return run.status == "running"
    return run.run is None or run.run.status == "running"


async def _store_line(run: DurableRun, line: str, sink: Sink) -> None:
    """A stored run keeps the line before taking it in, so a crash right after cannot lose it."""
    try:
        await run.intervene(line)
    except (ValueError, MootError) as exc:
        sink.notice(f"⚠ {exc}", "yellow")


def _read_lines(
    loop: asyncio.AbstractEventLoop, run: Driven, sink: Sink, storing: set[asyncio.Task[None]]
) -> None:
    """Reads stdin in a daemon thread; each line becomes an intervention on the loop's thread (B9).

    `os.read` on the raw descriptor takes no interpreter lock on sys.stdin, so a thread still blocked in
    it when the run ends cannot hang the interpreter's exit.
    """
    from moot.engine import Run

    def take(line: str) -> None:
        if not line.strip() or not _taking_words(run):
            return
        if not isinstance(run, Run):
            task = loop.create_task(_store_line(run, line, sink))
            storing.add(task)
            task.add_done_callback(storing.discard)
            return
        try:
            run.intervene(line)
        except ValueError as exc:
            sink.notice(f"⚠ {exc}", "yellow")

    def post(line: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the run is over
            loop.call_soon_threadsafe(take, line.decode("utf-8", "replace"))

    def read() -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(sys.stdin.fileno(), 4096)
            except OSError:
                return
            if not chunk:
                post(buffer)
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                post(line)

    threading.Thread(target=read, name="moot-stdin", daemon=True).start()
