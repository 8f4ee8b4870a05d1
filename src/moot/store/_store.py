"""Durable rooms: the transcript, events, people's words and leases, on SQLite or PostgreSQL.

The transcript is the state (see DESIGN.md): a completed turn is stored in one transaction with its events,
and the unique key (room, turn id) makes storing a turn twice impossible, whatever crashed where.

The spec is stored whole, defaults included, with a literal `api_key` kept as given (not masked): a room
must resume with exactly the models it started with. Keys of shared providers belong in `providers`,
encrypted, not in room files.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, cast, get_args

from pydantic import SecretStr
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Executable,
    Float,
    Integer,
    Row,
    Select,
    Text,
    Update,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from moot.conclusion import Conclusion
from moot.events import Event, event_json, parse_event
from moot.exceptions import MootError
from moot.models import Usage
from moot.settings import get_settings
from moot.spec import RoomSpec
from moot.store._database import (
    async_url,
    autocommit,
    create_engine,
    current_revision,
    db_now,
    head_revision,
    run_upgrade,
)
from moot.store._errors import DuplicateTurn, RoomNotFound, StoreError
from moot.store._together import Together
from moot.store.tables import (
    AgentTemplateRow,
    EntryRow,
    EventRow,
    InterventionRow,
    PartialRow,
    ProviderRow,
    RoomRow,
    RoomStatus,
    UserRow,
)
from moot.transcript import Entry, Transcript

ROOM_STATUSES: tuple[str, ...] = get_args(RoomStatus)
TITLE_LENGTH = 80
_ROOM_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
# SQLite's "database is locked", PostgreSQL's lock and statement timeouts, deadlocks: waiting may help.
# Integer columns (ids, event seqs) hold 32 bits on PostgreSQL: a number outside cannot match a row, and
# sent to the driver it would fail the query (SQLite and asyncpg refuse values past their range).
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_BUSY = re.compile(r"database is locked|lock timeout|lock not available|statement timeout|deadlock", re.I)


@dataclass(frozen=True, slots=True)
class Lease:
    """Who runs a room and until when; `alive` is False once it expired or its process is gone (L14).

    `expires_at` is by the database's clock (epoch seconds), which may differ from this host's: `remaining`
    is what is left of it, in seconds, as the database saw it when the lease was read.
    """

    owner: str
    expires_at: float
    alive: bool
    remaining: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class RoomRecord:
    """A stored room: its spec and where its run stands (L1, B16)."""

    id: str
    spec: RoomSpec
    status: RoomStatus
    round: int
    usage: Usage
    conclusion: Conclusion | None
    error: str | None
    owner_id: int | None
    created_at: float
    updated_at: float
    lease: Lease | None

    @property
    def title(self) -> str:
        return title_of(self.spec)

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def protocol(self) -> str:
        return self.spec.protocol


@dataclass(frozen=True, slots=True)
class StoredIntervention:
    """A person's words as kept on arrival; `id` comes back as the transcript entry's `ref`."""

    id: str
    author: str
    text: str
    created_at: float


@dataclass(frozen=True, slots=True)
class RunState:
    """What a stored run starts from (`Store.run_state`)."""

    transcript: Transcript
    partials: dict[str, tuple[str, int]]  # turn id -> (text so far, last event seq it includes)
    last_seq: int
    pending: list[StoredIntervention]


def title_of(spec: RoomSpec) -> str:
    """The room's title, else the first line of its task, shortened for lists."""
    title = spec.title or spec.task.strip().splitlines()[0].strip()
    return title if len(title) <= TITLE_LENGTH else title[: TITLE_LENGTH - 1].rstrip() + "…"


def spec_json(spec: RoomSpec) -> str:
    """The whole spec as JSON, secrets revealed, so `RoomSpec.from_data` gives back the same spec."""
    return json.dumps(_reveal(spec.model_dump(by_alias=True, exclude_none=True)), ensure_ascii=False)


def _reveal(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {key: _reveal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_reveal(item) for item in value]
    return value


def _fits(number: int) -> bool:
    """Whether an id can be in an integer column at all: one that cannot names no row."""
    return INT_MIN <= number <= INT_MAX


def _lease(owner: str, expires_at: float, now: float, *, local_pids: bool = True) -> Lease:
    """A stored lease judged at `now`, the database's clock: never this host's, which may be off.

    With `local_pids` an owner that names a process of this kernel and pid namespace that is gone loses it at
    once; otherwise only the database's clock decides.
    """
    remaining = expires_at - now
    gone = local_pids and _process_gone(owner)
    return Lease(owner, expires_at, alive=remaining > 0 and not gone, remaining=remaining)


@dataclass(frozen=True, slots=True)
class _Process:
    """A process as a Linux kernel names it: a pid means one process only within one pid namespace of one
    boot, and only while it lives; its start time (clock ticks after boot) tells a reused pid apart."""

    boot: str
    namespace: int
    pid: int
    started: int


# A lease owner: `host:pid:random:boot:namespace:started`. Host and random part are for people reading it and
# for uniqueness; boot id, pid namespace, pid and start time say which process it is. An owner named without
# the last three (`host:pid:random`: names stored before they were added, and processes without /proc) names
# no process we can check: host and pid alone repeat across containers, so only the clock ends its lease.
_OWNER = re.compile(
    r"(?P<host>.+):(?P<pid>\d+):[0-9a-f]+"
    r":(?P<boot>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):(?P<namespace>\d+):(?P<started>\d+)"
)


def _owner_process(owner: str) -> _Process | None:
    """The process an owner's name claims to be; None for a name that does not say (an old one)."""
    found = _OWNER.fullmatch(owner)
    if found is None:
        return None
    pid, boot, namespace, started = found.group("pid", "boot", "namespace", "started")
    return _Process(boot, int(namespace), int(pid), int(started))


def _this_kernel() -> tuple[str, int] | None:
    """Our boot id and pid namespace, or None where /proc cannot say: not Linux, or a /proc mounted for
    another pid namespace (its pids are not ours)."""
    return _kernel(os.getpid())  # by pid: a forked child reads its own, as it may be in another namespace


@functools.cache
def _kernel(pid: int) -> tuple[str, int] | None:
    try:
        if os.readlink("/proc/self") != str(pid):
            return None
        return _read("/proc/sys/kernel/random/boot_id").strip(), os.stat("/proc/self/ns/pid").st_ino
    except (OSError, ValueError):
        return None


def _read(path: str) -> str:
    with open(path, encoding="ascii") as file:
        return file.read()


def _process_state(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (fields 3 and 22 of /proc/<pid>/stat); None when /proc has
    no such pid."""
    try:
        stat = _read(f"/proc/{pid}/stat")
    except FileNotFoundError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces and ")"
    return fields[0], int(fields[19])


_here: tuple[int, _Process | None] | None = None  # (pid, this process), read once per process


def _this_process() -> _Process | None:
    """This process's name for lease owners; None without /proc. Read once (and again after a fork)."""
    global _here
    if _here is None or _here[0] != os.getpid():
        _here = (os.getpid(), _read_this_process())
    return _here[1]


def _read_this_process() -> _Process | None:
    here = _this_kernel()
    if here is None:
        return None
    try:
        state = _process_state(os.getpid())
    except (OSError, ValueError, IndexError):
        return None
    return None if state is None else _Process(here[0], here[1], os.getpid(), state[1])


def _process_gone(owner: str) -> bool:
    """True when the owner is a process of this kernel and pid namespace that is gone: its lease is stale.

    Only a process we can see is judged: the owner's boot id and pid namespace must be ours (containers
    repeat host names and pids, so these, not the host name, say whether its pid is one we can look up).
    It is gone when that pid is absent, has exited (a zombie) or started at another time (a reused pid).
    Anything else — another machine, another namespace, an owner named the old way, no /proc — is left to
    the database's clock.
    """
    claimed = _owner_process(owner)
    if claimed is None or claimed.pid <= 0 or (claimed.boot, claimed.namespace) != _this_kernel():
        return False
    try:
        state = _process_state(claimed.pid)
    except (OSError, ValueError, IndexError):  # there but unreadable: we cannot tell it is not the owner
        return False
    if state is None:
        try:  # /proc mounted with hidepid hides other users' processes: ask the kernel itself
            os.kill(claimed.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False  # it exists, and its start time is hidden from us
    letter, started = state
    return letter in ("Z", "X") or started != claimed.started


# The reads of a run's start, built once (building a statement costs more CPU than running it on a warm
# connection); each is run with {"room": room_id}.
_ROOM: Select[Any] = select(*RoomRow.__table__.columns, db_now().label("db_now")).where(
    RoomRow.id == bindparam("room")
)
"""The room's row with the database's clock (`db_now`), which judges its lease, as plain columns."""
_TRANSCRIPT = (
    select(EntryRow.data)
    .where(EntryRow.room_id == bindparam("room"))
    .order_by(EntryRow.round, EntryRow.stage, EntryRow.slot, EntryRow.arrival, EntryRow.id)
)
_PARTIALS = select(PartialRow.turn_id, PartialRow.text, PartialRow.seq).where(
    PartialRow.room_id == bindparam("room")
)
_LAST_SEQ = select(func.max(EventRow.seq)).where(EventRow.room_id == bindparam("room"))
_PENDING_WORDS = (
    select(InterventionRow.id, InterventionRow.author, InterventionRow.text, InterventionRow.created_at)
    .where(InterventionRow.room_id == bindparam("room"), InterventionRow.taken_at.is_(None))
    .order_by(InterventionRow.id)
)


def _lease_taking(lease: Lease | None, owner: str) -> tuple[Update, dict[str, Any]] | None:
    """The UPDATE that gives `owner` the lease for ttl seconds (its parameters less "b_ttl"), on condition
    that the lease is still as read (free, ours, or a dead owner's); None while another live owner holds
    it. Of two takers only one wins."""
    if lease is None:
        return _TAKE_FREE_LEASE, {"b_owner": owner}
    if lease.owner == owner:
        return _TAKE_OUR_LEASE, {"b_owner": owner}
    if lease.alive:
        return None
    return _TAKE_DEAD_LEASE, {"b_owner": owner, "b_held_by": lease.owner, "b_held_until": lease.expires_at}


def _taking_lease(condition: ColumnElement[bool]) -> Update:
    return (
        update(RoomRow)
        .where(RoomRow.id == bindparam("b_room"), condition)
        .values(lease_owner=bindparam("b_owner"), lease_expires_at=db_now() + bindparam("b_ttl", type_=Float))
    )


# The writes of a run's start, built once too.
_TAKE_FREE_LEASE = _taking_lease(RoomRow.lease_owner.is_(None))
_TAKE_OUR_LEASE = _taking_lease(RoomRow.lease_owner == bindparam("b_owner"))
_TAKE_DEAD_LEASE = _taking_lease(
    (RoomRow.lease_owner == bindparam("b_held_by"))
    & (RoomRow.lease_expires_at == bindparam("b_held_until", type_=Float))
)
_CLEAR_PARTIALS = delete(PartialRow).where(PartialRow.room_id == bindparam("b_room"))
_MARK_RUNNING = (
    update(RoomRow)
    .where(RoomRow.id == bindparam("b_room"))
    .values(status="running", error=None, updated_at=bindparam("b_now", type_=Float))
)


@dataclass(frozen=True, slots=True)
class _Save:
    """What `save_entry` (an entry and its events) or `save_events` (events alone) writes for a room."""

    room_id: str
    entry: Entry | None
    events: tuple[Event, ...]


# A save's change to its room's row, one statement for any save: the round follows a speech or summary (NULL
# leaves it), the token totals grow by the entry's usage (0), a conclusion is kept (NULL leaves the stored one).
_SAVE_ROOM = (
    update(RoomRow)
    .where(RoomRow.id == bindparam("b_room"))
    .values(
        round=case(
            (RoomRow.round < bindparam("b_round", type_=Integer), bindparam("b_round", type_=Integer)),
            else_=RoomRow.round,
        ),
        input_tokens=RoomRow.input_tokens + bindparam("b_input", type_=BigInteger),
        output_tokens=RoomRow.output_tokens + bindparam("b_output", type_=BigInteger),
        conclusion=func.coalesce(bindparam("b_conclusion", type_=Text), RoomRow.conclusion),
        updated_at=bindparam("b_now", type_=Float),
    )
)
_TURN_DONE = delete(PartialRow).where(
    PartialRow.room_id == bindparam("b_room"), PartialRow.turn_id == bindparam("b_turn")
)
_WORDS_TAKEN = (
    update(InterventionRow)
    .where(InterventionRow.room_id == bindparam("b_room"), InterventionRow.id == bindparam("b_ref"))
    .values(taken_at=bindparam("b_now", type_=Float))
)


# A process writes rows of many rooms in one transaction or statement: a group of saves, the renewals of
# its leases, the text so far of its turns in flight. On PostgreSQL these run at once on connections of
# their own, and two that took the same rows in different orders would each wait for the other until the
# database failed one ("deadlock detected"). Each batch therefore takes rooms' rows, and turns' rows within
# a room, in ascending order of their ids.
def _by_room(save: _Save) -> str:
    return save.room_id


def _room_changes(save: _Save, now: float) -> dict[str, Any]:
    entry = save.entry
    usage = entry.usage if entry is not None else None
    conclusion = entry.conclusion if entry is not None and entry.kind == "conclusion" else None
    return {
        "b_room": save.room_id,
        "b_round": entry.round if entry is not None and entry.kind in ("speech", "summary") else None,
        "b_input": usage.input_tokens if usage is not None else 0,
        "b_output": usage.output_tokens if usage is not None else 0,
        "b_conclusion": conclusion.model_dump_json() if conclusion is not None else None,
        "b_now": now,
    }


def _entry_row(room_id: str, entry: Entry) -> dict[str, Any]:
    return {
        "room_id": room_id,
        "turn_id": entry.turn_id if entry.is_turn else None,
        "kind": entry.kind,
        "round": entry.round,
        "stage": entry.stage,
        "slot": entry.slot,
        "arrival": entry.arrival,
        "speaker": entry.speaker,
        "created_at": entry.created_at,
        "data": entry.model_dump_json(),
    }


def _named(saved: tuple[str, Entry]) -> tuple[str, str]:
    return saved[0], saved[1].turn_id


async def _outcome(call: Awaitable[None]) -> BaseException | None:
    try:
        await call
    except Exception as exc:
        return exc
    return None


class Store:
    """Rooms on one database. Build it with `Store.from_url`; close it (or use `async with`) when done."""

    def __init__(self, engine: AsyncEngine, *, local_pids: bool = True) -> None:
        """`local_pids=False`: leases end only by the database's clock, never because a pid looks gone."""
        self._engine = engine
        self._alone = autocommit(engine)  # reads and one-statement writes: no transaction to begin and end
        self._local_pids = local_pids
        self._sessions = async_sessionmaker(self._alone, expire_on_commit=False)
        self._schema_lock = asyncio.Lock()
        self._schema_ready = False
        self._saving = Together(self._save_together, "moot-store-saves")
        self._reading_words = Together(self._words_together, "moot-store-words")
        self._renewing = Together(self._renew_together, "moot-store-renewals")
        # SQLite has one writer at a time: this process's write transactions queue here, in order, instead
        # of polling the file's lock in SQLite's busy handler, which favours no one and gives up after its
        # timeout (many rooms starting at once). Other processes on the file still meet the busy timeout.
        self._one_writer = engine.dialect.name == "sqlite"
        self._writer: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self.url = engine.url.render_as_string(hide_password=True)
        self.writes = 0  # committed write transactions: what a benchmark of writes per turn counts

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        connect_args: Mapping[str, Any] | None = None,
        local_pids: bool = True,
    ) -> Store:
        """A store on `url` (default: MOOT_DATABASE_URL, else a SQLite file in the data directory).

        Plain `sqlite:///` and `postgresql://` URLs get the async drivers. `connect_args` go to the driver's
        connect, e.g. asyncpg's `{"server_settings": {"search_path": "moot"}}` for a schema of its own.
        """
        engine = create_engine(async_url(url or get_settings().resolved_database_url), connect_args)
        return cls(engine, local_pids=local_pids)

    @staticmethod
    def new_owner() -> str:
        """A lease owner naming this process: `host:pid:random:boot:namespace:started` on Linux. The random
        part makes it unique; the kernel's boot id, the pid namespace and the process's start time let a
        store with `local_pids` on this machine see the lease stale at once when the process is gone.
        Without /proc it is `host:pid:random`, and only the database's clock ends its leases."""
        name = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        here = _this_process()
        return name if here is None else f"{name}:{here.boot}:{here.namespace}:{here.started}"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._saving.idle()  # saves already asked for are written, or fail, first
        await self._engine.dispose()

    # ---- plumbing -------------------------------------------------------------------------------------

    @contextmanager
    def _reaching(self) -> Iterator[None]:
        """Turns driver failures into a StoreError naming the masked URL and what to check."""
        try:
            yield
        except IntegrityError:
            raise  # a refused write: the caller says what it means
        except (DBAPIError, OSError) as exc:
            reason = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
            if re.search(r"no such table|relation .* does not exist", reason):
                hint = "run `moot db upgrade`"
                public = "the database is not set up for this version of Moot; ask its administrator"
            elif _BUSY.search(reason):
                hint = "another process kept the database busy too long; try again"
                public = "the database was busy; try again"
            elif isinstance(exc, DataError):
                hint = "a value is too long or of the wrong type for its column"
                public = "the database refused a value that is too long or of the wrong type"
            else:
                hint = "check MOOT_DATABASE_URL and that the database is running and reachable"
                public = "the database was unavailable; try again once it is back"
            raise StoreError(f"database {self.url}: {reason}; {hint}", public=public) from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        with self._reaching():
            async with self._sessions() as session:
                yield session

    @asynccontextmanager
    async def _look(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads that need no ORM objects: lighter than a session. Like a session's, its
        statements are each their own transaction on PostgreSQL (`autocommit`): a read of several that must
        agree goes in a transaction (`claim`)."""
        with self._reaching():
            async with self._alone.connect() as conn:
                yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed as a whole and counted, or rolled back as a whole."""
        async with self._writer_turn(), self._begin(self._engine) as conn:
            yield conn
        self.writes += 1

    @asynccontextmanager
    async def _write_one(self) -> AsyncIterator[AsyncConnection]:
        """A write of ONE statement, counted as a write transaction: on PostgreSQL the statement commits by
        itself (no BEGIN and COMMIT round trips), as does an executemany (asyncpg runs one atomically).
        More statements than one need `_write`."""
        async with self._writer_turn(), self._begin(self._alone) as conn:
            yield conn
        self.writes += 1

    @asynccontextmanager
    async def _begin(self, engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
        with self._reaching():
            async with engine.begin() as conn:
                yield conn

    @asynccontextmanager
    async def _writer_turn(self) -> AsyncIterator[None]:
        """On SQLite, waits until this process's write transaction in progress, and those queued before this
        one, have ended; elsewhere at once. A write transaction must not begin another inside it."""
        if not self._one_writer:
            yield
            return
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer[0] is not loop:  # a store used again from a new loop
            self._writer = (loop, asyncio.Lock())
        async with self._writer[1]:
            yield

    # ---- schema ---------------------------------------------------------------------------------------

    async def upgrade(self) -> None:
        """Migrates the database to the newest schema (`alembic upgrade head`); safe to run again."""
        with self._reaching():
            async with self._engine.begin() as conn:
                await conn.run_sync(run_upgrade)
        self._schema_ready = True

    async def ensure_schema(self) -> None:
        """Upgrades once per Store, so every command migrates the database on first use."""
        async with self._schema_lock:
            if not self._schema_ready:
                await self.upgrade()

    async def revision(self) -> str | None:
        """The schema revision the database is at; None before the first upgrade."""
        with self._reaching():
            async with self._engine.connect() as conn:
                return await conn.run_sync(current_revision)

    @staticmethod
    def head_revision() -> str | None:
        """The newest revision this version of Moot knows."""
        return head_revision()

    # ---- rooms ----------------------------------------------------------------------------------------

    async def create_room(
        self, spec: RoomSpec, *, room_id: str | None = None, owner_id: int | None = None
    ) -> RoomRecord:
        """Stores a new idle room; its id is 12 hex characters unless one is given."""
        room_id = room_id or uuid.uuid4().hex[:12]
        if not _ROOM_ID.fullmatch(room_id):
            raise ValueError(f"room id {room_id!r}: use 1 to 32 letters, digits, '-' or '_'")
        now = time.time()
        row = {
            "id": room_id,
            "owner_id": owner_id,
            "title": title_of(spec),
            "task": spec.task,
            "protocol": spec.protocol,
            "language": spec.language,
            "max_rounds": spec.max_rounds,
            "spec": spec_json(spec),
            "status": "idle",
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._write_one() as conn:
                await conn.execute(insert(RoomRow).values(row))
        except IntegrityError:
            async with self._read() as session:
                taken = await session.get(RoomRow, room_id) is not None
            if taken:
                raise StoreError(f"room {room_id} already exists; choose another id") from None
            raise StoreError(f"no user {owner_id} to own room {room_id}") from None
        return await self.get_room(room_id)

    async def get_room(self, room_id: str) -> RoomRecord:
        async with self._look() as conn:
            found = (await conn.execute(_ROOM, {"room": room_id})).first()
        if found is None:
            raise RoomNotFound(room_id)
        return self._record(found, found.db_now)

    async def list_rooms(
        self, *, owner_id: int | None = None, limit: int = 100, offset: int = 0
    ) -> list[RoomRecord]:
        """Rooms, the most recently active first; only one owner's when `owner_id` is given."""
        query = (
            select(RoomRow, db_now())
            .order_by(RoomRow.updated_at.desc(), RoomRow.id)
            .limit(limit)
            .offset(offset)
        )
        if owner_id is not None:
            query = query.where(RoomRow.owner_id == owner_id)
        async with self._read() as session:
            rows = (await session.execute(query)).all()
        return [self._record(row, now) for row, now in rows]

    async def update_room(
        self, room_id: str, *, status: RoomStatus | None = None, error: str | None = None
    ) -> None:
        """Sets the status (and the error, which only an "error" status keeps)."""
        values: dict[str, Any] = {"updated_at": time.time()}
        if status is not None:
            if status not in ROOM_STATUSES:
                raise ValueError(f"status {status!r}: use one of {', '.join(ROOM_STATUSES)}")
            values["status"] = status
            values["error"] = error if status == "error" else None
        elif error is not None:
            values["error"] = error
        async with self._write_one() as conn:
            result = await conn.execute(update(RoomRow).where(RoomRow.id == room_id).values(values))
        if result.rowcount == 0:
            raise RoomNotFound(room_id)

    async def delete_room(self, room_id: str) -> None:
        """Deletes the room with its transcript, events, interventions and partial texts."""
        async with self._write_one() as conn:
            result = await conn.execute(delete(RoomRow).where(RoomRow.id == room_id))
        if result.rowcount == 0:
            raise RoomNotFound(room_id)

    def _record(self, row: RoomRow | Row[Any], now: float, *, spec: RoomSpec | None = None) -> RoomRecord:
        """The record of a row read together with the database's clock (`db_now()`), which judges its lease;
        with `spec` instead of the stored one, where that is given."""
        lease = None
        if row.lease_owner is not None and row.lease_expires_at is not None:
            lease = _lease(row.lease_owner, row.lease_expires_at, now, local_pids=self._local_pids)
        return RoomRecord(
            id=row.id,
            spec=spec or RoomSpec.from_data(json.loads(row.spec), source=f"room {row.id}"),
            status=row.status,
            round=row.round,
            usage=Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens),
            conclusion=Conclusion.model_validate_json(row.conclusion) if row.conclusion else None,
            error=row.error,
            owner_id=row.owner_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            lease=lease,
        )

    # ---- transcript and events ------------------------------------------------------------------------

    async def save_entry(self, room_id: str, entry: Entry, events: Sequence[Event]) -> None:
        """Stores a transcript entry with its events in one transaction (L8), and brings the room along.

        The partial text of the turn goes, the intervention it came from is marked taken, and the room's
        round, token totals and conclusion follow the entry. A turn already stored raises DuplicateTurn
        and nothing of this transaction is kept. Entries and events this process saves while another save
        is being written go in one transaction together, the next (`_save_together`): each returns once its
        transaction is committed.
        """
        await self._saving(_Save(room_id, entry, tuple(events)))

    async def save_events(self, room_id: str, events: Sequence[Event]) -> None:
        """Stores events that belong to no entry (round boundaries, progress, the end) in one transaction,
        with other saves waiting at the time, as `save_entry`'s are."""
        if events:
            await self._saving(_Save(room_id, None, tuple(events)))

    async def _save_together(self, saves: list[_Save]) -> list[BaseException | None]:
        """Saves in one transaction; when the database refuses it, each one alone, so that only the one it
        refuses (a turn stored already, a room deleted, events overlapping) fails, and with its own error.
        A save for a room this process may no longer write for (`_refusal`, asked again now: the room may
        have been let go while the save waited its turn) fails with that reason and writes nothing."""
        refusals = [self._refusal(save.room_id) for save in saves]
        kept = [save for save, refusal in zip(saves, refusals, strict=True) if refusal is None]
        outcomes = iter(await self._save_kept(kept) if kept else [])
        return [next(outcomes) if refusal is None else refusal for refusal in refusals]

    async def _save_kept(self, saves: list[_Save]) -> list[BaseException | None]:
        try:
            await self._save(saves)
        except IntegrityError:  # only with more than one: `_save` names what it refuses for one
            return [await _outcome(self._save([save])) for save in saves]
        except Exception as exc:  # the database failed: nothing of it was kept, or its answer was lost
            return [exc] * len(saves)
        return [None] * len(saves)

    def _refusal(self, room_id: str) -> StoreError | None:
        """Why this process may write nothing more for the room, else None (a worker's store refuses the rooms
        it let go)."""
        return None

    async def _save(self, saves: Sequence[_Save]) -> None:
        """One transaction: per save its room's row, entry, events, the turn's partial text and the words the
        entry took in; one statement for each of these for all the saves. For one save, a refusal is named
        (RoomNotFound, DuplicateTurn, overlapping events); for more, it is raised as IntegrityError."""
        now = time.time()
        alone = len(saves) == 1
        saves = sorted(saves, key=_by_room)  # rows in one order in every batch (`_by_room`)
        entries = [(s.room_id, s.entry) for s in saves if s.entry is not None]
        turns = sorted(
            ({"b_room": room, "b_turn": e.turn_id} for room, e in entries if e.is_turn),
            key=lambda row: (row["b_room"], row["b_turn"]),
        )
        words = [
            {"b_room": room, "b_ref": int(e.ref), "b_now": now}
            for room, e in entries
            if e.kind == "intervention" and e.ref is not None and e.ref.isdecimal()
        ]
        async with self._write() as conn:
            result = await conn.execute(_SAVE_ROOM, [_room_changes(s, now) for s in saves])
            if alone and result.rowcount == 0:
                raise RoomNotFound(saves[0].room_id)
            if entries:
                try:
                    await conn.execute(insert(EntryRow), [_entry_row(room, e) for room, e in entries])
                except IntegrityError:
                    if alone:
                        raise DuplicateTurn(*_named(entries[0])) from None
                    raise
            await self._insert_events(conn, saves, now, alone=alone)
            if turns:
                await conn.execute(_TURN_DONE, turns)
            if words:
                await conn.execute(_WORDS_TAKEN, words)

    @staticmethod
    async def _insert_events(
        conn: AsyncConnection, saves: Sequence[_Save], now: float, *, alone: bool
    ) -> None:
        rows = [
            {
                "room_id": save.room_id,
                "seq": event.seq,
                "type": event.type,
                "round": getattr(event, "round", None),
                "data": event_json(event),
                "created_at": now,
            }
            for save in saves
            for event in save.events
        ]
        if not rows:
            return
        try:
            await conn.execute(insert(EventRow), rows)
        except IntegrityError:
            if not alone:
                raise
            room_id, events = saves[0].room_id, saves[0].events
            raise StoreError(
                f"room {room_id}: events {events[0].seq}..{events[-1].seq} overlap events already stored; "
                f"number new events after last_seq()"
            ) from None

    async def load_transcript(self, room_id: str) -> Transcript:
        """The room's transcript, digests included, in canonical order (empty for an unknown room)."""
        async with self._read() as session:
            rows = (await session.scalars(_TRANSCRIPT, {"room": room_id})).all()
        return Transcript(Entry.model_validate_json(data) for data in rows)

    async def events_after(self, room_id: str, after: int, limit: int | None = None) -> list[Event]:
        """The room's stored events with a seq above `after`, in order: replay for a reconnecting client.

        Any integer is safe here (a client's Last-Event-ID): past the highest seq a column holds, none.
        """
        if after >= INT_MAX:
            return []
        query = (
            select(EventRow.data)
            .where(EventRow.room_id == room_id, EventRow.seq > max(after, INT_MIN))
            .order_by(EventRow.seq)
            .limit(limit)
        )
        async with self._read() as session:
            rows = (await session.scalars(query)).all()
        return [parse_event(data) for data in rows]

    async def last_seq(self, room_id: str) -> int:
        """The highest stored event seq of the room; 0 when none."""
        async with self._read() as session:
            value = await session.scalar(_LAST_SEQ, {"room": room_id})
        return value or 0

    @staticmethod
    async def _run_state(conn: AsyncConnection, room_id: str) -> RunState:
        """What a run starts from: `load_transcript`, `partials`, `last_seq` and `pending_interventions`."""
        entries = (await conn.scalars(_TRANSCRIPT, {"room": room_id})).all()
        partials = (await conn.execute(_PARTIALS, {"room": room_id})).all()
        last = await conn.scalar(_LAST_SEQ, {"room": room_id})
        words = (await conn.execute(_PENDING_WORDS, {"room": room_id})).all()
        return RunState(
            transcript=Transcript(Entry.model_validate_json(data) for data in entries),
            partials={turn_id: (text, seq) for turn_id, text, seq in partials},
            last_seq=last or 0,
            pending=[StoredIntervention(str(id_), author, text, at) for id_, author, text, at in words],
        )

    async def mark_running(self, room_id: str) -> None:
        """`clear_partials` and `update_room(status="running")` in one transaction (`claim` does it too)."""
        async with self._write() as conn:
            marked = await self._mark_running(conn, room_id)
        if not marked:
            raise RoomNotFound(room_id)

    @staticmethod
    async def _mark_running(conn: AsyncConnection, room_id: str) -> bool:
        await conn.execute(_CLEAR_PARTIALS, {"b_room": room_id})
        result = await conn.execute(_MARK_RUNNING, {"b_room": room_id, "b_now": time.time()})
        return bool(result.rowcount)

    # ---- text of turns in flight ----------------------------------------------------------------------

    async def save_partial(self, room_id: str, turn_id: str, text: str, seq: int) -> None:
        """Keeps the text so far of a turn in flight and the last event seq it includes (an upsert)."""
        changes = {"text": text, "seq": seq, "updated_at": time.time()}
        key = [PartialRow.room_id, PartialRow.turn_id]
        statement: Executable
        if self._engine.dialect.name == "postgresql":
            statement = (
                postgresql.insert(PartialRow)
                .values(room_id=room_id, turn_id=turn_id, **changes)
                .on_conflict_do_update(index_elements=key, set_=changes)
            )
        else:
            statement = (
                sqlite.insert(PartialRow)
                .values(room_id=room_id, turn_id=turn_id, **changes)
                .on_conflict_do_update(index_elements=key, set_=changes)
            )
        try:
            async with self._write_one() as conn:
                await conn.execute(statement)
        except IntegrityError:
            raise RoomNotFound(room_id) from None

    async def partials(self, room_id: str) -> dict[str, tuple[str, int]]:
        """turn id -> (text so far, last event seq it includes), for watchers who join mid-turn."""
        async with self._read() as session:
            rows = (await session.execute(_PARTIALS, {"room": room_id})).all()
        return {turn_id: (text, seq) for turn_id, text, seq in rows}

    async def clear_partials(self, room_id: str) -> None:
        async with self._write_one() as conn:
            await conn.execute(_CLEAR_PARTIALS, {"b_room": room_id})

    # ---- interventions --------------------------------------------------------------------------------

    async def add_intervention(self, room_id: str, text: str, *, author: str = "user") -> str:
        """Keeps a person's words the moment they arrive; the id returned goes on the entry as `ref`."""
        try:
            async with self._write_one() as conn:
                result = await conn.execute(
                    insert(InterventionRow)
                    .values(room_id=room_id, author=author, text=text, created_at=time.time())
                    .returning(InterventionRow.id)
                )
                new_id = result.scalar_one()
        except IntegrityError:
            raise RoomNotFound(room_id) from None
        return str(new_id)

    async def pending_interventions(self, room_id: str) -> list[StoredIntervention]:
        """Words that have not joined the transcript yet, oldest first: what a resumed run takes in. Rooms
        asking while another such read is in flight are read together, in the next query."""
        return await self._reading_words(room_id)

    async def _words_together(self, rooms: list[str]) -> list[list[StoredIntervention] | BaseException]:
        try:
            found = await self.pending_interventions_for(list(dict.fromkeys(rooms)))
        except Exception as exc:
            return [exc] * len(rooms)
        return [list(found.get(room, ())) for room in rooms]

    async def pending_interventions_for(self, room_ids: Sequence[str]) -> dict[str, list[StoredIntervention]]:
        """`pending_interventions` of many rooms in one query: what one process's watcher takes in."""
        if not room_ids:
            return {}
        query = (
            select(InterventionRow.room_id, *_PENDING_WORDS.selected_columns)
            .where(InterventionRow.room_id.in_(list(room_ids)), InterventionRow.taken_at.is_(None))
            .order_by(InterventionRow.id)
        )
        async with self._look() as conn:
            rows = (await conn.execute(query)).all()
        found: dict[str, list[StoredIntervention]] = {}
        for room_id, id_, author, text, at in rows:
            found.setdefault(room_id, []).append(StoredIntervention(str(id_), author, text, at))
        return found

    async def save_partials(self, partials: Sequence[tuple[str, str, str, int]]) -> None:
        """`save_partial` for many turns, of any rooms, in one transaction: (room, turn, text so far, seq).

        Should a room be gone meanwhile, the others are written one by one and RoomNotFound names it.
        """
        rows = [
            {"room_id": r, "turn_id": t, "text": text, "seq": seq, "updated_at": time.time()}
            for r, t, text, seq in sorted(partials)  # rows in one order (`_by_room`)
        ]
        if not rows:
            return
        insert_ = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        statement = insert_(PartialRow)
        statement = statement.on_conflict_do_update(
            index_elements=[PartialRow.room_id, PartialRow.turn_id],
            set_={c: statement.excluded[c] for c in ("text", "seq", "updated_at")},
        )
        try:
            async with self._write_one() as conn:
                await conn.execute(statement, rows)
        except IntegrityError:
            if len(partials) == 1:
                raise RoomNotFound(partials[0][0]) from None
            missing = None
            for r, t, text, seq in partials:
                try:
                    await self.save_partial(r, t, text, seq)
                except RoomNotFound as exc:
                    missing = exc
            if missing is not None:
                raise missing from None

    # ---- leases (L14) ---------------------------------------------------------------------------------

    async def acquire(self, room_id: str, owner: str, ttl: float) -> bool:
        """Takes the room's lease for `ttl` seconds; False while another live owner holds it.

        The lease is free when there is none, it expired, it is ours, or its owner is a dead process on
        this host. The update is conditional on the exact lease read, so of two takers only one wins.
        Expiry is written and judged by the database's clock, so hosts whose clocks differ agree on it.
        """
        lease = await self.lease(room_id)
        if _lease_taking(lease, owner) is None:
            return False
        async with self._write_one() as conn:
            return await self._take_lease(conn, room_id, owner, ttl, lease)

    async def claim(
        self, room_id: str, owner: str, ttl: float, *, spec: RoomSpec | None = None
    ) -> tuple[RoomRecord, RunState | None]:
        """A run's start, in one transaction: the room read (`get_room`); unless it is completed, its lease
        taken (`acquire`); once that is taken, what the run starts from read (`RunState`), then the room
        marked running, the text of turns cut mid-stream dropped (`mark_running`).

        The record is the room as read, before it was marked running: a status "running" there says the last
        run was cut. The state is None when the lease was not taken; the record's lease is then the holder's.
        `spec`, the spec the run uses instead of the stored one, becomes the record's (the stored one is not
        parsed).
        """
        state = None
        async with self._writer_turn(), self._begin(self._engine) as conn:
            found = (await conn.execute(_ROOM, {"room": room_id})).first()
            if found is None:
                raise RoomNotFound(room_id)
            record = self._record(found, found.db_now, spec=spec)
            if record.status == "completed":
                return record, None
            if await self._take_lease(conn, room_id, owner, ttl, record.lease):
                state = await self._run_state(conn, room_id)
                await self._mark_running(conn, room_id)
            elif _lease_taking(record.lease, owner) is not None:  # taken meanwhile: the holder is named
                found = (await conn.execute(_ROOM, {"room": room_id})).first() or found
                record = self._record(found, found.db_now, spec=spec)
        self.writes += 1
        return record, state

    @staticmethod
    async def _take_lease(
        conn: AsyncConnection, room_id: str, owner: str, ttl: float, lease: Lease | None
    ) -> bool:
        taking = _lease_taking(lease, owner)
        if taking is None:
            return False
        statement, parameters = taking
        result = await conn.execute(statement, {**parameters, "b_room": room_id, "b_ttl": ttl})
        return result.rowcount == 1

    async def renew(self, room_id: str, owner: str, ttl: float) -> bool:
        """Extends our lease to `ttl` seconds from the database's now; False when it is no longer ours.

        Renewals asked while another is written go together in the next write (`_renew_together`): a
        process running many rooms renews them in a few statements, not one transaction each."""
        return await self._renewing((room_id, owner, ttl))

    async def _renew_together(self, asks: list[tuple[str, str, float]]) -> list[bool | BaseException]:
        """One UPDATE per ttl for every room asked (each run owns its lease under a name of its own): it
        changes the rooms still held by the owner asked, takes their rows in id order (`_by_room`), and
        returns them. Each such UPDATE commits by itself."""
        by_ttl: dict[float, set[tuple[str, str]]] = {}
        for room_id, owner, ttl in asks:
            by_ttl.setdefault(ttl, set()).add((room_id, owner))
        held: set[tuple[str, str | None]] = set()
        try:
            for ttl, pairs in by_ttl.items():
                in_order = (
                    select(RoomRow.id)
                    .where(tuple_(RoomRow.id, RoomRow.lease_owner).in_(sorted(pairs)))
                    .order_by(RoomRow.id)
                    .with_for_update(key_share=True)
                )
                renewal = (
                    update(RoomRow)
                    .where(RoomRow.id.in_(in_order))
                    .values(lease_expires_at=db_now() + ttl)
                    .returning(RoomRow.id, RoomRow.lease_owner)
                )
                async with self._write_one() as conn:
                    held.update((room, owner) for room, owner in (await conn.execute(renewal)).all())
        except Exception as exc:  # the database failed: each renewal fails, and its caller retries
            return [exc] * len(asks)
        return [(room_id, owner) in held for room_id, owner, _ in asks]

    async def release(self, room_id: str, owner: str) -> None:
        """Gives the lease up, if it is still ours."""
        async with self._write_one() as conn:
            await conn.execute(
                update(RoomRow)
                .where(RoomRow.id == room_id, RoomRow.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def retry_horizon(self, room_id: str) -> float | None:
        """None: a failed call for a room is tried again a fixed number of times (`moot.durable`)."""
        return None

    async def lease(self, room_id: str) -> Lease | None:
        """The room's lease as stored, None when there is none."""
        query = select(RoomRow.lease_owner, RoomRow.lease_expires_at, db_now()).where(RoomRow.id == room_id)
        async with self._read() as session:
            held = (await session.execute(query)).one_or_none()
        if held is None:
            raise RoomNotFound(room_id)
        held_by, expires_at, now = held
        if held_by is None or expires_at is None:
            return None
        return _lease(held_by, expires_at, now, local_pids=self._local_pids)

    async def rooms_to_take_over(self, limit: int = 100) -> list[str]:
        """Rooms stored as running whose lease is gone or over, by the database's clock: their process died.

        What `moot worker` processes look for to resume rooms whose worker was killed.
        """
        query = (
            select(RoomRow.id, RoomRow.lease_owner, RoomRow.lease_expires_at, db_now())
            .where(RoomRow.status == "running")
            .order_by(RoomRow.updated_at)
            .limit(limit)
        )
        async with self._read() as session:
            rows = (await session.execute(query)).all()
        return [
            room_id
            for room_id, owner, expires_at, now in rows
            if owner is None
            or expires_at is None
            or not _lease(owner, expires_at, now, local_pids=self._local_pids).alive
        ]

    # ---- users, providers and agent templates: rows the HTTP service keeps per owner (L2, L3, L15) ------

    async def create_user(self, name: str, *, role: UserRole, token_hash: str | None) -> UserRecord:
        """Adds a user; NameTaken when another user has the name."""
        now = time.time()
        values = {"name": name, "role": role, "token_hash": token_hash, "created_at": now}
        try:
            async with self._write_one() as conn:
                user_id = (
                    await conn.execute(insert(UserRow).values(values).returning(UserRow.id))
                ).scalar_one()
        except IntegrityError:
            raise NameTaken(f"a user named '{name}' already exists; choose another name") from None
        return UserRecord(user_id, name, role, now)

    async def get_user(self, user_id: int) -> UserRecord | None:
        if not _fits(user_id):
            return None
        return await self._one_user(UserRow.id == user_id)

    async def user_by_name(self, name: str) -> UserRecord | None:
        return await self._one_user(UserRow.name == name)

    async def user_by_token(self, token_hash: str) -> UserRecord | None:
        """The user whose token hashes to `token_hash`: how a request is authenticated."""
        return await self._one_user(UserRow.token_hash == token_hash)

    async def list_users(self, *, limit: int = 100, offset: int = 0) -> list[UserRecord]:
        query = select(UserRow).order_by(UserRow.id).limit(limit).offset(offset)
        async with self._read() as session:
            return [_user(row) for row in (await session.scalars(query)).all()]

    async def count_users(self, *, role: UserRole | None = None) -> int:
        return await self._count(UserRow, None if role is None else UserRow.role == role)

    async def update_user(
        self, user_id: int, *, role: UserRole | None = None, token_hash: str | None = None
    ) -> UserRecord | None:
        """Changes a user's role or token hash (None leaves it as it is); None when there is no such user."""
        if not _fits(user_id):
            return None
        values: dict[str, Any] = {}
        if role is not None:
            values["role"] = role
        if token_hash is not None:
            values["token_hash"] = token_hash
        if values:
            async with self._write_one() as conn:
                await conn.execute(update(UserRow).where(UserRow.id == user_id).values(values))
        return await self.get_user(user_id)

    async def delete_user(self, user_id: int) -> bool:
        """Deletes a user with their providers and templates; their rooms stay, owned by nobody."""
        if not _fits(user_id):
            return False
        return await self._delete(UserRow, UserRow.id == user_id)

    async def _one_user(self, condition: ColumnElement[bool]) -> UserRecord | None:
        async with self._read() as session:
            row = (await session.scalars(select(UserRow).where(condition))).one_or_none()
        return None if row is None else _user(row)

    async def create_provider(
        self,
        owner_id: int,
        *,
        name: str,
        type: str,
        base_url: str | None,
        default_model: str | None,
        max_tokens: int | None,
        api_key_encrypted: bytes | None,
    ) -> ProviderRecord:
        """Adds a provider (L3); the caller encrypts the key. NameTaken when the owner has one of this name."""
        values = {
            "name": name,
            "type": type,
            "base_url": base_url,
            "default_model": default_model,
            "max_tokens": max_tokens,
            "api_key_encrypted": api_key_encrypted,
        }
        provider_id = await self._insert_owned(ProviderRow, owner_id, values, what="provider")
        return _required(await self.get_provider(provider_id, owner_id=owner_id))

    async def get_provider(self, provider_id: int, *, owner_id: int) -> ProviderRecord | None:
        row = await self._get_owned(ProviderRow, provider_id, owner_id)
        return None if row is None else _provider(row)

    async def provider_by_name(self, name: str, *, owner_id: int) -> ProviderRecord | None:
        row = await self._get_named(ProviderRow, name, owner_id)
        return None if row is None else _provider(row)

    async def list_providers(
        self, *, owner_id: int, limit: int = 100, offset: int = 0
    ) -> list[ProviderRecord]:
        return [_provider(row) for row in await self._list_owned(ProviderRow, owner_id, limit, offset)]

    async def count_providers(self, *, owner_id: int) -> int:
        return await self._count(ProviderRow, ProviderRow.owner_id == owner_id)

    async def update_provider(
        self, provider_id: int, changes: Mapping[str, Any], *, owner_id: int
    ) -> ProviderRecord | None:
        """Sets the given columns (name, type, base_url, default_model, max_tokens, api_key_encrypted)."""
        await self._update_owned(ProviderRow, provider_id, owner_id, changes, what="provider")
        return await self.get_provider(provider_id, owner_id=owner_id)

    async def delete_provider(self, provider_id: int, *, owner_id: int) -> bool:
        if not (_fits(provider_id) and _fits(owner_id)):
            return False
        return await self._delete(
            ProviderRow, (ProviderRow.id == provider_id) & (ProviderRow.owner_id == owner_id)
        )

    async def create_template(
        self, owner_id: int, *, name: str, data: Mapping[str, Any]
    ) -> AgentTemplateRecord:
        """Adds a reusable agent (L2); `data` is the agent's fields as JSON. NameTaken on a name in use."""
        values = {"name": name, "data": json.dumps(data, ensure_ascii=False)}
        template_id = await self._insert_owned(AgentTemplateRow, owner_id, values, what="agent template")
        return _required(await self.get_template(template_id, owner_id=owner_id))

    async def get_template(self, template_id: int, *, owner_id: int) -> AgentTemplateRecord | None:
        row = await self._get_owned(AgentTemplateRow, template_id, owner_id)
        return None if row is None else _template(row)

    async def template_by_name(self, name: str, *, owner_id: int) -> AgentTemplateRecord | None:
        row = await self._get_named(AgentTemplateRow, name, owner_id)
        return None if row is None else _template(row)

    async def list_templates(
        self, *, owner_id: int, limit: int = 100, offset: int = 0
    ) -> list[AgentTemplateRecord]:
        return [_template(row) for row in await self._list_owned(AgentTemplateRow, owner_id, limit, offset)]

    async def count_templates(self, *, owner_id: int) -> int:
        return await self._count(AgentTemplateRow, AgentTemplateRow.owner_id == owner_id)

    async def update_template(
        self,
        template_id: int,
        *,
        owner_id: int,
        name: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> AgentTemplateRecord | None:
        changes: dict[str, Any] = {}
        if name is not None:
            changes["name"] = name
        if data is not None:
            changes["data"] = json.dumps(data, ensure_ascii=False)
        await self._update_owned(AgentTemplateRow, template_id, owner_id, changes, what="agent template")
        return await self.get_template(template_id, owner_id=owner_id)

    async def delete_template(self, template_id: int, *, owner_id: int) -> bool:
        if not (_fits(template_id) and _fits(owner_id)):
            return False
        return await self._delete(
            AgentTemplateRow, (AgentTemplateRow.id == template_id) & (AgentTemplateRow.owner_id == owner_id)
        )

    async def count_rooms(self, *, owner_id: int | None = None) -> int:
        """How many rooms `list_rooms` pages through."""
        return await self._count(RoomRow, None if owner_id is None else RoomRow.owner_id == owner_id)

    async def count_rooms_by_status(self) -> dict[str, int]:
        """Rooms per status, every status present (zero where none): what /metrics reports."""
        query = select(RoomRow.status, func.count()).group_by(RoomRow.status)
        async with self._read() as session:
            rows = (await session.execute(query)).all()
        counts: dict[str, int] = {row[0]: row[1] for row in rows}
        return {status: counts.get(status, 0) for status in ROOM_STATUSES}

    async def _count(
        self, table: type[ProviderRow] | type[AgentTemplateRow] | type[UserRow] | type[RoomRow], where: Any
    ) -> int:
        query = select(func.count()).select_from(table)
        if where is not None:
            query = query.where(where)
        async with self._read() as session:
            return int(await session.scalar(query) or 0)

    async def _insert_owned(
        self, table: type[_Owned], owner_id: int, values: Mapping[str, Any], *, what: str
    ) -> int:
        now = time.time()
        row = {**values, "owner_id": owner_id, "created_at": now, "updated_at": now}
        try:
            async with self._write_one() as conn:
                return int((await conn.execute(insert(table).values(row).returning(table.id))).scalar_one())
        except IntegrityError:
            raise await self._refused(what, str(values["name"]), owner_id) from None

    async def _update_owned(
        self, table: type[_Owned], row_id: int, owner_id: int, changes: Mapping[str, Any], *, what: str
    ) -> None:
        if not changes or not (_fits(row_id) and _fits(owner_id)):
            return
        try:
            async with self._write_one() as conn:
                await conn.execute(
                    update(table)
                    .where(table.id == row_id, table.owner_id == owner_id)
                    .values({**changes, "updated_at": time.time()})
                )
        except IntegrityError:
            raise await self._refused(what, str(changes.get("name")), owner_id) from None

    async def _refused(self, what: str, name: str, owner_id: int) -> MootError:
        if await self.get_user(owner_id) is None:
            return StoreError(f"no user {owner_id} to own the {what} '{name}'")
        return NameTaken(f"you already have a {what} named '{name}'; choose another name or change that one")

    async def _get_owned(self, table: type[_Owned], row_id: int, owner_id: int) -> _Owned | None:
        if not (_fits(row_id) and _fits(owner_id)):
            return None
        query = select(table).where(table.id == row_id, table.owner_id == owner_id)
        async with self._read() as session:
            return (await session.scalars(query)).one_or_none()

    async def _get_named(self, table: type[_Owned], name: str, owner_id: int) -> _Owned | None:
        query = select(table).where(table.name == name, table.owner_id == owner_id)
        async with self._read() as session:
            return (await session.scalars(query)).one_or_none()

    async def _list_owned(
        self, table: type[_Owned], owner_id: int, limit: int, offset: int
    ) -> Sequence[_Owned]:
        query = select(table).where(table.owner_id == owner_id).order_by(table.id).limit(limit).offset(offset)
        async with self._read() as session:
            return (await session.scalars(query)).all()

    async def _delete(
        self, table: type[ProviderRow] | type[AgentTemplateRow] | type[UserRow], where: ColumnElement[bool]
    ) -> bool:
        async with self._write_one() as conn:
            result = await conn.execute(delete(table).where(where))
        return result.rowcount > 0


UserRole = Literal["readonly", "member", "admin"]
USER_ROLES: tuple[UserRole, ...] = ("readonly", "member", "admin")  # in order of what they may do (L15)
_Owned = TypeVar("_Owned", ProviderRow, AgentTemplateRow)


class NameTaken(MootError):
    """A user, or one owner's provider or agent template, already has this name."""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A person using the HTTP service; their token is stored only as its hash."""

    id: int
    name: str
    role: UserRole
    created_at: float


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """A stored provider (L3); the API key stays encrypted here and is decrypted only to make a call."""

    id: int
    owner_id: int
    name: str
    type: str
    base_url: str | None
    default_model: str | None
    max_tokens: int | None
    api_key_encrypted: bytes | None = field(repr=False)
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class AgentTemplateRecord:
    """A reusable agent owned by a user (L2): the agent's fields, and maybe a model reference."""

    id: int
    owner_id: int
    name: str
    data: dict[str, Any]
    created_at: float
    updated_at: float


def _user(row: UserRow) -> UserRecord:
    return UserRecord(row.id, row.name, cast(UserRole, row.role), row.created_at)


def _provider(row: ProviderRow) -> ProviderRecord:
    return ProviderRecord(
        id=row.id,
        owner_id=_required(row.owner_id),
        name=row.name,
        type=row.type,
        base_url=row.base_url,
        default_model=row.default_model,
        max_tokens=row.max_tokens,
        api_key_encrypted=row.api_key_encrypted,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _template(row: AgentTemplateRow) -> AgentTemplateRecord:
    return AgentTemplateRecord(
        row.id, _required(row.owner_id), row.name, json.loads(row.data), row.created_at, row.updated_at
    )


_T = TypeVar("_T")


def _required(value: _T | None) -> _T:
    if value is None:
        raise StoreError("a row vanished while it was being written; try again")
    return value
