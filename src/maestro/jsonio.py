"""JSON encoding in the two shapes Maestro writes: compact for the wire, 2-space pretty for files
(the original's `JSON.stringify(x, null, 2)`: literal non-ASCII, key order kept, no final newline)."""

from __future__ import annotations

import json
from typing import Any

import orjson

_PRETTY = orjson.OPT_INDENT_2
_COMPACT_FALLBACK = {"ensure_ascii": False, "separators": (",", ":")}


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits kept verbatim from a foreign file
        return json.dumps(value, **_COMPACT_FALLBACK).encode()


def dumps_pretty(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=_PRETTY)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, indent=2).encode()


# Digits become "0", everything else a space: 19 zeros in a row mean a number orjson may not
# hold exactly (translate + find run at memory speed; a regex would cost more than the parse).
_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_LONG_RUN = b"0" * 19


def loads(data: bytes | str) -> Any:
    """Parse JSON; raises ValueError on malformed or too deeply nested input.

    orjson turns integers beyond 64 bits into floats; a document with such a long digit run
    goes through the standard parser instead, so foreign values survive verbatim."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(str(exc)) from None
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_RUN in raw.translate(_DIGITS):
        # orjson accepted it, so it is strict JSON; the standard parser keeps big ints exact.
        try:
            return json.loads(raw)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
    return value
