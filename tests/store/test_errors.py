"""A wrong or unreachable database gives a StoreError that names it, says what to check, hides secrets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from moot.store import Store, StoreError

from .fixtures import Database


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_an_unreachable_database_names_the_url_without_its_password() -> None:
    port = _closed_port()
    async with Store.from_url(f"postgresql://moot:s3cret-pw@127.0.0.1:{port}/moot") as store:
        assert store.url == f"postgresql+asyncpg://moot:***@127.0.0.1:{port}/moot"
        with pytest.raises(StoreError) as caught:
            await store.get_room("any")
    message = str(caught.value)
    assert f"postgresql+asyncpg://moot:***@127.0.0.1:{port}/moot" in message
    assert "MOOT_DATABASE_URL" in message
    assert "s3cret-pw" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://root:hunter2@db/moot", "mysql://root:***@db/moot: mysql is not supported"),
        ("postgresql://ann:hunter2@db:port/moot", "postgresql://ann:***@db:port/moot is not a database URL"),
    ],
)
def test_a_misconfigured_url_says_what_to_set(url: str, expected: str) -> None:
    with pytest.raises(StoreError, match="set MOOT_DATABASE_URL") as caught:
        Store.from_url(url)
    assert expected in str(caught.value)
    assert "hunter2" not in str(caught.value)


async def test_sync_urls_get_the_async_drivers(tmp_path: Path) -> None:
    async with Store.from_url(f"sqlite:///{tmp_path / 'x.db'}") as lite:
        assert lite.url.startswith("sqlite+aiosqlite:///")
    async with Store.from_url("postgres://ann:pw@127.0.0.1/moot") as postgres:
        assert postgres.url == "postgresql+asyncpg://ann:***@127.0.0.1/moot"


async def test_the_default_database_is_a_sqlite_file_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MOOT_DATABASE_URL", raising=False)
    monkeypatch.setenv("MOOT_DATA_DIR", str(tmp_path / "new" / "data"))
    async with Store.from_url() as store:
        await store.ensure_schema()
    assert (tmp_path / "new" / "data" / "moot.db").is_file()
    monkeypatch.setenv("MOOT_DATABASE_URL", f"sqlite:///{tmp_path / 'chosen.db'}")
    async with Store.from_url() as chosen:
        assert chosen.url.endswith("chosen.db")


async def test_a_database_never_migrated_says_to_upgrade(fresh_database: Database) -> None:
    async with fresh_database.store() as store:
        with pytest.raises(StoreError, match="run `moot db upgrade`"):
            await store.list_rooms()
