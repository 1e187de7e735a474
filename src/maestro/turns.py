"""Taking turns at the log when several servers of one PostgreSQL database write at once.

Every server checks its changes against its own memory and the log refuses a batch built on
state another server has since changed (replica.py, postgres_log.py); the change is then undone
and run again. That costs nothing while one server writes at a time, but when several write
flat out nearly every batch of one of them is refused once, and each refusal costs the work
twice and a round trip. So once a server's change has been refused, it writes in turns for a
while (`STICKY_SECONDS`, renewed while others keep writing): before it checks a change it takes
the database's turn lock (a session-level advisory lock of its writer connection), applies the
log up to its head, and only then checks and writes its changes, which the log can no longer
refuse. It gives the turn back as soon as it has nothing queued or being written, or after
`SLICE_SECONDS` (then it lets its writes drain first), so the others' changes wait for one
batch at most and the servers take the log in turn, each with a batch of everything that
queued up meanwhile.

The turn is only an optimisation: the log still checks every batch, so a server that does not
take turns (it has seen no refusal lately) or whose wait for the turn timed out (another
server stalled while holding it) writes as before and stays correct."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .service.core import ServiceCore

log = logging.getLogger("maestro.replica")

# How long a server keeps taking turns after its last refused change, or after it found
# changes of others when it took its turn.
STICKY_SECONDS = 2.0
# The longest a server keeps the turn while it has more to write.
SLICE_SECONDS = 0.01
# How long a server keeps a turn it has no more changes for, within the slice, for the next
# changes its answers bring.
LINGER_SECONDS = 0.001
# The longest a server waits for the turn before it writes without it, and for how long it
# then writes without turns (the server holding the turn may hang; the log keeps every batch
# correct without turns).
WAIT_MS = 3000
REFRAIN_SECONDS = 10


class Turns:
    """This server's share of the turn lock (see the module's docstring)."""

    def __init__(self, service: ServiceCore, store):
        self.service = service
        self.store = store
        self.contended_until = 0.0
        # After a wait for the turn timed out: no turns before this time.
        self.refrain_until = 0.0
        self.held = False
        self.since = 0.0
        # Changes admitted under the turn that have not yet reached the committer.
        self.users = 0
        # True once the slice is over: no more changes are admitted under this turn.
        self.closing = False
        self._acquiring: asyncio.Future | None = None
        self._released = asyncio.Event()
        self._released.set()
        self._linger: asyncio.TimerHandle | None = None
        # Figures for /health.
        self.taken = 0
        self.timeouts = 0

    def status(self) -> dict:
        return {"turns": self.taken, "turnTimeouts": self.timeouts,
                "takingTurns": self.contended() or self.held}

    def contended(self) -> bool:
        return time.monotonic() < self.contended_until

    def conflict(self) -> None:
        """A change of this server was refused because another server wrote first."""
        now = time.monotonic()
        if now >= self.refrain_until:
            self.contended_until = now + STICKY_SECONDS

    async def enter(self) -> bool:
        """Before a change is checked: while turns are taken, wait for this server's turn.
        True when the change runs under the turn (then call `leave` once it is submitted)."""
        while True:
            if self.held:
                if not self.closing and time.monotonic() - self.since < SLICE_SECONDS:
                    self.users += 1
                    return True
                self.closing = True  # the others' turn first
                self._maybe_release()
                await self._released.wait()
                continue
            if not self.contended():
                return False
            if self._acquiring is None:
                self._acquiring = asyncio.ensure_future(self._acquire())
            try:
                await asyncio.shield(self._acquiring)
            except Exception:  # noqa: BLE001 - the write goes without the turn
                return False
            if not self.held:
                return False  # timed out: this change goes without the turn

    def leave(self) -> None:
        """The change admitted by `enter` is submitted (or failed before it)."""
        self.users -= 1
        self._maybe_release()

    def idle(self) -> None:
        """The committer has nothing queued or being written."""
        self._maybe_release()

    async def _acquire(self) -> None:
        try:
            head = await self.store.request_turn(WAIT_MS)
            if head is None:
                self.timeouts += 1
                self.contended_until = 0.0
                self.refrain_until = time.monotonic() + REFRAIN_SECONDS
                log.warning("could not take the turn to write (another server held it for "
                            "%d ms, or the connection to the database is down); writing "
                            "without turns for %d s", WAIT_MS, REFRAIN_SECONDS)
                return
            self.taken += 1
            self.held = True
            self.closing = False
            self.since = time.monotonic()
            self._released.clear()
            if head > self.store.log_head:
                # Others wrote since this server's last turn: apply it, keep taking turns.
                self.contended_until = time.monotonic() + STICKY_SECONDS
                follower = self.service.follower
                if follower is not None:
                    await follower.catch_up()
            self.since = time.monotonic()
        finally:
            self._acquiring = None

    def _maybe_release(self, lingered: bool = False) -> None:
        if not self.held or self.users or self._acquiring is not None:
            return
        committer = self.service.committer
        if committer is not None and not committer.idle:
            return  # given back once its writes are done (Committer.on_idle)
        if not lingered and not self.closing and time.monotonic() - self.since < SLICE_SECONDS:
            # The answers just sent bring the next changes within a moment: one more batch
            # in this turn costs less than a turn.
            if self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(LINGER_SECONDS,
                                                                     self._lingered)
            return
        self.held = False
        self.closing = False
        self._released.set()
        # In the store's lane, after the writes that went before it.
        fut = self.store.release_turn()
        fut.add_done_callback(_quiet)


    def _lingered(self) -> None:
        self._linger = None
        self._maybe_release(lingered=True)


def _quiet(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("giving the turn back failed: %s", fut.exception())
