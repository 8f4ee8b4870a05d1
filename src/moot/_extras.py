"""The optional parts of Moot and the extra that installs each, so a missing package says what to install.

`pip install moot` brings what the library and the terminal need: the simulated model, OpenAI-compatible
servers over httpx, and rooms stored in SQLite. The HTTP service, PostgreSQL, the Anthropic SDK and the
OpenAI SDK transport and local GGUF models (llama.cpp's server) are extras (see pyproject.toml); code that needs one imports it late and calls
`missing` or `explain` to turn an absent package into a message a person can act on.
"""

from __future__ import annotations

from importlib.util import find_spec
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moot.spec import ModelSpec

# The top-level module of each optional package, and the extra that installs it.
EXTRA_OF: dict[str, str] = {
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "websockets": "server",
    "cryptography": "server",
    "prometheus_client": "server",
    "asyncpg": "postgres",
    "anthropic": "anthropic",
    "httpx2": "anthropic",
    "openai": "openai-sdk",
    "xllamacpp": "local",
    "opentelemetry": "tracing",
    "redis": "scale",
}


def install(extra: str) -> str:
    return f"pip install 'moot[{extra}]'"


def _message(purpose: str, module: str) -> str:
    extra = EXTRA_OF[module]
    return f"{purpose} needs the {extra} extra ({module} is not installed): {install(extra)}"


def missing(purpose: str, *modules: str) -> str | None:
    """What to install for `purpose` when one of `modules` is absent; None when all are there.

    Looks the modules up without importing them, so asking costs nothing.
    """
    for module in modules:
        try:
            absent = find_spec(module) is None
        except ValueError:  # set to None in sys.modules: blocked, as good as absent
            absent = True
        if absent:
            return _message(purpose, module)
    return None


def explain(exc: ImportError, purpose: str) -> str | None:
    """The message for an import that failed on an optional package; None for any other import error."""
    top = (exc.name or "").partition(".")[0]
    return _message(purpose, top) if top in EXTRA_OF else None


def missing_for_model(spec: ModelSpec) -> str | None:
    """What a model declaration needs installed beyond the core, if it is absent."""
    if spec.provider == "anthropic":
        return missing(spec.label, "anthropic", "httpx2")
    if spec.provider == "llamacpp":
        return missing(f"{spec.label} (provider: llamacpp)", "xllamacpp")
    if spec.provider == "openai" and spec.transport == "sdk":
        return missing(f"{spec.label} (transport: sdk)", "openai")
    return None
