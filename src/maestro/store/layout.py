"""Start-up checks of a folder the server owns (DATA_DIR, SESSION_DIR): no symbolic links
below it, and writable.

The server creates and replaces files below these folders by name. A symbolic link planted
there would make it read, write or truncate the link's target instead (anything the server's
user may write), so a link anywhere the server reads or writes stops the start-up, naming it.
The folder itself may be a link (a data directory kept on another disk). Checked once at
start-up, with the folder listings the kernel gives anyway (no `stat` per file), so the write
path pays nothing for it."""

from __future__ import annotations

import os
from pathlib import Path


def find_link(folder: str, depth: int) -> str | None:
    """The first symbolic link among the entries of `folder` and, for depth > 1, of its
    sub-folders down to `depth` levels; None when there is none (or no such folder)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None
    for entry in entries:
        if entry.is_symlink():
            return entry.path
    if depth > 1:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                found = find_link(entry.path, depth - 1)
                if found is not None:
                    return found
    return None


def find_named_link(root: Path, names: tuple[str, ...]) -> str | None:
    """The first of `root`/name that is a symbolic link."""
    for name in names:
        path = root / name
        if path.is_symlink():
            return str(path)
    return None


def link_message(path: str, setting: str) -> str:
    return (f"refusing to start: {path} is a symbolic link, and Maestro never follows links "
            f"inside {setting} (they could make it write elsewhere); replace it with the real "
            "file or folder, or remove it")


def unwritable(folder: Path) -> str | None:
    """Why the server cannot create files in `folder`, or None when it can."""
    try:
        if os.access(folder, os.W_OK | os.X_OK):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "it is on a read-only file system" if read_only else "permission denied"
