"""Checkpoints: make the entity files durable (one syncfs, or an fsync per file), then empty
the journal; in the background when the journal is long, while writes go on to a new one."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .syscalls import fsync_path, syncfs, unlink

log = logging.getLogger("maestro.store")


class Checkpoints:
    """Part of FileStore: checkpoints."""

    def checkpoint(self) -> None:
        """Make the entity files durable, then empty the journal (unless some file is behind)."""
        self._wait_for_sync()
        self._checked_dirs.clear()
        for op in list(self._unapplied.values()):
            self._write_now(op)
        if not self._dirty_files and not self._dirty_dirs and self._journal_bytes == 0:
            return
        self._sync_files()
        self._dirty_files.clear()
        self._dirty_dirs.clear()
        if self._unapplied:
            log.error("%d committed change(s) could not reach their files; the journal is "
                      "kept until they do", len(self._unapplied))
            self._checkpoint_at = self._journal_bytes + self.checkpoint_bytes
            return
        if self._behind:
            return  # their changes live only in the journal until a flush writes the files
        if os.path.lexists(self.old_journal_path):
            # Left by a background checkpoint that failed: gone for good before the newer
            # journal is emptied, or a crash in between would replay its older records.
            unlink(self.old_journal_path)
            fsync_path(self.root, directory=True)
        if self._journal_fd is not None and self._journal_bytes:
            os.ftruncate(self._journal_fd, 0)
            os.fsync(self._journal_fd)
        self._journal_bytes = 0
        self._checkpoint_at = self.checkpoint_bytes

    def checkpoint_in_background(self, wait: bool = False) -> None:
        """The journal is long: start a new one and make the files durable in a thread, then
        drop the old journal. Writes go on meanwhile (a checkpoint syncs the whole file system,
        which can take a tenth of a second). Falls back to `checkpoint` when a file is behind.
        Does nothing while changes live only in the journal (deltas not flushed yet). `wait`
        (right after a flush, the moment no file is behind): wait for the previous one rather
        than let the chance go."""
        if self._behind:
            return
        if self._syncing is not None:
            if self._syncing.is_alive() and not wait:
                return  # the previous one is still at work; the journal may grow meanwhile
            self._wait_for_sync()
        if self._unapplied or self.old_journal_path.exists() or self._journal_fd is None:
            self.checkpoint()
            return
        os.rename(self.journal_path, self.old_journal_path)
        fd = None
        try:
            fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            fsync_path(self.root, directory=True)  # both names, before anything is appended
        except BaseException:
            # Put the journal back under its name: records keep going to the file that
            # start-up replays (never to a name that a later checkpoint deletes).
            if fd is not None:
                os.close(fd)
            try:
                os.replace(self.old_journal_path, self.journal_path)
                fsync_path(self.root, directory=True)
            except OSError as exc:
                self._failed = f"the journal {self.journal_path} could not be restored after " \
                               f"a failed checkpoint: {exc}"
                log.critical("%s; refusing further writes", self._failed)
            raise
        os.close(self._journal_fd)
        self._journal_fd = fd
        self._journal_bytes = 0
        self._checkpoint_at = self.checkpoint_bytes
        files, dirs = self._dirty_files, self._dirty_dirs
        self._dirty_files, self._dirty_dirs = set(), set()
        self._syncing = threading.Thread(target=self._sync_old_journal, args=(files, dirs),
                                         name="maestro-checkpoint", daemon=True)
        self._syncing.start()

    def _sync_old_journal(self, files: set, dirs: set) -> None:
        try:
            self._sync_files(files, dirs)
            unlink(self.old_journal_path)
        except OSError as exc:  # the old journal stays; the next checkpoint retries
            log.error("background checkpoint failed (the journal is kept): %s", exc)
            self._dirty_files |= files
            self._dirty_dirs |= dirs

    def _wait_for_sync(self) -> None:
        if self._syncing is not None:
            self._syncing.join()
            self._syncing = None

    def _sync_files(self, files: set | None = None, dirs: set | None = None) -> None:
        """Everything renamed, unlinked or created since the last checkpoint reaches the disk:
        one syncfs per file system involved, or an fsync per file and folder without it."""
        files = self._dirty_files if files is None else files
        dirs = self._dirty_dirs if dirs is None else dirs
        devices: dict[int, Path] = {}
        for folder in (self.root, *dirs):
            try:
                devices.setdefault(os.stat(folder).st_dev, folder)
            except OSError:
                continue
        synced = True
        for folder in devices.values():
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            except OSError:
                synced = False
                break
            try:
                synced = syncfs(fd)
            finally:
                os.close(fd)
            if not synced:
                break
        if synced:
            return
        for path in files:
            fsync_path(path)
        for folder in dirs:
            fsync_path(folder, directory=True)

    def wants_maintenance(self) -> bool:
        return self._journal_bytes >= self._checkpoint_at

    def maintenance(self) -> None:
        if self._journal_bytes or self._unapplied or self._dirty_dirs or self._dirty_files:
            self.checkpoint()

