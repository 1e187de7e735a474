"""The system calls of the file store that Python's os module lacks or that need care: syncfs,
an atomic exchange of two paths (renameat2), fsync of a path that may vanish, unlink of a file
that may be gone, and a write that writes everything."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

_libc = None
_renameat2 = None


def syncfs(fd: int) -> bool:
    """Flush the whole file system holding `fd` (one call instead of one fsync per file)."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return _libc.syncfs(fd) == 0
    except (OSError, AttributeError):
        return False


def fsync_path(path: Path, directory: bool = False) -> None:
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


def unlink(path: Path | str) -> None:
    """Remove a file; one that is already gone (or whose folder is not one) is not an error."""
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        pass


def exchange(a: str, b: str) -> bool | None:
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



def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a pipe or file may take less per call)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
