"""The README's examples run as written: its room file loads and its Python snippet runs as a script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

README = Path(__file__).parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(encoding="utf-8"), re.M | re.S)


def _offline_room(tmp_path: Path) -> Path:
    """The README's room file with every model swapped for the simulated one, streaming at once."""
    [room_file] = [block for block in _blocks("yaml") if "agents:" in block]
    data = yaml.safe_load(room_file)
    data["models"] = {name: {"provider": "simulated", "tokens_per_second": 0} for name in data["models"]}
    data["max_rounds"] = 1
    path = tmp_path / "room.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_hardening_13_the_readme_python_snippet_runs_as_a_script(tmp_path: Path) -> None:
    [snippet] = _blocks("python")
    _offline_room(tmp_path)
    script = tmp_path / "snippet.py"
    script.write_text(snippet, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.strip(), "the snippet printed nothing"
    # the last line is the conclusion: a summary and the consensus points, a list
    assert result.stdout.rstrip().endswith("]")


def test_hardening_13_the_readme_steps_in_once_and_says_how_to_reach_moot() -> None:
    [snippet] = _blocks("python")
    assert "asyncio.run(" in snippet
    assert snippet.count("run.intervene(") == 1
    assert "stepped_in" in snippet  # guarded: one intervention, not one per turn
    text = README.read_text(encoding="utf-8")
    assert "source .venv/bin/activate" in text


def test_the_readme_speaks_to_users() -> None:
    text = README.read_text(encoding="utf-8")
    assert not re.search(r"\b[LB]\d{1,2}\b", text), "behaviour ids belong in the tests, not the README"
    assert not re.search(r"(?i)\bissue\s*#?\d+|hardening", text)
