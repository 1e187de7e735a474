"""Opening the data directory: ownership (a lock file), the start-up checks of its layout,
loading every entity file (with the original's legacy task location, misnamed copies and
strays), and quarantine of files that cannot be loaded."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import time
from pathlib import Path

from ... import jsonio
from ...ids import is_safe_file_component
from ..base import KINDS, LoadResult, StoreLockedError, StoreUnusableError
from ..layout import find_link, find_named_link, link_message, unwritable
from .journal import JOURNAL_NAME, OLD_JOURNAL_NAME, TMP_SUFFIX
from .spares import SPARES_DIR

log = logging.getLogger("maestro.store")

LOCK_NAME = ".maestro.lock"
QUARANTINE_DIR = "quarantine"


class Loading:
    """Part of FileStore: taking the data directory and loading it."""

    def _load(self) -> LoadResult:
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
                if entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX) \
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

