"""The child process that holds llama.cpp's server for Moot: `python -m moot.models._llamacpp_child CONFIG`.

xllamacpp runs the server inside the process that makes it (C++ threads), so Moot runs it in a child of its
own, tied to Moot's lifetime twice over: the child reads its stdin until end of file, which comes when Moot
closes the pipe or dies in any way (kill -9 included, as the kernel closes a dead process's pipes), and on
Linux the kernel also kills the child when its parent dies (PR_SET_PDEATHSIG). It prints one line,
`READY <address>`, once the server listens on a free loopback port.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the stdin pipe still ends us
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(0)


def main(argv: list[str]) -> int:
    config: dict[str, Any] = json.loads(argv[1])
    _die_with_parent(int(config["parent"]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is Moot's to handle; Moot then stops us
    import xllamacpp  # type: ignore[import-untyped,import-not-found,unused-ignore]

    params = xllamacpp.CommonParams()
    params.model.path = config["path"]
    params.n_parallel = config["slots"]
    params.n_ctx = config["window"] * config["slots"]  # llama.cpp splits the context among its slots
    params.cpuparams.n_threads = config["threads"]
    params.cpuparams_batch.n_threads = config["threads"]
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # a free port, chosen by the kernel as the server binds: no race with another program
    params.endpoint_props = True
    params.endpoint_slots = True
    server = xllamacpp.Server(params)
    sys.stdout.write(f"READY {server.listening_address}\n")
    sys.stdout.flush()
    while sys.stdin.buffer.read(65536):  # until Moot closes the pipe or is gone
        pass
    os._exit(0)  # the server's threads end with the process; its destructor may wait on a busy slot


if __name__ == "__main__":
    sys.exit(main(sys.argv))
