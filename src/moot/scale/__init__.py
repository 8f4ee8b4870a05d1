"""The scaled-out mode: `moot serve` processes and `moot worker` processes sharing PostgreSQL and Redis.

Set MOOT_REDIS_URL (and a PostgreSQL MOOT_DATABASE_URL) to turn it on; see decision 0010.
"""

from __future__ import annotations

try:
    import redis  # noqa: F401
except ModuleNotFoundError as exc:  # without the scale extra: say what to install
    from moot._extras import explain

    raise ModuleNotFoundError(explain(exc, "the scaled-out mode") or str(exc), name=exc.name) from None
