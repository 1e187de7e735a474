"""Several servers on one PostgreSQL database: each one's identity, heartbeat and the takeover of
one that is gone (README "Run several replicas").

Every server (replica) has an id (MAESTRO_REPLICA_ID, by default host name:port) and a row in
`maestro_replicas` whose `heartbeat_at` it sets to the database's clock every
MAESTRO_REPLICA_HEARTBEAT_SECONDS, with the `url` the others reach it at (MAESTRO_REPLICA_URL:
they forward stop and output requests for its agents there, spawn/forward.py). The same round
trip measures how far this machine's clock is from the database's: claims' leases are granted,
checked and expired on the database's clock (coordination.py `claim_now`), so that servers
whose clocks disagree still agree on leases.

The sessions a server's launcher starts record that server (`metadata.replica`). Each server
supervises the agents it started; when a server finds another's heartbeat older than
MAESTRO_REPLICA_TIMEOUT_SECONDS, it takes that server over with one conditional update of its
row, which only one server can win, and marks the gone server's live agent sessions failed
through the service's ordinary update (so every client hears of it, and their tokens and claims
end with them). A server that comes back (same id) clears the mark with its next heartbeat."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from .aio import cancel_and_wait
from .vocabulary import FINAL_SESSION_STATUSES
from .write_lead import writes_here

log = logging.getLogger("maestro.replicas")

TABLE = "maestro_replicas"
END_REASON = "replica_lost"


def state_of(taken_over_by: str | None, heartbeat_age: float | None, timeout: float) -> str:
    """`taken over`, `live` (a heartbeat within `timeout` seconds) or `silent`."""
    if taken_over_by:
        return "taken over"
    return "live" if heartbeat_age is not None and heartbeat_age <= timeout else "silent"


def launched_here(session: dict, replica_id: str) -> bool:
    """Whether `session`'s agent was started by the launcher of replica `replica_id`."""
    metadata = session.get("metadata")
    return isinstance(metadata, dict) and metadata.get("replica") == replica_id \
        and metadata.get("launchedBy") == "local"


class Replica:
    """This server among the servers of one database (see the module's docstring)."""

    def __init__(self, service, db, replica_id: str, url: str, heartbeat_seconds: float,
                 timeout_seconds: float):
        self.service = service
        self.db = db  # store.pg_side.SideConnection
        self.id = replica_id
        self.url = url
        self.heartbeat_seconds = heartbeat_seconds
        self.timeout_seconds = timeout_seconds
        self.table = db.table(TABLE)
        self.meta = db.table("maestro_meta")
        # The head of the shared log at the last heartbeat (None: no log).
        self.log_head_seen: int | None = None
        self.last_beat: float | None = None  # monotonic time of the last heartbeat written
        self.beat_error: str | None = None
        self.taken_over: list[str] = []  # replicas this one took over
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Register (or come back) and take over any server already gone, before this
        server's launcher looks at its own agents."""
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="maestro-replica-heartbeat")
        log.info("replica %s: heartbeat every %g s, others count as gone after %g s", self.id,
                 self.heartbeat_seconds, self.timeout_seconds)

    async def stop(self) -> None:
        """Stop beating. The row stays: should this server not come back within the timeout,
        another takes its agents' sessions over."""
        await cancel_and_wait(self._task)
        self._task = None
        await asyncio.to_thread(self.db.close)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await self.tick()

    async def tick(self) -> None:
        """One heartbeat, then one look for servers that are gone."""
        try:
            await asyncio.to_thread(self._beat)
            self.beat_error = None
        except Exception as exc:  # noqa: BLE001 - retried at the next tick
            self.beat_error = str(exc).strip().splitlines()[0] if str(exc).strip() \
                else type(exc).__name__
            log.warning("replica %s: heartbeat not written: %s", self.id, self.beat_error)
            return
        try:
            for gone in await asyncio.to_thread(self._claim_takeovers):
                await self.take_over(gone)
        except Exception:  # noqa: BLE001 - retried at the next tick
            log.exception("replica %s: looking for gone servers failed", self.id)

    # ------------------------------------------------------------ heartbeat
    def _beat(self) -> None:
        """Write this server's heartbeat (database clock) and measure the clocks' offset."""
        before = time.time()
        rows = self.db.execute(
            f"INSERT INTO {self.table} AS r (replica_id, url, pid) VALUES (%s, %s, %s) "
            "ON CONFLICT (replica_id) DO UPDATE SET url = EXCLUDED.url, pid = EXCLUDED.pid, "
            "heartbeat_at = now(), taken_over_by = NULL, taken_over_at = NULL, "
            "takeover_done_at = NULL "
            "RETURNING (extract(epoch FROM clock_timestamp()) * 1000)::bigint, "
            f"(SELECT taken_over_by FROM {self.table} WHERE replica_id = %s), "
            f"(SELECT value FROM {self.meta} WHERE name = 'log_seq')",
            (self.id, self.url, os.getpid(), self.id))
        after = time.time()
        database_ms, was_taken_by, self.log_head_seen = rows[0]
        if was_taken_by is not None and was_taken_by != self.id:
            log.warning("replica %s: server %s had taken this server over (its heartbeat was "
                        "older than %g s): the sessions of its agents were marked failed",
                        self.id, was_taken_by, self.timeout_seconds)
        self.service.clock_offset_ms = int(database_ms - (before + after) * 500)
        self.last_beat = time.monotonic()

    # ------------------------------------------------------------ takeover
    def _claim_takeovers(self) -> list[str]:
        """The servers whose heartbeat is older than the timeout and that this server now
        takes over: a conditional update, so of several servers noticing, one wins (a
        takeover left unfinished for a whole timeout may be taken again)."""
        rows = self.db.execute(
            f"UPDATE {self.table} SET taken_over_by = %(me)s, taken_over_at = now() "
            "WHERE replica_id <> %(me)s AND takeover_done_at IS NULL "
            "AND heartbeat_at < now() - make_interval(secs => %(timeout)s) "
            "AND (taken_over_by IS NULL "
            "     OR taken_over_at < now() - make_interval(secs => %(timeout)s)) "
            "RETURNING replica_id",
            {"me": self.id, "timeout": self.timeout_seconds})
        return sorted(row[0] for row in rows)

    async def take_over(self, gone: str) -> int:
        """Mark every live session whose agent server `gone` started failed; then record the
        takeover as done. Returns how many sessions were marked."""
        follower = getattr(self.service, "follower", None)
        if follower is not None:  # every session the gone server created, applied here
            await follower.catch_up()
        marked = 0
        message = (f"the server that ran its agent ({gone}) stopped answering: no heartbeat "
                   f"for more than {self.timeout_seconds:g} s")
        for session in self.service.sessions_where(lambda s: launched_here(s, gone)):
            sid = session["id"]
            current = self.service.get_session_or_none(sid)
            if current is None or current.get("status") in FINAL_SESSION_STATUSES:
                continue
            body = {"status": "failed",
                    "events": [{"type": END_REASON, "data": {"replica": gone,
                                                             "takenOverBy": self.id}}]}
            try:
                # Only while it is live: its agent may have ended it through another server
                # a moment ago. Written here (write_lead.writes_here): a forwarded change
                # answered 503 would be taken for a session deleted meanwhile.
                with writes_here():
                    after = await self.service.update_session(
                        sid, body, end={"endReason": END_REASON, "endMessage": message},
                        if_active=True)
            except Exception as exc:  # noqa: BLE001 - deleted meanwhile: nothing to mark
                log.info("replica %s: session %s of %s not marked: %s", self.id, sid, gone, exc)
                continue
            if launched_here(after, gone) and after["metadata"].get("endReason") == END_REASON:
                marked += 1
        await asyncio.to_thread(
            self.db.execute,
            f"UPDATE {self.table} SET takeover_done_at = now() "
            "WHERE replica_id = %s AND taken_over_by = %s", (gone, self.id))
        self.taken_over.append(gone)
        log.warning("replica %s: took over gone server %s; %d session(s) of its agents marked "
                    "failed", self.id, gone, marked)
        return marked

    # ------------------------------------------------------------ other replicas
    async def peer(self, replica_id: str) -> dict[str, Any] | None:
        """What the database says of replica `replica_id` (None: it has no row): its `url`,
        whether it is `alive` (a heartbeat within the timeout, on the database's clock, and
        not taken over), the age of its heartbeat and who took it over."""
        rows = await asyncio.to_thread(
            self.db.execute,
            "SELECT url, taken_over_by, "
            "extract(epoch FROM clock_timestamp() - heartbeat_at)::float8 "
            f"FROM {self.table} WHERE replica_id = %s", (replica_id,))
        if not rows:
            return None
        url, taken_over_by, age = rows[0]
        return {"id": replica_id, "url": url or "", "takenOverBy": taken_over_by,
                "heartbeatAgeSeconds": age,
                "alive": state_of(taken_over_by, age, self.timeout_seconds) == "live"}

    # ------------------------------------------------------------ /health
    def health(self) -> dict[str, Any]:
        """The `replica` part of GET /health: who answered, its heartbeat, how many records
        of the shared log it has yet to apply (`lag`) and its LISTEN connection's state."""
        body: dict[str, Any] = {
            "id": self.id,
            "heartbeatAgeSeconds": None if self.last_beat is None
            else round(time.monotonic() - self.last_beat, 3),
            "heartbeatError": self.beat_error,
            "clockOffsetMs": self.service.clock_offset_ms,
        }
        follower = getattr(self.service, "follower", None)
        if follower is None:
            # This server writes the database alone: its memory is the log, nothing to follow.
            body.update(lag=0, listener="none")
            return body
        status = follower.status()  # replica.py: the listener and the records applied
        applied = getattr(self.service.store, "log_head", None)
        head = self.log_head_seen
        body.update(
            listener=status.get("listener"), seq=applied,
            # Records of the log, as its head stood at the last heartbeat, not yet applied here.
            lag=max(0, head - applied) if isinstance(head, int) and isinstance(applied, int)
            else None)
        if status.get("gap"):
            body["gap"] = status["gap"]
        return body
