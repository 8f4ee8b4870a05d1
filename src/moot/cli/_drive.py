"""Drives one run from the terminal: events to a sink, Ctrl-C to a pause, typed lines to interventions.

Nothing here decides anything about the discussion; it only connects the engine to the process. A stored
run (`DurableRun`) is driven the same way; it only stores a typed line before the run takes it in.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from moot import tracing
from moot.cli._labels import labels
from moot.cli._render import Renderer
from moot.events import Event, RoomPaused, RoomStarted, event_json
from moot.exceptions import MootError

if TYPE_CHECKING:
    from moot.engine import Run, Steerable

Driven: TypeAlias = "Steerable"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
# Escape sequences that arrow and function keys send: not text a person meant to type.
_CONTROL_SEQUENCE = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|O.|.)?")


class Sink(Protocol):
    def handle(self, event: Event) -> None: ...

    def notice(self, message: str, style: str = "") -> None: ...

    def close(self) -> None: ...


class JsonSink:
    """One JSON line per event on stdout, flushed at once so a pipe sees each event as it happens."""

    def __init__(self, errors: Console, *, saved: bool = True, save_hint: bool = False) -> None:
        self.errors = errors
        self.language = "en"
        self.saved = saved
        self.save_hint = save_hint

    def handle(self, event: Event) -> None:
        sys.stdout.write(event_json(event) + "\n")
        sys.stdout.flush()
        if isinstance(event, RoomStarted):
            self.language = event.language
        elif isinstance(event, RoomPaused):
            t = labels(self.language)
            self.notice(
                t.pause(event.round, event.reason, saved=self.saved, save_hint=self.save_hint), "yellow"
            )

    def notice(self, message: str, style: str = "") -> None:
        self.errors.print(Text(message, style=style), soft_wrap=True)

    def close(self) -> None:
        """Nothing is held back: every line is already written."""


class RichSink:
    """The terminal view; notices go to the same console so they sit in order with the text.

    In a terminal, what a person types (`keys`) is drawn on a line of its own under the text, and the view
    holds what arrives meanwhile until they press Enter or clear the line: typed words and streamed words
    never share a line.
    """

    def __init__(
        self, console: Console, *, interactive: bool = False, saved: bool = True, save_hint: bool = False
    ) -> None:
        self.console = console
        self.renderer = Renderer(console, saved=saved, save_hint=save_hint)
        self.interactive = interactive
        self.typed = ""
        self._held: list[Callable[[], None]] = []  # drawn when the person stops typing
        self._prompting = False
        self._column = 0  # where the streamed text stood when the typed line opened under it
        self._labels = labels("en")
        self._closed = False

    def handle(self, event: Event) -> None:
        if isinstance(event, RoomStarted):
            self._labels = labels(event.language)
        if self._prompting:
            self._held.append(lambda: self._draw(event))
        else:
            self._draw(event)

    def _draw(self, event: Event) -> None:
        self.renderer.handle(event)
        if isinstance(event, RoomStarted) and self.interactive:
            self.notice(self._labels.interactive, "dim")

    def notice(self, message: str, style: str = "") -> None:
        if self._prompting:
            self._held.append(lambda: self.notice(message, style))
        else:
            self.console.print(Text(message, style=style))

    def keys(self, text: str) -> list[str]:
        """Keys typed in a terminal with echo off; returns the lines that Enter completed."""
        lines: list[str] = []
        if self._closed:  # keys pressed after the end are the shell's
            return lines
        for char in _CONTROL_SEQUENCE.sub("", text):
            if char in "\r\n":
                if self.typed.strip():
                    lines.append(self.typed)
                self.typed = ""
                self._hide_typed()  # the words join the view as the run takes them in
            elif char in "\x7f\b":
                self.typed = self.typed[:-1]
            elif char == "\x15":  # Ctrl-U: clear the line
                self.typed = ""
            elif char == "\t":
                self.typed += " "
            elif char.isprintable():
                self.typed += char
        if self.typed:
            self._show_typed()
        else:
            self._hide_typed()
        return lines

    def _show_typed(self) -> None:
        out = self.console.file
        if not self._prompting:
            self._prompting = True
            self.renderer.suspend()
            self._column = self.renderer.column
            if self._column:
                out.write("\n")
        prefix = f"✋ {self._labels.typing} › "
        room = max(1, self.console.width - 1 - cell_len(prefix))
        shown = self.typed
        while cell_len(shown) > room:  # the end of a long line: what is being typed now
            shown = shown[1:]
        out.write("\r\x1b[2K")
        out.flush()
        self.console.print(Text.assemble((prefix, "bold"), shown), end="", soft_wrap=True, highlight=False)

    def _hide_typed(self) -> None:
        if not self._prompting:
            return
        self._prompting = False
        out = self.console.file
        out.write("\r\x1b[2K")
        if self._column:  # back to the end of the unfinished streamed line
            out.write(f"\x1b[1A\r\x1b[{self._column}C")
        out.flush()
        self.renderer.resume()
        held, self._held = self._held, []
        for draw in held:
            draw()

    def close(self) -> None:
        self.typed = ""
        self._hide_typed()
        self._closed = True
        self.renderer.close()


def drive(run: Run, sink: Sink, *, interactive: bool = False, strict: bool = False) -> int:
    """Runs a room that is not stored to the end and returns the exit code: 0 completed, 1 failed, 130
    stopped by Ctrl-C.

    `strict`: a run in which an agent spoke through another agent's model (B13) counts as failed.
    """
    return run_main(_traced(run, sink, interactive=interactive, strict=strict))


async def _traced(run: Run, sink: Sink, *, interactive: bool, strict: bool) -> int:
    """`steer` within the run's span (moot.tracing), as a stored run has its own: the run's tasks start in
    it, so its turns are the span's children."""
    with tracing.room_run(run.room_id) as span:
        with span.starting(run.room.protocol):
            run.start()
        code = await steer(run, sink, interactive=interactive, strict=strict)
        if (result := run.result) is not None:
            span.ended(result.status, result.error, result.rounds_run)
    return code


def run_main(main: Coroutine[Any, Any, int]) -> int:
    """Runs a command's coroutine to its exit code; a closed stdout ends it quietly."""
    try:
        return asyncio.run(main)
    except BrokenPipeError:  # the reader of stdout went away (`moot demo --json | head`)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


async def steer(run: Driven, sink: Sink, *, interactive: bool = False, strict: bool = False) -> int:
    """`drive` inside a running loop, for commands that open a store on that loop first."""
    loop = asyncio.get_running_loop()
    run.start()
    presses = 0
    # A run pauses only once its first event is out: a Run cancelled before its task's first step never ends
    # its stream, and a DurableRun reads the store for a while before it starts its Run.
    begun = False

    storing: set[asyncio.Task[None]] = set()
    restore_terminal = _read_lines(loop, run, sink, storing) if interactive else None

    def interrupt() -> None:
        nonlocal presses
        presses += 1
        if presses > 1:  # a second Ctrl-C: the person does not want to wait for a clean pause
            if restore_terminal is not None:
                restore_terminal()
            os.write(2, b"\n")
            os._exit(EXIT_INTERRUPTED)
        if begun:
            run.pause("interrupted")

    with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C raises KeyboardInterrupt instead
        loop.add_signal_handler(signal.SIGINT, interrupt)
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
        if restore_terminal is not None:
            restore_terminal()
        if storing:  # lines typed at the very end are stored before the store closes
            await asyncio.gather(*storing, return_exceptions=True)
        sink.close()
    status = run.result.status if run.result is not None else "error"
    if status == "completed" and strict and run.result is not None and run.result.substituted:
        return EXIT_FAILED  # the room_warning that names who spoke through what is already shown
    if status == "completed":
        return EXIT_OK
    if status == "paused":
        return EXIT_INTERRUPTED
    return EXIT_FAILED


async def _say_line(run: Driven, line: str, sink: Sink) -> None:
    """A stored run keeps the line before taking it in, so a crash right after cannot lose it."""
    try:
        await run.say(line)
    except (ValueError, MootError) as exc:
        sink.notice(f"⚠ {exc}", "yellow")


def _keys_mode(fd: int) -> Callable[[], None] | None:
    """Turns echo and line editing off on a terminal's stdin, so typed keys reach us one by one and the
    terminal does not print them into the streamed text; returns how to turn them back on."""
    try:
        import termios
        import tty
    except ImportError:  # Windows
        return None
    try:
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)  # Ctrl-C still sends SIGINT
    except (termios.error, OSError):
        return None

    def restore() -> None:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore


def _read_lines(
    loop: asyncio.AbstractEventLoop, run: Driven, sink: Sink, storing: set[asyncio.Task[None]]
) -> Callable[[], None] | None:
    """Reads stdin in a daemon thread; each line becomes an intervention on the loop's thread (B9).

    In a terminal, keys are read as they are typed and the view draws them on a line of their own; the
    returned function puts the terminal back as it was. Elsewhere (a pipe, a file) stdin is read by lines.
    `os.read` on the raw descriptor takes no interpreter lock on sys.stdin, so a thread still blocked in
    it when the run ends cannot hang the interpreter's exit.
    """

    def take(line: str) -> None:
        if not line.strip() or not run.taking_words:
            return
        task = loop.create_task(_say_line(run, line, sink))
        storing.add(task)
        task.add_done_callback(storing.discard)

    def post(line: bytes) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: the run is over
            loop.call_soon_threadsafe(take, line.decode("utf-8", "replace"))

    def typed(text: str) -> None:
        assert isinstance(sink, RichSink)
        for line in sink.keys(text):
            take(line)

    def read_keys() -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(typed, decoder.decode(chunk))

    def read() -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                post(buffer)
                return
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                post(line)

    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError):
        return None
    restore = None
    if isinstance(sink, RichSink) and sink.console.is_terminal and os.isatty(fd):
        restore = _keys_mode(fd)
    threading.Thread(target=read if restore is None else read_keys, name="moot-stdin", daemon=True).start()
    return restore
