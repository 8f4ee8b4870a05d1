"""What `pip install moot` brings, and what a command says when it needs an extra that is not installed.

An extra that is "not installed" is simulated the way Python itself blocks a module: `sys.modules[name] =
None` in the child process, so every `import name` there fails as it would without the package.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from moot.cli import _LAZY

from ._proc import _env

ROOT = Path(__file__).parents[2]
SERVER = ("fastapi", "starlette", "uvicorn", "websockets", "prometheus_client")


def _without(
    blocked: tuple[str, ...], *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`moot ARGS` in a process where the `blocked` packages cannot be imported."""
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "from moot.cli import main\n"
        f"sys.argv = ['moot', *{args!r}]\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**_env(), **(env or {})},
        timeout=60,
        check=False,
    )


def test_hardening_13_import_moot_and_moot_help_load_no_web_server() -> None:
    code = (
        "import sys\n"
        "import moot\n"
        "from moot.cli import main\n"
        "sys.argv = ['moot', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        f"print(sorted(name for name in {SERVER!r} if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("[]"), result.stdout[-300:]
    for name in _LAZY:  # the lazy commands are listed all the same
        assert name in result.stdout


def test_hardening_13_help_lists_what_each_lazy_command_says_of_itself() -> None:
    import importlib

    import typer

    for lazy in _LAZY.values():
        target = getattr(importlib.import_module(lazy.module), lazy.name)
        real = target.info.help if isinstance(target, typer.Typer) else target.__doc__
        assert isinstance(real, str)
        assert " ".join(real.split()).startswith(lazy.help), (lazy.help, real)


@pytest.mark.parametrize("command", [["serve"], ["users", "add", "alice"]])
def test_hardening_13_the_service_without_the_server_extra_says_what_to_install(command: list[str]) -> None:
    result = _without(("fastapi",), *command)
    assert result.returncode == 2, result.stderr
    assert "the HTTP service needs the server extra" in result.stderr
    assert "pip install 'moot[server]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_hardening_13_postgres_without_asyncpg_says_what_to_install() -> None:
    url = "postgresql://moot@127.0.0.1:5432/test"
    result = _without(("asyncpg",), "db", "upgrade", env={"MOOT_DATABASE_URL": url})
    assert result.returncode == 2, result.stderr
    assert "pip install 'moot[postgres]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_hardening_13_a_model_whose_sdk_is_missing_is_named_by_validate_and_fails_its_turns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "room.yaml"
    path.write_text(
        "task: t\nprotocol: sequential\nmax_rounds: 1\nagents:\n"
        "  - {name: A, model: {provider: anthropic, api_key: placeholder-key, max_retries: 0}}\n"
        "  - {name: B, model: {provider: openai, transport: sdk, api_key: placeholder-key, max_retries: 0,"
        ' base_url: "http://127.0.0.1:9/v1"}}\n',
        encoding="utf-8",
    )
    validated = _without(("anthropic", "httpx2", "openai"), "validate", str(path))
    assert validated.returncode == 0, validated.stderr
    assert "pip install 'moot[anthropic]'" in validated.stdout
    assert "pip install 'moot[openai-sdk]'" in validated.stdout
    ran = _without(("anthropic", "httpx2", "openai"), "run", str(path), "--json")
    assert ran.returncode == 1, ran.stderr
    assert "pip install 'moot[anthropic]'" in ran.stdout
    assert "pip install 'moot[openai-sdk]'" in ran.stdout
    assert "Traceback" not in ran.stderr


def test_the_core_install_brings_no_server_and_dev_brings_every_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = " ".join(project["dependencies"]).lower()
    for name in ("fastapi", "uvicorn", "asyncpg", "anthropic", "openai", "cryptography"):
        assert name not in core, name
    extras = project["optional-dependencies"]
    assert {"server", "postgres", "anthropic", "openai-sdk", "all", "dev"} <= set(extras)
    assert "moot[all]" in extras["dev"]
    assert any(req.startswith("pytest-timeout") for req in extras["dev"])
    for extra in ("server", "postgres", "anthropic", "openai-sdk"):
        assert extra in extras["all"][0]


def test_the_demo_and_a_saved_run_need_no_extra(tmp_path: Path) -> None:
    blocked = (*SERVER, "cryptography", "asyncpg", "anthropic", "httpx2", "openai")
    demo = _without(blocked, "demo", "--json", "--speed", "0", "--rounds", "1")
    assert demo.returncode == 0, demo.stderr
    assert '"type":"room_completed"' in demo.stdout.splitlines()[-1]
    path = tmp_path / "room.yaml"
    path.write_text("task: t\nmax_rounds: 1\ndefault_model: simulated\nagents: [{name: A}, {name: B}]\n")
    database = {"MOOT_DATABASE_URL": f"sqlite:///{tmp_path / 'moot.db'}"}
    saved = _without(blocked, "run", str(path), "--save", "--json", env=database)
    assert saved.returncode == 0, saved.stderr
