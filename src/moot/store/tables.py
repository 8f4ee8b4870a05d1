"""The database schema as typed ORM classes; `migrations/` creates the same tables on a real database.

Portable on purpose: JSON is TEXT, times are UTC epoch seconds (floats, like `Entry.created_at`), and
constraint names follow one convention so later migrations can name them on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import time
from typing import Literal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RoomStatus = Literal["idle", "running", "paused", "completed", "error"]

ROOM_ID_LENGTH = 32
NAME_LENGTH = 200
TURN_ID_LENGTH = 200


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UserRow(Base):
    """A person who uses the HTTP service; `token_hash` is what their API token hashes to."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('readonly', 'member', 'admin')", name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    token_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class ProviderRow(Base):
    """A provider a user configured once (L3); the key is kept encrypted, never in plain text."""

    __tablename__ = "providers"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        CheckConstraint("type IN ('openai', 'anthropic')", name="type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    type: Mapped[str] = mapped_column(String(16))
    base_url: Mapped[str | None] = mapped_column(String(2000))
    default_model: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)


class AgentTemplateRow(Base):
    """A reusable agent (L2): `data` is the JSON of the agent's fields."""

    __tablename__ = "agent_templates"
    __table_args__ = (UniqueConstraint("owner_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)


class RoomRow(Base):
    """A room: its spec, where the run stands, running totals and who holds its lease (L1, L14, B16).

    title, task, protocol, language and max_rounds repeat fields of `spec` so lists need not parse it.
    """

    __tablename__ = "rooms"
    __table_args__ = (
        CheckConstraint("status IN ('idle', 'running', 'paused', 'completed', 'error')", name="status"),
    )

    id: Mapped[str] = mapped_column(String(ROOM_ID_LENGTH), primary_key=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    title: Mapped[str] = mapped_column(String(NAME_LENGTH))
    task: Mapped[str] = mapped_column(Text)
    protocol: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(8))
    max_rounds: Mapped[int] = mapped_column(Integer)
    spec: Mapped[str] = mapped_column(Text)
    status: Mapped[RoomStatus] = mapped_column(String(16), default="idle")
    round: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    conclusion: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time, index=True)


class EntryRow(Base):
    """One transcript entry; `turn_id` is set for turns only, so the unique key refuses a turn twice."""

    __tablename__ = "entries"
    __table_args__ = (UniqueConstraint("room_id", "turn_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"))
    turn_id: Mapped[str | None] = mapped_column(String(TURN_ID_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))
    round: Mapped[int] = mapped_column(Integer)
    stage: Mapped[int] = mapped_column(Integer)
    slot: Mapped[int] = mapped_column(Integer)
    arrival: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[float] = mapped_column(Float)
    data: Mapped[str] = mapped_column(Text)


class EventRow(Base):
    """One event of a room's stream, as its JSON line, for replay from a sequence number."""

    __tablename__ = "events"

    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    round: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class InterventionRow(Base):
    """A person's words, kept the moment they arrive; `taken_at` once they joined the transcript."""

    __tablename__ = "interventions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(NAME_LENGTH))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    taken_at: Mapped[float | None] = mapped_column(Float)


class PartialRow(Base):
    """The text so far of a turn in flight, and the last event seq it includes."""

    __tablename__ = "partials"

    room_id: Mapped[str] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"), primary_key=True)
    turn_id: Mapped[str] = mapped_column(String(TURN_ID_LENGTH), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    seq: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)
