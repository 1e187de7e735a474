"""JSON-file store in the original's data-directory layout (SPEC §5), made crash-safe.

Durability comes from a write-ahead journal (`DATA_DIR/journal`): each request's changes are one
checksummed line, and a batch of concurrent requests costs one `fdatasync` (group commit). The
entity files are then replaced atomically (temp file + rename) so that the directory is always a
readable, up-to-date copy. A checkpoint syncs the file system and empties the journal. Start-up
loads the files, replays the journal and so finishes whatever a crash interrupted."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import secrets
import time
import zlib
from pathlib import Path
from typing import Any

from .. import jsonio
from ..ids import is_safe_file_component
from .base import LoadResult, Op, Store, StoreLockedError

log = logging.getLogger("maestro.store")

JOURNAL_NAME = "journal"
LOCK_NAME = ".maestro.lock"
QUARANTINE_DIR = "quarantine"
CHECKPOINT_BYTES = 16 * 1024 * 1024
_TMP_SUFFIX = ".tmp"

_libc = None


def _syncfs(fd: int) -> bool:
    """Flush the whole file system holding `fd` (one call instead of one fsync per file)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc.syncfs(fd) == 0
    except (OSError, AttributeError):
        return False


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class UnsafePathError(ValueError):
    """An id that cannot be used as a file name inside the data directory."""


class FileStore(Store):
    name = "files"

    def __init__(self, data_dir: Path):
        self.root = Path(data_dir)
        self.projects_dir = self.root / "projects"
        self.tasks_dir = self.root / "tasks"
        self.sessions_dir = self.root / "sessions"
        self.journal_path = self.root / JOURNAL_NAME
        self._lock_fd: int | None = None
        self._journal_fd: int | None = None
        self._journal_bytes = 0
        self._dirty_dirs: set[Path] = set()
        self._dirty_files: set[Path] = set()
        # Every path a task was loaded from; older copies are removed when the task is rewritten.
        self._task_paths: dict[str, set[Path]] = {}
        self._known_task_dirs: set[str] = set()
        self.quarantined: list[dict] = []
        self.replayed_records = 0
        self.last_checkpoint: float | None = None
        self._pending_replay: list[tuple] = []
        self._unapplied: dict[tuple[str, str], Op] = {}

    # ----------------------------------------------------------------- opening
    def open(self) -> LoadResult:
        for d in (self.projects_dir, self.tasks_dir, self.sessions_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self._lock_fd is None:
            self.take_lock()
        self._remove_temp_files()
        result = LoadResult()
        projects = self._load_dir(self.projects_dir, result)
        tasks: dict[str, dict] = {}
        # Legacy location first, so a copy in the project folder wins a duplicate id.
        for task in self._load_dir(self.tasks_dir, result, paths=self._task_paths).values():
            tasks[task["id"]] = task
        for sub in sorted(p for p in self.tasks_dir.iterdir() if p.is_dir()):
            self._known_task_dirs.add(sub.name)
            for task in self._load_dir(sub, result, paths=self._task_paths).values():
                tasks[task["id"]] = task
        sessions = self._load_dir(self.sessions_dir, result)
        state = {"project": projects, "task": tasks, "session": sessions}
        replayed = self._replay_journal(state, result)
        result.projects = list(projects.values())
        result.tasks = list(tasks.values())
        result.sessions = list(sessions.values())
        result.quarantined = list(self.quarantined)
        self._journal_fd = os.open(self.journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if replayed:
            self.checkpoint()
        return result

    def take_lock(self) -> None:
        """Exclusive ownership of the data directory, or StoreLockedError at once."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise StoreLockedError(
                    f"the data directory {self.root} is in use by another Maestro server{who}; "
                    "stop it first or start this one with another DATA_DIR"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _remove_temp_files(self) -> None:
        for folder in [self.projects_dir, self.sessions_dir, self.tasks_dir,
                       *(p for p in self.tasks_dir.iterdir() if p.is_dir())]:
            for entry in folder.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(_TMP_SUFFIX):
                    try:
                        entry.unlink()
                    except OSError:
                        pass

    def _load_dir(self, folder: Path, result: LoadResult, paths: dict | None = None) -> dict:
        out: dict[str, dict] = {}
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            return out
        for entry in entries:
            if not entry.name.endswith(".json") or not entry.is_file():
                continue
            path = Path(entry.path)
            try:
                data = path.read_bytes()
                value = jsonio.loads(data)
                if not isinstance(value, dict) or not isinstance(value.get("id"), str) \
                        or not value["id"]:
                    raise ValueError("not a JSON object with a string id")
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self._quarantine(path, str(exc))
                continue
            out[value["id"]] = value
            if paths is not None:
                paths.setdefault(value["id"], set()).add(path)
        return out

    def _quarantine(self, path: Path, reason: str) -> None:
        qdir = self.root / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        rel = path.relative_to(self.root).as_posix().replace("/", "__")
        target = qdir / f"{rel}.{int(time.time() * 1000)}"
        try:
            os.replace(path, target)
            moved = str(target)
        except OSError as exc:
            moved = f"(could not move: {exc})"
        entry = {"file": str(path.relative_to(self.root)), "movedTo": moved, "reason": reason}
        self.quarantined.append(entry)
        log.error("corrupt entity file %s moved to %s: %s", path, moved, reason)

    def _replay_journal(self, state: dict[str, dict], result: LoadResult) -> int:
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            return 0
        good_end = 0
        count = 0
        pos = 0
        while pos < len(raw):
            nl = raw.find(b"\n", pos)
            if nl < 0:
                break
            line = raw[pos:nl]
            record = _decode_line(line)
            if record is None:
                break
            for op in record:
                kind, eid, value = op["k"], op["id"], op.get("v")
                if value is None:
                    state[kind].pop(eid, None)
                else:
                    state[kind][eid] = value
                self._pending_replay.append((kind, eid, value, op.get("p")))
            count += 1
            pos = nl + 1
            good_end = pos
        if good_end < len(raw):
            result.notes.append(
                f"journal: dropped an incomplete trailing record ({len(raw) - good_end} bytes)")
            log.warning("journal ends with an incomplete record (never acknowledged); dropped")
        if count:
            log.info("journal: replayed %d record(s) from an unclean shutdown", count)
            result.notes.append(f"journal: replayed {count} record(s)")
        self.replayed_records = count
        # Re-apply the replayed post-images to the entity files, then checkpoint.
        for kind, eid, value, pid in self._pending_replay:
            self._apply_file(Op(kind, eid, value, None, pid))
        self._pending_replay.clear()
        return count or (good_end < len(raw))

    # ----------------------------------------------------------------- writing
    def write_batch(self, records: list[list[Op]]) -> None:
        """Append the records to the journal and fdatasync it (runs in the writer thread)."""
        lines = bytearray()
        for record in records:
            lines += _encode_record(record)
        assert self._journal_fd is not None, "store is not open"
        os.write(self._journal_fd, lines)
        os.fdatasync(self._journal_fd)
        self._journal_bytes += len(lines)

    def apply_batch(self, records: list[list[Op]]) -> None:
        """Bring the entity files up to date with durable records (last write per entity wins).

        Runs on the event-loop thread: a few short syscalls per entity, and no GIL hand-off per
        file as a worker thread would need. A failure here loses nothing (the journal has the
        change); the op is retried at the next checkpoint, which keeps the journal until then."""
        latest: dict[tuple[str, str], Op] = {}
        for record in records:
            for op in record:
                latest.pop((op.kind, op.id), None)
                latest[(op.kind, op.id)] = op
        for key, op in latest.items():
            try:
                self._apply_file(op)
                self._unapplied.pop(key, None)
            except OSError as exc:
                self._unapplied[key] = op
                log.error("could not write %s %s (kept in the journal, retried later): %s",
                          op.kind, op.id, exc)

    def wants_maintenance(self) -> bool:
        return self._journal_bytes >= CHECKPOINT_BYTES

    def _path_for(self, op: Op) -> Path:
        if not is_safe_file_component(op.id):
            raise UnsafePathError(f"id {op.id!r} cannot be stored as a file name")
        if op.kind == "project":
            return self.projects_dir / f"{op.id}.json"
        if op.kind == "session":
            return self.sessions_dir / f"{op.id}.json"
        pid = op.project_id or (op.value or {}).get("projectId")
        if not isinstance(pid, str) or not is_safe_file_component(pid):
            raise UnsafePathError(f"project id {pid!r} cannot be stored as a folder name")
        return self.tasks_dir / pid / f"{op.id}.json"

    def check_op(self, op: Op) -> None:
        """Raise UnsafePathError if `op` could not be written (checked before anything changes)."""
        self._path_for(op)

    def _apply_file(self, op: Op) -> None:
        path = self._path_for(op)
        if op.value is None:
            _unlink(path)
            if op.kind == "task":
                for old in self._task_paths.pop(op.id, ()):
                    _unlink(old)
            self._dirty_dirs.add(path.parent)
            return
        folder = path.parent
        if op.kind == "task" and folder.name not in self._known_task_dirs:
            folder.mkdir(parents=True, exist_ok=True)
            self._known_task_dirs.add(folder.name)
            self._dirty_dirs.add(self.tasks_dir)
        tmp = folder / f".{op.id}.{secrets.token_hex(4)}.json{_TMP_SUFFIX}"
        data = jsonio.dumps_pretty(op.value)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._dirty_files.add(path)
        self._dirty_dirs.add(folder)
        if op.kind == "task":
            olds = self._task_paths.get(op.id)
            if olds:
                for old in olds - {path}:
                    _unlink(old)
            self._task_paths[op.id] = {path}

    # ----------------------------------------------------------------- checkpoint
    def checkpoint(self) -> None:
        """Make the entity files durable, then empty the journal."""
        if not self._dirty_files and not self._dirty_dirs and self._journal_bytes == 0 \
                and not self.replayed_records:
            return
        for key, op in list(self._unapplied.items()):
            try:
                self._apply_file(op)
                del self._unapplied[key]
            except OSError as exc:
                log.error("still cannot write %s %s: %s", op.kind, op.id, exc)
        if self._unapplied:
            return  # the journal is the only complete copy of those changes: keep it
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if not _syncfs(fd):
                for path in self._dirty_files:
                    try:
                        ffd = os.open(path, os.O_RDONLY)
                    except FileNotFoundError:
                        continue
                    try:
                        os.fsync(ffd)
                    finally:
                        os.close(ffd)
                for d in self._dirty_dirs:
                    _fsync_dir(d)
        finally:
            os.close(fd)
        self._dirty_files.clear()
        self._dirty_dirs.clear()
        if self._journal_fd is not None:
            os.ftruncate(self._journal_fd, 0)
            os.fsync(self._journal_fd)
        self._journal_bytes = 0
        self.replayed_records = 0
        self.last_checkpoint = time.time()

    def maintenance(self) -> None:
        if self._journal_bytes:
            self.checkpoint()

    def close(self) -> None:
        if self._journal_fd is not None:
            try:
                self.checkpoint()
            finally:
                os.close(self._journal_fd)
                self._journal_fd = None
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "dataDir": str(self.root),
            "journalBytes": self._journal_bytes,
            "quarantined": list(self.quarantined),
        }


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _encode_record(record: list[Op]) -> bytes:
    parts = []
    for op in record:
        value = b"null" if op.value is None else (op.encoded or jsonio.dumps(op.value))
        parts.append(b'{"k":"' + op.kind.encode() + b'","id":' + jsonio.dumps(op.id)
                     + b',"p":' + jsonio.dumps(op.project_id) + b',"v":' + value + b"}")
    body = b"[" + b",".join(parts) + b"]"
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _decode_line(line: bytes) -> list[dict] | None:
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = jsonio.loads(body)
    except ValueError:
        return None
    if not isinstance(record, list):
        return None
    return record
