"""The server's logging: every record passes one filter that removes tokens and keys, whoever logged it.

Tokens travel in URLs (`?token=` for EventSource and WebSocket clients, the first start's login URL), and
uvicorn, websockets and our own code all log URLs, so the mask sits on every handler rather than on one
logger: a record that reaches a handler has been scrubbed, at any level.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from moot.scrub import scrub

LOG_LIMIT = 20_000  # a log line longer than this is cut, with a note saying how much was left out
FORMAT = "%(levelname)s:     %(name)s: %(message)s"


class ScrubSecrets(logging.Filter):
    """Scrubs a record's message, its arguments and its traceback in place; never drops a record.

    Arguments stay arguments (uvicorn's access formatter unpacks them), each string one scrubbed, and
    anything else but a number turned into its scrubbed text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = scrub(record.msg, limit=LOG_LIMIT)
        else:
            record.msg = scrub(str(record.msg), limit=LOG_LIMIT)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _clean(value) for key, value in record.args.items()}
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, limit=LOG_LIMIT)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info, limit=LOG_LIMIT)
        return True


def _clean(value: Any) -> Any:
    if value is None or isinstance(value, int | float):
        return value
    return scrub(value if isinstance(value, str) else str(value), limit=LOG_LIMIT)


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup with the scrubbing filter on every handler, and a root handler for Moot's
    own loggers and the libraries' (websockets, SQLAlchemy, ...), all at `level`."""
    import uvicorn.config

    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["filters"] = {"scrub": {"()": f"{__name__}.ScrubSecrets"}}
    config["formatters"]["plain"] = {"format": FORMAT}
    config["handlers"]["root"] = {
        "formatter": "plain",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["scrub"]
    config["root"] = {"handlers": ["root"], "level": level.upper()}
    return config
