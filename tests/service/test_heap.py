"""A started server keeps the collector's full passes, which pause every stream, rare."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from moot.service.heap import FULL_COLLECTION_AFTER, YOUNG_COLLECTION_AFTER
from store.fixtures import Database

from .helpers import make_settings, running_server


@pytest.fixture
def python_defaults() -> Iterator[None]:
    """The collector as Python starts it, and as it was after the test."""
    was = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*was)


@pytest.mark.usefixtures("python_defaults")
async def test_a_started_server_freezes_start_up_and_makes_full_collections_rarer(
    database: Database, tmp_path: Path
) -> None:
    async with running_server(database, make_settings(tmp_path)):
        assert gc.get_freeze_count() > 0
        young, middle, full = gc.get_threshold()
        assert (young, middle, full) == (YOUNG_COLLECTION_AFTER, 10, FULL_COLLECTION_AFTER)
        assert "genai_prices.data" in sys.modules  # the price table is loaded before the freeze
        walked = {type(thing).__module__ for thing in gc.get_objects()}
        assert not any(name.startswith("genai_prices") for name in walked)  # loaded, then frozen
    assert FULL_COLLECTION_AFTER > 10
    assert YOUNG_COLLECTION_AFTER > 700
