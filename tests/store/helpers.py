"""Rooms, entries and events built through the public models, for the storage tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from moot.events import Event, RoundStarted, TurnCompleted, TurnStarted
from moot.models import Usage
from moot.spec import RoomSpec
from moot.transcript import USER, Entry


def room_spec(**extra: Any) -> RoomSpec:
    data: dict[str, Any] = {
        "task": "Should we open-source our engine?\nWe have two customers who pay for it.",
        "protocol": "board",
        "max_rounds": 2,
        "models": {"sim": {"provider": "simulated", "seed": 1}},
        "agents": [
            {"name": "Alice", "persona": "an engineer"},
            {"name": "Bob", "persona": "a lawyer"},
            {"name": "Chair", "role": "moderator"},
        ],
    }
    data.update(extra)
    return RoomSpec.from_data(data)


def task() -> Entry:
    return Entry(kind="task", round=0, stage=-1, speaker=USER, text="Should we open-source our engine?")


def speech(
    round_: int, speaker: str, slot: int, text: str = "", *, tokens: tuple[int, int] = (10, 5)
) -> Entry:
    return Entry(
        kind="speech",
        round=round_,
        slot=slot,
        speaker=speaker,
        text=text or f"{speaker} in round {round_}",
        usage=Usage(input_tokens=tokens[0], output_tokens=tokens[1]),
        model="simulated:simulated",
        colour="#3cb44b",
        finish_reason="stop",
    )


def completed(entry: Entry, seq: int) -> list[Event]:
    """The started and completed events of a turn, numbered from `seq`."""
    return [
        TurnStarted(
            seq=seq, turn_id=entry.turn_id, round=entry.round, kind="speech", speaker=entry.speaker, model="m"
        ),
        TurnCompleted(
            seq=seq + 1,
            turn_id=entry.turn_id,
            round=entry.round,
            kind="speech",
            speaker=entry.speaker,
            text=entry.text,
            usage=entry.usage or Usage(),
            finish_reason="stop",
            model="m",
            created_at=entry.created_at,
        ),
    ]


def round_started(seq: int, round_: int = 1) -> RoundStarted:
    return RoundStarted(seq=seq, round=round_, max_rounds=2)


# ---- lease owners: the processes they name, as this machine's /proc tells them --------------------------

needs_proc = pytest.mark.skipif(
    sys.platform != "linux" or not Path("/proc/self/ns/pid").exists(),
    reason="naming processes by boot id, pid namespace and start time needs Linux's /proc",
)


def this_kernel() -> tuple[str, int]:
    """Our boot id and pid namespace, read here as the store should read them."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip(), os.stat("/proc/self/ns/pid").st_ino


def started(pid: int) -> int:
    """A process's start time in clock ticks after boot: field 22 of /proc/<pid>/stat."""
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])


def owner(pid: int, start: int, *, boot: str | None = None, namespace: int | None = None) -> str:
    """A lease owner named as `Store.new_owner` names one, for any process: this kernel's unless told."""
    here_boot, here_namespace = this_kernel()
    boot = here_boot if boot is None else boot
    namespace = here_namespace if namespace is None else namespace
    return f"{socket.gethostname()}:{pid}:cafe:{boot}:{namespace}:{start}"


async def dead_process() -> tuple[int, int]:
    """The pid and start time of a process that ran on this machine and is gone (reaped)."""
    runner = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        start = started(runner.pid)
    finally:
        runner.send_signal(signal.SIGKILL)
        await runner.wait()
    return runner.pid, start
