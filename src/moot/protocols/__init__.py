"""Protocols decide who speaks next from the transcript alone, so any transcript can be continued."""

from __future__ import annotations

from moot.protocols._base import Finish, Protocol, Step, Turn, termination
from moot.protocols.board import Board
from moot.protocols.parallel import Parallel
from moot.protocols.sequential import Sequential

PROTOCOLS: dict[str, type[Protocol]] = {p.name: p for p in (Sequential, Parallel, Board)}


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]()
    except KeyError:
        raise ValueError(f"unknown protocol '{name}'; choose one of {sorted(PROTOCOLS)}") from None


__all__ = [
    "PROTOCOLS",
    "Board",
    "Finish",
    "Parallel",
    "Protocol",
    "Sequential",
    "Step",
    "Turn",
    "get_protocol",
    "termination",
]
