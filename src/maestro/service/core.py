"""The Service's memory, life cycle and mutation path.

Two pictures of the data are kept in memory, holding the same (immutable) entity objects: the
working state, which every mutation reads and changes at once so that the next one builds on
it, and the committed view, which the committer brings up to date only once a batch is durable.
Everything that answers a reader (GET, lists, rights checks, the launcher) sees the committed
view, so a change that is refused by the store (a full disk) was never visible to anyone.
`self.state` is the working state while a mutation's `apply` runs (it runs synchronously, with
no await inside) and the committed view everywhere else.

On PostgreSQL several servers may share the database: each follows the log the others append
to (replica.py), and a change built on state that another server has changed since is refused
by the store, undone, and run again once this server has caught up (`_mutate`)."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from .. import heap, jsonio
from ..commit import Behind, Committer, Tx, settle_memory, tune_collector
from ..domain.links import one_sided_links
from ..entities import migrate_session, migrate_task
from ..errors import ApiError, StorageError, validation
from ..events import EventBus
from ..ids import now_ms
from ..ready_index import ReadyIndex
from ..state import State
from ..store.base import LoadResult, Store

log = logging.getLogger("maestro.service")

# Largest compact JSON of one appended entry (session event, session or task timeline entry);
# the server sets it from MAESTRO_MAX_ENTRY_BYTES.
MAX_ENTRY_BYTES = 64 * 1024
# How many times a change refused because another server wrote first is run again (each time
# after catching up with the log) before the request gets a 503.
MAX_ATTEMPTS = 40


class ServiceCore:
    def __init__(self, store: Store, bus: EventBus | None = None):
        self.store = store
        self.bus = bus or EventBus()
        self.view = State()
        self.working = State(twin=self.view)
        self._applying = False
        # Readiness indexes follow each picture: mutations (a claim's check and grant) read
        # the working one, readers (`?ready=true`) the committed one.
        self._ready_working = ReadyIndex(self.working.tasks)
        self._ready_view = ReadyIndex(self.view.tasks, track_expiries=False, lazy=True)
        for index in (self._ready_working, self._ready_view):
            index.attach()
        self.lock = asyncio.Lock()
        self.committer: Committer | None = None
        self.started_monotonic = time.monotonic()
        self.load_result = LoadResult()
        self.hostname = socket.gethostname()
        self.platform = sys.platform
        self.max_entry_bytes = MAX_ENTRY_BYTES
        # Extra parts of GET /health: name -> function returning its body (e.g. workspaces).
        self.health_sections: dict[str, Callable[[], Any]] = {}
        # What the other servers of the database write, applied here (replica.Follower).
        self.follower = None
        self.log_poll_seconds = 0.5
        # Events kept for WebSocket clients that come back with `?since=` (the hub's replay);
        # on PostgreSQL the last of them are rebuilt from the log at start (`history`).
        self.replay_events = 10_000
        self.history: list = []
        # Closed while the follower waits to apply the log: new changes wait for it rather
        # than build on state it is about to bring up to date (see replica.Follower).
        self.gate = asyncio.Event()
        self.gate.set()
        # Changes refused because another server wrote first (each was run again).
        self.conflicts = 0
        # Taking turns at the log with the other servers (turns.Turns, with a follower).
        self.turns = None
        # The replica that writes for the others, or this one forwarding to it
        # (write_lead.WriteLead; None: this server writes itself).
        self.write_lead = None

    @property
    def state(self) -> State:
        """The working state inside a mutation's `apply`, the committed view elsewhere."""
        return self.working if self._applying else self.view

    @property
    def ready_index(self) -> ReadyIndex:
        """The readiness indexes of `state` (the committed view's brought up to date)."""
        if self._applying:
            return self._ready_working
        self._ready_view.catch_up()
        return self._ready_view

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        tune_collector()  # before loading: no full collections while 50k entities arrive
        result = await asyncio.to_thread(self.store.open)
        self.load_result = result
        self._load(result)
        if self.store.keeps_log:
            from ..replica import history

            try:
                self.history = await asyncio.to_thread(history, self, self.store,
                                                       self.replay_events)
            except Exception as exc:  # noqa: BLE001 - clients that come back get a resync
                log.warning("could not read the recent events from the log: %s", exc)
        settle_memory(full=True)
        heap.give_back()  # what loading used and freed
        self.committer = Committer(self.store, self.bus, self.lock, state=self.working,
                                   view=self.view)
        self.committer.start()
        if self.store.keeps_log:
            from ..replica import Follower

            from ..turns import Turns

            self.follower = Follower(self, self.store, self.log_poll_seconds)
            self.turns = Turns(self, self.store)
            self.committer.on_idle.append(self.turns.idle)
            self.follower.start()
            self.health_sections["replication"] = lambda: {**self.follower.status(),
                                                           **self.turns.status()}
        self.start_sweeper()

    def _load(self, result: LoadResult) -> None:
        tasks = [migrate_task(t) for t in result.tasks]
        sessions = [migrate_session(s) for s in result.sessions]
        for state, index in ((self.working, self._ready_working),
                             (self.view, self._ready_view)):
            for p in result.projects:
                state.projects.put(p)
            index.suspended = True  # built once below, not task by task
            for t in tasks:
                state.tasks.put(t)
            index.suspended = False
            index.rebuild()
            for s in sessions:
                state.sessions.put(s)
        repaired = self._repair_links()
        if repaired:
            result.notes.append(f"repaired {repaired} one-sided task/session link(s) in memory")
        log.info("loaded %d project(s), %d task(s), %d session(s)", len(self.state.projects),
                 len(self.state.tasks), len(self.state.sessions))

    def _repair_links(self) -> int:
        """Count one-sided links found at start-up (the journal keeps ours two-sided; a
        directory edited by hand or written by the original may not be). Left as found: the
        original's data is preserved verbatim; counted for the log."""
        count = one_sided_links(self.state.sessions.rows.values(), self.state.tasks.get)
        if count:
            log.warning("data directory holds %d one-sided task/session link(s)", count)
        return count

    async def stop(self) -> None:
        await self.stop_sweeper()
        if self.follower is not None:
            await self.follower.stop()
        if self.committer is not None:
            async with self.lock:  # no new mutation gets in after this point
                pass
            await self.committer.close()
        self.store.detach_loop()
        await asyncio.to_thread(self.store.close)

    # ------------------------------------------------------------ mutation plumbing
    async def _mutate(self, fn: Callable[[Tx], Any]) -> Any:
        if self.follower is None:
            return await self._mutate_once(fn)
        for attempt in range(MAX_ATTEMPTS):
            try:
                return await self._mutate_once(fn)
            except ApiError as refusal:
                # Refused by a rule: perhaps only because a change made through another
                # server (say, the project this request names, created a moment ago) has
                # not reached this one yet. Checked again once caught up, if that applied
                # anything; so a client that moves between servers never sees its own
                # acknowledged changes missing when it writes.
                try:
                    caught_up = await self.follower.catch_up()
                except Exception:  # noqa: BLE001 - the log cannot be read: the refusal stands
                    caught_up = False
                if not caught_up:
                    raise refusal from None
            except Behind:
                self.conflicts += 1
                self.turns.conflict()
                # Another server wrote first: this one's change was undone; apply what the
                # other wrote, then check and make the change again.
                if attempt >= 2:
                    await asyncio.sleep(random.random() * 0.002 * attempt)
                try:
                    await self.follower.catch_up(own=True)
                except StorageError:
                    raise
                except Exception as exc:
                    raise StorageError(f"could not read the changes made through other "
                                       f"servers: {exc}") from None
        raise ApiError(503, "INTERNAL_ERROR", "the change kept conflicting with changes made "
                       "through other servers of the database; try again")

    async def _mutate_once(self, fn: Callable[[Tx], Any]) -> Any:
        turns = self.turns
        if turns is not None and await turns.enter():
            try:
                fut, result = await self._change(fn)
            finally:
                turns.leave()
        else:
            fut, result = await self._change(fn)
        if fut is not None:
            await fut
        return result

    async def _change(self, fn: Callable[[Tx], Any]) -> tuple[asyncio.Future | None, Any]:
        """Run `fn` on the working state and queue what it changed: (what to wait for before
        answering, its result)."""
        await self.gate.wait()
        async with self.lock:
            tx = Tx(self.working)
            self._applying = True
            try:
                result = fn(tx)
                if tx.changed:
                    check = self.store.check_op
                    for op in tx.ops(self.store.wants_deltas):
                        try:
                            check(op)
                        except ValueError as exc:
                            raise validation(str(exc)) from None
            except BaseException:
                tx.rollback()
                raise
            finally:
                self._applying = False
            assert self.committer is not None, "service not started"
            if not tx.changed and not (tx.events and self.store.keeps_log):
                # (With a log, events go through it even without a change: every server
                # publishes them, numbered.)
                if not tx.events:
                    return None, result
                # Events of a change that wrote nothing still wait for the changes before
                # them, so a listener never hears of something not yet committed.
                return self.committer.after_pending(tx), result
            return self.committer.submit(tx), result

    def _check_entry(self, entry: dict, what: str) -> None:
        """413 for an appended entry whose JSON exceeds max_entry_bytes: every append is
        kept for good (journal, file, every answer and event about the entity), so one entry
        may not be arbitrarily large."""
        size = len(jsonio.dumps(entry))
        if size > self.max_entry_bytes:
            raise ApiError(413, "VALIDATION_ERROR",
                           f"{what} too large: {size} bytes of JSON, the limit is "
                           f"{self.max_entry_bytes} bytes per entry (MAESTRO_MAX_ENTRY_BYTES)",
                           {"size": size, "limit": self.max_entry_bytes})

    async def flush_files(self) -> None:
        """Return once every entity file holds what was committed so far (files of big
        entities otherwise catch up within seconds): for readers of DATA_DIR (SPEC §5.5)."""
        if self.committer is not None:
            await self.committer.flush()

    # ------------------------------------------------------------ health
    def health(self) -> dict:
        storage = self.store.health()
        storage["notes"] = list(self.load_result.notes)
        if self.committer is not None:
            storage["commits"] = self.committer.stats()
        body = {
            "status": "ok",
            "timestamp": now_ms(),
            "uptime": time.monotonic() - self.started_monotonic,
            "storage": storage,
            "counts": {"projects": len(self.state.projects), "tasks": len(self.state.tasks),
                       "sessions": len(self.state.sessions)},
        }
        for name, section in self.health_sections.items():
            body[name] = section()
        return body
