"""Following the log that the replicas of one PostgreSQL database share (store/postgres_log.py).

Each server keeps the whole state in memory as a cache of the log: it applies every record
another server appended, strictly in log order, to its working state and committed view
(indexes included) and publishes the record's events under their log numbers, exactly as the
writer did. Records are applied only while this server has no change of its own queued or
being written (under the mutation lock, with the committer idle), so its own changes are always
checked against the state at the head of the log it last saw; if the log has moved meanwhile,
the store refuses the batch and the service catches up here and runs the change again.

A dedicated connection LISTENs for the NOTIFY every append sends, on a thread of its own; the
log is also read every `poll_seconds`, so a lost notification or a broken listener (reconnected
with backoff) only delays a record, never loses one."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from . import jsonio
from .aio import cancel_and_wait, wait_event
from .commit import Tx
from .errors import StorageError
from .events import Event
from .store.postgres_log import decode_op

if TYPE_CHECKING:
    from .service.core import ServiceCore
    from .store.postgres import PostgresStore

log = logging.getLogger("maestro.replica")

# Records read from the log at a time.
READ_LIMIT = 2000
# After a writer process died: the wait before a new one is tried again, doubled after each
# failed try up to the maximum.
RENEW_FIRST_SECONDS = 1.0
RENEW_MAX_SECONDS = 30.0


class LogGapError(StorageError):
    """Records this server has not applied are gone from the log (older than its retention)."""


def patched(tx: Tx, base: dict | None, delta: dict) -> dict:
    """A new version of `base` with `delta` applied (see Op.delta); `base` is left as it is."""
    entity = dict(base) if base is not None else {}
    for key, value in (delta.get("set") or {}).items():
        entity[key] = value
    for key, (start, entries) in (delta.get("push") or {}).items():
        old = entity.get(key)
        if type(old) is list and start == len(old):
            entity[key] = tx.extend(old, entries)
        else:
            entity[key] = (old[:start] if type(old) is list else []) + entries
    return entity


def history(service: ServiceCore, store: PostgresStore, limit: int) -> list[Event]:
    """The events of the log's newest records up to the head the state was loaded at, at most
    `limit`, rebuilt as the replica that wrote them published them, oldest first: for a server
    that has just started, so that a WebSocket client moving to it with `?since=` gets what it
    missed rather than a resync.

    A record's event that names an entity ("the entity as the record left it") is rebuilt from
    the state just loaded, which is that very version when no later record changed the entity.
    Going back from the newest record, the events stop at the first one whose entity a later
    record changed (or at a record gone from the log): older events cannot be rebuilt, and a
    client asking for them gets a resync."""
    newest: list[Event] = []  # newest first
    if limit <= 0 or store.log_head <= 0:
        return newest
    changed: set[tuple[str, str]] = set()
    table = service.working.table
    expected_seq, next_event = store.log_head, store.log_events + 1
    conn = store.connect()
    try:
        while expected_seq > 0:
            rows = conn.execute(store._log.newest, (expected_seq, READ_LIMIT)).fetchall()
            if not rows:
                break
            for seq, first_event, record, written_ms in rows:
                ops, told = jsonio.loads(record)
                if seq != expected_seq or first_event + len(told) != next_event \
                        or len(newest) + len(told) > limit:
                    return newest[::-1]
                built = []
                for number, item in enumerate(told, first_event):
                    if len(item) == 5:
                        key = (item[3], item[4])
                        entities = table(item[3])
                        data = entities.get(item[4])
                        if key in changed or data is None:
                            return newest[::-1]
                        encoded = entities.encoding(data) or entities.encode(data)
                    else:
                        data, encoded = item[2], None
                    built.append(Event(item[0], data, encoded_data=encoded, project_id=item[1],
                                       timestamp=written_ms, seq=number))
                newest.extend(reversed(built))
                for item in ops:
                    changed.add((item[0], item[1]))
                expected_seq, next_event = seq - 1, first_event
    finally:
        conn.close()
    return newest[::-1]


class Follower:
    """Applies what the other replicas write, as soon as they have written it."""

    def __init__(self, service: ServiceCore, store: PostgresStore, poll_seconds: float = 0.5):
        self.service = service
        self.store = store
        self.poll_seconds = poll_seconds
        self.listener = "starting"
        self.applied_records = 0
        self.last_applied_at: float | None = None
        self.gap: str | None = None
        self._wake = asyncio.Event()
        # Set (and replaced) each time records were applied: `wait_applied`.
        self._advanced = asyncio.Event()
        self._one = asyncio.Lock()
        self._stop = threading.Event()
        self._reader = None
        self._task: asyncio.Task | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ life cycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.store.attach_loop(self._wake_soon)
        self._task = asyncio.create_task(self._run(), name="maestro-log-follower")
        self._thread = threading.Thread(target=self._listen, name="maestro-log-listener",
                                        daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        await cancel_and_wait(self._task)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def status(self) -> dict:
        """For /health: the listener's state and what was applied from other replicas."""
        out = {"listener": self.listener, "seq": self.store.log_head,
               "eventSeq": self.store.log_events, "applied": self.applied_records,
               "conflicts": self.service.conflicts}
        if self.gap:
            out["gap"] = self.gap
        return out

    # ------------------------------------------------------------ waking up
    def _wake_soon(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    def _listen(self) -> None:
        """The LISTEN connection (its own thread): every NOTIFY past what was applied wakes
        the follower; a broken connection is made again with backoff, then the log is read
        in case a notification was missed meanwhile."""
        backoff = 0.1
        channel = self.store._log.channel
        while not self._stop.is_set():
            conn = None
            try:
                conn = self.store.connect()
                conn.execute("SELECT set_config('application_name', %s, false)",
                             (f"maestro log listener pid {os.getpid()}",))
                conn.execute(f'LISTEN "{channel}"')
                self.listener = "listening"
                backoff = 0.1
                self._wake_soon()
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=0.5):
                        head, _, origin = note.payload.partition(" ")
                        if origin == self.store.origin:
                            continue  # this server's own batch
                        if not head.isdigit() or int(head) > self.store.log_head:
                            self._wake_soon()
            except Exception as exc:  # noqa: BLE001 - reconnected below, the poll covers
                if self._stop.is_set():
                    break
                self.listener = "reconnecting"
                log.warning("the log listener lost its connection (%s); reconnecting in "
                            "%.1f s", str(exc).strip().splitlines()[0] if str(exc).strip()
                            else type(exc).__name__, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
        self.listener = "stopped"

    async def _run(self) -> None:
        renew_at = 0.0
        renew_wait = RENEW_FIRST_SECONDS
        while not self._stop.is_set():
            await wait_event(self._wake, self.poll_seconds)
            self._wake.clear()
            if self.store.writer_dead and time.monotonic() >= renew_at:
                try:
                    renewed = await self.renew_writer()
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - tried again later
                    log.exception("replacing the PostgreSQL writer process failed")
                    renewed = False
                if renewed:
                    renew_wait = RENEW_FIRST_SECONDS
                else:
                    renew_at = time.monotonic() + renew_wait
                    renew_wait = min(renew_wait * 2, RENEW_MAX_SECONDS)
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except LogGapError:
                pass  # reported once where found; the server needs a restart
            except Exception as exc:  # noqa: BLE001 - the next poll tries again
                log.warning("reading the log failed: %s", exc)
                await asyncio.sleep(self.poll_seconds)

    # ------------------------------------------------------------ the writer process
    async def renew_writer(self) -> bool:
        """Start a new writer process in place of one that died (PostgresStore.renew_writer):
        every change is held back meanwhile (they wait rather than fail), the ones the dead
        process had not answered have failed and been undone, and no record is applied, so the
        new process reads the link rows at a head the server's memory has not passed. True
        once it writes."""
        service = self.service
        store = self.store
        committer = service.committer
        try:
            while True:
                service.gate.clear()  # (catching up sets it again when done)
                await committer.wait_idle()
                async with self._one, service.lock:
                    service.gate.clear()  # (an _apply that held `_one` opened it again)
                    if not committer.idle:
                        continue  # a change already waiting for the lock got in first
                    try:
                        await asyncio.to_thread(store.renew_writer)
                    except Exception as exc:  # noqa: BLE001 - tried again later
                        log.error("could not start a new PostgreSQL writer process: %s", exc)
                        return False
                    store.attach_loop(self._wake_soon)
                    log.warning("started a new PostgreSQL writer process (%d so far)",
                                store.writer_restarts)
                    return True
        finally:
            service.gate.set()

    async def wait_applied(self, seq: int, timeout: float) -> bool:
        """Return once the log is applied here up to `seq` (a record another replica wrote
        for this one, write_lead.py), or after `timeout` seconds; True if it was."""
        store = self.store
        if store.log_head >= seq:
            return True
        self._wake.set()
        deadline = time.monotonic() + timeout
        while store.log_head < seq:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("record %d was not applied here within %g s (at %d)", seq,
                            timeout, store.log_head)
                return False
            if not await wait_event(self._advanced, min(left, self.poll_seconds)):
                self._wake.set()
        return True

    # ------------------------------------------------------------ catching up
    def _read(self, after: int) -> list[tuple]:
        """Records after `after` (a worker thread, on the reader connection)."""
        conn = self._reader
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            conn = self._reader = self.store.connect()
        try:
            return conn.execute(self.store._log.read, (after, READ_LIMIT)).fetchall()
        except Exception:
            self._reader = None
            conn.close()
            raise

    async def catch_up(self, own: bool = False) -> bool:
        """Apply every record appended after the last one applied here; True if there were
        any. Records of this server are left to the committer that wrote them, unless `own`
        (after a refused batch, when none is on its way: such a record was committed although
        its request was told it had failed)."""
        start = self.store.log_head
        async with self._one:
            while True:
                rows = await asyncio.to_thread(self._read, self.store.log_head)
                if rows:
                    await self._apply(rows, own)
                if len(rows) < READ_LIMIT:
                    return self.store.log_head != start

    async def _apply(self, rows: list[tuple], own: bool = False) -> None:
        store = self.store
        service = self.service
        committer = service.committer
        ahead = [origin for seq, origin, *_ in rows if seq > store.log_head]
        if not ahead or (not own and not committer.idle
                         and all(origin == store.origin for origin in ahead)):
            # Only batches of this server whose answers are on their way: nothing to do.
            # (One whose request was told it failed although the database holds it is
            # applied from here, like another server's, once nothing is on its way.)
            return
        service.gate.clear()  # no new change of this server until the log is applied
        try:
            while True:
                await committer.wait_idle()
                async with service.lock:
                    if not committer.idle:
                        continue  # a change already waiting for the lock got in first
                    try:
                        for row in rows:
                            self._apply_row(*row)
                    finally:
                        advanced, self._advanced = self._advanced, asyncio.Event()
                        advanced.set()
                    return
        finally:
            service.gate.set()

    def _apply_row(self, seq: int, origin: str, first_event: int, record: str,
                   shapes: str | None) -> None:
        store = self.store
        if seq <= store.log_head:
            return  # written by this server, or read twice
        if seq != store.log_head + 1:
            gap = LogGapError(
                f"the log no longer holds records {store.log_head + 1}..{seq - 1} "
                "(older than its retention): restart this server to load the current state")
            if self.gap is None:
                log.error("%s", gap)
            self.gap = str(gap)
            store.restart_needed = True  # shown by GET /health's storage
            raise gap
        service = self.service
        ops, told = jsonio.loads(record)
        tx = Tx(service.working)
        table = service.working.table
        for item in ops:
            kind, eid, value, delta = decode_op(item)
            if delta is not None:
                tx.put(kind, patched(tx, table(kind).get(eid), delta))
            elif value is not None:
                tx.put(kind, value)
            else:
                tx.delete(kind, eid)
        events = []
        number = first_event
        for item in told:
            if len(item) == 5:
                entities = table(item[3])
                data = entities.get(item[4])
                encoded = (entities.encoding(data) or entities.encode(data)) \
                    if data is not None else None
            else:
                data, encoded = item[2], None
            event = Event(item[0], data, encoded_data=encoded, project_id=item[1])
            event.seq = number
            number += 1
            events.append(event)
        service.view.apply(tx.changes())
        store.log_head = seq
        if number - 1 > store.log_events:
            store.log_events = number - 1
        store.adopt_shapes(shapes, seq)
        for hook in service.committer.on_commit:
            try:
                hook(tx)
            except Exception:
                log.exception("commit hook failed")
        self.applied_records += 1
        self.last_applied_at = time.time()
        try:
            service.bus.publish(events)
        except Exception:
            log.exception("publishing events failed")
