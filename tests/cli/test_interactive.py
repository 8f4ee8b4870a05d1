"""`moot run --interactive` in a real terminal (a pseudo-terminal): typing never lands inside streamed text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ._proc import COMMAND, _env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")

ROOM = """
task: Should we rewrite the billing service?
protocol: sequential
max_rounds: 6
models:
  sim: {provider: simulated, seed: 3, tokens_per_second: 60}
default_model: sim
agents:
  - {name: Ana, persona: a cautious engineer}
  - {name: Ben, persona: an ambitious product lead}
  - {name: Chair, role: moderator, persona: a neutral chair}
"""
PROMPT = "✋ step in › "
_CSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class Terminal:
    """A command on a pseudo-terminal: what it writes is collected; `type` sends keys as a person would."""

    def __init__(self, master: int, proc: subprocess.Popen[bytes]) -> None:
        self.master = master
        self.proc = proc
        self._data = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the other side closed
                chunk = b""
            with self._changed:
                if not chunk:
                    self._data += b"\0EOF"
                    self._changed.notify_all()
                    return
                self._data += chunk
                self._changed.notify_all()

    @property
    def text(self) -> str:
        """What was written, without colours and cursor moves (line ends and carriage returns stay)."""
        with self._changed:
            return _CSI.sub("", self._data.decode("utf-8", "replace"))

    def wait_for(self, needle: str, *, after: int = 0, timeout: float = 60) -> int:
        """Waits until `needle` is in `text` past `after`; returns where it ends."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                text = _CSI.sub("", self._data.decode("utf-8", "replace"))
                found = text.find(needle, after)
                if found >= 0:
                    return found + len(needle)
                if text.endswith("\0EOF"):
                    raise AssertionError(f"the command ended first; its last output: {text[-400:]!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{needle!r} never came; the last output: {text[-400:]!r}")
                self._changed.wait(left)

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())


@contextmanager
def terminal(*args: str) -> Iterator[Terminal]:
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
    env = {**_env(), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [*COMMAND, *args], stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    try:
        yield Terminal(master, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)


def test_hardening_13_typed_words_get_a_line_of_their_own_and_the_stream_waits_for_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "room.yaml"
    path.write_text(ROOM, encoding="utf-8")
    marker = "zqxj"
    with terminal("run", str(path), "--interactive") as term:
        start = term.wait_for("Round 1 of 6")
        start = term.wait_for("Ana", after=start)  # the first speaker's turn is under way
        opened = -1
        for count in range(1, len(marker) + 1):  # one key at a time, each drawn before the next
            term.type(marker[count - 1])
            end = term.wait_for(PROMPT + marker[:count], after=start)
            if opened < 0:
                opened = end - len(PROMPT) - count
        typed_end = end
        term.type("\n")
        stepped = term.wait_for(f"stepped in: {marker}", after=typed_end)
        term.type("/stop\n")
        term.wait_for("Conclusion", after=stepped)
        assert term.proc.wait(timeout=60) == 0
        output = term.text

    # while the person typed, nothing but their line was drawn: every piece between the first key and the
    # last is the typed line drawn again
    while_typing = output[opened:typed_end]
    pieces = [piece for piece in re.split(r"[\r\n]", while_typing) if piece.strip()]
    assert pieces
    assert all(piece.startswith(PROMPT) for piece in pieces), pieces
    # the terminal did not echo the keys into the text: the marker is only ever in the typed line, in the
    # line that says the person stepped in, and where a speaker quotes them
    for found in re.finditer(marker, output):
        before = output[: found.start()]
        assert before.endswith((PROMPT, "stepped in: ", "“", '"')), output[found.start() - 80 : found.end()]


def test_interactive_mode_gives_the_terminal_back_as_it_was(tmp_path: Path) -> None:
    import termios

    path = tmp_path / "room.yaml"
    path.write_text(ROOM.replace("max_rounds: 6", "max_rounds: 1"), encoding="utf-8")
    with terminal("run", str(path), "--interactive") as term:
        term.wait_for("Round 1 of 1")
        term.type("/stop\n")
        assert term.proc.wait(timeout=60) == 0
        attributes = termios.tcgetattr(term.master)
    assert attributes[3] & termios.ECHO
    assert attributes[3] & termios.ICANON
