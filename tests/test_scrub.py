"""The one scrubber: every key shape and every remembered secret out, ordinary words kept, size capped."""

from __future__ import annotations

import pytest

from moot.scrub import MASK, remember_secret, scrub


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Incorrect API key provided: sk-abcdefghijklmnop1234.", "sk-abcdefghijklmnop1234"),
        ("key sk-proj-AbCdEf012345_-xyz was revoked", "sk-proj-AbCdEf012345_-xyz"),
        ("invalid x-api-key sk-ant-api03-QWERTYuiop0987654321-abc", "sk-ant-api03-QWERTYuiop0987654321-abc"),
        ("header was Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc123", "eyJhbGciOiJIUzI1NiJ9.e30.abc123"),
        ("GET /api/v1/rooms/ws?token=moot_Ab3dEfGhIjKlMnOpQrStUvWxYz0123456789-_ HTTP/1.1", "moot_Ab3dEf"),
        ("config api_key=hunter2hunter2 rest", "hunter2hunter2"),
        ('{"api_key": "zzq-NOT-A-KNOWN-SHAPE-42", "model": "x"}', "zzq-NOT-A-KNOWN-SHAPE-42"),
        ("x-api-key: opaque-value-77 ok", "opaque-value-77"),
        ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
        ("authorization=Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("url?token=abcdefghijk&x=1", "abcdefghijk"),
        ("'apiKey': 'k-9f8e7d6c'", "k-9f8e7d6c"),
    ],
)
def test_key_shapes_are_removed(text: str, secret: str) -> None:
    cleaned = scrub(text)
    assert secret not in cleaned
    assert MASK in cleaned


def test_a_remembered_secret_is_removed_wherever_it_appears() -> None:
    secret = "plain-looking-value-0f3a9c"
    assert scrub(f"echo {secret}!") == f"echo {secret}!"  # no known shape: only memory catches it
    remember_secret(secret)
    assert scrub(f"echo {secret}!{secret}") == f"echo {MASK}!{MASK}"


def test_a_secret_split_by_control_characters_is_still_removed() -> None:
    remember_secret("split-secret-123456")
    assert "123456" not in scrub("x split-secret\x00-123456 y")


def test_short_values_and_none_are_not_remembered() -> None:
    remember_secret(None)
    remember_secret("")
    remember_secret("abc1234")  # 7 characters: too likely to be an ordinary word
    assert scrub("abc1234 stays") == "abc1234 stays"


@pytest.mark.parametrize(
    "text",
    [
        "The bearer of bad news asked for a task-based plan with scikit-learn.",
        "Set OPENAI_API_KEY or give api_key_env; the model's api_key is wrong.",
        "moot_rooms_running and moot_model_first_token_seconds are metrics.",
        "A risk-averse desk-bound team: max_tokens=512, temperature 0.2.",
        "董事会讨论了风险与收益。",
        "Line one\n\tindented line two",
    ],
)
def test_ordinary_words_are_kept(text: str) -> None:
    assert scrub(text) == text


def test_control_characters_are_stripped_but_newlines_and_tabs_kept() -> None:
    assert scrub("a\x1b[31mred\x07\r\nb\tc\x7f\x85") == "a[31mred\nb\tc"


def test_long_text_is_capped_with_a_note() -> None:
    assert scrub("x" * 2500) == "x" * 2000 + "… (500 more characters)"
    assert scrub("abcdef", limit=3) == "abc… (3 more characters)"
    assert scrub("y" * 5000, limit=0) == "y" * 5000


def test_a_secret_across_the_cap_is_removed_before_cutting() -> None:
    text = "a" * 1990 + " sk-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123"
    cleaned = scrub(text)
    assert "ABCDEFGH" not in cleaned
    assert "sk-ABCD" not in cleaned


def test_empty_text() -> None:
    assert scrub("") == ""
