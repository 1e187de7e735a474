"""JSON-file store in the original's data-directory layout (SPEC §5), made crash-safe.

Durability comes from a write-ahead journal (`DATA_DIR/journal`): each request's changes are one
checksummed line, and a batch of concurrent requests costs one `fdatasync` (group commit). The
entity files are then replaced atomically (temp file + rename) so that the directory is always a
readable, up-to-date copy. A checkpoint syncs the file system and empties the journal. Start-up
loads the files, replays the journal and so finishes whatever a crash interrupted.

The journal append is the commit point. What can fail for a reason the disk gives (a missing or
blocked folder, a full disk) is done before it: `prepare_batch` stages the new contents as temp
files beside their targets, so a refused change leaves neither a journal record nor a changed
file. After the commit point only renames and unlinks remain (`apply_batch`); if one of those
fails the change stays committed, is retried at each checkpoint, and the journal is kept until
the files have caught up."""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import errno
import fcntl
import itertools
import logging
import os
import secrets
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from .. import jsonio
from ..ids import is_safe_file_component
from .base import (KINDS, LoadResult, Op, Store, StoreLockedError, StoreUnusableError,
                   apply_delta)
from .layout import find_link, find_named_link, link_message, unwritable
from .worker import StoreWorker, batch_message, write_all as _write_all

log = logging.getLogger("maestro.store")

JOURNAL_NAME = "journal"
# The journal being checkpointed in the background while new records go to a fresh `journal`.
OLD_JOURNAL_NAME = "journal.old"
LOCK_NAME = ".maestro.lock"
QUARANTINE_DIR = "quarantine"
CHECKPOINT_BYTES = 16 * 1024 * 1024
# A big entity's file, left behind by changes journaled as deltas, is rewritten at the latest
# this long after the first such change (sooner once idle, or when the journal is long).
FLUSH_SECONDS = 10.0
_TMP_SUFFIX = ".tmp"
_SPARE_SUFFIX = ".spare"
SPARES_DIR = ".spares"
# Blank files kept ready in .spares/ (see SparePool): refilled to HIGH when below LOW.
SPARES_LOW = 256
SPARES_HIGH = 1024
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

_libc = None
_renameat2 = None


def _syncfs(fd: int) -> bool:
    """Flush the whole file system holding `fd` (one call instead of one fsync per file)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc.syncfs(fd) == 0
    except (OSError, AttributeError):
        return False


def _fsync_path(path: Path, directory: bool = False) -> None:
    """fsync one file or folder; a path that vanished meanwhile needs no sync."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: Path | str) -> None:
    """Remove a file; one that is already gone (or whose folder is not one) is not an error."""
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        pass


def _latest(records: list[list[Op]]) -> dict[tuple[str, str], Op]:
    """The last op per entity over `records`, in the order of those last ops."""
    latest: dict[tuple[str, str], Op] = {}
    for record in records:
        for op in record:
            latest.pop((op.kind, op.id), None)
            latest[(op.kind, op.id)] = op
    return latest


def _has_file_change(op: Op) -> bool:
    """The op gives the entity's whole new value (a delta leaves the file as it is)."""
    return op.delta is None and op.value is not None


def _exchange(a: str, b: str) -> bool | None:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE). True when done,
    False when `b` does not exist, None when the system or file system cannot do it."""
    global _renameat2
    try:
        if _renameat2 is None:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _renameat2 = libc.renameat2
            _renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                                   ctypes.c_char_p, ctypes.c_uint)
            _renameat2.restype = ctypes.c_int
        result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
                            _RENAME_EXCHANGE)
    except (OSError, AttributeError):
        return None
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT and os.path.exists(a):
        return False
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return None
    raise OSError(err, os.strerror(err), b)


def checkpoint_bytes_from_env() -> int:
    """MAESTRO_CHECKPOINT_BYTES: journal size that starts a checkpoint (default 16 MiB)."""
    raw = os.environ.get("MAESTRO_CHECKPOINT_BYTES", "")
    try:
        value = int(raw)
    except ValueError:
        return CHECKPOINT_BYTES
    return value if value >= 4096 else CHECKPOINT_BYTES


class SparePool:
    """Blank files in DATA_DIR/.spares/ that entity files are staged in.

    Creating a file is the costly part of writing one on some systems: ext4 skips inodes freed
    in the last half minute when it allocates one, so after many deletions every new file costs
    hundreds of microseconds of kernel time. A staged write therefore takes a file made
    beforehand: an update swaps it with its target and gets the old version back as a new spare
    (no inode allocated or freed), and only a new entity uses one up. A background thread
    refills the pool when it runs low, off the commit path. The files' content is never read;
    they are kept across restarts."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._str = str(folder)
        self._free: collections.deque[str] = collections.deque()
        self._seq = itertools.count(1)
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.created = 0

    def __len__(self) -> int:
        return len(self._free)

    def adopt(self) -> None:
        """Take over the spare files already in the folder (an earlier run's)."""
        self.folder.mkdir(exist_ok=True)
        self._free.clear()
        top = 0
        for entry in os.scandir(self._str):
            if not entry.is_file(follow_symlinks=False):
                continue
            if len(self._free) >= 2 * SPARES_HIGH:
                _unlink(entry.path)
                continue
            self._free.append(entry.path)
            stem = entry.name.partition(".")[0]
            if stem.isdigit():
                top = max(top, int(stem))
        self._seq = itertools.count(top + 1)

    def _new(self) -> tuple[str, int]:
        """A new spare file, open for writing."""
        for _ in range(100):
            path = f"{self._str}/{next(self._seq)}{_SPARE_SUFFIX}"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            except FileNotFoundError:
                self.folder.mkdir(exist_ok=True)  # removed behind our back
                continue
            self.created += 1
            return path, fd
        raise OSError(errno.EEXIST, "no free spare file name", self._str)

    def take(self) -> tuple[str, int]:
        """A spare file and a descriptor open for writing it."""
        free = self._free
        while free:
            try:
                path = free.pop()
            except IndexError:  # the last one was taken meanwhile
                break
            if len(free) < SPARES_LOW:
                self._wanted.set()
            try:
                return path, os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # removed or replaced behind our back
        self._wanted.set()
        return self._new()

    def give_back(self, path: str) -> None:
        """`path` (a spare holding content nobody needs) can be taken again."""
        if len(self._free) < 2 * SPARES_HIGH:
            self._free.append(path)
        else:
            _unlink(path)

    def start(self) -> None:
        """Keep the pool filled from a background thread."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._fill, name="maestro-spares",
                                            daemon=True)
            self._thread.start()
            self._wanted.set()

    def _fill(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            while len(self._free) < SPARES_HIGH and not self._stopping:
                try:
                    path, fd = self._new()
                except OSError as exc:
                    log.warning("could not make spare files in %s: %s", self._str, exc)
                    break
                os.close(fd)
                self._free.append(path)
            if self._stopping:
                return

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping = True
            self._wanted.set()
            self._thread.join()
            self._thread = None


# In a staged batch: this change's file could not be staged (see _stage_superseded).
_NOT_STAGED = "\0not staged"


class UnsafePathError(ValueError):
    """An id that cannot be used as a file name inside the data directory."""


class StagingError(OSError):
    """A record's files could not be staged; `ready` records before it were staged fine."""

    def __init__(self, ready: int, cause: Exception):
        super().__init__(str(cause))
        self.ready = ready
        self.cause = cause


class FileStore(Store):
    name = "files"

    def __init__(self, data_dir: Path, worker: bool = False):
        self.root = Path(data_dir)
        # worker=True: after loading, batches are written by a helper process (worker.py).
        self._use_worker = worker
        self._worker: StoreWorker | None = None
        self.projects_dir = self.root / "projects"
        self.tasks_dir = self.root / "tasks"
        self.sessions_dir = self.root / "sessions"
        self.journal_path = self.root / JOURNAL_NAME
        self.checkpoint_bytes = checkpoint_bytes_from_env()
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
        self._pid = os.getpid()
        self._tmp_seq = 0
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
        # Where changes are applied (here or in the store process): entities whose last
        # journaled change is a delta, so their file is behind the journal until a flush
        # writes their whole value (the journal is kept until then), with the time they fell
        # behind, oldest first.
        self._behind: dict[tuple[str, str], float] = {}
        self._journal_written = 0
        # In the server when the store process applies: entities sent as deltas since their
        # last flush: [number of the last message that did, when they fell behind], oldest
        # first.
        self._lagging: dict[tuple[str, str], list] = {}
        self._sent = 0
        self._flush_in_flight = False
        self.quarantined: list[dict] = []
        self.replayed_records = 0
        self.last_checkpoint: float | None = None

    # ----------------------------------------------------------------- opening
    def open(self) -> LoadResult:
        if self._lock_fd is None:
            self.take_lock()
        # The helper process boots (a Python start-up) while this one loads the files.
        booting = self._spawn_worker() if self._use_worker else None
        try:
            result = self._open()
        except BaseException:
            if booting is not None:
                booting.close()
            raise
        if booting is not None:
            if not self._unapplied and self._failed is None:
                self._start_worker(booting)
            else:
                booting.close()
        if self._worker is None:
            self.spares.start()
        return result

    def _open(self) -> LoadResult:
        if not self._layout_checked:
            self.check_layout()
        for folder in (self.projects_dir, self.tasks_dir, self.sessions_dir):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                self._dirty_dirs.add(self.root)
        self._remove_temp_files()
        self.spares.adopt()
        result = LoadResult()
        loaded_from: dict[tuple[str, str], list[str]] = {}
        projects = self._load_dir(self.projects_dir, "project", loaded_from)
        # Legacy location first, so a copy in a project folder wins a duplicate id.
        tasks = self._load_dir(self.tasks_dir, "task", loaded_from)
        for sub in sorted(p for p in self.tasks_dir.iterdir() if p.is_dir()):
            self._known_task_dirs.add(sub.name)
            tasks.update(self._load_dir(sub, "task", loaded_from))
        sessions = self._load_dir(self.sessions_dir, "session", loaded_from)
        state = {"project": projects, "task": tasks, "session": sessions}
        self._settle_misnamed(state, loaded_from)
        self._find_strays(state, loaded_from)
        self._replay_journal(state, result)
        result.projects = list(projects.values())
        result.tasks = list(tasks.values())
        result.sessions = list(sessions.values())
        result.quarantined = list(self.quarantined)
        self.checkpoint()
        return result

    # ----------------------------------------------------------------- helper process
    def _spawn_worker(self) -> StoreWorker | None:
        worker = StoreWorker(self.root)
        try:
            worker.spawn()
        except OSError as exc:
            log.warning("store process unavailable (%s); writing in-process", exc)
            worker.close()
            return None
        return worker

    def _start_worker(self, worker: StoreWorker) -> None:
        """Hand the write path to the helper process: it owns the journal from now on."""
        try:
            worker.init(self._stray_paths, self._known_task_dirs)
        except OSError as exc:
            log.warning("store process unavailable (%s); writing in-process", exc)
            worker.close()
            return
        os.close(self._journal_fd)
        self._journal_fd = None
        self._worker = worker

    @property
    def commits_whole_batches(self) -> bool:
        return self._worker is not None

    def send_batch(self, records: list[list[Op]]) -> asyncio.Future:
        """Send `records` to the helper process to stage, journal and apply; the future
        resolves to (k, why): the first k records are committed, the rest refused for `why`.
        Raises OSError (now or through the future) when nothing was committed. Several
        batches may be in flight: they are committed in order, and once one is refused or
        fails, the later ones are refused until `resume_async`."""
        worker = self._worker
        worker.attach_loop(asyncio.get_running_loop())
        # The journal lines are built here from each entity's cached JSON, so the helper
        # writes them as they are instead of encoding every entity again.
        sent = worker.request_async(batch_message(len(records)),
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
        result = asyncio.get_running_loop().create_future()

        def done(fut: asyncio.Future) -> None:
            if result.done():
                return
            try:
                reply = fut.result()
            except BaseException as exc:  # noqa: BLE001 - handed on to the committer
                result.set_exception(exc)
                return
            if "stats" in reply:
                worker.stats = reply["stats"]
            if not reply.get("ok"):
                result.set_exception(OSError(reply.get("error")
                                             or "the store process refused the batch"))
            else:
                result.set_result((int(reply["ready"]), reply.get("error")))

        sent.add_done_callback(done)
        return result

    async def resume_async(self) -> None:
        """After a refused or failed batch: accept the batches sent from now on."""
        reply = await self._worker.request_async(b'{"op":"resume"}')
        if "stats" in reply:
            self._worker.stats = reply["stats"]

    # ----------------------------------------------------------------- flushing
    def flush_keys(self) -> list[tuple[str, str]]:
        """Entities whose file is behind the journal (changed by deltas since it was last
        written): a flush writes their whole current value."""
        return list(self._lagging if self._worker is not None else self._behind)

    def wants_flush(self) -> bool:
        """A flush is due: the journal is long (it cannot be emptied while files are behind
        it) or a file has been behind for FLUSH_SECONDS."""
        if self._worker is not None:
            if not self._lagging or self._flush_in_flight:
                return False
            stats = self._worker.stats
            since = next(iter(self._lagging.values()))[1]
            journal = stats.get("journalBytes", 0)
            due = stats.get("checkpointAt", self.checkpoint_bytes)
        else:
            if not self._behind:
                return False
            since = next(iter(self._behind.values()))
            journal, due = self._journal_bytes, self._checkpoint_at
        return journal >= due or time.monotonic() - since >= FLUSH_SECONDS

    def flush(self, ops: list[Op], line: bytes | None = None) -> None:
        """Write the whole value of entities that are behind (`ops`, made from the current
        state; `line`: their journal line, when already encoded): journaled like any change,
        then put in place. Never refused for a file that cannot be written yet (it is then
        retried at checkpoints)."""
        if self._worker is not None:
            raise RuntimeError("flush through the store process with send_flush")
        if not ops:
            return
        self._prepare_flush(ops)
        self.write_batch([ops], None if line is None else [line])
        self.apply_batch([ops])

    def send_flush(self, ops: list[Op], keys: list[tuple[str, str]]) -> asyncio.Future:
        """`flush` through the store process, after every batch sent before; `keys` are the
        lagging entities `ops` were made for (those without an op no longer exist). The
        future resolves to True once written, False if the store process declined (an
        earlier batch was refused: the entities stay lagging)."""
        worker = self._worker
        worker.attach_loop(asyncio.get_running_loop())
        self._sent += 1
        sent_at = self._sent
        self._flush_in_flight = True
        lines = [encode_journal_line(ops)] if ops else []
        sent = worker.request_async(b'{"op":"flush","count":%d}' % len(lines), lines)
        result = asyncio.get_running_loop().create_future()

        def done(fut: asyncio.Future) -> None:
            self._flush_in_flight = False
            try:
                reply = fut.result()
            except BaseException as exc:  # noqa: BLE001 - handed on to the committer
                if not result.done():
                    result.set_exception(exc)
                return
            if "stats" in reply:
                worker.stats = reply["stats"]
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

    def _prepare_flush(self, ops: list[Op]) -> None:
        """Stage a flush: like prepare_batch, but a file that cannot be staged is left to the
        checkpoints instead of refusing (the value is committed state already)."""
        self._discard_prepared()
        self._checked_dirs.clear()
        self._staged_paths.clear()
        if self._failed is not None:
            raise OSError(f"storage is unavailable: {self._failed}")
        staged: dict[tuple[str, str], tuple[Op, str | None]] = {}
        for key, op in _latest([ops]).items():
            try:
                staged[key] = (op, self._stage(op) if _has_file_change(op) else None)
            except (OSError, ValueError) as exc:
                staged[key] = (op, _NOT_STAGED)
                log.error("could not stage %s %s: %s", op.kind, op.id, exc)
        self._prepared = staged

    async def maintenance_async(self) -> None:
        worker = self._worker
        if worker is None:
            await asyncio.to_thread(self.maintenance)
            return
        worker.attach_loop(asyncio.get_running_loop())
        reply = await worker.request_async(b'{"op":"maintenance"}')
        if "stats" in reply:
            worker.stats = reply["stats"]

    def detach_loop(self) -> None:
        if self._worker is not None:
            self._worker.detach_loop()

    def attach(self, strays: dict, known: set[str]) -> None:
        """In the helper process: take over a store the server has loaded."""
        self._stray_paths = strays
        self._known_task_dirs = known
        self._journal_fd = os.open(self.journal_path,
                                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        self._journal_bytes = os.fstat(self._journal_fd).st_size
        self.spares.adopt()
        self.spares.start()

    def take_lock(self) -> None:
        """Exclusive ownership of the data directory, or StoreLockedError at once
        (StoreUnusableError when the directory cannot be used)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StoreUnusableError(f"the data directory {self.root} is a file, not a "
                                     "folder; set DATA_DIR to a folder") from None
        except OSError as exc:
            raise StoreUnusableError(f"cannot create the data directory {self.root}: "
                                     f"{exc.strerror}") from None
        path = self.root / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise StoreUnusableError(link_message(str(path), "DATA_DIR")) from None
            why = unwritable(self.root) or exc.strerror
            raise StoreUnusableError(f"the data directory {self.root} is not usable ({why}); "
                                     "fix its permissions or set DATA_DIR to another folder"
                                     ) from None
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

    def check_layout(self) -> None:
        """Refuse (StoreUnusableError) a data directory with a symbolic link where the store
        reads or writes, or a folder of it the store cannot write (once, at start-up)."""
        self._layout_checked = True
        folders = ("projects", "tasks", "sessions")
        link = find_named_link(self.root, (JOURNAL_NAME, OLD_JOURNAL_NAME, SPARES_DIR,
                                           QUARANTINE_DIR, *folders)) \
            or find_link(self._projects_str, 1) or find_link(self._sessions_str, 1) \
            or find_link(self._tasks_str, 2) or find_link(str(self.spares_dir), 1)
        if link is not None:
            raise StoreUnusableError(link_message(link, "DATA_DIR"))
        try:
            task_dirs = [e.path for e in os.scandir(self._tasks_str) if e.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            task_dirs = []
        for folder in (self.root, *(self.root / name for name in (*folders, SPARES_DIR)),
                       *task_dirs):
            if os.path.isdir(folder):
                why = unwritable(Path(folder))
                if why is not None:
                    raise StoreUnusableError(f"cannot write in {folder} ({why}); fix its "
                                             "permissions or set DATA_DIR to another folder")

    def _remove_temp_files(self) -> None:
        """Temp files are staged changes that never reached their commit point (spare files
        are kept: their content is never read, see SparePool)."""
        for folder in [self.root, self.projects_dir, self.sessions_dir, self.tasks_dir,
                       *(p for p in self.tasks_dir.iterdir() if p.is_dir())]:
            for entry in folder.iterdir():
                if entry.name.startswith(".") and entry.name.endswith(_TMP_SUFFIX) \
                        and entry.is_file():
                    try:
                        entry.unlink()
                    except OSError:
                        pass

    def _load_dir(self, folder: Path, kind: str,
                  loaded_from: dict[tuple[str, str], list[str]]) -> dict[str, dict]:
        """Every `*.json` entity of one folder (plain strings and os calls: this runs once per
        file at start-up, where pathlib's per-call cost would dominate)."""
        out: dict[str, dict] = {}
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            return out
        loads = jsonio.loads
        for entry in entries:
            name = entry.name
            if not name.endswith(".json") or not entry.is_file():
                continue
            path = entry.path
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    # Entity files are small: one read usually gets all of it, no fstat needed.
                    data = os.read(fd, 65536)
                    if len(data) == 65536:
                        chunks = [data]
                        while chunk := os.read(fd, 1 << 20):
                            chunks.append(chunk)
                        data = b"".join(chunks)
                finally:
                    os.close(fd)
                value = loads(data)
                if not isinstance(value, dict) or not isinstance(value.get("id"), str) \
                        or not value["id"]:
                    raise ValueError("not a JSON object with a string id")
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                self._quarantine(Path(path), str(exc))
                continue
            if name[:-5] != value["id"]:
                self._misnamed.append((kind, path, value))  # decided once all are loaded
                continue
            out[value["id"]] = value
            loaded_from.setdefault((kind, value["id"]), []).append(path)
        return out

    def _settle_misnamed(self, state: dict[str, dict],
                         loaded_from: dict[tuple[str, str], list[str]]) -> None:
        """A file whose entity id is not its name. When that entity has a file of its own, the
        copy is moved to quarantine, never loaded over it: after a power loss a file written
        in place of another can hold the earlier content of the spare it was staged in (a
        complete old version of some other entity), while its own change is in the journal.
        Otherwise it is that entity's only file: loaded, and moved to the entity's own path
        at its next write."""
        misnamed, self._misnamed = self._misnamed, []
        for kind, path, value in misnamed:
            eid = value["id"]
            # Spares are shared by all kinds: the copy may be of a project or session too.
            owner = next((k for k in KINDS if any(
                p.rpartition("/")[2] == f"{eid}.json" for p in loaded_from.get((k, eid), ()))),
                None)
            if owner is not None:
                self._quarantine(Path(path), f"holds {owner} {eid}, whose own file exists")
                continue
            state[kind][eid] = value
            loaded_from.setdefault((kind, eid), []).append(path)

    def _find_strays(self, state: dict[str, dict],
                     loaded_from: dict[tuple[str, str], list[str]]) -> None:
        root = str(self.root)
        folders = {"project": f"{root}/projects/", "session": f"{root}/sessions/"}
        tasks = f"{root}/tasks/"
        for (kind, eid), paths in loaded_from.items():
            if len(paths) == 1:
                # The usual case, compared as strings: is the one file where it belongs?
                if kind == "task":
                    pid = state[kind][eid].get("projectId")
                    own = f"{tasks}{pid}/{eid}.json" if isinstance(pid, str) else None
                else:
                    own = f"{folders[kind]}{eid}.json"
                if paths[0] == own and is_safe_file_component(eid) \
                        and (kind != "task" or is_safe_file_component(pid)):
                    continue
            own_path = self._own_path(kind, eid, state[kind][eid], None)
            strays = set(paths) - {own_path}
            if strays:
                self._stray_paths[(kind, eid)] = strays

    def _quarantine(self, path: Path, reason: str) -> None:
        qdir = self.root / QUARANTINE_DIR
        qdir.mkdir(exist_ok=True)
        rel = path.relative_to(self.root).as_posix().replace("/", "__")
        target = qdir / f"{rel}.{int(time.time() * 1000)}"
        try:
            os.replace(path, target)
            moved = str(target)
            self._dirty_dirs.update((qdir, path.parent, self.root))
        except OSError as exc:
            moved = f"(could not move: {exc})"
        entry = {"file": str(path.relative_to(self.root)), "movedTo": moved, "reason": reason}
        self.quarantined.append(entry)
        log.error("entity file %s moved to %s: %s", path, moved, reason)

    def _replay_journal(self, state: dict[str, dict], result: LoadResult) -> None:
        """Apply every complete record of the journal to `state` and to the files, then open
        the journal for appending."""
        valid: list[bytes] = []
        records: list[list[Op]] = []
        bad_records = bad_bytes = orphans = 0
        raw = b""
        # A journal whose background checkpoint a crash interrupted comes first.
        for path in (self.old_journal_path, self.journal_path):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raw = b""
            pos = 0
            while pos < len(raw):
                nl = raw.find(b"\n", pos)
                end = len(raw) if nl < 0 else nl + 1
                line = raw[pos:end]
                pos = end
                ops = _decode_line(line[:-1]) if nl >= 0 else None
                if ops is None:
                    bad_records += 1
                    bad_bytes += len(line)
                    continue
                valid.append(line)
                records.append(ops)
                for op in ops:
                    if op.delta is not None:
                        base = state[op.kind].get(op.id)
                        if base is None:
                            orphans += 1
                            continue
                        apply_delta(base, op.delta)  # in place: nothing else holds it yet
                    elif op.value is None:
                        state[op.kind].pop(op.id, None)
                    else:
                        state[op.kind][op.id] = op.value
        if self.old_journal_path.exists():
            # Its records are in memory and written to the files below; from here on they
            # live in `journal` until the next checkpoint.
            self._rewrite_journal(b"".join(valid))
            _unlink(self.old_journal_path)
            raw = b"".join(valid)
        if bad_records:
            # Expected only as a torn tail: a write a crash interrupted, never acknowledged.
            result.notes.append(f"journal: ignored {bad_records} incomplete or corrupt "
                                f"record(s) ({bad_bytes} bytes)")
            log.warning("journal: ignored %d incomplete or corrupt record(s) (%d bytes); such "
                        "a record was never acknowledged", bad_records, bad_bytes)
        if orphans:
            # Never expected: a delta is journaled only after its entity's file or whole
            # value, both kept until the delta reaches a file.
            result.notes.append(f"journal: skipped {orphans} change(s) to entities that "
                                "were not found")
            log.error("journal: skipped %d change(s) to entities that were not found", orphans)
        if valid:
            log.info("journal: replaying %d record(s) left by an unclean shutdown", len(valid))
            result.notes.append(f"journal: replayed {len(valid)} record(s)")
            for (kind, eid), op in _latest(records).items():
                if op.delta is not None:  # the file gets the value the deltas built
                    value = state[kind].get(eid)
                    if value is None:
                        continue
                    op = Op(kind, eid, value, None, op.project_id)
                self._write_now(op)
        self.replayed_records = len(valid)
        if bad_records and self._unapplied:
            # This journal outlives the start-up: keep only its valid records, so that new
            # records are never appended behind garbage.
            self._rewrite_journal(b"".join(valid))
        existed = bool(raw) or self.journal_path.exists()
        self._journal_fd = os.open(self.journal_path,
                                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        if not existed:
            self._dirty_dirs.add(self.root)  # the journal's own directory entry
        self._journal_bytes = os.fstat(self._journal_fd).st_size

    def _rewrite_journal(self, data: bytes) -> None:
        tmp = self.root / f".{JOURNAL_NAME}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.journal_path)
        _fsync_path(self.root, directory=True)

    # ----------------------------------------------------------------- writing
    def prepare_batch(self, records: list[list[Op]]) -> None:
        """Stage the files of `records` (event-loop thread, before the commit point).

        Raises StagingError(ready=k) when record k cannot be staged: records before it are
        staged and may be committed, it and every later record must be refused."""
        self._discard_prepared()
        self._checked_dirs.clear()
        self._staged_paths.clear()
        if self._failed is not None:
            raise StagingError(0, OSError(f"storage is unavailable: {self._failed}"))
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
                for key, op in _latest([record]).items():
                    if last[key] == index:
                        fresh[key] = (op, self._stage(op) if _has_file_change(op) else None)
            except (OSError, ValueError) as exc:
                for _, tmp in fresh.values():
                    if tmp is not None:
                        self.spares.give_back(tmp)
                log.error("could not stage a change of %d entit(ies): %s", len(record), exc)
                self._prepared = staged
                self._stage_superseded(records[:index])
                raise StagingError(index, exc) from exc
            staged.update(fresh)
        self._prepared = staged

    def _stage_superseded(self, committed: list[list[Op]]) -> None:
        """After record k was refused, records before k still commit: stage their changes that
        a refused record would have superseded (and so were not staged yet)."""
        staged = self._prepared
        for key, op in _latest(committed).items():
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
                         (_encode_record(record) for record in records))
        start = self._journal_bytes
        try:
            _write_all(self._journal_fd, lines)
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
            for op in _latest(records).values():
                self._write_now(op)
            return
        for op, tmp in prepared.values():
            self._apply(op, tmp)

    def wants_maintenance(self) -> bool:
        return self._journal_bytes >= self._checkpoint_at

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
            _unlink(spare)
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
                    _unlink(path)
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
                    _unlink(stray)
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
        swapped = _exchange(staged, path) if self._can_exchange else None
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

    # ----------------------------------------------------------------- checkpoint
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
            _unlink(self.old_journal_path)
            _fsync_path(self.root, directory=True)
        if self._journal_fd is not None and self._journal_bytes:
            os.ftruncate(self._journal_fd, 0)
            os.fsync(self._journal_fd)
        self._journal_bytes = 0
        self._checkpoint_at = self.checkpoint_bytes
        self.replayed_records = 0
        self.last_checkpoint = time.time()

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
            _fsync_path(self.root, directory=True)  # both names, before anything is appended
        except BaseException:
            # Put the journal back under its name: records keep going to the file that
            # start-up replays (never to a name that a later checkpoint deletes).
            if fd is not None:
                os.close(fd)
            try:
                os.replace(self.old_journal_path, self.journal_path)
                _fsync_path(self.root, directory=True)
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
            _unlink(self.old_journal_path)
            self.replayed_records = 0
            self.last_checkpoint = time.time()
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
                synced = _syncfs(fd)
            finally:
                os.close(fd)
            if not synced:
                break
        if synced:
            return
        for path in files:
            _fsync_path(path)
        for folder in dirs:
            _fsync_path(folder, directory=True)

    def maintenance(self) -> None:
        if self._worker is not None:
            self._worker.request(b'{"op":"maintenance"}')
            return
        if self._journal_bytes or self._unapplied or self._dirty_dirs or self._dirty_files:
            self.checkpoint()

    def close(self) -> None:
        if self._worker is not None:
            try:
                self._worker.close()  # it checkpoints and closes the journal
            finally:
                self._worker = None
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

    def health(self) -> dict[str, Any]:
        if self._worker is not None:
            stats = self._worker.stats
            return {"backend": self.name, "dataDir": str(self.root),
                    "journalBytes": stats.get("journalBytes", 0),
                    "journalWritten": stats.get("journalWritten", 0),
                    "filesBehind": stats.get("behind", 0),
                    "unappliedChanges": stats.get("unapplied", 0),
                    "spareFiles": stats.get("spares", 0),
                    "writable": self._worker.dead is None and not stats.get("failed"),
                    "writer": "process", "quarantined": list(self.quarantined)}
        return {
            "backend": self.name,
            "dataDir": str(self.root),
            "journalBytes": self._journal_bytes,
            "journalWritten": self._journal_written,
            "filesBehind": len(self._behind),
            "unappliedChanges": len(self._unapplied),
            "spareFiles": len(self.spares),
            "writable": self._failed is None,
            "writer": "in-process",
            "quarantined": list(self.quarantined),
        }


def encode_journal_line(record: list[Op]) -> bytes:
    """One record as its checksummed journal line."""
    return _encode_record(record)


def _encode_record(record: list[Op]) -> bytes:
    parts = []
    for op in record:
        head = b'{"k":"' + op.kind.encode() + b'","id":' + jsonio.dumps(op.id) \
            + b',"p":' + jsonio.dumps(op.project_id)
        if op.delta is not None:  # the entity's previous version + this change
            parts.append(head + b',"d":' + jsonio.dumps(op.delta) + b"}")
            continue
        value = b"null" if op.value is None else (op.encoded or jsonio.dumps(op.value))
        parts.append(head + b',"v":' + value + (b',"n":1}' if op.new else b"}"))
    body = b"[" + b",".join(parts) + b"]"
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def decode_journal_line(line: bytes) -> list[Op] | None:
    """The ops of one journal line as the server sends it (with its newline)."""
    return _decode_line(line[:-1]) if line.endswith(b"\n") else None


def _decode_line(line: bytes) -> list[Op] | None:
    """The ops of one journal line, or None for a line that is torn, corrupt or malformed."""
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
    ops = []
    for item in record:
        if not isinstance(item, dict) or item.get("k") not in KINDS \
                or not isinstance(item.get("id"), str):
            return None
        value, project_id, delta = item.get("v"), item.get("p"), item.get("d")
        if (value is not None and not isinstance(value, dict)) \
                or (project_id is not None and not isinstance(project_id, str)):
            return None
        if delta is not None:
            if value is not None or not _is_delta(delta):
                return None
            ops.append(Op(item["k"], item["id"], None, None, project_id, delta=delta))
            continue
        ops.append(Op(item["k"], item["id"], value, None, project_id, item.get("n") == 1))
    return ops


def _is_delta(delta) -> bool:
    """A well-formed `"d"` of a journal op: {"set": {...}, "push": {field: [index, [...]]}}."""
    if not isinstance(delta, dict) or set(delta) - {"set", "push"}:
        return False
    if not isinstance(delta.get("set", {}), dict):
        return False
    pushed = delta.get("push", {})
    if not isinstance(pushed, dict):
        return False
    for entry in pushed.values():
        if not (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int
                and entry[0] >= 0 and isinstance(entry[1], list)):
            return False
    return True
