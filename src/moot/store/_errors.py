"""What the store raises: every error is a MootError whose message says what to do next."""

from __future__ import annotations

from typing import ClassVar

from moot.exceptions import MootError


class StoreError(MootError):
    """The database could not do what was asked: unreachable, misconfigured, or it refused a write.

    The message is for whoever runs the server (it may name the database's file or host); `public` is what
    a room's participants may read in its events and results: what happened and what to do, no more.
    """

    retryable: ClassVar[bool] = True  # False: trying again cannot help (the write is refused on purpose)

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = public or message


class RoomNotFound(MootError):
    """No room has this id."""

    def __init__(self, room_id: str) -> None:
        super().__init__(f"no room '{room_id}'; `moot rooms` lists the rooms there are")
        self.room_id = room_id


class DuplicateTurn(MootError):
    """A turn is already stored: the unique key (room, turn id) refused it a second time (L10)."""

    def __init__(self, room_id: str, turn_id: str) -> None:
        super().__init__(f"room {room_id}: turn {turn_id} is already stored")
        self.room_id = room_id
        self.turn_id = turn_id
