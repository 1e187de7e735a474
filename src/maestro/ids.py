"""Identifiers: `<prefix>_<ms since epoch>_<9 chars [0-9a-z]>` (SPEC §3.1), and the rules for
ids that clients choose or that end up in file names. Ids made in the same millisecond sort
in the order they were made."""

from __future__ import annotations

import os
import re
import threading
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_ID_LENGTH = 128


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# Random bytes from the OS CSPRNG, 4 KiB per system call: the four values above 251 are
# dropped (252 = 7 * 36, so every digit stays equally likely) and the rest mapped to digits.
_DIGIT_OF = bytes(ord(_ALPHABET[i % 36]) for i in range(256))
_UNEVEN = bytes(range(252, 256))
_digits = b""
_taken = 0


def _forget_digits() -> None:
    global _digits, _taken, _lock
    _digits, _taken = b"", 0
    _last.clear()
    _lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_forget_digits)  # a child never repeats the parent's ids


def _random_base36(count: int = 9) -> str:
    global _digits, _taken
    if _taken + count > len(_digits):
        _digits, _taken = os.urandom(4096).translate(_DIGIT_OF, _UNEVEN), 0
    start = _taken
    _taken += count
    return _digits[start:_taken].decode()


_SPACE = 36 ** 9
_lock = threading.Lock()
# The last value handed out in each of the most recent milliseconds ids were made for (callers
# pass timestamps of their own, e.g. one bumped past an entity's last update, so ids for
# another millisecond may come in between two of the same one).
_last: dict[int, int] = {}
_REMEMBERED_MS = 64


def _base36(value: int) -> str:
    digits = []
    for _ in range(9):
        value, digit = divmod(value, 36)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def make_id(prefix: str, ms: int | None = None) -> str:
    """The first id of a millisecond ends in 9 uniformly random base-36 digits (46.5 bits from
    the OS CSPRNG); each later id of the same millisecond is the one before plus one, so ids of
    one millisecond sort in the order they were made (lists break createdAt ties by id)."""
    if ms is None:
        ms = now_ms()
    with _lock:
        value = _last.get(ms)
        if value is not None and value + 1 < _SPACE:
            value += 1
            suffix = _base36(value)
        else:
            suffix = _random_base36()
            value = int(suffix, 36)
            if len(_last) >= _REMEMBERED_MS:
                del _last[next(iter(_last))]  # the millisecond remembered longest
        _last[ms] = value
    return f"{prefix}_{ms}_{suffix}"


def is_valid_client_id(value: str) -> bool:
    return bool(CLIENT_ID_RE.match(value))


_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")


def is_safe_file_component(value: str) -> bool:
    """True when `value` can be used as one path component inside a data folder.

    Ids read from disk are opaque (never rejected for their shape), but nothing may be written
    outside the data directory, so separators, NUL, dot-names and control characters are refused
    here, at the last moment before a path is built."""
    if _PLAIN_ID.match(value):  # every id Maestro makes, and most clients choose
        return True
    if not value or len(value) > 255 or value in (".", ".."):
        return False
    return not any(c in value for c in "/\\\x00") and value.isprintable()
