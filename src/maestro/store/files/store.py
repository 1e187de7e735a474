"""The JSON-file store: the parts (loading.py, journal.py, staging.py, checkpoint.py) put
together on one data directory, written in-process or through the helper process (proxy.py).
See __init__.py for how it stays crash-safe."""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..base import LoadResult, Op, SyncStore
from .checkpoint import Checkpoints
from .journal import JOURNAL_NAME, OLD_JOURNAL_NAME, JournalReplay
from .loading import Loading
from .proxy import FLUSH_SECONDS, PIPELINE_DEPTH, HelperProxy, spawn_helper
from .spares import SPARES_DIR, SparePool
from .staging import Staging

CHECKPOINT_BYTES = 16 * 1024 * 1024
PIPELINE_MIN_OPS = 24


class FileStore(Loading, JournalReplay, Staging, Checkpoints, SyncStore):
    name = "files"

    def __init__(self, data_dir: Path, worker: bool = False,
                 checkpoint_bytes: int = CHECKPOINT_BYTES,
                 pipeline_min_ops: int = PIPELINE_MIN_OPS):
        """`worker`: after loading, batches are written by the helper process (worker.py);
        `checkpoint_bytes`: the journal size that starts a checkpoint; `pipeline_min_ops`:
        the entity writes a second batch must hold to go to the helper while one is being
        written (1: always overlap two batches)."""
        self.root = Path(data_dir)
        self._use_worker = worker
        self._proxy: HelperProxy | None = None
        self.pipeline_min_ops = pipeline_min_ops
        self.projects_dir = self.root / "projects"
        self.tasks_dir = self.root / "tasks"
        self.sessions_dir = self.root / "sessions"
        self.journal_path = self.root / JOURNAL_NAME
        self.checkpoint_bytes = checkpoint_bytes
        self.old_journal_path = self.root / OLD_JOURNAL_NAME
        self._syncing: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._layout_checked = False
        self._journal_fd: int | None = None
        # Size of the journal file: everything appended since the last checkpoint.
        self._journal_bytes = 0
        self._checkpoint_at = self.checkpoint_bytes
        self._dirty_dirs: set[Path | str] = set()
        self._dirty_files: set[str] = set()
        # Files an entity was loaded from other than its own path (legacy task location, a file
        # named after another id, a task in another project's folder): removed when the entity
        # is next written or deleted, so one entity never lives in two files.
        self._stray_paths: dict[tuple[str, str], set[str]] = {}
        # Files whose entity id is not their name, while loading (see _settle_misnamed).
        self._misnamed: list[tuple[str, str, dict]] = []
        self._projects_str = str(self.projects_dir)
        self._sessions_str = str(self.sessions_dir)
        self._tasks_str = str(self.tasks_dir)
        self._can_exchange = True
        self.spares_dir = self.root / SPARES_DIR
        self.spares = SparePool(self.spares_dir)
        self._known_task_dirs: set[str] = set()
        # Within one batch: folders found to exist, and the target of each staged file.
        self._checked_dirs: set[str] = set()
        self._staged_paths: dict[str, str] = {}
        # The batch between prepare_batch and apply_batch: last op per entity, its temp file.
        self._prepared: dict[tuple[str, str], tuple[Op, str | None]] | None = None
        # Committed changes whose file could not be renamed/unlinked yet (retried at checkpoint).
        self._unapplied: dict[tuple[str, str], Op] = {}
        # Set when the journal is in an unknown state; every later write is refused.
        self._failed: str | None = None
        # Where changes are applied (here or in the helper process): entities whose last
        # journaled change is a delta, so their file is behind the journal until a flush
        # writes their whole value (the journal is kept until then), with the time they fell
        # behind, oldest first.
        self._behind: dict[tuple[str, str], float] = {}
        self._journal_written = 0
        self.quarantined: list[dict] = []

    # ----------------------------------------------------------------- opening
    def open(self) -> LoadResult:
        if self._lock_fd is None:
            self.take_lock()
        # The helper process boots (a Python start-up) while this one loads the files.
        booting = spawn_helper(self.root) if self._use_worker else None
        try:
            result = self._load()
        except BaseException:
            if booting is not None:
                booting.close()
            raise
        if booting is not None:
            if not self._unapplied and self._failed is None:
                self._proxy = HelperProxy.hand_over(booting, self._stray_paths,
                                                    self._known_task_dirs,
                                                    self.checkpoint_bytes)
                if self._proxy is not None:
                    os.close(self._journal_fd)
                    self._journal_fd = None
            else:
                booting.close()
        if self._proxy is None:
            self.spares.start()
        return result

    def attach(self, strays: dict, known: set[str], checkpoint_bytes: int) -> None:
        """In the helper process: take over a store the server has loaded."""
        self._stray_paths = strays
        self._known_task_dirs = known
        self.checkpoint_bytes = self._checkpoint_at = checkpoint_bytes
        self._journal_fd = os.open(self.journal_path,
                                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        self._journal_bytes = os.fstat(self._journal_fd).st_size
        self.spares.adopt()
        self.spares.start()

    # ----------------------------------------------------------------- the protocol
    # In-process, SyncStore's lane drives prepare_batch/write_batch/apply_batch; with the
    # helper process, everything goes through the proxy.
    @property
    def pipeline_depth(self) -> int:
        return PIPELINE_DEPTH if self._proxy is not None else 1

    def send_batch(self, records: list[list[Op]]) -> asyncio.Future:
        if self._proxy is not None:
            return self._proxy.send_batch(records)
        return SyncStore.send_batch(self, records)

    async def resume(self) -> None:
        if self._proxy is not None:
            await self._proxy.resume()
        else:
            await SyncStore.resume(self)

    async def maintain(self) -> None:
        if self._proxy is not None:
            await self._proxy.maintain()
        else:
            await SyncStore.maintain(self)

    def flush_keys(self) -> list[tuple[str, str]]:
        """Entities whose file is behind the journal (changed by deltas since it was last
        written): a flush writes their whole current value."""
        return self._proxy.flush_keys() if self._proxy is not None else list(self._behind)

    def wants_flush(self) -> bool:
        """A flush is due: the journal is long (it cannot be emptied while files are behind
        it) or a file has been behind for FLUSH_SECONDS."""
        if self._proxy is not None:
            return self._proxy.wants_flush()
        if not self._behind:
            return False
        since = next(iter(self._behind.values()))
        return self._journal_bytes >= self._checkpoint_at \
            or time.monotonic() - since >= FLUSH_SECONDS

    def send_flush(self, ops: list[Op], keys: list[tuple[str, str]]) -> asyncio.Future:
        if self._proxy is not None:
            return self._proxy.send_flush(ops, keys)
        return SyncStore.send_flush(self, ops, keys)

    def detach_loop(self) -> None:
        if self._proxy is not None:
            self._proxy.detach_loop()

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        if self._proxy is not None:
            try:
                self._proxy.close()
            finally:
                self._proxy = None
        self.spares.stop()
        try:
            self._discard_prepared()
            if self._journal_fd is not None and self._failed is None:
                self.checkpoint()
        finally:
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None
            if self._lock_fd is not None:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                finally:
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def stats(self) -> dict[str, Any]:
        """The state of the write path, as the helper process reports it to the server."""
        return {"journalBytes": self._journal_bytes, "unapplied": len(self._unapplied),
                "failed": self._failed, "spares": len(self.spares),
                "behind": len(self._behind), "journalWritten": self._journal_written,
                "checkpointAt": self._checkpoint_at}

    def health(self) -> dict[str, Any]:
        if self._proxy is not None:
            writer = self._proxy.health()
        else:
            writer = {"journalBytes": self._journal_bytes,
                      "journalWritten": self._journal_written,
                      "filesBehind": len(self._behind),
                      "unappliedChanges": len(self._unapplied),
                      "spareFiles": len(self.spares),
                      "writable": self._failed is None,
                      "writer": "in-process"}
        return {"backend": self.name, "dataDir": str(self.root), **writer,
                "quarantined": list(self.quarantined)}
