"""Stored providers put to use: their URLs checked, a one-token trial call, and rooms' models resolved.

A room names a stored provider (`ModelSpec.stored_provider`); only when it runs are the provider's URL, type
and decrypted key filled in, in memory. A provider that is gone or unusable by then gives that agent an
error event and the room goes on (L3).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from moot.exceptions import ConfigError, ModelAuthError, ModelError, ModelRequestError, ModelUnavailable
from moot.models import Completion, Message, Model, ModelRequest, build_model
from moot.models._guard import current_network, refusal
from moot.models.llamacpp import resolve_model_path
from moot.scrub import remember_secret
from moot.service.crypto import Cipher
from moot.service.schemas import MAX_PAGE, ModelIn, ProviderTestResult
from moot.settings import Settings
from moot.spec import DEFAULT_MODEL, ModelSpec, RoomSpec
from moot.spec import Provider as ProviderType
from moot.store import ProviderRecord, RoomRecord, Store

SIMULATED = "simulated"
LOCAL = "llamacpp"  # a GGUF model this server runs itself, from the operator's folder only
# Local servers (Ollama, vLLM, llama.cpp) take any key; a key is always sent so that a provider without
# one never falls back to OPENAI_API_KEY or ANTHROPIC_API_KEY from the server's environment.
NO_KEY = "not-needed"


async def check_base_url(url: str, *, block_private: bool) -> str:
    """The URL if it is one a provider may have; ConfigError saying what is wrong otherwise.

    With `block_private`, this is the early, friendly check that a URL's host is public; the guarantee is
    the check as each connection opens (`ModelSpec.refuse_private_addresses`), which a redirect or a name
    that resolves differently later cannot get around.
    """
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
        await _refuse_private(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    return url


async def _refuse_private(host: str, port: int) -> None:
    """Resolves `host` as the adapters' connections will (the same resolver) and refuses a private address."""
    try:
        addresses = await current_network().resolve(host, port)
    except (OSError, UnicodeError):
        raise ConfigError(f"base_url: the host '{host[:100]}' cannot be resolved") from None
    reason = refusal(host, addresses)
    if reason is not None:
        raise ConfigError(f"base_url: {reason}")


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
        remember_secret(key)
        if provider.base_url is not None:
            await check_base_url(provider.base_url, block_private=settings.block_private_urls)
    except ConfigError as exc:
        return ProviderTestResult(ok=False, model=model_name, problem="refused", message=str(exc))
    spec = _spec(provider, key, max_retries=0, timeout=settings.provider_test_timeout)
    if settings.block_private_urls:
        spec.refuse_private_addresses()
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
            if model.provider == LOCAL:  # its server is Moot's own child on loopback, not a user's URL
                reason = self._local(model)
                if reason is not None:
                    unusable[id(model)] = (model, reason)
                continue
            if self._settings.block_private_urls:  # checked again as each connection opens
                model.refuse_private_addresses()
            if model.stored_provider is not None:
                reason = await self._fill(model, record.owner_id)
                if reason is not None:
                    unusable[id(model)] = (model, reason)
            elif record.owner_id is not None and model.provider != SIMULATED:
                # A user's room runs on their stored providers only, never on the server's environment.
                model.api_key, model.api_key_env = None, None
                unusable[id(model)] = (model, "this model names none of your stored providers")
        self._unusable.update(unusable)
        return spec

    def _local(self, model: ModelSpec) -> str | None:
        """Pins a local model's file inside the operator's folder; returns why it cannot run, or None."""
        folder = self._settings.local_models_dir
        if folder is None:
            return "local models (provider llamacpp) are off on this server: MOOT_LOCAL_MODELS_DIR is not set"
        try:
            model.model_path = str(resolve_model_path(model.model_path or "", within=folder))
        except ModelUnavailable as exc:
            return str(exc)
        return None

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
            remember_secret(key)
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


class ProviderLookup:
    """Finds the stored provider a room's model runs on, for one user: the provider of that name, else,
    for `openai` or `anthropic`, their only stored provider of that type (or the one with `base_url`)."""

    def __init__(self, store: Store, owner_id: int) -> None:
        self.store = store
        self.owner_id = owner_id
        self._providers: list[ProviderRecord] | None = None

    async def find(self, declared: ModelIn, where: str) -> ProviderRecord:
        """The provider; ConfigError naming `where` and what to do when there is none, or several."""
        named = await self.store.provider_by_name(declared.provider, owner_id=self.owner_id)
        wanted_url = declared.base_url
        if named is not None:
            if wanted_url is not None and not _same_url(wanted_url, named.base_url):
                raise ConfigError(
                    f"{where}.base_url: your provider '{named.name}' has "
                    f"{named.base_url or 'no base_url (its own service)'}; leave base_url out, or name "
                    "the provider that has this URL"
                )
            return named
        kind = declared.provider
        if kind not in ("openai", "anthropic"):
            raise ConfigError(
                f"{where}: you have no provider named '{kind}'; create it with POST /api/v1/providers, "
                f"or use openai, anthropic or {SIMULATED}"
            )
        candidates = [p for p in await self._all() if p.type == kind]
        if wanted_url is not None:
            candidates = [p for p in candidates if _same_url(wanted_url, p.base_url)]
        elif len(candidates) > 1:
            candidates = [p for p in candidates if p.base_url is None] or candidates
        if len(candidates) == 1:
            return candidates[0]
        at = f" with base_url {wanted_url[:100]}" if wanted_url is not None else ""
        if not candidates:
            raise ConfigError(
                f"{where}: you have no stored {kind} provider{at}; store one with POST /api/v1/providers "
                "(its key is encrypted there), then send the room again"
            )
        names = ", ".join(sorted(p.name for p in candidates)[:10])
        raise ConfigError(
            f"{where}: you have {len(candidates)} {kind} providers{at} ({names}); "
            "name one of them as provider"
        )

    async def _all(self) -> list[ProviderRecord]:
        if self._providers is None:
            self._providers = []
            while page := await self.store.list_providers(
                owner_id=self.owner_id, limit=MAX_PAGE, offset=len(self._providers)
            ):
                self._providers.extend(page)
                if len(page) < MAX_PAGE:
                    break
        return self._providers


def _same_url(a: str, b: str | None) -> bool:
    return b is not None and a.strip().rstrip("/") == b.strip().rstrip("/")
