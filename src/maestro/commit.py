"""Transactions over the in-memory state, and the group-commit writer that makes them durable.

A request builds a `Tx` under the service's mutation lock: every change goes to the working
state at once (so the next request builds on it) and is remembered with its undo. The
`Committer` then writes the changes of all requests waiting at that moment in one store batch
(one fsync), applies them to the committed view that readers see, publishes their events in
order and only then lets the requests answer. If the store cannot commit the batch,
or refuses one of its requests before the commit point (e.g. a file cannot be staged), the
failing requests and every later change are undone, newest first, and get a 500; requests
queued before a refused one do not depend on it and are committed as usual. With the file
store's helper process, a second batch may be on its way while the first is written (see
`Committer._run`).

On PostgreSQL, where several servers may share the database, the store appends each batch to
the log they all follow and refuses it when another server appended first (the batch was built
on state that server has since changed): its requests are undone the same way and fail with
`Behind`, on which the service catches up with the log and runs them again."""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import time
from typing import TYPE_CHECKING

from . import heap
from .aio import wait_event
from .encoding import Growth, Spliced
from .errors import StorageError
from .events import Event, EventBus
from .ids import now_ms
from .state import State
from .store.base import KINDS, Op, Store
from .store.postgres_log import LogMoved

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("maestro.commit")


class Behind(StorageError):
    """The change was built on state another server has changed since: catch up, run it again."""

# A flush due while writes go on covers about this many bytes of big entities at a time.
FLUSH_BYTES = 1 << 20


def settle_memory(full: bool | None = None) -> None:
    """Collect cyclic garbage now and exempt every surviving object from later collections.

    The state is hundreds of thousands of small dicts and lists that live for long; a full
    collection walks them all (~45 ms at 50k tasks) and, left to itself, Python runs one
    every second or two under a steady stream of writes: a pause in every percentile that
    matters. So collections of old objects are left to this call, made at start-up after
    loading, whenever the server has been idle for a second and at least once a minute;
    requests in between only pay for young objects. It collects what was made since the last
    call (frozen objects are not walked) and freezes the survivors, which costs in proportion
    to that, not to the whole state. Frozen objects are freed by reference counting as usual
    (entities form no cycles); a cycle that became garbage while frozen (a closed WebSocket
    connection, say) waits for a full call, which unfreezes everything first: at start-up
    (`full=True`) and when the last one is FULL_SETTLE_EVERY_SECONDS old."""
    global _settled_at, _full_settled_at
    now = time.monotonic()
    if full is None:
        full = now - _full_settled_at >= FULL_SETTLE_EVERY_SECONDS
    if full:
        gc.unfreeze()
        _full_settled_at = now
    gc.collect()
    gc.freeze()
    _settled_at = now


# A server that is never idle still settles at least this often (garbage cycles, e.g. from
# failed requests, are only collected here).
SETTLE_EVERY_SECONDS = 60.0
_settled_at = 0.0
# How often a settle also walks the frozen objects (see settle_memory).
FULL_SETTLE_EVERY_SECONDS = 600.0
_full_settled_at = -FULL_SETTLE_EVERY_SECONDS


def tune_collector() -> None:
    """Young collections as usual but rarely; full ones effectively only in settle_memory."""
    gc.set_threshold(5000, 20, 10_000)
    heap.tune()


class Tx:
    def __init__(self, state: State):
        self.state = state
        self._latest: dict[tuple[str, str], dict | None] = {}
        self._undo: dict[tuple[str, str], dict | None] = {}
        self._project_of: dict[tuple[str, str], str | None] = {}
        self.events: list[Event] = []
        self.growth = Growth()
        self._ops: list[Op] | None = None
        # The record of this transaction in the store's log (a store that keeps_log).
        self.log_record: bytes | None = None

    def latest(self, kind: str, eid: str) -> dict | None:
        """The value this transaction leaves entity (kind, eid) with, if it wrote it."""
        return self._latest.get((kind, eid))

    def before(self, kind: str, eid: str) -> dict | None:
        """The value entity (kind, eid) had before this transaction wrote it."""
        return self._undo.get((kind, eid))

    def extend(self, old, entries: list) -> list:
        """`old` (a list, or nothing) followed by `entries`, as a new list for the entity this
        transaction puts next: an append, which the encoding and the journal then describe
        by its new entries instead of the whole list."""
        return self.growth.extend(old, entries)

    def put(self, kind: str, entity: dict) -> dict:
        key = (kind, entity["id"])
        old = self.state.table(kind).put(entity, self.growth)
        self._undo.setdefault(key, old)
        self._latest[key] = entity
        if kind == "task":
            self._project_of[key] = entity.get("projectId")
        return entity

    def delete(self, kind: str, eid: str) -> dict | None:
        key = (kind, eid)
        old = self.state.table(kind).delete(eid)
        self._undo.setdefault(key, old)
        self._latest[key] = None
        if kind == "task" and old is not None:
            self._project_of[key] = old.get("projectId")
        return old

    def emit(self, type_: str, data) -> None:
        event = Event(type_, data, project_id=self._project_of_event(type_, data))
        kind = type_.partition(":")[0]
        if kind in KINDS and isinstance(data, dict):
            table = self.state.table(kind)
            if table.get(data.get("id")) is data:
                # The stored entity: its JSON is cached once for the event, the response
                # and the store (a big one in parts, joined only if someone listens).
                event.encoded_data = table.encoding(data) or table.encode(data)
        self.events.append(event)

    def _project_of_event(self, type_: str, data) -> str | None:
        """The project an event belongs to, for per-project delivery to agents."""
        if not isinstance(data, dict):
            return None
        pid = data.get("projectId")
        if isinstance(pid, str):
            return pid
        if type_.startswith("project:"):
            return data.get("id")
        own_kind = type_.split(":")[0]
        for key, kind in (("taskId", "task"), ("sessionId", "session"), ("id", own_kind)):
            eid = data.get(key)
            if not isinstance(eid, str) or kind not in ("task", "session"):
                continue
            entity = self.state.table(kind).get(eid) or self._undo.get((kind, eid))
            if entity is not None:
                return entity.get("projectId")
        return None

    def changes(self):
        """(kind, id, new value or None when deleted) of every entity this transaction wrote."""
        for (kind, eid), value in self._latest.items():
            yield kind, eid, value

    @property
    def changed(self) -> bool:
        return bool(self._latest)

    def ops(self, deltas: bool = False) -> list[Op]:
        """The store's record of this transaction: per entity its new value or deletion. A
        big entity (encoded by parts) that existed before is described by a delta instead:
        the fields that changed and the entries appended to its lists; with `deltas` (the
        store's `wants_deltas`), every entity that existed before. Made once, when the
        transaction is complete."""
        if self._ops is not None:
            return self._ops
        out = self._ops = []
        for (kind, eid), value in self._latest.items():
            project_id = self._project_of.get((kind, eid))
            if value is None:
                out.append(Op(kind, eid, None, None, project_id))
                continue
            table = self.state.table(kind)
            base = self._undo.get((kind, eid))
            encoding = table.encoding(value)
            spliced = isinstance(encoding, Spliced)
            if base is not None and (spliced or deltas):
                delta = self._delta(base, value)
                if delta is not None:
                    out.append(Op(kind, eid, value, None, project_id, delta=delta,
                                  source=encoding) if spliced else
                               Op(kind, eid, value, table.encode(value), project_id,
                                  delta=delta))
                    continue
            out.append(Op(kind, eid, value, table.encode(value), project_id, base is None))
        return out

    def _delta(self, base: dict, value: dict) -> dict | None:
        """`value` as changes to `base`: {"set": {field: value}, "push": {field: [index,
        entries]}}; None when a field was removed or the fields were reordered (the store
        then records the whole value)."""
        order = list(value)
        if len(order) < len(base) or order[:len(base)] != list(base):
            return None
        changed: dict = {}
        pushed: dict = {}
        missing = object()
        base_length = self.growth.base_length
        for key, new in value.items():
            old = base.get(key, missing)
            if new is old:
                continue
            start = base_length(new, old) if type(new) is list else None
            if start is not None:
                pushed[key] = [start, new[start:]]
            else:
                changed[key] = new
        delta: dict = {}
        if changed:
            delta["set"] = changed
        if pushed:
            delta["push"] = pushed
        return delta

    def rollback(self) -> None:
        for (kind, eid), old in reversed(list(self._undo.items())):
            table = self.state.table(kind)
            if old is None:
                table.delete(eid)
            else:
                table.put(old)
        self._undo.clear()
        self._latest.clear()
        self.events.clear()
        self._ops = None


class Committer:
    """The single writer: group commit of transactions, then events, then answers."""

    def __init__(self, store: Store, bus: EventBus, lock: asyncio.Lock,
                 idle_seconds: float = 1.0, state: State | None = None,
                 view: State | None = None):
        self.store = store
        # The committed view: brought up to date with each batch once it is durable, before
        # its events go out and its requests are answered.
        self.view = view
        self._last: asyncio.Future | None = None
        self.bus = bus
        self.lock = lock
        self.idle_seconds = idle_seconds
        # The working state: where a flush takes the current values of lagging entities.
        self.state = state
        self._flush_waiters: list[asyncio.Future] = []
        # A flush sent with a batch is on its way (a due one is not sent twice).
        self._flushing = False
        self._flushed_at_close = False
        self._queue: list[tuple[Tx, list[Op], asyncio.Future]] = []
        self._queued_ops = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False
        self.batches = 0
        self.records = 0
        self.write_seconds = 0.0
        self.on_commit: list[Callable[[Tx], None]] = []
        # The store numbers events (its log), else they are numbered here, from the start
        # time in microseconds so that numbers grow across restarts (see events.py).
        self._log = store.keeps_log
        self._record = getattr(store, "log_record", None)
        if self._log:
            bus.seq = getattr(store, "log_events", 0)
        else:
            bus.seq = now_ms() * 1000
        self._idle_waiters: list[asyncio.Future] = []
        self._busy = False
        # Called each time nothing is left queued or being written.
        self.on_idle: list[Callable[[], None]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="maestro-committer")

    def submit(self, tx: Tx) -> asyncio.Future:
        """Queue `tx` (called under the mutation lock); the future resolves once it is durable."""
        fut = asyncio.get_running_loop().create_future()
        ops = tx.ops(self.store.wants_deltas)
        if self._record is not None:
            tx.log_record = self._record(tx, ops)
        self._busy = True
        self._queue.append((tx, ops, fut))
        self._queued_ops += len(ops)
        self._last = fut
        self._wakeup.set()
        return fut

    # ------------------------------------------------------------ flushing
    async def flush(self) -> None:
        """Return once every entity file is up to date with what was committed before the
        call (big entities' files otherwise catch up within FLUSH_SECONDS, when idle, or at
        a checkpoint): for readers of the data directory, such as a manifest generator."""
        fut = asyncio.get_running_loop().create_future()
        self._flush_waiters.append(fut)
        self._wakeup.set()
        await fut

    def _flush_ops(self, limit: int | None = FLUSH_BYTES) -> tuple[list[Op],
                                                                   list[tuple[str, str]]]:
        """Whole current values of the entities the store has behind (the ones behind the
        longest, about `limit` bytes of them: writing a file costs the store process a parse
        and a pretty-print, so a large flush is spread over several batches), and the keys
        they cover. Taken from the working state when every submitted change has been handed
        to the store, so a value is exactly what the changes sent so far built."""
        ops: list[Op] = []
        covered: list[tuple[str, str]] = []
        size = 0
        for kind, eid in self.store.flush_keys():
            if limit is not None and size >= limit:
                break
            covered.append((kind, eid))
            table = self.state.table(kind)
            value = table.get(eid)
            if value is None:  # deleted since: the store has that change too
                continue
            encoded = table.encode(value)
            size += len(encoded)
            project_id = value.get("projectId") if kind == "task" else None
            ops.append(Op(kind, eid, value, encoded, project_id, flush=True))
        return ops, covered

    def _take_waiters(self) -> list[asyncio.Future]:
        waiters, self._flush_waiters = self._flush_waiters, []
        return waiters

    def _resolve(self, waiters: list[asyncio.Future], retry: bool = False) -> None:
        """Answer flush waiters; `retry`: keep them for the next flush instead (this one was
        declined after a refused batch). A flush that failed is logged and answered: the
        journal keeps the changes, and the files are as up to date as they can be."""
        if retry:
            self._flush_waiters.extend(waiters)
            return
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _send_flush(self) -> None:
        """Send a flush after the batches sent so far, not awaited."""
        waiters = self._take_waiters()
        if self.state is None or not self.store.flush_keys():
            self._resolve(waiters)
            return
        ops, keys = self._flush_ops(limit=None if waiters else FLUSH_BYTES)
        try:
            fut = self.store.send_flush(ops, keys)
        except Exception:
            log.exception("flushing the files of big entities failed")
            self._resolve(waiters)
            return
        self._flushing = True

        def done(f: asyncio.Future) -> None:
            self._flushing = False
            try:
                declined = not f.result()
            except Exception as exc:  # noqa: BLE001 - the entities stay behind, retried
                log.error("flushing the files of big entities failed: %s", exc)
                declined = False
            self._resolve(waiters, retry=declined)
            self._wakeup.set()

        fut.add_done_callback(done)

    async def _flush_now(self, closing: bool = False) -> None:
        """Flush everything with nothing queued or in flight, and wait for it; `closing`:
        also with nothing to flush, so the store has finished all it was sent."""
        waiters = self._take_waiters()
        if closing or (self.state is not None and self.store.flush_keys()):
            ops, keys = self._flush_ops(limit=None)
            try:
                if not await self.store.send_flush(ops, keys):
                    log.error("the store declined to flush the files of big entities")
            except Exception as exc:  # the journal keeps the changes; retried later
                log.error("flushing the files of big entities failed: %s", exc)
        self._resolve(waiters)

    def after_pending(self, tx: Tx) -> asyncio.Future | None:
        """Publish the events of `tx`, which changed nothing, once every transaction submitted
        before it is committed (at once when none is pending). If that earlier change fails,
        `tx` may have been built on it: its events are dropped and its request fails too.
        Returns what to wait for, if any."""
        last = self._last
        if last is None or last.done():
            self._number(tx.events)
            self.bus.publish(tx.events)
            return None
        fut = asyncio.get_running_loop().create_future()

        def publish(prev: asyncio.Future) -> None:
            failure = prev.exception() if not prev.cancelled() else StorageError(
                "could not store the change: cancelled")
            if fut.done():
                return
            if failure is not None:
                fut.set_exception(failure)
                return
            try:
                self._number(tx.events)
                self.bus.publish(tx.events)
            except Exception:
                log.exception("publishing events failed")
            fut.set_result(None)

        last.add_done_callback(publish)
        return fut

    def _number(self, events: list[Event]) -> None:
        """Give events their seq (a store that keeps a log has numbered them)."""
        if self._log:
            return
        seq = self.bus.seq
        for event in events:
            seq += 1
            event.seq = seq
        self.bus.seq = seq

    @property
    def idle(self) -> bool:
        """Nothing queued or being written."""
        return not self._busy

    async def wait_idle(self) -> None:
        """Return once nothing is queued or being written."""
        if not self._busy:
            return
        fut = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        await fut

    def _now_idle(self) -> None:
        self._busy = False
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        for hook in self.on_idle:
            try:
                hook()
            except Exception:
                log.exception("idle hook failed")

    async def _run(self) -> None:
        """The commit loop: up to the store's pipeline depth of batches in flight (one for a
        store that writes in this process; two for the file store's helper process, so the
        server prepares and answers one batch while the helper writes the next). Outcomes
        come back in order; a batch is finished (events, answers) only after every batch
        before it."""
        store = self.store
        depth, min_ops = store.pipeline_depth, store.pipeline_min_ops
        inflight: collections.deque[tuple[list, asyncio.Future, float]] = collections.deque()
        dirty = False
        wake = self._wakeup.set
        while True:
            self._wakeup.clear()
            while inflight and inflight[0][1].done():
                batch, fut, started = inflight.popleft()
                try:
                    outcome = fut.result()
                    ready, why = outcome.accepted, outcome.reason
                except Exception as exc:  # nothing of it was committed
                    log.error("storage write failed; undoing %d change(s): %s", len(batch), exc)
                    ready, why = 0, exc
                refused = batch[ready:]
                if ready:
                    # Committed: announce and answer (without undoing anything yet).
                    await self._finish(batch[:ready] if refused else batch, started)
                    dirty = True
                if refused:
                    # Undo the refused requests and everything built on them: the batches
                    # already sent after this one (the store refuses them) and the queue.
                    later = [entry for b, _, _ in inflight for entry in b]
                    inflight.clear()
                    cause = why if isinstance(why, Exception) else OSError(
                        why or "refused by the store")
                    await self._fail(refused + later, cause)
                    try:
                        await store.resume()
                    except Exception:
                        log.exception("the store did not resume after a refused change")
            if self._queue and (not inflight or (len(inflight) < depth
                                                 and self._queued_ops >= min_ops)):
                batch, self._queue = self._queue, []
                self._queued_ops = 0
                try:
                    records = [ops for _, ops, _ in batch]
                    fut = store.send_batch(records, [tx for tx, _, _ in batch]) if self._log \
                        else store.send_batch(records)
                except Exception as exc:
                    log.error("storage write failed; undoing %d change(s): %s",
                              len(batch), exc)
                    later = [entry for b, _, _ in inflight for entry in b]
                    inflight.clear()
                    await self._fail(later + batch, exc)
                    continue
                fut.add_done_callback(lambda _: wake())
                inflight.append((batch, fut, time.perf_counter()))
                if self.state is not None and (self._flush_waiters or (
                        not self._flushing and store.wants_flush())):
                    # Everything submitted has just been sent: the state is exactly what
                    # the batches sent so far build.
                    self._send_flush()
                continue
            if inflight:
                await self._wakeup.wait()
                continue
            if self._busy and not self._queue:
                self._now_idle()
            if self._flush_waiters or (self._closing and not self._flushed_at_close):
                self._flushed_at_close = self._closing
                await self._flush_now(closing=self._closing)
                continue
            if self._closing:
                return
            if not await wait_event(self._wakeup, self.idle_seconds):
                if dirty and not self._queue:
                    try:
                        await self._flush_now()
                        await store.maintain()
                        dirty = False
                    except Exception:
                        log.exception("store maintenance failed")
                    settle_memory()

    async def _finish(self, batch, started: float) -> None:
        """The batch is durable: run hooks, publish its events, answer its requests."""
        if time.monotonic() - _settled_at > SETTLE_EVERY_SECONDS:
            settle_memory()
        self.write_seconds += time.perf_counter() - started
        self.batches += 1
        self.records += len(batch)
        for tx, _, fut in batch:
            # The change is durable: whatever happens while announcing it, the request
            # must be answered (a dead committer would hang every later request).
            if self.view is not None:
                try:
                    self.view.apply(tx.changes())
                except Exception:
                    log.exception("updating the committed view failed")
            for hook in self.on_commit:
                try:
                    hook(tx)
                except Exception:
                    log.exception("commit hook failed")
            try:
                self._number(tx.events)
                self.bus.publish(tx.events)
            except Exception:
                log.exception("publishing events failed")
            if not fut.done():
                fut.set_result(None)
        # Let WebSocket senders write the events before the requests send their responses.
        await asyncio.sleep(0)

    async def _fail(self, batch, exc: Exception) -> None:
        """Undo `batch` and everything queued after it (built on top of it), newest first;
        their requests get a StorageError."""
        async with self.lock:
            failing = batch + self._queue
            self._queue = []
            self._queued_ops = 0
            for tx, _, _ in reversed(failing):
                tx.rollback()
        err = Behind(f"could not store the change: {exc}") if isinstance(exc, LogMoved) \
            else StorageError(f"could not store the change: {exc}")
        for _, _, fut in failing:
            if not fut.done():
                fut.set_exception(err)

    def stats(self) -> dict:
        return {"batches": self.batches, "records": self.records,
                "avgBatch": round(self.records / self.batches, 2) if self.batches else 0,
                "avgWriteMs": round(self.write_seconds / self.batches * 1000, 3)
                if self.batches else 0}

    async def close(self) -> None:
        """Write everything still queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
