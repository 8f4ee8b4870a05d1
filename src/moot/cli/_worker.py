"""`moot worker`: runs rooms for the `moot serve` processes of the scaled-out mode (MOOT_REDIS_URL)."""

from __future__ import annotations

import asyncio
import logging.config
from collections.abc import Callable
from typing import Annotated

import typer

from moot.exceptions import MootError
from moot.scale.worker import serve_worker  # without the scale or server extra: says what to install
from moot.service.logs import log_config
from moot.settings import get_settings


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop `moot serve` runs on (uvicorn's "auto"): uvloop where it is installed, else asyncio's own.
    Workers and servers run rooms alike, on the loop that costs least per chunk read and frame sent."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def worker(
    rooms: Annotated[
        int | None,
        typer.Option(min=1, help="Rooms it runs at most at once (default 100, or MOOT_WORKER_ROOMS)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="Serve /metrics on this port (or MOOT_WORKER_METRICS_PORT)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run rooms for the API servers (scaled-out mode: MOOT_REDIS_URL). It needs MOOT_REDIS_URL and a
    PostgreSQL MOOT_DATABASE_URL shared with every `moot serve`. Start as many as the rooms need; a killed
    worker's rooms move to the others."""

    settings = get_settings()
    updates: dict[str, object] = {}
    if rooms is not None:
        updates["worker_rooms"] = rooms
    if metrics_port is not None:
        updates["worker_metrics_port"] = metrics_port
    settings = settings.model_copy(update=updates)
    if not settings.scaled:
        typer.secho("✗ moot worker needs MOOT_REDIS_URL, e.g. redis://127.0.0.1:6379/0", fg="red", err=True)
        raise typer.Exit(2)
    logging.config.dictConfig(log_config(log_level))
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(serve_worker(settings))
    except MootError as exc:
        typer.secho(f"✗ {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
