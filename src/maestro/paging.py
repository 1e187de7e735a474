"""Pages of lists: `?limit=N&cursor=C` on every list (projects, tasks, sessions, children, ready
and blocked work).

A cursor is the order key of the last item a page gave (creation order: `(createdAt, id)`, or
`startedAt` for sessions; ready and blocked work: `(priority rank, createdAt, id)`), as opaque
base64url of a small JSON array. A page is "the first `limit` items whose key is greater than
the cursor's", so a cursor stays meaningful while items are inserted or deleted: an item present
all along is never skipped nor given twice. Lists are walked from the cursor with a binary
search over keys kept sorted, so a page costs in proportion to its size, not to the list."""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import jsonio
from .errors import validation

MAX_LIMIT = 1000
MAX_CURSOR_LENGTH = 1024

# Which order a cursor is a position in; a cursor of one order is refused by a list of another.
CREATION = "c"
PRIORITY = "p"
_KEY_LENGTH = {CREATION: 2, PRIORITY: 3}


@dataclass(frozen=True, slots=True)
class PageRequest:
    """`limit` items after `after` (None: from the start), in the order named by `order`."""

    limit: int
    after: tuple | None
    order: str


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def encode_cursor(order: str, key: tuple) -> str:
    """The opaque cursor of an order key."""
    raw = jsonio.dumps([order, *key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(order: str, cursor: str) -> tuple:
    """The order key inside a cursor made by `encode_cursor` for the same order; anything else
    is a 400 VALIDATION_ERROR."""
    bad = validation("cursor is not valid for this list; start again without it",
                     {"field": "cursor"})
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = jsonio.loads(raw)
    except (ValueError, binascii.Error):
        raise bad from None
    if not isinstance(value, list) or len(value) != _KEY_LENGTH[order] + 1 \
            or value[0] != order:
        raise bad
    key = tuple(value[1:])
    if not isinstance(key[-1], str) or not all(_number(part) for part in key[:-1]):
        raise bad
    if order == PRIORITY and not isinstance(key[0], int):
        raise bad
    return key


def page_request(limit: str | None, cursor: str | None, order: str) -> PageRequest | None:
    """The page asked for by the `limit` and `cursor` query values (None: the whole list, as
    without paging). `limit` must be a whole number from 1 to 1000; a cursor needs a limit."""
    if limit is None:
        if cursor is not None:
            raise validation("limit is required with cursor", {"field": "limit"})
        return None
    if not (limit.isascii() and limit.isdigit()) or not 1 <= int(limit) <= MAX_LIMIT:
        raise validation(f"limit must be a whole number from 1 to {MAX_LIMIT}",
                         {"field": "limit"})
    after = decode_cursor(order, cursor) if cursor is not None else None
    return PageRequest(int(limit), after, order)


def walk(keys: list, after: tuple | None, limit: int, accept: Callable[[Any], Any] | None,
         key: Callable[[Any], tuple] | None = None) -> tuple[list, tuple | None]:
    """Up to `limit` accepted items of the sorted list `keys` past `after`, and the order key
    of the last one when more may follow (else None). `accept(entry)` gives the item for a
    list entry or None to pass over it (None: every entry is its own item); `key(entry)` gives
    an entry's order key (default: the entry is its key)."""
    start = 0 if after is None else bisect.bisect_right(keys, after, key=key)
    if accept is None:
        out = keys[start:start + limit]
        if start + limit >= len(keys):
            return out, None
        return out, out[-1] if key is None else key(out[-1])
    out: list = []
    last = start
    for i in range(start, len(keys)):
        item = accept(keys[i])
        if item is None:
            continue
        if len(out) == limit:
            return out, keys[last] if key is None else key(keys[last])
        out.append(item)
        last = i
    return out, None


def page_of(items: list, page: PageRequest,
            key: Callable[[Any], tuple]) -> tuple[list, tuple | None]:
    """A page of a short list already in order (e.g. the one project an agent may see)."""
    return walk(items, page.after, page.limit, None, key)
