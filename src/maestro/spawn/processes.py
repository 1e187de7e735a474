"""Small process and file helpers of the launcher: liveness of a recorded pid, the per-session
record files, and reading the tail of an agent's output log as clean text lines."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .wrapper import process_start_time, write_json_atomic

RECORD_FILE = "launch.json"
PROCESS_FILE = "process.json"
EXIT_FILE = "exit.json"
LOG_FILE = "output.log"
ENV_FILE = ".agent-env.json"

_HAS_PROC = Path("/proc/self/stat").exists()
# CSI and OSC sequences, other two-byte escapes, then stray control characters (not tab).
_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_TAIL_BYTES = 8 * 1024 * 1024
MAX_READ_BYTES = 256 * 1024


def _proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rfind(b")") + 2:]
    return rest[:1].decode(errors="replace")


def pid_alive(pid, start_time=None) -> bool:
    """True if `pid` runs and, when `start_time` is known, is the same process as recorded (a
    pid can be reused after a reboot or a long time). Zombies count as gone."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    if _HAS_PROC:
        state = _proc_state(pid)
        if state is None or state in ("Z", "X"):
            return False
        return not (isinstance(start_time, int) and process_start_time(pid) != start_time)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def save_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_json_atomic(path, value)


def write_private_json(path: Path, value: dict) -> None:
    """A file only the owner can read (it may hold the server's token for the agent)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(value, fh)


def clean_line(raw: bytes) -> str:
    """One line of terminal output as plain text: escape sequences removed, and of a line
    redrawn with carriage returns only what a terminal would finally show."""
    text = _ANSI.sub(b"", raw).decode("utf-8", errors="replace")
    if "\r" in text:
        parts = [p for p in text.split("\r") if p]
        text = parts[-1] if parts else ""
    return _CONTROL.sub("", text)


def tail_lines(path: Path, count: int) -> tuple[list[str], bool]:
    """The last `count` lines of `path` and whether earlier lines exist."""
    lines, truncated, _ = tail_lines_at(path, count)
    return lines, truncated


def tail_lines_at(path: Path, count: int) -> tuple[list[str], bool, int]:
    """`tail_lines`, plus the byte offset the lines end at (where following the file goes on
    from)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        position = end
        chunks: list[bytes] = []
        newlines = 0
        while position > 0 and newlines <= count and end - position < MAX_TAIL_BYTES:
            step = min(65536, position)
            position -= step
            fh.seek(position)
            chunk = fh.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    if data.endswith(b"\n"):
        data = data[:-1]
    if not data and position == 0:
        return [], False, end
    raw_lines = data.split(b"\n")
    truncated = position > 0 or len(raw_lines) > count
    if position > 0:
        raw_lines = raw_lines[1:]  # the first piece may be the end of a longer line
    return [clean_line(line) for line in raw_lines[-count:]], truncated, end


def lines_from(path: Path, offset: int, finished: bool,
               limit: int = MAX_READ_BYTES) -> tuple[list[str], int, int]:
    """The whole lines written to `path` from byte `offset` on (at most about `limit` bytes),
    the offset after them, and the file's size. A last line without its newline waits for it,
    unless the writer has `finished`. An offset past the end (the file was replaced) starts
    again from 0."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if offset > size:
            offset = 0
        fh.seek(offset)
        data = fh.read(min(limit, size - offset))
    if not data:
        return [], offset, size
    cut = data.rfind(b"\n")
    if cut < 0 and not (finished and offset + len(data) == size):
        if len(data) < limit:
            return [], offset, size  # a line still being written
        cut = len(data) - 1  # a line longer than the limit: hand it over in pieces
    body = data if cut < 0 or (finished and offset + len(data) == size) else data[:cut + 1]
    text = body[:-1] if body.endswith(b"\n") else body
    return [clean_line(line) for line in text.split(b"\n")], offset + len(body), size


def last_output_line(path: Path) -> str | None:
    """The last non-empty line an agent printed (why it failed, most of the time)."""
    try:
        lines, _ = tail_lines(path, 20)
    except OSError:
        return None
    for line in reversed(lines):
        if line.strip():
            return line.strip()[:500]
    return None
