"""A store that keeps committed entities in memory: for tests of the service and its rules,
which then run without a data directory, a database or a helper process.

It keeps what was committed as compact JSON, so nothing the service changes later (nor a
change it rolls back) shows in what the store holds, and a reopened store loads fresh copies.
The semantics are the other stores' (see base.py): each record is all-or-nothing, records are
committed in order, the last op of an entity wins, one owner at a time. `fail_next` makes the
next batch refuse its records from a given one on, or fail as a whole, to test refusals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import jsonio
from .base import KINDS, LoadResult, Op, Outcome, StoreLockedError, SyncStore


@dataclass
class MemoryData:
    """What memory stores hold, shared by the instances opened on it (as a data directory is
    by successive servers): committed entities by kind and id, as compact JSON."""

    entities: dict[str, dict[str, bytes]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS})
    owned: bool = False

    @classmethod
    def seeded(cls, seed: LoadResult) -> "MemoryData":
        data = cls()
        for kind, values in (("project", seed.projects), ("task", seed.tasks),
                             ("session", seed.sessions)):
            for value in values:
                data.entities[kind][value["id"]] = jsonio.dumps(value)
        return data


def _encode(record: list[Op]) -> list[tuple[str, str, bytes | None]]:
    return [(op.kind, op.id, None if op.value is None else op.full_json()) for op in record]


@dataclass
class _Failure:
    ready: int  # records committed before the refused one
    message: str
    whole: bool


class MemoryStore(SyncStore):
    name = "memory"
    # Keeping a batch costs microseconds: done on the event loop, no thread involved.
    write_in_thread = False

    def __init__(self, seed: LoadResult | None = None, data: MemoryData | None = None):
        """`seed`: entities the first open loads; `data`: the storage of an earlier instance
        (to reopen what it committed)."""
        self.data = data if data is not None else (
            MemoryData.seeded(seed) if seed is not None else MemoryData())
        self._open = False
        self._failures: list[_Failure] = []
        self._encoded: list | None = None
        self.batches = 0
        self.records = 0

    # ------------------------------------------------------------ test controls
    def fail_next(self, ready: int = 0, message: str = "refused by the store",
                  whole: bool = False) -> None:
        """Make the next batch refuse its records from record `ready` on (the ones before it
        are committed); `whole`: make its durable write fail instead, committing nothing.
        Calls queue up: each applies to one batch."""
        self._failures.append(_Failure(ready, message, whole))

    def entity(self, kind: str, eid: str) -> dict | None:
        """A fresh copy of the committed value of an entity, or None."""
        raw = self.data.entities[kind].get(eid)
        return None if raw is None else jsonio.loads(raw)

    def ids(self, kind: str) -> list[str]:
        """The ids of the committed entities of `kind`, in the order they were first written."""
        return list(self.data.entities[kind])

    # ------------------------------------------------------------ the store
    def open(self) -> LoadResult:
        if self.data.owned and not self._open:
            raise StoreLockedError("the memory store is in use by another Maestro server")
        self.data.owned = self._open = True
        loads = jsonio.loads
        entities = self.data.entities
        return LoadResult(projects=[loads(v) for v in entities["project"].values()],
                          tasks=[loads(v) for v in entities["task"].values()],
                          sessions=[loads(v) for v in entities["session"].values()])

    def check_op(self, op: Op) -> None:
        """What no durable store can hold: a NUL character in an id."""
        pid = op.value.get("projectId") if op.value is not None else op.project_id
        for label, value in (("id", op.id), ("project id", pid)):
            if isinstance(value, str) and "\x00" in value:
                raise ValueError(f"{label} {value!r} cannot contain a NUL character")

    def prepare_batch(self, records: list[list[Op]]) -> Outcome:
        """Encode the records now, on the event loop (the service's values are read where
        they were made), and refuse what `fail_next` asks for."""
        self._encoded = [_encode(record) for record in records]
        if self._failures and not self._failures[0].whole:
            failure = self._failures.pop(0)
            if failure.ready < len(records):
                del self._encoded[failure.ready:]
                return Outcome(failure.ready, failure.message)
        return Outcome(len(records))

    def write_batch(self, records: list[list[Op]]) -> None:
        encoded, self._encoded = self._encoded, None
        if self._failures and self._failures[0].whole:
            raise OSError(self._failures.pop(0).message)
        self.commit(encoded if encoded is not None else [_encode(r) for r in records])

    def commit(self, records: list[list[tuple[str, str, bytes | None]]]) -> None:
        """Keep the encoded records' changes, in order (each record whole: nothing here can
        fail half-way)."""
        if not self._open:
            raise OSError("the memory store is not open")
        entities = self.data.entities
        for record in records:
            for kind, eid, raw in record:
                table = entities[kind]
                if raw is None:
                    table.pop(eid, None)
                else:
                    table[eid] = raw
        self.batches += 1
        self.records += len(records)

    def close(self) -> None:
        if self._open:
            self._open = False
            self.data.owned = False

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "writable": self._open, "quarantined": [],
                "batches": self.batches, "records": self.records}
