"""`/healthz` for load balancers and `/metrics` for Prometheus; neither needs a token."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel

from moot import __version__
from moot.service.deps import ManagerDep, StoreDep
from moot.service.errors import error_response
from moot.service.metrics import MetricsCollector
from moot.store import StoreError

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    version: str
    database: str
    rooms_running: int


@router.get(
    "/healthz", response_model=Health, responses={503: {"description": "The database is unreachable."}}
)
async def healthz(store: StoreDep, manager: ManagerDep) -> Health | Response:
    """ok when the database answers; 503 when it does not."""
    try:
        await store.count_rooms()
    except StoreError:
        return error_response(503, "the database does not answer", code="unavailable")
    return Health(status="ok", version=__version__, database="ok", rooms_running=len(manager.running()))


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics(store: StoreDep, manager: ManagerDep) -> Response:
    """Rooms by status (read from the database at scrape time), turns, tokens, model latency, stream clients."""
    rooms = GaugeMetricFamily("moot_rooms", "Rooms by status, in the database.", labels=["status"])
    for status, count in (await store.count_rooms_by_status()).items():
        rooms.add_metric([status], count)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([rooms]))
    registry.register(MetricsCollector(manager.metrics, running=lambda: len(manager.running())))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
