"""Settings in one place, read from MOOT_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where Moot keeps things and how the server behaves. Every field can be set as MOOT_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="MOOT_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir("moot")))
    database_url: str | None = Field(
        None,
        description="sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host/db; SQLite by default.",
    )
    host: str = Field("127.0.0.1", description="Address `moot serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `moot serve` listens on.")
    secret_key: SecretStr | None = Field(
        None,
        description="Fernet key that encrypts provider API keys at rest; by default one is generated into "
        "<data_dir>/secret.key (mode 0600) on first start.",
    )
    admin_token: SecretStr | None = Field(
        None, description="The admin's API token; by default the first start creates an admin and prints one."
    )
    block_private_urls: bool = Field(
        False,
        description="Refuse providers on private, loopback or link-local addresses: checked as each "
        "connection opens, whatever the name resolves to then; providers are then reached directly, not "
        "through HTTP(S)_PROXY.",
    )
    local_models_dir: Path | None = Field(
        None,
        description="A folder of GGUF files that rooms may run with provider: llamacpp (model_path names a "
        "file in it; llama.cpp's server is started on this machine). Unset, the service refuses local models.",
    )
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest request body the server reads.")
    provider_test_timeout: float = Field(15.0, gt=0, description="Seconds `POST /providers/{id}/test` waits.")
    interventions_per_room: int = Field(
        30, ge=1, description="Words a room takes from people per `intervention_window`; more answer 429."
    )
    interventions_per_user: int = Field(
        60, ge=1, description="Words one user may send, to all their rooms, per `intervention_window`."
    )
    stream_frame_ms: int = Field(
        50,
        ge=0,
        le=10_000,
        description="Milliseconds over which a turn's new text is joined into one frame for live streams "
        "(SSE, WebSocket); 0 sends every piece as its own frame.",
    )
    intervention_window: float = Field(
        60.0, gt=0, description="Seconds over which interventions are counted for the two limits above."
    )
    redis_url: SecretStr | None = Field(
        None,
        description="redis://host:6379/0: with PostgreSQL, turns on the scaled-out mode: `moot serve` "
        "processes hold no rooms, `moot worker` processes run them, events travel through Redis.",
    )
    takeover_seconds: float = Field(
        15.0,
        ge=1.0,
        le=3600.0,
        description="Scaled-out mode: a killed worker's rooms are taken over by another within this time.",
    )
    worker_rooms: int = Field(100, ge=1, description="Rooms one `moot worker` runs at most at once.")
    worker_metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Port on which `moot worker` serves /metrics; none by default."
    )
    stream_maxlen: int = Field(
        20_000,
        ge=100,
        description="Scaled-out mode: batches of events each room's Redis stream keeps (older ones go; "
        "clients replay them from the database).",
    )

    @property
    def scaled(self) -> bool:
        """Whether rooms run in `moot worker` processes (MOOT_REDIS_URL set) rather than in `moot serve`."""
        return self.redis_url is not None and bool(self.redis_url.get_secret_value())

    tracing: Literal["off", "otlp"] = Field(
        "off",
        description="otlp: OpenTelemetry spans for each room run, turn and model call, sent by OTLP over HTTP "
        "to OTEL_EXPORTER_OTLP_ENDPOINT (the exporter's standard OTEL_* variables apply); needs the tracing "
        "extra.",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'moot.db'}"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"


def get_settings() -> Settings:
    return Settings()
