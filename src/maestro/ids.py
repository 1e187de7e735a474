"""Identifiers: `<prefix>_<ms since epoch>_<9 chars [0-9a-z]>` (SPEC §3.1), and the rules for
ids that clients choose or that end up in file names."""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_ID_LENGTH = 128


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _base36(n: int) -> str:
    out = []
    for _ in range(9):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(out)


_random = bytearray()


def _random_u64() -> int:
    """8 bytes from the OS CSPRNG, read 4 KiB at a time (one system call per 512 ids)."""
    global _random
    if len(_random) < 8:
        _random = bytearray(os.urandom(4096))
    value = int.from_bytes(_random[-8:], "big")
    del _random[-8:]
    return value


os.register_at_fork(after_in_child=_random.clear)


def make_id(prefix: str, ms: int | None = None) -> str:
    # 8 random bytes (64 bits) reduced to 9 base-36 digits (46.5 bits), from the OS CSPRNG.
    return f"{prefix}_{now_ms() if ms is None else ms}_{_base36(_random_u64())}"


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
