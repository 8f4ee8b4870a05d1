"""`moot db upgrade` and `moot db current` on the configured database."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moot.store.cli import db_app


def test_upgrade_then_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOOT_DATABASE_URL", f"sqlite:///{tmp_path / 'moot.db'}")
    runner = CliRunner()
    before = runner.invoke(db_app, ["current"])
    assert before.exit_code == 0, before.output
    assert "at revision none, newest is 0001; run `moot db upgrade`" in before.output
    upgraded = runner.invoke(db_app, ["upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.output.strip() == f"sqlite+aiosqlite:///{tmp_path / 'moot.db'}: at revision 0001 (newest)"
    assert runner.invoke(db_app, ["current"]).output == upgraded.output


def test_an_unreachable_database_exits_2_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MOOT_DATABASE_URL", f"postgresql://moot:s3cret@127.0.0.1:{port}/moot")
    result = CliRunner().invoke(db_app, ["upgrade"])
    assert result.exit_code == 2
    assert f"moot:***@127.0.0.1:{port}/moot" in result.output
    assert "s3cret" not in result.output
