"""Protocols decide who speaks next from the transcript alone, so any transcript can be continued.

Each protocol is one module of this package; importing the package registers every one of them.
"""

from __future__ import annotations

import importlib
import pkgutil

from moot.protocols._base import (
    PROTOCOLS,
    Finish,
    Protocol,
    RequestContext,
    Step,
    Turn,
    Unreadable,
    one_turn,
    together,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise ValueError(f"unknown protocol '{name}'; choose one of {sorted(PROTOCOLS)}") from None


__all__ = [
    "PROTOCOLS",
    "Finish",
    "Protocol",
    "RequestContext",
    "Step",
    "Turn",
    "Unreadable",
    "get_protocol",
    "one_turn",
    "together",
]
