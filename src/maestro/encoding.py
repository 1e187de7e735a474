"""Compact JSON of big entities kept in parts, so that a new version costs what changed.

An entity of BIG_ENTITY_BYTES or more (a session with thousands of events, a task with a long
timeline) is held as a `Spliced` encoding: the compact JSON of each top-level field, and for
long lists their entries in blocks. A new version derived from an old one reuses every part
whose value is the very same object, encodes the fields that changed, and for a list that only
grew (see `Growth`) encodes just the new entries. The bytes of the whole entity are joined only
when something needs them (an answer, a WebSocket event) and are byte for byte what
`jsonio.dumps` gives: orjson's compact output is a plain concatenation of its parts."""

from __future__ import annotations

from typing import Any

from . import jsonio

# Entities whose compact JSON is at least this large are encoded by parts (and their changes
# journaled as deltas by the file store, see store/files/).
BIG_ENTITY_BYTES = 16 << 10
# Lists with at least this many entries are kept as blocks of entries.
LIST_PARTS_MIN = 16
# New entries are kept one by one until this many, then joined into one block.
TAIL_MAX = 32

_KEYS: dict[str, bytes] = {}


def _key(name: str) -> bytes:
    """`"name":` as compact JSON (a few distinct field names, cached)."""
    encoded = _KEYS.get(name)
    if encoded is None:
        encoded = jsonio.dumps(name) + b":"
        if len(_KEYS) < 4096:
            _KEYS[name] = encoded
    return encoded


class Growth:
    """Which lists of a transaction were made by appending to another one: new list ->
    the list it extends. Lets an encoding (and the journal) describe an append by its new
    entries instead of the whole list. Keyed by object identity; the lists are kept alive
    here so that an identity is never reused while the record exists."""

    __slots__ = ("_made",)

    def __init__(self) -> None:
        self._made: dict[int, tuple[list, Any]] = {}

    def extend(self, old: Any, entries: list) -> list:
        """`old` (a list, or anything else counted as empty) followed by `entries`, as a new
        list remembered as an extension of `old`."""
        new = (old if isinstance(old, list) else []) + entries
        self._made[id(new)] = (new, old)
        return new

    def base_length(self, new: Any, old: Any) -> int | None:
        """If `new` was made from `old` by appends only (one or several), the length of `old`
        (the index of the first new entry); else None."""
        current = new
        while current is not old:
            hit = self._made.get(id(current))
            if hit is None or hit[0] is not current:
                return None
            current = hit[1]
        return len(old) if isinstance(old, list) else None

    def __bool__(self) -> bool:
        return bool(self._made)


class ListParts:
    """The entries of a long list as compact JSON: blocks (runs of entries joined by commas)
    then a tail of single entries, all joined by commas. Never changed once made (versions
    share it, and a store thread may join it while the event loop derives the next)."""

    __slots__ = ("_pieces", "count", "inner")

    def __init__(self, blocks: tuple, tail: tuple, count: int, inner: int):
        self._pieces = (blocks, tail)
        self.count = count
        self.inner = inner  # length of the JSON between the brackets

    @classmethod
    def of(cls, encoded_list: bytes, count: int) -> ListParts:
        inner = encoded_list[1:-1]
        return cls((inner,) if count else (), (), count, len(inner))

    @property
    def size(self) -> int:
        """Length of the list's JSON, brackets included."""
        return self.inner + 2

    def extend(self, entries: list[bytes]) -> ListParts:
        """A new ListParts with `entries` (encoded) appended; this one is unchanged."""
        blocks, tail = self._pieces
        inner = self.inner + sum(map(len, entries)) + len(entries) - (0 if self.count else 1)
        tail = tail + tuple(entries)
        if len(tail) >= TAIL_MAX:
            block = b",".join(tail)
            tail = ()
            # Merge with the blocks before while they are not much larger: there are only
            # logarithmically many blocks, and each byte is copied a few times at most.
            while blocks and len(blocks[-1]) <= 2 * len(block):
                block = b",".join((blocks[-1], block))
                blocks = blocks[:-1]
            blocks = blocks + (block,)
        return ListParts(blocks, tail, self.count + len(entries), inner)

    def pieces(self, out: list) -> None:
        """Append the pieces of the list's JSON (brackets included) to `out`."""
        blocks, tail = self._pieces
        out.append(b"[")
        first = True
        for piece in blocks:
            if not first:
                out.append(b",")
            out.append(piece)
            first = False
        for piece in tail:
            if not first:
                out.append(b",")
            out.append(piece)
            first = False
        out.append(b"]")


def _encode_value(value: Any) -> bytes | ListParts:
    encoded = jsonio.dumps(value)
    if isinstance(value, list) and len(value) >= LIST_PARTS_MIN:
        return ListParts.of(encoded, len(value))
    return encoded


def _size(part: bytes | ListParts) -> int:
    return len(part) if isinstance(part, bytes) else part.size


class Spliced:
    """The compact JSON of one entity version as one part per top-level field."""

    __slots__ = ("parts", "size", "_joined", "_current")

    def __init__(self, parts: dict[str, bytes | ListParts]):
        self.parts = parts
        # braces, the commas between fields and each `"key":`
        self.size = 2 + max(len(parts) - 1, 0) + sum(len(_key(k)) + _size(p)
                                                    for k, p in parts.items())
        self._joined: bytes | None = None
        self._current = True

    @classmethod
    def of(cls, entity: dict) -> Spliced:
        """Encode `entity` field by field (once; later versions are derived)."""
        return cls({k: _encode_value(v) for k, v in entity.items()})

    def derive(self, old: dict, new: dict, growth: Growth | None) -> Spliced:
        """The encoding of `new`, a version made from `old` (whose encoding this is)."""
        parts: dict[str, bytes | ListParts] = {}
        mine = self.parts
        missing = object()
        for key, value in new.items():
            before = old.get(key, missing)
            part = mine.get(key)
            if part is not None and value is before:
                parts[key] = part
                continue
            if growth and isinstance(part, ListParts) and isinstance(value, list):
                start = growth.base_length(value, before)
                if start is not None and start == part.count:
                    parts[key] = part.extend([jsonio.dumps(e) for e in value[start:]])
                    continue
            parts[key] = _encode_value(value)
        return Spliced(parts)

    def join(self, keep: bool = True) -> bytes:
        """The whole compact JSON, kept (for the current version) unless `keep` is False.
        The parts are kept too: the next version is derived from them."""
        joined = self._joined
        if joined is not None:
            return joined
        pieces: list = [b"{"]
        first = True
        for key, part in self.parts.items():
            if not first:
                pieces.append(b",")
            first = False
            pieces.append(_key(key))
            if isinstance(part, ListParts):
                part.pieces(pieces)
            else:
                pieces.append(part)
        pieces.append(b"}")
        joined = b"".join(pieces)
        if keep and self._current:
            self._joined = joined
        return joined

    def retire(self) -> None:
        """This version is no longer the current one: drop the joined whole and keep none
        from now on (only its parts, shared with the current version, stay)."""
        self._joined = None
        self._current = False

    def revive(self) -> None:
        """This version is the current one again (an undo put it back)."""
        self._current = True


def encoded_bytes(encoding: bytes | Spliced) -> bytes:
    """The bytes of an encoding, joined if it is spliced."""
    return encoding.join() if isinstance(encoding, Spliced) else encoding
