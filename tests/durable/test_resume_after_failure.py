"""A room that failed at room level, resumed: the discussion goes on to its real conclusion (B12, L10)."""

from __future__ import annotations

import json

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from moot.durable import DurableRun
from moot.engine import Run
from moot.export import to_json
from moot.spec import RoomSpec
from moot.store import Store

from ._support import board

# A storage failure of the kind seen in the field (a lock, a full disk), made by the database itself: every
# write of a round summary is refused while the trigger is there.
_SQLITE_ON = (
    "CREATE TRIGGER moot_test_fail BEFORE INSERT ON entries WHEN NEW.kind = 'summary' "
    "BEGIN SELECT json('disk full'); END"  # an error at run time: 'malformed JSON'
)
_POSTGRES_ON = (
    "CREATE FUNCTION moot_test_fail() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ "
    "LANGUAGE plpgsql",
    "CREATE TRIGGER moot_test_fail BEFORE INSERT ON entries FOR EACH ROW WHEN (NEW.kind = 'summary') "
    "EXECUTE FUNCTION moot_test_fail()",
)
_POSTGRES_OFF = ("DROP TRIGGER moot_test_fail ON entries", "DROP FUNCTION moot_test_fail()")


async def _summaries_refused(url: str, refused: bool) -> None:
    sqlite = make_url(url).get_backend_name() == "sqlite"
    if sqlite:
        statements: tuple[str, ...] = (_SQLITE_ON,) if refused else ("DROP TRIGGER moot_test_fail",)
    else:
        statements = _POSTGRES_ON if refused else _POSTGRES_OFF
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def test_hardening_3_a_failed_room_resumed_ends_with_its_real_conclusion(db_url: str) -> None:
    # covers: B12, L10
    spec = RoomSpec.from_data(board(0))
    uninterrupted = Run(spec)
    await uninterrupted.wait()
    expected = [(e.turn_id, e.text) for e in uninterrupted.transcript if e.is_turn]

    async with Store.from_url(db_url) as store:
        await store.ensure_schema()
        record = await store.create_room(spec)
        await _summaries_refused(db_url, True)
        first = [e async for e in DurableRun(store, record.id)]

        failed = first[-1]
        assert failed.type == "room_failed"
        assert "JSON" not in failed.error and "disk full" not in failed.error  # no server internals
        assert "moot.db" not in failed.error and "sqlite" not in failed.error
        [provisional] = [e for e in first if e.type == "room_concluded"]
        assert provisional.fallback and provisional.provisional
        assert (await store.get_room(record.id)).status == "error"

        await _summaries_refused(db_url, False)
        second = [e async for e in DurableRun(store, record.id)]

        assert second[-1].type == "room_completed"
        [concluded] = [e for e in second if e.type == "room_concluded"]
        assert not concluded.fallback and not concluded.provisional
        transcript = await store.load_transcript(record.id)
        stored = await store.get_room(record.id)

    # The discussion went on where it failed: every turn of an uninterrupted run, each once, in order.
    assert [(e.turn_id, e.text) for e in transcript if e.is_turn] == expected
    assert transcript.concluded and transcript.conclusion is not None
    assert not transcript.conclusion.fallback and not transcript.conclusion.provisional
    assert stored.status == "completed" and stored.conclusion == transcript.conclusion.conclusion
    exported = json.loads(to_json(record.id, spec, transcript, status=stored.status))
    assert exported["conclusion"]["fallback"] is False
    assert exported["conclusion"]["summary"] == concluded.summary
