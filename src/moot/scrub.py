"""The one gate for untrusted text: secrets out, control characters out, size capped.

Every text that comes from a provider (error bodies, in-stream errors, exception messages), a user or a
file passes `scrub` before it reaches an event, a log line or a database row. Two nets catch a secret: the
exact values this process has seen (`remember_secret`, called where a key or token is resolved) and the
shapes keys and tokens have (`sk-...`, `Bearer ...`, `moot_...`, `api_key=...`, `Authorization: ...`).
"""

from __future__ import annotations

import re
import threading

__all__ = ["MASK", "remember_secret", "scrub"]

MASK = "***"
_MIN_SECRET = 8  # shorter values are too likely to be ordinary words to remove everywhere

_TOKEN = r"[A-Za-z0-9._~+/=-]"
# Each shape with the words that must be in the (lowercased) text for it to match: most texts hold none of
# them, and a substring test is far cheaper than running a regex over a long reply.
_SHAPES: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    # a key=value or header whose name says a secret follows: keep the name, mask the value
    (
        ("api", "auth", "token", "secret"),
        re.compile(
            r"(?P<name>(?i:x-api-key|api[_-]?key|apikey|authorization|access[_-]?token|refresh[_-]?token"
            r"|client[_-]?secret|secret[_-]key)[\"']?\s*[:=]\s*[\"']?|[?&]token=)"
            r"(?:(?i:bearer|basic|token)\s+)?[^\s\"',;&<>(){}\[\]]+"
        ),
    ),
    # a bearer token: random, so it has a digit ("Bearer of bad news" stays)
    (("bearer",), re.compile(rf"(?P<bearer>(?i:\bbearer)\s+)(?={_TOKEN}*\d){_TOKEN}{{8,}}")),
    # OpenAI / Anthropic keys: sk-..., sk-proj-..., sk-ant-api03-...
    (("sk-",), re.compile(r"(?<![A-Za-z0-9_-])(?i:sk)-[A-Za-z0-9_-]{8,}")),
    # Moot's own bearer tokens (random, so with a digit or capital; metric names like moot_rooms stay)
    (("moot_",), re.compile(r"(?<![A-Za-z0-9_-])moot_(?=[A-Za-z0-9_-]*[A-Z0-9])[A-Za-z0-9_-]{20,}")),
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # keeps \t and \n

_lock = threading.Lock()
_known: set[str] = set()
_secrets: tuple[str, ...] = ()  # longest first, so a secret holding another is removed whole


def remember_secret(value: str | None) -> None:
    """Adds a key or token this process uses to the values `scrub` removes wherever they appear."""
    global _secrets
    value = (value or "").strip()
    if len(value) < _MIN_SECRET or value in _known:
        return
    with _lock:
        _known.add(value)
        _secrets = tuple(sorted(_known, key=len, reverse=True))


def scrub(text: str, *, limit: int = 2000) -> str:
    """`text` without secrets or control characters, cut to `limit` characters (0: no cap) with a note."""
    if not text:
        return ""
    text = _CONTROL.sub("", text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    for words, shape in _SHAPES:
        if any(word in lowered for word in words):
            text = shape.sub(_mask, text)
    if 0 < limit < len(text):
        text = f"{text[:limit]}… ({len(text) - limit} more characters)"
    return text


def _mask(match: re.Match[str]) -> str:
    """Keeps what names the secret (`api_key=`, `Bearer `), masks the secret itself."""
    kept = match.groupdict()
    return (kept.get("name") or kept.get("bearer") or "") + MASK
