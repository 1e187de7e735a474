"""The store contract: persistence only, no business rules.

The service keeps every entity in memory (SPEC §1) and hands the store, for each request, the
list of entities the request changed (post-images) or deleted. A store makes a batch of such
records durable, all-or-nothing per record, and loads everything back at start-up. Every store
implements `Store`; the ones whose durable write is a blocking call (the JSON-file store
in-process, PostgreSQL, memory) do so through `SyncStore`."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from .. import jsonio

log = logging.getLogger("maestro.store")

KINDS = ("project", "task", "session")


@dataclass(slots=True)
class Op:
    """One entity written (`value` is its new state) or deleted (`value` is None)."""

    kind: str
    id: str
    value: dict | None
    # Compact JSON of `value`, computed once by the caller and reused by the store.
    encoded: bytes | None = None
    # For tasks: the project folder the file lives in.
    project_id: str | None = None
    # The entity did not exist before this change: a file store need not look for an old
    # file to swap with (a hint; an old file that exists anyway is replaced all the same).
    new: bool = False
    # The change as a delta from the entity's previous version: {"set": {field: value},
    # "push": {field: [index, [entries]]}} (see apply_delta). A store may record this instead
    # of `value`; `value` then still holds the whole new version where the server made the op
    # (a store process that decodes a journal line gets None).
    delta: dict | None = None
    # The encoding `encoded` comes from when it is not given (a spliced one, joined on
    # demand: see encoding.py).
    source: Any = None
    # Part of a flush (see Store.flush_keys): a restatement of committed state, never
    # refused for a file that cannot be written yet.
    flush: bool = False

    def full_json(self) -> bytes:
        """The compact JSON of the whole new value (a delta op where the server made it)."""
        if self.encoded is not None:
            return self.encoded
        if self.source is not None:
            return self.source.join(keep=False)
        return jsonio.dumps(self.value)


def apply_delta(base: dict | None, delta: dict) -> dict:
    """Apply `delta` (see Op.delta) to `base`, in place, and return it. A pushed list is cut
    to its index first, so a delta replayed over a version that already holds its entries
    (a file written later than the journal record) gives the same result."""
    entity = base if base is not None else {}
    for key, value in (delta.get("set") or {}).items():
        entity[key] = value
    for key, (start, entries) in (delta.get("push") or {}).items():
        current = entity.get(key)
        if not isinstance(current, list):
            current = entity[key] = []
        del current[start:]
        current.extend(entries)
    return entity


@dataclass
class LoadResult:
    projects: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    sessions: list[dict] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class StoreLockedError(RuntimeError):
    """Another server holds the data directory."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a batch: its first `accepted` records are committed, in order; the
    records after them (if any) were refused for `reason` and must be undone."""

    accepted: int
    reason: str | None = None


class Store(ABC):
    """The one protocol the committer drives, on the event loop.

    Life cycle (blocking calls, made once): `open` (from a worker thread), `detach_loop` then
    `close`. Commit path (on the event loop): `send_batch` starts committing a batch and its
    future resolves to an `Outcome`, or raises OSError when nothing of it was committed. Up to
    `pipeline_depth` batches may be in flight: they are committed in the order sent, and once
    one is refused (in part) or fails, every later batch and flush is refused whole until
    `resume`. Flushes (`send_flush`) and housekeeping (`maintain`) are ordered with batches."""

    name = "store"
    # Batches the committer may send before the first resolves, and the entity writes a
    # further batch must hold to be sent early (small changes gain more from one larger
    # batch, one fsync, than from overlap).
    pipeline_depth = 1
    pipeline_min_ops = 24
    # Every update comes as a delta where one can be made (not only those of big entities):
    # for a store that writes an entity's parts apart (PostgreSQL's list tables).
    wants_deltas = False
    # Batches are sent with their change requests (`send_batch`'s `txs`), for a store that
    # records them in a log other servers follow and numbers their events (postgres_log.py).
    keeps_log = False

    @abstractmethod
    def open(self) -> LoadResult:
        """Take exclusive ownership of the storage, recover from any crash, load everything."""

    def check_op(self, op: Op) -> None:
        """Raise ValueError when `op` could not be stored at all (an id the storage cannot
        name), before anything changes."""

    @abstractmethod
    def send_batch(self, records: list[list[Op]], txs=None) -> asyncio.Future:
        """Start committing `records` (of the change requests `txs`, for a store that
        `keeps_log`); the future resolves to an Outcome (see the class)."""

    @abstractmethod
    async def resume(self) -> None:
        """Accept batches again after a refused or failed one."""

    @abstractmethod
    async def maintain(self) -> None:
        """Housekeeping while idle (e.g. a checkpoint), after the batches sent before."""

    # A store may leave an entity's durable copy behind its journal (the file store records
    # changes to big entities as deltas); a flush then writes their whole current values.
    def flush_keys(self) -> list[tuple[str, str]]:
        """(kind, id) of the entities whose durable copy is behind; empty for most stores."""
        return []

    def wants_flush(self) -> bool:
        """True when those entities should be flushed now rather than when idle."""
        return False

    def send_flush(self, ops: list[Op], keys: list[tuple[str, str]]) -> asyncio.Future:
        """Write `ops` (whole current values of the lagging entities `keys`; those without an
        op no longer exist) after everything sent before; resolves to True once written,
        False when declined (an earlier batch was refused: the entities stay behind). The
        committer's last call before closing, with or without ops: once it resolves, nothing
        sent before is still at work."""
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(True)
        return fut

    def detach_loop(self) -> None:
        """Called on the event loop's thread once no commit is in flight, before `close`."""

    @abstractmethod
    def close(self) -> None:
        """Flush everything and release the storage."""

    def health(self) -> dict[str, Any]:
        return {"backend": self.name}


class SyncStore(Store):
    """A store whose durable write is a blocking call (the file store in-process, PostgreSQL,
    memory), driven through the protocol above: the batches and flushes sent run one at a
    time in the order sent; each is prepared on the event loop (what can be refused before the
    commit point), written on a worker thread (the commit point) and applied on the loop."""

    # False: the store's calls are quick and run on the event loop (no thread at all).
    write_in_thread = True
    _lane: asyncio.Lock | None = None
    _refusing: str | None = None
    _background: set | None = None

    # What a synchronous store implements.
    def prepare_batch(self, records: list[list[Op]]) -> Outcome:
        """Before the commit point, on the event loop: how many records may be committed (the
        rest are refused, for the reason given)."""
        return Outcome(len(records))

    @abstractmethod
    def write_batch(self, records: list[list[Op]]) -> None:
        """Make every record durable, in order; each record is all-or-nothing. Returns only
        once the records survive a crash; raises if they could not be made durable."""

    def apply_batch(self, records: list[list[Op]]) -> None:
        """After `write_batch` succeeded, on the event loop (e.g. refresh readable copies).
        Must be quick and must not raise for a durable change."""

    def wants_maintenance(self) -> bool:
        """True when `maintenance` should run after this batch rather than when idle."""
        return False

    def maintenance(self) -> None:
        """Housekeeping between batches (e.g. a checkpoint), from a worker thread."""

    def flush(self, ops: list[Op]) -> None:
        """Write the whole values `ops` of lagging entities, from a worker thread."""

    def commit_now(self, records: list[list[Op]]) -> Outcome:
        """Prepare, write and apply `records` on this thread (a caller with no event loop)."""
        outcome = self.prepare_batch(records)
        accepted = records[:outcome.accepted]
        if accepted:
            self.write_batch(accepted)
            self.apply_batch(accepted)
        return outcome

    # The protocol: every operation takes the lane, in the order sent.
    def _run_in_lane(self, coro) -> asyncio.Future:
        if self._lane is None:
            self._lane = asyncio.Lock()
        return asyncio.ensure_future(coro)

    async def _call(self, fn, *args) -> None:
        """A blocking step: on a worker thread, or right here for a store that is quick."""
        if self.write_in_thread:
            await asyncio.to_thread(fn, *args)
        else:
            fn(*args)

    def send_batch(self, records: list[list[Op]], txs=None) -> asyncio.Future:
        return self._run_in_lane(self._commit(records, txs))

    def in_lane(self, fn, *args) -> asyncio.Future:
        """Run the blocking `fn(*args)` after everything sent before (e.g. PostgreSQL's turn
        lock, on the connection that writes); resolves to what it returns."""
        return self._run_in_lane(self._in_lane(fn, args))

    async def _in_lane(self, fn, args):
        async with self._lane:
            if self.write_in_thread:
                return await asyncio.to_thread(fn, *args)
            return fn(*args)

    async def _commit(self, records: list[list[Op]], txs=None) -> Outcome:
        async with self._lane:
            if self._refusing is not None:
                return Outcome(0, self._refusing)
            try:
                outcome = self.prepare_batch(records)
            except Exception as exc:  # noqa: BLE001 - refused before the commit point
                outcome = Outcome(0, str(exc))
            accepted = records if outcome.accepted >= len(records) else \
                records[:outcome.accepted]
            if accepted:
                try:
                    if txs is None:
                        await self._call(self.write_batch, accepted)
                    else:
                        await self._call(self.write_batch, accepted, txs[:len(accepted)])
                except BaseException as exc:
                    self._refusing = f"an earlier change could not be stored ({exc})"
                    raise
                try:
                    self.apply_batch(accepted)
                except Exception:
                    log.exception("the store could not apply a committed change (its "
                                  "journal keeps it)")
            if len(accepted) < len(records):
                self._refusing = f"an earlier change was refused ({outcome.reason})"
            if self.wants_maintenance():
                # After the answers, ahead of any batch sent once this one is answered.
                if self._background is None:
                    self._background = set()
                task = self._run_in_lane(self._maintain(quiet=True))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return outcome

    async def _maintain(self, quiet: bool = False) -> None:
        async with self._lane:
            try:
                await self._call(self.maintenance)
            except Exception:
                if not quiet:
                    raise
                log.exception("store maintenance failed")

    async def maintain(self) -> None:
        await self._run_in_lane(self._maintain())

    async def resume(self) -> None:
        await self._run_in_lane(self._resume())

    async def _resume(self) -> None:
        async with self._lane:  # after whatever was sent before the refusal was known
            self._refusing = None

    def send_flush(self, ops: list[Op], keys: list[tuple[str, str]]) -> asyncio.Future:
        return self._run_in_lane(self._flush(ops))

    async def _flush(self, ops: list[Op]) -> bool:
        async with self._lane:
            if self._refusing is not None:
                return False  # built on refused changes: the entities stay behind
            if ops:
                await self._call(self.flush, ops)
            if self.wants_maintenance():  # the moment no file is behind the journal
                try:
                    await self._call(self.maintenance)
                except Exception:
                    log.exception("store maintenance failed")
        return True


class StoreUnusableError(RuntimeError):
    """The storage cannot be used as it is (not a folder, not writable, a symbolic link where
    the store would follow it); the message names the path and what to fix."""
