"""The HTTP service: rooms run inside the server process, steered and watched over /api/v1.

    app = create_app()            # settings from MOOT_* variables; `moot serve` runs it on uvicorn

Starting opens the store (migrating it), makes sure an admin can log in, and resumes the rooms a previous
process left running or paused by its shutdown; stopping pauses every running room so the next start
resumes it. With MOOT_REDIS_URL (the scaled-out mode) rooms run in `moot worker` processes instead, and
this process only asks them to run, pause and take words, and relays the rooms' events from Redis.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

try:
    from fastapi import FastAPI
except ModuleNotFoundError as exc:  # without the server extra: say what to install
    from moot._extras import explain

    raise ModuleNotFoundError(explain(exc, "the HTTP service") or str(exc), name=exc.name) from None

from moot import __version__
from moot.service import errors
from moot.service.auth import ensure_admin
from moot.service.crypto import Cipher
from moot.service.heap import settle_heap
from moot.service.limits import limiter_for
from moot.service.pages import install_docs
from moot.service.providers import ProviderResolver
from moot.service.routes import api_router
from moot.service.routes.health import router as health_router
from moot.service.runtime import RoomManager
from moot.service.schemas import RoomCreate
from moot.service.web import install_web
from moot.settings import Settings, get_settings
from moot.store import Store

if TYPE_CHECKING:
    from moot.scale.cluster import Cluster

__all__ = ["create_app"]

DESCRIPTION = """Discussions among LLM agents, run inside this server.

Every call under `/api/v1` takes `Authorization: Bearer <token>` (or `?token=`). Tokens come from
`moot users token NAME` or, for admins, `POST /api/v1/users`. Errors are `{"error": {"code", "message",
"details"}}`.
"""


def create_app(settings: Settings | None = None, *, store: Store | None = None) -> FastAPI:
    """The app; `store` replaces the one MOOT_DATABASE_URL would open (tests). The app closes it."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store or Store.from_url(settings.resolved_database_url, local_pids=not settings.scaled)
        try:
            await opened.ensure_schema()
            cipher = Cipher.from_settings(settings)
            print(f"moot: {await ensure_admin(opened, settings)}", file=sys.stderr, flush=True)
            resolver = ProviderResolver(opened, cipher, settings)
            manager = RoomManager(
                opened,
                resolve=resolver.resolve,
                models_for=resolver.models_for,
                frame=settings.stream_frame_ms / 1000,
                cluster=_cluster(settings, opened),
            )
            app.state.settings, app.state.store, app.state.cipher = settings, opened, cipher
            app.state.manager = manager
            app.state.limiter = limiter_for(settings, manager.cluster.redis if manager.cluster else None)
            await manager.start()
            settle_heap()  # start-up's objects out of the collector's walks, full collections rarer
            try:
                yield
            finally:
                await manager.shutdown()
        finally:
            await opened.close()

    app = FastAPI(
        title="Moot",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=lambda route: route.name,  # operation ids: create_room, run_room, ...
        docs_url=None,  # served by install_docs, from the package's own copies of Swagger UI and ReDoc
        redoc_url=None,
    )
    errors.install(app, max_body_bytes=settings.max_body_bytes)
    app.include_router(api_router)
    app.include_router(health_router)
    install_docs(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    install_web(app)  # the page: /, /rooms/{id}, /login

    return app


def _cluster(settings: Settings, store: Store) -> Cluster | None:
    """The scaled-out mode's link to the workers when MOOT_REDIS_URL is set: rooms run there, not here."""
    if settings.redis_url is None or not settings.scaled:
        return None
    from moot.scale.bus import connect
    from moot.scale.cluster import Cluster

    redis = connect(settings.redis_url.get_secret_value())
    return Cluster(redis, store, takeover=settings.takeover_seconds)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the room document that `POST /rooms` reads itself (as JSON or YAML)."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        room = RoomCreate.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in room.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components["RoomCreate"] = room
    return app.openapi_schema or schema
