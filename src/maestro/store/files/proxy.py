"""The server's side of the file store's helper process (see ../worker.py): once the server has
loaded the data directory, batches, flushes and checkpoints go to the helper, which runs the
same write path on the other core. This proxy sends them on the event loop and keeps what the
server must know meanwhile: which big entities have files behind the journal."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from .. import worker as helper
from ..base import Op, Outcome
from .journal import encode_journal_line

log = logging.getLogger("maestro.store")

# Batches in flight to the helper: the server prepares and answers one while the helper
# writes the next.
PIPELINE_DEPTH = 2
# A big entity's file, left behind by changes journaled as deltas, is rewritten at the latest
# this long after the first such change (sooner once idle, or when the journal is long).
FLUSH_SECONDS = 10.0


def spawn_helper(root: Path) -> helper.StoreWorker | None:
    """Start the helper process (it boots while the server loads), or None when it cannot."""
    return helper.start_helper(root, "maestro.store.worker", "store process")


class HelperProxy:
    """Commits through the helper process; several batches may be in flight."""

    def __init__(self, worker: helper.StoreWorker, checkpoint_bytes: int):
        self.worker = worker
        self.checkpoint_bytes = checkpoint_bytes
        # Entities sent as deltas since their last flush: [number of the last message that
        # did, when they fell behind], oldest first.
        self._lagging: dict[tuple[str, str], list] = {}
        self._sent = 0

    @classmethod
    def hand_over(cls, worker: helper.StoreWorker, strays: dict, known: set[str],
                  checkpoint_bytes: int) -> "HelperProxy | None":
        """Hand the write path to the helper: it owns the journal from the reply on. None
        when it cannot take it (the server then writes in-process)."""
        try:
            worker.init(strays, known, checkpoint_bytes)
        except OSError as exc:
            log.warning("store process unavailable (%s); writing in-process", exc)
            worker.close()
            return None
        return cls(worker, checkpoint_bytes)

    def _remember(self, reply: dict) -> None:
        if "stats" in reply:
            self.worker.stats = reply["stats"]

    def send_batch(self, records: list[list[Op]]) -> asyncio.Future:
        """Send `records` to the helper to stage, journal and apply (see Store.send_batch)."""
        worker = self.worker
        loop = asyncio.get_running_loop()
        worker.attach_loop(loop)
        # The journal lines are built here from each entity's cached JSON, so the helper
        # writes them as they are instead of encoding every entity again.
        sent = worker.request_async(helper.batch_message(len(records)),
                                    [encode_journal_line(r) for r in records])
        self._sent += 1
        lagging = self._lagging
        for record in records:
            for op in record:
                if op.delta is not None:
                    entry = lagging.get((op.kind, op.id))
                    if entry is None:
                        lagging[(op.kind, op.id)] = [self._sent, time.monotonic()]
                    else:
                        entry[0] = self._sent
        result = loop.create_future()

        def done(fut: asyncio.Future) -> None:
            if result.done():
                return
            try:
                reply = fut.result()
            except BaseException as exc:  # noqa: BLE001 - handed on to the committer
                result.set_exception(exc)
                return
            self._remember(reply)
            if not reply.get("ok"):
                result.set_exception(OSError(reply.get("error")
                                             or "the store process refused the batch"))
            else:
                result.set_result(Outcome(int(reply["ready"]), reply.get("error")))

        sent.add_done_callback(done)
        return result

    async def resume(self) -> None:
        """After a refused or failed batch: accept the batches sent from now on."""
        self._remember(await self.worker.request_async(b'{"op":"resume"}'))

    def flush_keys(self) -> list[tuple[str, str]]:
        return list(self._lagging)

    def wants_flush(self) -> bool:
        """The journal is long (it cannot be emptied while files are behind it) or a file has
        been behind for FLUSH_SECONDS."""
        if not self._lagging:
            return False
        stats = self.worker.stats
        since = next(iter(self._lagging.values()))[1]
        return stats.get("journalBytes", 0) >= stats.get("checkpointAt", self.checkpoint_bytes) \
            or time.monotonic() - since >= FLUSH_SECONDS

    def send_flush(self, ops: list[Op], keys: list[tuple[str, str]]) -> asyncio.Future:
        """Flush through the helper, after every batch sent before (see Store.send_flush)."""
        worker = self.worker
        loop = asyncio.get_running_loop()
        worker.attach_loop(loop)
        self._sent += 1
        sent_at = self._sent
        lines = [encode_journal_line(ops)] if ops else []
        sent = worker.request_async(b'{"op":"flush","count":%d}' % len(lines), lines)
        result = loop.create_future()

        def done(fut: asyncio.Future) -> None:
            try:
                reply = fut.result()
            except BaseException as exc:  # noqa: BLE001 - handed on to the committer
                if not result.done():
                    result.set_exception(exc)
                return
            self._remember(reply)
            flushed = bool(reply.get("ok") and reply.get("flushed"))
            if flushed:
                now = time.monotonic()
                for key in keys:
                    entry = self._lagging.pop(key, None)
                    if entry is not None and entry[0] > sent_at:
                        # Changed again after the flush was sent: behind from now on.
                        self._lagging[key] = [entry[0], now]
            if not result.done():
                if reply.get("ok"):
                    result.set_result(flushed)
                else:
                    result.set_exception(OSError(reply.get("error") or "flush failed"))

        sent.add_done_callback(done)
        return result

    async def maintain(self) -> None:
        worker = self.worker
        worker.attach_loop(asyncio.get_running_loop())
        self._remember(await worker.request_async(b'{"op":"maintenance"}'))

    def detach_loop(self) -> None:
        self.worker.detach_loop()

    def close(self) -> None:
        """The helper checkpoints and closes the journal."""
        self.worker.close()

    def health(self) -> dict[str, Any]:
        stats = self.worker.stats
        return {"journalBytes": stats.get("journalBytes", 0),
                "journalWritten": stats.get("journalWritten", 0),
                "filesBehind": stats.get("behind", 0),
                "unappliedChanges": stats.get("unapplied", 0),
                "spareFiles": stats.get("spares", 0),
                "writable": self.worker.dead is None and not stats.get("failed"),
                "writer": "process"}

