"""Moot: discussions among several LLM agents, streamed live, steered by people, kept word for word."""

from __future__ import annotations

from moot.conclusion import Conclusion
from moot.engine import Run, RunResult, run
from moot.events import Event, event_json, parse_event
from moot.exceptions import (
    ConfigError,
    ContextTooLong,
    ModelAuthError,
    ModelError,
    ModelRequestError,
    ModelUnavailable,
    MootError,
    RunError,
    TransientModelError,
)
from moot.models import Completion, Message, Model, ModelRequest, Usage
from moot.spec import AgentSpec, Limits, ModelSpec, RoomSpec, load_room
from moot.transcript import Entry, Transcript

__version__ = "0.1.0"

__all__ = [
    "AgentSpec",
    "Completion",
    "Conclusion",
    "ConfigError",
    "ContextTooLong",
    "Entry",
    "Event",
    "Limits",
    "Message",
    "Model",
    "ModelAuthError",
    "ModelError",
    "ModelRequest",
    "ModelRequestError",
    "ModelSpec",
    "ModelUnavailable",
    "MootError",
    "RoomSpec",
    "Run",
    "RunError",
    "RunResult",
    "Transcript",
    "TransientModelError",
    "Usage",
    "event_json",
    "load_room",
    "parse_event",
    "run",
]
