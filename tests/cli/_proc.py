"""The real `moot` command in a subprocess, as a person or a script would run it."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

COMMAND = [sys.executable, "-m", "moot.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "100", "NO_COLOR": "1"}


def moot(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=_env(),
        timeout=timeout,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """Every stdout line parsed as JSON: a line that is not JSON fails the test."""
    return [json.loads(line) for line in stdout.splitlines()]


class Running:
    """A command still running: stdout lines arrive on a queue, so a test can wait for one with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        """Reads events until one satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(f"the command ended first; its last lines: {self.lines[-3:]}")
            self.lines.append(line)
            event: dict[str, Any] = json.loads(line)
            if predicate(event):
                return event

    def finish(self, timeout: float = 15) -> tuple[int, list[dict[str, Any]], str]:
        """Waits for the end: the exit code, every event, and stderr."""
        returncode = self.proc.wait(timeout=timeout)
        self._reader.join(timeout)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        assert self.proc.stderr is not None
        return returncode, [json.loads(line) for line in self.lines], self.proc.stderr.read()


@contextmanager
def running(*args: str) -> Iterator[Running]:
    with subprocess.Popen(
        [*COMMAND, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=_env(),
    ) as proc:
        try:
            yield Running(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
