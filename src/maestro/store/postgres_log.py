"""The log that replicas of one PostgreSQL database share (migration 0003).

Each change request is a record of `maestro_log`, numbered by `log_seq` in commit order; its
events are numbered by `event_seq`, so every replica publishes them under the same numbers. A
batch appends its records in the transaction that writes its rows, through
`maestro_log_append`, which locks the counter row and refuses (SQLSTATE MLOG1) a writer whose
memory is not at the head of the log: that writer's changes were checked against state another
replica has since changed, so they are undone, the writer catches up and runs them again (see
service/core.py). The function also sends a NOTIFY with the new head, heard by the other
replicas' listeners (replica.py), which then read the new records and apply them.

A record is the JSON `[ops, events]`: ops `[kind, id]` (deleted), `[kind, id, value]` (whole
new value) or `[kind, id, null, delta]` (see Op.delta); events `[type, project, data]`, or
`[type, project, null, kind, id]` when the data is the entity as the record leaves it. The last
record of a batch also carries the link rows the batch left (`shapes`), which every replica's
store must know to write later changes of those links."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import orjson

from .. import jsonio
from ..encoding import encoded_bytes
from .base import KINDS, Op

if TYPE_CHECKING:
    from . import pg_rows

LOG_TABLE = "maestro_log"
# SQLSTATE of maestro_log_append when the log is ahead of the writer.
MOVED = "MLOG1"


class LogMoved(OSError):
    """Another replica appended to the log first: the batch was checked against old state."""


def channel(schema: str) -> str:
    """The NOTIFY channel of a schema's log (an identifier of bounded length)."""
    return f"maestro_log_{zlib.crc32(schema.encode()):08x}"


def encode_record(ops: list[Op], events=(), latest=None, base=None) -> bytes:
    """The record of one change request (see the module's docstring). `latest(kind, id)`:
    the entity the request leaves, so that an event about it is recorded as a reference;
    `base(kind, id)`: the entity before, so that a list set whole that only grew (a link
    added) is recorded by its new entries. Encoded in one call, JSON already made included
    as it is."""
    Fragment = orjson.Fragment
    out = []
    for op in ops:
        if op.value is None:
            out.append((op.kind, op.id))
        elif op.delta is not None:
            delta = op.delta
            if base is not None and "set" in delta:
                delta = _grown(delta, base(op.kind, op.id))
            out.append((op.kind, op.id, None, delta))
        else:
            out.append((op.kind, op.id, Fragment(op.full_json())))
    told = []
    for event in events:
        data = event.data
        if latest is not None and type(data) is dict:
            kind = event.type.partition(":")[0]
            eid = data.get("id")
            if kind in KINDS and type(eid) is str and latest(kind, eid) is data:
                told.append((event.type, event.project_id, None, kind, eid))
                continue
        told.append((event.type, event.project_id,
                     Fragment(encoded_bytes(event.encoded_data)) if event.encoded_data
                     is not None else data))
    try:
        return orjson.dumps((out, told))
    except TypeError:  # integers beyond 64 bits, kept verbatim by jsonio
        return _encode_parts(out, told)


def _encode_parts(out: list[tuple], told: list[tuple]) -> bytes:
    """The record by parts, each plain value through jsonio (numbers orjson cannot hold)."""
    def item(values: tuple) -> bytes:
        return b"[" + b",".join(orjson.dumps(v) if isinstance(v, orjson.Fragment)
                                else jsonio.dumps(v) for v in values) + b"]"

    return (b"[[" + b",".join(map(item, out)) + b"],[" + b",".join(map(item, told)) + b"]]")


def _grown(delta: dict, old: dict | None) -> dict:
    """`delta` with each list it sets whole that extends the old one as a push instead."""
    if old is None:
        return delta
    sets = pushes = None
    for key, value in delta["set"].items():
        if type(value) is not list:
            continue
        prev = old.get(key)
        if type(prev) is list and len(value) > len(prev) and value[:len(prev)] == prev:
            if sets is None:
                sets, pushes = dict(delta["set"]), dict(delta.get("push") or {})
            del sets[key]
            pushes[key] = [len(prev), value[len(prev):]]
    if sets is None:
        return delta
    out = {"set": sets} if sets else {}
    out["push"] = pushes
    return out


def encode_shapes(plan: pg_rows.Plan, before: pg_rows.Shapes) -> bytes | None:
    """What a batch changed of the link rows (`before`: as they were) and the inline lists it
    moved, for the other replicas: per link list, the positions removed and the ids added at
    the end (from which position), or that the list is gone."""
    if not plan.links_after and not plan.inline_gone:
        return None
    links = []
    old_links = before.links
    for key, after in plan.links_after.items():
        if after is None:
            links.append([*key])
            continue
        new_ids, new_pos = after
        old_ids, old_pos = old_links.get(key, ((), ()))
        top = old_pos[-1] if old_pos else -1
        k = len(new_pos)
        while k and new_pos[k - 1] > top:
            k -= 1
        removed = [] if k == len(old_pos) else sorted(set(old_pos) - set(new_pos[:k]))
        links.append([*key, removed, new_ids[k:], new_pos[k] if k < len(new_pos) else 0])
    return jsonio.dumps({"links": links, "inline": [list(k) for k in plan.inline_gone]})


def adopt_shapes(shapes: pg_rows.Shapes, text: str | None) -> None:
    """Follow a batch written by another replica (see encode_shapes)."""
    if not text:
        return
    told = jsonio.loads(text)
    links = shapes.links
    for item in told.get("links") or ():
        key = (item[0], item[1], item[2])
        if len(item) == 3:
            links.pop(key, None)
            continue
        removed, added, first = item[3], item[4], item[5]
        ids, positions = links.get(key, ([], []))
        if removed:
            gone = set(removed)
            kept = [(i, p) for i, p in zip(ids, positions) if p not in gone]
            ids, positions = [i for i, _ in kept], [p for _, p in kept]
        else:
            ids, positions = list(ids), list(positions)
        ids.extend(added)
        positions.extend(range(first, first + len(added)))
        if ids:
            links[key] = (ids, positions)
        else:
            links.pop(key, None)
    for kind, eid, name in told.get("inline") or ():
        shapes.inline.discard((kind, eid, name))


def adopt_inline(shapes: pg_rows.Shapes, text: str) -> None:
    """The part of adopt_shapes a server whose writer process holds the link rows needs: the
    inline lists the batch moved to rows (rarely any: the JSON text then ends `[]}`)."""
    if text.endswith('"inline":[]}'):
        return
    for kind, eid, name in jsonio.loads(text).get("inline") or ():
        shapes.inline.discard((kind, eid, name))


class Append:
    """The statements that append a batch's records (see Statements.batch)."""

    __slots__ = ("log", "expected", "first_event", "origin", "logged", "counts", "shapes")

    def __init__(self, log: Statements, expected: int, first_event: int, origin: str,
                 logged: list[bytes], counts: list[int], shapes: bytes | None):
        self.log = log
        self.expected = expected
        self.first_event = first_event
        self.origin = origin
        self.logged = logged
        self.counts = counts
        self.shapes = shapes

    @property
    def records(self) -> int:
        return len(self.logged)

    def text(self, quote) -> bytes:
        """The SQL text, each value quoted by `quote` (libpq's escape_literal)."""
        expected = self.expected
        last = expected + len(self.logged)
        origin = quote(self.origin.encode())
        rows = []
        nxt = self.first_event + 1
        for i, (record, count) in enumerate(zip(self.logged, self.counts)):
            seq = expected + 1 + i
            shapes = quote(self.shapes) if seq == last and self.shapes else b"NULL"
            rows.append(b"(%d, %d, " % (seq, nxt) + origin + b", " + quote(record) + b", "
                        + shapes + b")")
            nxt += count
        log = self.log
        return (b"SELECT " + log.append_fn + b"(%d, %d, %d, " % (
                    expected, len(self.logged), sum(self.counts)) + quote(log.channel.encode())
                + b", " + origin + b"); INSERT INTO " + log.table + b" (seq, first_event, origin, record, shapes)"
                b" VALUES " + b", ".join(rows))


class Statements:
    """The log's SQL in one schema."""

    def __init__(self, schema: str):
        from psycopg import sql

        self.channel = channel(schema)
        table = sql.Identifier(schema, LOG_TABLE)
        self.table = table.as_string().encode()
        self.append_fn = sql.Identifier(schema, "maestro_log_append").as_string().encode()
        self.read = sql.SQL(
            "SELECT seq, origin, first_event, record, shapes FROM {} "
            "WHERE seq > %s ORDER BY seq LIMIT %s").format(table)
        self.origin_of = sql.SQL("SELECT origin FROM {} WHERE seq = %s").format(table)
        self.newest = sql.SQL(
            "SELECT seq, first_event, record, "
            "(extract(epoch FROM written_at) * 1000)::bigint FROM {} "
            "WHERE seq <= %s ORDER BY seq DESC LIMIT %s").format(table)
        self.trim = sql.SQL("DELETE FROM {} WHERE seq <= %s").format(table)
        meta = sql.Identifier(schema, "maestro_meta")
        self.head = sql.SQL(
            "SELECT (SELECT value FROM {0} WHERE name = 'log_seq'), "
            "(SELECT value FROM {0} WHERE name = 'event_seq')").format(meta)

    def batch(self, expected: int, first_event: int, origin: str, records: list[bytes],
              counts: list[int], shapes: bytes | None) -> Append:
        """What appends `records` (with `counts` events each) after record `expected`."""
        return Append(self, expected, first_event, origin, records, counts, shapes)


def decode_op(item: list) -> tuple[str, str, dict | None, dict | None]:
    """(kind, id, whole value or None, delta or None) of a recorded op."""
    kind, eid = item[0], item[1]
    if len(item) == 2:
        return kind, eid, None, None
    if item[2] is None:
        return kind, eid, None, item[3]
    return kind, eid, item[2], None
