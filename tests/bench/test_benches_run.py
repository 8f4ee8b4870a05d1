"""The benchmarks still run against the code they measure: each at its smallest size, in a process of its own.

A bench is no test of speed here (no timed assertion); what this catches is a bench that stopped running
because the code under it changed, which no type check sees (mypy reads `src/` only).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # uvloop: as `moot serve` runs
def test_read_bench_measures_every_way_of_reading_a_stream(loop: str) -> None:
    out = _run(
        "read_bench.py",
        "--streams",
        "2",
        "--tokens",
        "5",
        "--delay",
        "0.001",
        "--rounds",
        "1",
        "--loop",
        loop,
    )
    assert f"--loop {loop}" in out
    rows = re.findall(r"^\| (.+?) \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+)× \|$", out, re.MULTILINE)
    ways = [row[0] for row in rows]
    assert ways == [
        "Protocol + httptools (Moot)",
        "httpx on asyncio streams",
        "httpx on anyio (its own)",
        "relay: aiter_lines",
    ], out
    assert rows[0][4] == "1.00", out  # the others are read against Moot's own way


def test_service_bench_delivers_every_token_of_a_meeting_on_each_target() -> None:
    out = _run(
        "service_bench.py", "--targets", "relay", "sqlite", "postgresql", "--rooms", "1", "--tokens", "10"
    )
    rows = {
        cells[0]: cells
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith("| target")
        for cells in [[cell.strip() for cell in line.strip("|").split("|")]]
    }
    # A meeting is 8 model calls (the chair, 4 members at once, the chair, the conclusion asked twice).
    for target in ("relay", "sqlite", "postgresql"):
        assert target in rows, out
        assert rows[target][1:3] == ["1", "80"], rows[target]  # rooms, tokens delivered to the client
    assert rows["relay"][3] == "80"  # one event a token
    assert int(rows["sqlite"][3]) < 80  # Moot joins a turn's deltas into frames


def test_stream_bench_path_measures_the_servers_path_per_delta() -> None:
    out = _run("stream_bench.py", "path", "--rooms", "1", "--tokens", "20", "--repeats", "1")
    assert re.search(r"this tree: [\d.]+ µs CPU per delta", out), out


def test_start_bench_counts_what_a_start_costs() -> None:
    out = _run("start_bench.py", "--db", "sqlite", "--rooms", "2")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["db"] == "sqlite"
    assert summary["cpu_ms_per_start"] > 0
    assert summary["statements_per_start"] >= 1  # each start reads and writes its room
