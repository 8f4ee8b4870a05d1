"""What a turn costs: the provider's reported tokens times the model's price.

Prices come from the model's own `price` in the room file where one is given, else from `genai-prices`, a
maintained table of the providers' public prices. The simulated model and local servers cost nothing: a
model behind a `base_url` the table does not know is priced at 0 unless the room gives its price.
"""

from __future__ import annotations

import functools
import logging

from moot.models import Usage
from moot.spec import ModelSpec

log = logging.getLogger("moot.pricing")

_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic"}


def load_table() -> None:
    """Loads the price table now rather than at the first priced turn: a server does it before start-up's
    objects are frozen out of the collector's way (its ~13,000 objects would otherwise be walked at every
    full collection for the life of the process)."""
    try:
        from genai_prices import data_snapshot
    except ImportError:  # pragma: no cover - a core dependency; without it turns are priced at 0
        return
    data_snapshot.get_snapshot()


def priced(spec: ModelSpec, usage: Usage) -> Usage:
    """The usage with its cost in US dollars filled in."""
    per_mtok = _price(spec)
    if per_mtok is None:
        return usage
    cost = (usage.input_tokens * per_mtok[0] + usage.output_tokens * per_mtok[1]) / 1_000_000
    return usage.model_copy(update={"cost_usd": round(cost, 10)})


def _price(spec: ModelSpec) -> tuple[float, float] | None:
    """Dollars per million input and output tokens; None where the model costs nothing."""
    if spec.price is not None:
        return spec.price.input_per_mtok, spec.price.output_per_mtok
    if spec.provider not in _PROVIDER_IDS:
        return None
    return _table_price(spec.provider, spec.name, spec.base_url)


@functools.lru_cache(maxsize=256)
def _table_price(provider: str, model: str, base_url: str | None) -> tuple[float, float] | None:
    try:
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price
    except ImportError:  # pragma: no cover - a dependency; the guard keeps a broken install talking
        return None
    million = 1_000_000
    try:
        if base_url:
            result = calc_price(
                PriceUsage(input_tokens=million, output_tokens=million), model, provider_api_url=base_url
            )
        else:
            result = calc_price(
                PriceUsage(input_tokens=million, output_tokens=million),
                model,
                provider_id=_PROVIDER_IDS[provider],
            )
    except (LookupError, ValueError) as exc:
        log.info(
            "no price for %s:%s (%s); it counts as free unless the room gives its price", provider, model, exc
        )
        return None
    return float(result.input_price), float(result.output_price)
