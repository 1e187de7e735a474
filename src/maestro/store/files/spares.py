"""The spare-file pool: blank files kept ready in DATA_DIR/.spares/ for staging entity files,
refilled by a thread of its own."""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import threading
from pathlib import Path

from .syscalls import unlink

log = logging.getLogger("maestro.store")

SPARE_SUFFIX = ".spare"
SPARES_DIR = ".spares"
# Blank files kept ready in .spares/ (see SparePool): refilled to HIGH when below LOW.
SPARES_LOW = 256
SPARES_HIGH = 1024


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
                unlink(entry.path)
                continue
            self._free.append(entry.path)
            stem = entry.name.partition(".")[0]
            if stem.isdigit():
                top = max(top, int(stem))
        self._seq = itertools.count(top + 1)

    def _new(self) -> tuple[str, int]:
        """A new spare file, open for writing."""
        for _ in range(100):
            path = f"{self._str}/{next(self._seq)}{SPARE_SUFFIX}"
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
            unlink(path)

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


