"""The API's routes, one module per resource, all under /api/v1; health and metrics at the root."""

from __future__ import annotations

from fastapi import APIRouter

from moot.service.routes import agents, providers, rooms, streams, users
from moot.service.schemas import ErrorResponse

API_PREFIX = "/api/v1"
ERRORS: dict[int | str, dict[str, object]] = {
    "4XX": {"model": ErrorResponse, "description": "What was wrong."}
}

api_router = APIRouter(prefix=API_PREFIX, responses=ERRORS)
for module in (users, providers, agents, rooms, streams):
    api_router.include_router(module.router)
