"""A token's event made the cheap way is the same event pydantic would make."""

from __future__ import annotations

from moot.events import TurnDelta, event_json, parse_event, turn_delta


def test_a_delta_made_cheaply_is_the_event_pydantic_makes() -> None:
    fields = {"turn_id": "r1:speech:Ada", "round": 1, "speaker": "Ada", "text": "wörds \n"}
    cheap = turn_delta(**fields)
    built = TurnDelta.model_construct(**fields)
    assert cheap == built == TurnDelta(**fields)
    assert list(cheap.__dict__) == list(TurnDelta.model_fields)  # a field added to TurnDelta fails here
    assert cheap.model_fields_set == built.model_fields_set
    assert event_json(cheap) == event_json(TurnDelta(**fields))
    cheap.seq = built.seq = 7  # numbered as the engine numbers it
    assert cheap == built and cheap.model_fields_set == built.model_fields_set
    assert parse_event(event_json(cheap)) == cheap


def test_a_joined_delta_keeps_its_seq_as_set() -> None:
    cheap = turn_delta("r1:speech:Ada", 1, "Ada", "a b c", seq=42)
    built = TurnDelta.model_construct(
        seq=42, type="turn_delta", turn_id="r1:speech:Ada", round=1, speaker="Ada", text="a b c"
    )
    assert cheap == built and cheap.model_fields_set == built.model_fields_set
    assert cheap.model_dump() == built.model_dump()


def test_numbering_an_event_is_pydantic_s_own_assignment() -> None:
    from moot.events import RoundStarted, numbered

    for cls in (TurnDelta, RoundStarted):
        assert not cls.model_config.get("validate_assignment") and not cls.model_config.get("frozen")
    for make in (
        lambda: turn_delta("r1:speech:Ada", 1, "Ada", "w"),
        lambda: RoundStarted(round=2, max_rounds=3),
    ):
        ours, theirs = make(), make()
        numbered(ours, 12)
        theirs.seq = 12
        assert ours == theirs and ours.model_fields_set == theirs.model_fields_set
        assert event_json(ours) == event_json(theirs)
