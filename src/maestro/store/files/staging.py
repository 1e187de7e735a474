"""Staging and commit: a batch's new entity files are staged in spare files before the commit
point (`prepare_batch`), the journal append + fdatasync is the commit point (`write_batch`),
and the staged files are swapped into place after it (`apply_batch`)."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path

from ... import jsonio
from ...ids import is_safe_file_component
from ..base import Op, Outcome
from .journal import encode_journal_line, latest
from .syscalls import exchange, unlink, write_all

log = logging.getLogger("maestro.store")


def _has_file_change(op: Op) -> bool:
    """The op gives the entity's whole new value (a delta leaves the file as it is)."""
    return op.delta is None and op.value is not None


# In a staged batch: this change's file could not be staged (see _stage_superseded).
_NOT_STAGED = "\0not staged"


class UnsafePathError(ValueError):
    """An id that cannot be used as a file name inside the data directory."""


class Staging:
    """Part of FileStore: the write path."""

    def prepare_batch(self, records: list[list[Op]]) -> Outcome:
        """Stage the files of `records` (event-loop thread, before the commit point).

        When record k cannot be staged, the outcome accepts k records: the ones before it are
        staged and may be committed, it and every later record must be refused."""
        self._discard_prepared()
        self._checked_dirs.clear()
        self._staged_paths.clear()
        if self._failed is not None:
            return Outcome(0, f"storage is unavailable: {self._failed}")
        # Stage each entity once, at the last record of the batch that writes it: a burst of
        # changes to one task costs one file, not one per request.
        last: dict[tuple[str, str], int] = {}
        for index, record in enumerate(records):
            for op in record:
                last[(op.kind, op.id)] = index
        staged: dict[tuple[str, str], tuple[Op, str | None]] = {}
        for index, record in enumerate(records):
            fresh: dict[tuple[str, str], tuple[Op, str | None]] = {}
            try:
                for key, op in latest([record]).items():
                    if last[key] == index:
                        fresh[key] = (op, self._stage(op) if _has_file_change(op) else None)
            except (OSError, ValueError) as exc:
                for _, tmp in fresh.values():
                    if tmp is not None:
                        self.spares.give_back(tmp)
                log.error("could not stage a change of %d entit(ies): %s", len(record), exc)
                self._prepared = staged
                self._stage_superseded(records[:index])
                return Outcome(index, str(exc))
            staged.update(fresh)
        self._prepared = staged
        return Outcome(len(records))

    def _stage_superseded(self, committed: list[list[Op]]) -> None:
        """After record k was refused, records before k still commit: stage their changes that
        a refused record would have superseded (and so were not staged yet)."""
        staged = self._prepared
        for key, op in latest(committed).items():
            if key in staged:
                continue
            try:
                staged[key] = (op, self._stage(op) if _has_file_change(op) else None)
            except (OSError, ValueError) as exc:
                # If the batch commits, the journal has it and the file catches up at a
                # checkpoint (_apply); if it does not, it is dropped with the batch.
                staged[key] = (op, _NOT_STAGED)
                log.error("could not stage %s %s: %s", op.kind, op.id, exc)

    def _discard_prepared(self) -> None:
        for _, tmp in (self._prepared or {}).values():
            if tmp is not None and tmp is not _NOT_STAGED:
                self.spares.give_back(tmp)
        self._prepared = None

    def write_batch(self, records: list[list[Op]], lines: list[bytes] | None = None) -> None:
        """Append the records to the journal and fdatasync it (writer thread): the commit.
        `lines`, when given, are the records' journal lines, already encoded."""
        if self._failed is not None:
            self._discard_prepared()
            raise OSError(f"storage is unavailable: {self._failed}")
        assert self._journal_fd is not None, "store is not open"
        lines = b"".join(lines if lines is not None else
                         (encode_journal_line(record) for record in records))
        start = self._journal_bytes
        try:
            write_all(self._journal_fd, lines)
            os.fdatasync(self._journal_fd)
        except BaseException:
            self._discard_prepared()
            # Cut a partial record off, so later records are never appended behind garbage.
            try:
                os.ftruncate(self._journal_fd, start)
                os.fdatasync(self._journal_fd)
            except OSError as exc:
                self._failed = f"the journal {self.journal_path} could not be repaired: {exc}"
                log.critical("%s; refusing further writes", self._failed)
            raise
        self._journal_bytes = start + len(lines)
        self._journal_written += len(lines)

    def apply_batch(self, records: list[list[Op]]) -> None:
        """Bring the entity files up to date with committed records (event-loop thread): a
        rename or unlink per entity. Never raises; a failure is retried at checkpoints."""
        prepared, self._prepared = self._prepared, None
        if prepared is None:  # not staged beforehand: stage and apply now
            for op in latest(records).values():
                self._write_now(op)
            return
        for op, tmp in prepared.values():
            self._apply(op, tmp)

    def _own_path(self, kind: str, eid: str, value: dict | None, project_id: str | None) \
            -> str | None:
        """Where the entity's file belongs, or None when its ids cannot name a file (a plain
        string: this runs several times per write, where pathlib would cost more than the
        write itself)."""
        if not is_safe_file_component(eid):
            return None
        if kind == "project":
            return f"{self._projects_str}/{eid}.json"
        if kind == "session":
            return f"{self._sessions_str}/{eid}.json"
        pid = value.get("projectId") if value is not None else project_id
        if not isinstance(pid, str) or not is_safe_file_component(pid):
            return None
        return f"{self._tasks_str}/{pid}/{eid}.json"

    def _path_for(self, op: Op) -> str:
        path = self._own_path(op.kind, op.id, op.value, op.project_id)
        if path is None:
            if not is_safe_file_component(op.id):
                raise UnsafePathError(f"id {op.id!r} cannot be stored as a file name")
            pid = (op.value or {}).get("projectId", op.project_id)
            raise UnsafePathError(f"project id {pid!r} cannot be stored as a folder name")
        return path

    def check_op(self, op: Op) -> None:
        """Raise UnsafePathError if `op` could not be written (checked before anything changes).

        A delete is always possible: it removes whatever files the entity was loaded from."""
        if op.value is not None:
            self._path_for(op)

    def _stage(self, op: Op) -> str:
        """Write the new content of `op` into a spare file (see SparePool); returns that file.

        The spare is swapped with the target atomically when the change commits (_apply), so
        afterwards it holds the previous version and goes back to the pool: an update then
        allocates and frees no inode, and a new entity takes a file created beforehand."""
        path = self._path_for(op)
        folder, _, _ = path.rpartition("/")
        if op.kind == "task" and folder.rpartition("/")[2] not in self._known_task_dirs:
            self._make_task_dir(Path(folder))
        if folder not in self._checked_dirs:
            if not os.path.isdir(folder):
                # Refuse before the commit point what could not be put in place after it.
                if op.kind != "task" or os.path.lexists(folder):
                    raise NotADirectoryError(errno.ENOTDIR, "not a folder", folder)
                self._make_task_dir(Path(folder))  # the project's folder was removed
            self._checked_dirs.add(folder)  # (once per batch)
        data = jsonio.dumps_pretty(op.value)
        spare, fd = self.spares.take()
        try:
            # A spare holds an old version of some entity: cut off what the new content does
            # not overwrite (a truncate is a journaled inode change; a size check is not).
            longer = os.fstat(fd).st_size > len(data)
            view = memoryview(data)
            offset = 0
            while offset < len(data):
                offset += os.pwrite(fd, view[offset:], offset)
            if longer:
                os.ftruncate(fd, len(data))
        except BaseException:
            os.close(fd)
            unlink(spare)
            raise
        os.close(fd)
        self._staged_paths[spare] = path
        return spare

    def _make_task_dir(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)  # FileExistsError if a file is in the way
        self._known_task_dirs.add(folder.name)
        self._dirty_dirs.update((self.tasks_dir, folder))

    def _apply(self, op: Op, tmp: Path | None) -> bool:
        """Rename the staged file into place (or unlink a deleted entity's files); a failure
        leaves the change in `_unapplied` for the next checkpoint instead of raising. A
        delta leaves the file behind until a flush (see `_behind`)."""
        key = (op.kind, op.id)
        if op.delta is not None:
            if key not in self._behind:
                self._behind[key] = time.monotonic()
            return True
        self._behind.pop(key, None)  # the whole value is journaled with this op
        if tmp is _NOT_STAGED:  # committed, but its file could not be staged beforehand
            self._unapplied[key] = op
            log.error("the file of %s %s is behind (kept in the journal, retried at the next "
                      "checkpoint)", op.kind, op.id)
            return False
        try:
            if op.value is None:
                path = self._own_path(op.kind, op.id, None, op.project_id)
                if path is not None:
                    unlink(path)
                    self._dirty_dirs.add(path.rpartition("/")[0])
            else:
                assert tmp is not None
                path = self._staged_paths.pop(tmp, None) or self._path_for(op)
                if op.new:  # nothing to swap with: a plain atomic rename
                    os.replace(tmp, path)
                else:
                    self._swap_into_place(tmp, path)
                tmp = None  # in place (or back in the pool): never given back twice
                self._dirty_files.add(path)
                self._dirty_dirs.add(path.rpartition("/")[0])
            for stray in self._stray_paths.get(key, ()):
                if stray != path:
                    unlink(stray)
                    self._dirty_dirs.add(stray.rpartition("/")[0])
            self._stray_paths.pop(key, None)
        except OSError as exc:
            if tmp is not None:
                self.spares.give_back(tmp)
            self._unapplied[key] = op
            log.error("could not update the file of %s %s (kept in the journal, retried at "
                      "the next checkpoint): %s", op.kind, op.id, exc)
            return False
        self._unapplied.pop(key, None)
        return True

    def _swap_into_place(self, staged: str, path: str) -> None:
        """Make `staged` the content of `path` atomically; the old content becomes a spare."""
        swapped = exchange(staged, path) if self._can_exchange else None
        if swapped is None:
            self._can_exchange = False
        if not swapped:  # a new file, or no exchange on this system: a plain atomic rename
            os.replace(staged, path)
            return
        self.spares.give_back(staged)

    def _write_now(self, op: Op) -> bool:
        """Stage and apply one committed change (journal replay, checkpoint retries)."""
        tmp = None
        if _has_file_change(op):
            try:
                tmp = self._stage(op)
            except (OSError, ValueError) as exc:
                self._unapplied[(op.kind, op.id)] = op
                log.error("could not write the file of %s %s (kept in the journal): %s",
                          op.kind, op.id, exc)
                return False
        return self._apply(op, tmp)

    def flush(self, ops: list[Op], line: bytes | None = None) -> None:
        """Write the whole value of entities that are behind (`ops`, made from the current
        state; `line`: their journal line, when already encoded): journaled like any change,
        then put in place. Never refused for a file that cannot be written yet (it is then
        retried at checkpoints)."""
        if not ops:
            return
        self._prepare_flush(ops)
        self.write_batch([ops], None if line is None else [line])
        self.apply_batch([ops])

    def _prepare_flush(self, ops: list[Op]) -> None:
        """Stage a flush: like prepare_batch, but a file that cannot be staged is left to the
        checkpoints instead of refusing (the value is committed state already)."""
        self._discard_prepared()
        self._checked_dirs.clear()
        self._staged_paths.clear()
        if self._failed is not None:
            raise OSError(f"storage is unavailable: {self._failed}")
        staged: dict[tuple[str, str], tuple[Op, str | None]] = {}
        for key, op in latest([ops]).items():
            try:
                staged[key] = (op, self._stage(op) if _has_file_change(op) else None)
            except (OSError, ValueError) as exc:
                staged[key] = (op, _NOT_STAGED)
                log.error("could not stage %s %s: %s", op.kind, op.id, exc)
        self._prepared = staged
