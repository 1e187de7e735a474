"""The store contract: persistence only, no business rules.

The service keeps every entity in memory (SPEC §1) and hands the store, for each request, the
list of entities the request changed (post-images) or deleted. A store makes a batch of such
records durable, all-or-nothing per record, and loads everything back at start-up. Both the
JSON-file store and a database store implement this interface."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from .. import jsonio

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


class Store(ABC):
    name = "store"

    @abstractmethod
    def open(self) -> LoadResult:
        """Take exclusive ownership of the storage, recover from any crash, load everything."""

    @abstractmethod
    def write_batch(self, records: list[list[Op]]) -> None:
        """Make every record durable, in order; each record is all-or-nothing.

        Called from one thread at a time. Returns only once the records survive a crash;
        raises if they could not be made durable (the caller then rolls them back)."""

    def prepare_batch(self, records: list[list[Op]]) -> None:
        """Optional step before `write_batch`, on the event-loop thread: whatever can fail
        before the commit point. Raises to refuse the records; an exception with a `ready`
        attribute accepts the first `ready` records and refuses the rest."""

    def apply_batch(self, records: list[list[Op]]) -> None:
        """Optional step after `write_batch` succeeded, on the event-loop thread (e.g. refresh
        readable copies). Must be quick and must not raise for a durable change."""

    def wants_maintenance(self) -> bool:
        """True when `maintenance` should run soon rather than when idle."""
        return False

    def maintenance(self) -> None:
        """Housekeeping between batches (e.g. a checkpoint), from a worker thread."""

    # A store whose commits run elsewhere (the file store's helper process) sets this and
    # implements send_batch, resume_async and maintenance_async instead of
    # prepare/write/apply_batch and maintenance.
    commits_whole_batches = False

    def send_batch(self, records: list[list[Op]]) -> asyncio.Future:
        """Start committing `records` (stage, make durable, apply); the future resolves to
        (k, why): the first k records are committed, the rest refused for `why`; it raises
        OSError when none was. Batches sent before an earlier one resolves are committed in
        order; once one is refused or fails, later ones are refused until `resume_async`."""
        raise NotImplementedError

    async def resume_async(self) -> None:
        """Accept batches again after a refused or failed one."""
        raise NotImplementedError

    async def maintenance_async(self) -> None:
        """`maintenance` for a store that commits whole batches."""
        raise NotImplementedError

    # A store may leave an entity's durable copy behind its journal (the file store records
    # changes to big entities as deltas); a flush then writes their whole current values.
    def flush_keys(self) -> list[tuple[str, str]]:
        """(kind, id) of the entities whose durable copy is behind; empty for most stores."""
        return []

    def wants_flush(self) -> bool:
        """True when those entities should be flushed now rather than when idle."""
        return False

    def flush(self, ops: list[Op]) -> None:
        """Write `ops` (whole current values of lagging entities), from a worker thread."""

    def send_flush(self, ops: list[Op], keys: list[tuple[str, str]]) -> asyncio.Future:
        """`flush` for a store that commits whole batches: ordered after the batches sent
        before it; resolves to True once written (False: declined, the entities stay
        behind)."""
        raise NotImplementedError

    def detach_loop(self) -> None:
        """Called on the event loop's thread once no commit is in flight, before `close`."""

    @abstractmethod
    def close(self) -> None:
        """Flush everything and release the storage."""

    def health(self) -> dict[str, Any]:
        return {"backend": self.name}


class StoreUnusableError(RuntimeError):
    """The storage cannot be used as it is (not a folder, not writable, a symbolic link where
    the store would follow it); the message names the path and what to fix."""
