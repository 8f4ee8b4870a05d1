"""Stored providers put to use: their URLs checked, a one-token trial call, and rooms' models resolved.

A room names a stored provider (`ModelSpec.stored_provider`); only when it runs are the provider's URL, type
and decrypted key filled in, in memory. A provider that is gone or unusable by then gives that agent an
error event and the room goes on (L3).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from moot.exceptions import ConfigError, ModelAuthError, ModelError, ModelRequestError, ModelUnavailable
from moot.models import Completion, Message, Model, ModelRequest, build_model
from moot.service.crypto import Cipher
from moot.service.schemas import ProviderTestResult
from moot.settings import Settings
from moot.spec import DEFAULT_MODEL, ModelSpec, RoomSpec
from moot.spec import Provider as ProviderType
from moot.store import RoomRecord, Store
from moot.store._store import ProviderRecord

# Local servers (Ollama, vLLM, llama.cpp) take any key; a key is always sent so that a provider without
# one never falls back to OPENAI_API_KEY or ANTHROPIC_API_KEY from the server's environment.
NO_KEY = "not-needed"


async def check_base_url(url: str, *, block_private: bool) -> str:
    """The URL if it is one a provider may have; ConfigError saying what is wrong otherwise."""
    try:
        httpx.URL(url)  # what the adapters will parse
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except (httpx.InvalidURL, ValueError) as exc:
        raise ConfigError(f"base_url: '{url[:100]}' is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base_url: '{url[:100]}' is not an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("base_url: put no credentials in the URL; give the key as api_key")
    if block_private:
        await _refuse_private(parts.hostname)
    return url


async def _refuse_private(host: str) -> None:
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise ConfigError(f"base_url: the host '{host[:100]}' cannot be resolved") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not address.is_global or address.is_multicast:
            raise ConfigError(
                f"base_url: '{host[:100]}' is a private, loopback or link-local address ({address}), "
                "which this server refuses (MOOT_BLOCK_PRIVATE_URLS is on)"
            )


def _spec(provider: ProviderRecord, key: str | None, **options: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "provider": provider.type,
            "model": provider.default_model,
            "base_url": provider.base_url,
            "max_tokens": provider.max_tokens,
            "api_key": SecretStr(key or NO_KEY),
            **options,
        }
    )


async def try_provider(provider: ProviderRecord, cipher: Cipher, settings: Settings) -> ProviderTestResult:
    """Asks the provider for one token through Moot's own adapter and says what went wrong, if anything."""
    model_name = provider.default_model or DEFAULT_MODEL[provider.type]
    try:
        key = cipher.decrypt(provider.api_key_encrypted) if provider.api_key_encrypted else None
        if provider.base_url is not None:
            await check_base_url(provider.base_url, block_private=settings.block_private_urls)
    except ConfigError as exc:
        return ProviderTestResult(ok=False, model=model_name, problem="refused", message=str(exc))
    spec = _spec(provider, key, max_retries=0, timeout=settings.provider_test_timeout)
    model = build_model(spec)
    request = ModelRequest(
        system="Answer with one word.", messages=(Message("user", "Say OK."),), max_tokens=1
    )
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.provider_test_timeout):
            async for _ in model.stream(request):  # deltas, then the Completion
                pass
    except TimeoutError:
        return _failed(spec, "unreachable", f"no answer within {settings.provider_test_timeout:g} s", key)
    except ModelAuthError as exc:
        return _failed(spec, "bad_key", str(exc), key)
    except ModelRequestError as exc:
        return _failed(spec, "unknown_model" if exc.status == 404 else "refused", str(exc), key)
    except ModelError as exc:
        return _failed(spec, "unreachable" if exc.status is None else "error", str(exc), key)
    except Exception as exc:  # whatever the provider or the URL did, the answer is that it failed
        return _failed(spec, "error", f"{type(exc).__name__}: {exc}", key)
    finally:
        await model.aclose()
    return ProviderTestResult(
        ok=True, model=spec.name, latency_ms=round((time.perf_counter() - started) * 1000, 1)
    )


def _failed(spec: ModelSpec, problem: str, message: str, key: str | None) -> ProviderTestResult:
    if key:
        message = message.replace(key, "***")
    return ProviderTestResult.model_validate(
        {"ok": False, "model": spec.name, "problem": problem, "message": message}
    )


class Unavailable(Model):
    """The model of an agent whose stored provider cannot be used: each turn fails with the reason (L3)."""

    def __init__(self, label: str, reason: str) -> None:
        self.label = label
        self.reason = reason

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | Completion]:
        raise ModelUnavailable(f"{self.label}: {self.reason}", model=self.label)
        yield ""  # pragma: no cover - makes this an async generator


class ProviderResolver:
    """Gives `RoomManager` the spec to run (`resolve`) and the models to run it with (`models_for`).

    `resolve` fills each stored provider's URL, type and decrypted key into a copy of the room's spec; what
    cannot be resolved is remembered with its reason until `models_for`, which the manager calls at once.
    """

    def __init__(self, store: Store, cipher: Cipher, settings: Settings) -> None:
        self._store = store
        self._cipher = cipher
        self._settings = settings
        self._unusable: dict[int, tuple[ModelSpec, str]] = {}

    async def resolve(self, record: RoomRecord) -> RoomSpec:
        spec = record.spec.model_copy(deep=True)
        unusable: dict[int, tuple[ModelSpec, str]] = {}
        for model in _model_specs(spec):
            if model.stored_provider is not None:
                reason = await self._fill(model, record.owner_id)
                if reason is not None:
                    unusable[id(model)] = (model, reason)
        self._unusable.update(unusable)
        return spec

    async def _fill(self, model: ModelSpec, owner_id: int | None) -> str | None:
        """Fills the provider in; returns why it cannot be, or None."""
        name = model.stored_provider
        provider = None
        if owner_id is not None and name is not None:
            provider = await self._store.provider_by_name(name, owner_id=owner_id)
        if provider is None:
            return f"the stored provider '{name}' no longer exists; create it again under that name"
        try:
            key = self._cipher.decrypt(provider.api_key_encrypted) if provider.api_key_encrypted else None
            if provider.base_url is not None:
                await check_base_url(provider.base_url, block_private=self._settings.block_private_urls)
        except ConfigError as exc:
            return f"the stored provider '{name}' cannot be used: {exc}"
        model.provider = cast(ProviderType, provider.type)
        model.base_url = provider.base_url
        model.api_key = SecretStr(key or NO_KEY)
        return None

    def models_for(self, spec: RoomSpec) -> Mapping[str, Model]:
        built: dict[int, Model] = {}
        models: dict[str, Model] = {}
        for agent in spec.agents:
            model_spec = spec.model_for(agent)
            model = built.get(id(model_spec))
            if model is None:
                unusable = self._unusable.pop(id(model_spec), None)
                model = Unavailable(model_spec.label, unusable[1]) if unusable else build_model(model_spec)
                built[id(model_spec)] = model
            models[agent.name] = model
        for model_spec in _model_specs(spec):
            self._unusable.pop(id(model_spec), None)
        return models


def _model_specs(spec: RoomSpec) -> list[ModelSpec]:
    """Every ModelSpec object of the spec, each once."""
    found: dict[int, ModelSpec] = {id(m): m for m in spec.models.values()}
    for ref in (spec.default_model, *(agent.model for agent in spec.agents)):
        if isinstance(ref, ModelSpec):
            found[id(ref)] = ref
    return list(found.values())
