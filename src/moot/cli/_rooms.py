"""Rooms kept in the store: run one, list them, continue one, show or export it, step into it from elsewhere.

Each command is one coroutine on one event loop (the store's connections belong to the loop that opened
them). `stored` runs it and turns the errors a person can act on into a line on stderr and an exit code.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from moot.cli._drive import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, Sink, run_main, steer
from moot.cli._render import Renderer
from moot.durable import DurableRun, RoomBusy
from moot.engine import check_intervention
from moot.events import (
    Event,
    InterventionAdded,
    RoomCompleted,
    RoomConcluded,
    RoomFailed,
    RoomPaused,
    RoomStarted,
    RoundCompleted,
    RoundStarted,
    TurnCompleted,
    TurnDelta,
    TurnFailed,
    TurnStarted,
)
from moot.exceptions import MootError
from moot.export import export
from moot.models import Usage
from moot.spec import RoomSpec
from moot.store import RoomRecord, Store
from moot.transcript import Entry, Transcript

EXIT_BUSY = 3
TASK_WIDTH = 48
_STATUS_STYLES = {
    "completed": "green",
    "running": "cyan",
    "paused": "yellow",
    "interrupted": "yellow",
    "error": "red",
    "idle": "dim",
}


@dataclass(frozen=True)
class _Words:
    """What these commands tell people about a room, in the room's language (B15)."""

    resume: str
    interrupted: str
    running: str
    not_started: str
    stored_running: str
    stored_waiting: str


_EN = _Words(
    resume="resume with: moot resume {id}",
    interrupted="Interrupted: the process running this room stopped.",
    running="Running in another process; `moot intervene {id} TEXT` reaches it.",
    not_started="Room {id} has not started yet.",
    stored_running="Stored; room {id} takes it in at its next step.",
    stored_waiting="Stored; room {id} takes it in when it runs again (moot resume {id}).",
)
_ZH = _Words(
    resume="继续讨论：moot resume {id}",
    interrupted="已中断：运行该讨论的进程已停止。",
    running="正在另一个进程中运行；可用 `moot intervene {id} 文字` 插话。",
    not_started="讨论 {id} 尚未开始。",
    stored_running="已保存；讨论 {id} 会在下一步纳入。",
    stored_waiting="已保存；讨论 {id} 再次运行时纳入（moot resume {id}）。",
)


def words(language: str) -> _Words:
    return _ZH if language == "zh" else _EN


def status_of(record: RoomRecord) -> str:
    """The status a person should see: a "running" room whose process is gone was interrupted."""
    if record.status == "running" and (record.lease is None or not record.lease.alive):
        return "interrupted"
    return record.status


def stored(main: Coroutine[Any, Any, int]) -> int:
    """Runs a command that uses the store; what went wrong is one line on stderr, never a traceback.

    Exit codes: 2 for an unknown or completed room, a bad intervention and a database error; 3 when the
    room is running in another process, so a script can tell "try later" from "wrong".
    """
    try:
        return run_main(main)
    except MootError as exc:
        Console(stderr=True).print(Text(f"✗ {exc}", style="red"), soft_wrap=True)
        return EXIT_BUSY if isinstance(exc, RoomBusy) else EXIT_BAD_INPUT


@asynccontextmanager
async def _opened() -> AsyncIterator[Store]:
    """The configured store (MOOT_DATABASE_URL), migrated on first use."""
    async with Store.from_url() as store:
        await store.ensure_schema()
        yield store


# ---- running ---------------------------------------------------------------------------------------------


async def run_saved(
    spec: RoomSpec, sink: Sink, console: Console | None, *, interactive: bool, strict: bool = False
) -> int:
    """Stores a new room, says its id before anything else, and runs it; `console` is None in JSON mode."""
    async with _opened() as store:
        record = await store.create_room(spec)
        if console is not None:
            console.print(Text.assemble(("Room ", "dim"), (record.id, "bold")))
        return await _drive_stored(
            store, record.id, spec.language, sink, interactive=interactive, strict=strict
        )


async def resume(room_id: str, sink: Sink, *, interactive: bool) -> int:
    """Continues a paused, interrupted or failed room where it stopped (L10)."""
    async with _opened() as store:
        record = await store.get_room(room_id)
        return await _drive_stored(store, room_id, record.spec.language, sink, interactive=interactive)


async def follow_up(room_id: str, question: str, sink: Sink, *, interactive: bool) -> int:
    """Asks a concluded room a follow-up question: more rounds on the same transcript, a new conclusion."""
    try:
        question = check_intervention(question)
    except ValueError as exc:
        raise MootError(str(exc)) from None
    async with _opened() as store:
        record = await store.get_room(room_id)
        if record.lease is not None and record.lease.alive:
            raise RoomBusy(f"room {room_id} is running; ask once it has concluded")
        transcript = await store.load_transcript(room_id)
        if not transcript.concluded:
            raise MootError(
                f"room {room_id} has not concluded yet; resume it with `moot resume {room_id}`, "
                "or step in with `moot say`"
            )
        await store.add_intervention(room_id, question)
        await store.update_room(room_id, status="paused")
        return await _drive_stored(store, room_id, record.spec.language, sink, interactive=interactive)


async def _drive_stored(
    store: Store, room_id: str, language: str, sink: Sink, *, interactive: bool, strict: bool = False
) -> int:
    run = DurableRun(store, room_id)
    code = await steer(run, sink, interactive=interactive, strict=strict)
    completed = run.result is not None and run.result.status == "completed"  # failed only under --strict
    if code in (EXIT_INTERRUPTED, EXIT_FAILED) and not completed:
        sink.notice(words(language).resume.format(id=room_id), "bold")
    return code


async def intervene(room_id: str, text: str) -> int:
    """Stores a person's words for a room that may be running in another process (B9)."""
    try:
        text = check_intervention(text)
    except ValueError as exc:
        raise MootError(str(exc)) from None
    async with _opened() as store:
        record = await store.get_room(room_id)
        if record.status == "completed":
            raise MootError(f"room {room_id} is completed: it takes no more words")
        await store.add_intervention(room_id, text)
    t = words(record.spec.language)
    alive = record.lease is not None and record.lease.alive
    Console().print((t.stored_running if alive else t.stored_waiting).format(id=room_id))
    return 0


# ---- reading ---------------------------------------------------------------------------------------------


async def list_rooms(console: Console) -> int:
    async with _opened() as store:
        records = await store.list_rooms()
    if not records:
        console.print("No rooms yet. `moot run ROOM.yaml --save` runs a room and keeps it here.")
        return 0
    rows = [
        (
            record.id,
            record.protocol,
            status_of(record),
            f"{record.round}/{record.spec.max_rounds}",
            datetime.fromtimestamp(record.updated_at).strftime("%Y-%m-%d %H:%M"),
        )
        for record in records
    ]
    headers = ("ID", "Protocol", "Status", "Round", "Updated")
    fixed = sum(max(len(h), *(len(row[i]) for row in rows)) + 2 for i, h in enumerate(headers))
    width = max(8, min(TASK_WIDTH, console.width - fixed))  # the task gives way to the rest
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("Task", no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, no_wrap=True, justify="right" if header == "Round" else "left")
    for record, (room_id, protocol, status, round_, updated) in zip(records, rows, strict=True):
        task = Text(" ".join(record.task.split()))
        task.truncate(width, overflow="ellipsis")
        status_text = Text(status, style=_STATUS_STYLES.get(status, ""))
        table.add_row(room_id, task, protocol, status_text, round_, updated)
    console.print(table)
    return 0


async def show(room_id: str, console: Console) -> int:
    """The stored transcript drawn as the live view drew it: rounds, speakers, interventions, conclusion."""
    async with _opened() as store:
        record = await store.get_room(room_id)
        transcript = await store.load_transcript(room_id)
        first = await store.events_after(room_id, 0, limit=1)
        last = await store.events_after(room_id, await store.last_seq(room_id) - 1)
    t = words(record.spec.language)
    if not first or not isinstance(first[0], RoomStarted):
        console.print(t.not_started.format(id=room_id))
        console.print(Text(t.resume.format(id=room_id), style="bold"))
        return 0
    status = status_of(record)
    renderer = Renderer(console)
    renderer.handle(first[0].model_copy(update={"resumed": False}))
    for event in replay(record.spec, transcript, ended=status in ("completed", "error")):
        renderer.handle(event)
    end = last[0] if last else None
    if isinstance(end, RoomCompleted | RoomFailed | RoomPaused) and status != "interrupted":
        renderer.handle(end)
    renderer.close()
    if status == "interrupted":
        console.print()
        console.print(Text(t.interrupted, style="bold yellow"))
    elif status == "running":
        console.print()
        console.print(Text(t.running.format(id=room_id), style="cyan"))
    if status in ("interrupted", "paused", "error", "idle"):
        console.print(Text(t.resume.format(id=room_id), style="bold"))
    return 0


def replay(spec: RoomSpec, transcript: Transcript, *, ended: bool) -> Iterator[Event]:
    """The events that would draw this transcript: each turn whole, in canonical order.

    The last round is closed only where the room `ended`: a room cut mid-round may have more to say in it.
    """
    open_round: int | None = None
    for entry in transcript:
        if entry.kind in ("task", "digest"):
            continue
        starts = entry.kind in ("speech", "summary") and entry.round != open_round
        if open_round is not None and (starts or entry.kind == "conclusion"):
            yield RoundCompleted(round=open_round, continues=entry.kind != "conclusion")
            open_round = None
        if starts:
            open_round = entry.round
            yield RoundStarted(round=entry.round, max_rounds=spec.max_rounds)
        yield from _entry_events(entry)
    if open_round is not None and ended:
        yield RoundCompleted(round=open_round, continues=False)


def _entry_events(entry: Entry) -> Iterator[Event]:
    if entry.kind == "intervention":
        yield InterventionAdded(
            round=entry.round, author=entry.speaker, text=entry.text, stop=entry.command == "stop"
        )
        return
    if entry.kind == "conclusion":
        if entry.conclusion is not None:
            yield RoomConcluded(
                round=entry.round,
                speaker=entry.speaker,
                fallback=entry.fallback,
                **entry.conclusion.model_dump(),
            )
        return
    assert entry.kind in ("opening", "speech", "summary")
    kind = entry.kind
    yield TurnStarted(
        turn_id=entry.turn_id,
        round=entry.round,
        kind=kind,
        speaker=entry.speaker,
        colour=entry.colour,
        model=entry.model or "",
    )
    if entry.failed:
        yield TurnFailed(
            turn_id=entry.turn_id,
            round=entry.round,
            kind=kind,
            speaker=entry.speaker,
            error=entry.error or "",
            error_type="",
        )
        return
    yield TurnDelta(turn_id=entry.turn_id, round=entry.round, speaker=entry.speaker, text=entry.text)
    yield TurnCompleted(
        turn_id=entry.turn_id, round=entry.round, kind=kind, speaker=entry.speaker, colour=entry.colour,
        text=entry.text, usage=entry.usage or Usage(), finish_reason=entry.finish_reason or "stop",
        model=entry.model or "", created_at=entry.created_at,
    )  # fmt: skip


async def export_room(room_id: str, fmt: str, output: Path | None) -> int:
    """The room as Markdown or JSON (B16), on stdout or in a file."""
    async with _opened() as store:
        record = await store.get_room(room_id)
        transcript = await store.load_transcript(room_id)
    text = export(room_id, record.spec, transcript, status=status_of(record), fmt=fmt)
    text = text if text.endswith("\n") else text + "\n"
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        try:
            await asyncio.to_thread(output.write_text, text, encoding="utf-8")
        except OSError as exc:
            raise MootError(f"{output}: {exc.strerror or exc}") from None
        Console(stderr=True).print(Text(f"✓ wrote {output}", style="green"))
    return 0
