"""How entities map to the rows of the normalized PostgreSQL layout (migration 0002), and what a
batch of changes writes there.

Lists that only grow live in tables of their own: a task's `timeline`, a session's `events` and
`timeline` (one row per entry, `idx` its index, the entry's JSON verbatim) and both sides of the
task-session link, a task's `sessionIds` and a session's `taskIds` (one row per id, ordered by
`position`, which may have gaps). The entity row holds every other field and `[]` in place of
each such list, so loading puts the list back where it was in the document's key order.

An append writes only its new rows, a link added or removed only that link's row, and a list
replaced whole only that list's rows; the entity row (small without its lists) is rewritten
with each change. A link list holding anything but ids a text column can hold stays in the
entity row, as does any list that is not an array; a non-empty list found in the entity row
(written there by another program) is moved to its table by the next change of the entity."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import jsonio
from .base import Op

ENTRIES, LINKS = "entries", "links"


@dataclass(frozen=True)
class ListTable:
    kind: str  # the entity kind that owns the list
    field: str  # the document field it holds
    table: str
    owner: str  # the column naming the owning entity
    mode: str  # ENTRIES (idx, entry json) or LINKS (position, `target` text)
    target: str = ""


LISTS: dict[str, tuple[ListTable, ...]] = {
    "project": (),
    "task": (
        ListTable("task", "timeline", "maestro_task_timeline", "task_id", ENTRIES),
        ListTable("task", "sessionIds", "maestro_task_sessions", "task_id", LINKS, "session_id"),
    ),
    "session": (
        ListTable("session", "events", "maestro_session_events", "session_id", ENTRIES),
        ListTable("session", "timeline", "maestro_session_timeline", "session_id", ENTRIES),
        ListTable("session", "taskIds", "maestro_session_tasks", "session_id", LINKS, "task_id"),
    ),
}
ALL_LISTS = tuple(t for tables in LISTS.values() for t in tables)
FIELDS = {kind: {t.field: t for t in tables} for kind, tables in LISTS.items()}
TABLES_BY_NAME = {t.table: t for t in ALL_LISTS}
# An op's delta changed a field this way: the whole list (SET) or entries from an index on.
SET = -1


def kept_apart(table: ListTable, value) -> bool:
    """Whether `value` of the field lives in its own table (else in the entity row)."""
    if type(value) is not list:
        return False
    if table.mode == ENTRIES:
        return True
    try:
        return "\x00" not in "".join(value)  # strings only (join refuses anything else)
    except TypeError:
        return False


def entity_row_json(op: Op) -> bytes:
    """The entity row's JSON: the document with `[]` in place of every list kept apart."""
    value = op.value
    hollow = None
    for table in LISTS[op.kind]:
        name = table.field
        if value.get(name) and kept_apart(table, value[name]):
            if hollow is None:
                hollow = dict(value)  # same key order
            hollow[name] = []
    if hollow is None:
        return op.full_json()  # nothing kept apart: the document as it is
    return jsonio.dumps(hollow)


@dataclass
class Change:
    """What a batch did to one entity: its last op, and since when it must be written."""

    op: Op
    # Nothing of the entity was in the database before the batch (it was created in it).
    fresh: bool
    # Every row of the entity must be written again (a whole value, or deleted and made).
    full: bool = False
    # Lists changed by deltas since: field -> SET or the first index appended.
    fields: dict[str, int] = field(default_factory=dict)


def compose(records: list[list[Op]]) -> dict[tuple[str, str], Change]:
    """The changes of a batch (one transaction) per entity, in the order first touched."""
    out: dict[tuple[str, str], Change] = {}
    for record in records:
        for op in record:
            key = (op.kind, op.id)
            change = out.get(key)
            if change is None:
                change = out[key] = Change(op, fresh=op.new and op.value is not None
                                           and op.delta is None)
            change.op = op
            if op.value is None or op.delta is None:
                change.full = True
                change.fields.clear()
                continue
            if change.full:
                continue
            delta = op.delta
            for name in delta.get("set") or ():
                change.fields[name] = SET
            for name, (start, _) in (delta.get("push") or {}).items():
                before = change.fields.get(name)
                if before is None or (before != SET and start < before):
                    change.fields[name] = start
    return out


@dataclass
class Shapes:
    """What the store knows of the list rows in the database: every link list (ids and
    positions, small) and the lists found in entity rows rather than in their tables."""

    links: dict[tuple[str, str, str], tuple[list[str], list[int]]] = field(default_factory=dict)
    inline: set[tuple[str, str, str]] = field(default_factory=set)


@dataclass
class Plan:
    """The statements' parameters of one batch, and the shapes once it is committed."""

    upserts: dict[str, tuple[list, list, list]] = field(default_factory=dict)
    deletes: dict[str, list[str]] = field(default_factory=dict)
    clears: dict[str, list[str]] = field(default_factory=dict)  # table -> owners
    unlinks: dict[str, tuple[list, list]] = field(default_factory=dict)
    inserts: dict[str, tuple[list, list, list]] = field(default_factory=dict)
    links_after: dict[tuple[str, str, str], tuple[list[str], list[int]] | None] = \
        field(default_factory=dict)
    inline_gone: list[tuple[str, str, str]] = field(default_factory=list)

    def adopt(self, shapes: Shapes) -> None:
        """The batch is committed: the shapes follow it."""
        for key, link in self.links_after.items():
            if link is None:
                shapes.links.pop(key, None)
            else:
                shapes.links[key] = link
        for key in self.inline_gone:
            shapes.inline.discard(key)


def _lists(store: dict, name: str, n: int) -> tuple:
    got = store.get(name)
    if got is None:
        got = store[name] = tuple([] for _ in range(n))
    return got


def plan_batch(changes: dict[tuple[str, str], Change], shapes: Shapes,
               project_of) -> Plan:
    return plan_rows(describe(changes, shapes.inline, project_of), shapes)


# A change as the planner needs it (see describe): (kind, id, fresh, project, lists, row JSON);
# for a deleted entity (kind, id, fresh, None, None, None).
Row = tuple


def describe(changes: dict[tuple[str, str], Change], inline: set, project_of) -> list[Row]:
    """What the rows of each entity need from its change: its entity row's JSON and, per list
    the batch changed, from which index it is written (SET: whole) and its entries from there
    (a link list: all its ids; None: a list that stays in the entity row). Made where the
    entities are (a whole list only where `inline` says it is in the entity row), planned
    where the link rows are known (plan_rows), possibly in another process."""
    out: list[Row] = []
    for (kind, eid), change in changes.items():
        op = change.op
        if op.value is None:
            out.append((kind, eid, change.fresh, None, None, None))
            continue
        value = op.value
        lists = []
        for table in LISTS[kind]:
            name = table.field
            since = SET if change.full or (kind, eid, name) in inline \
                else change.fields.get(name)
            if since is None:
                continue
            new = value.get(name)
            apart = kept_apart(table, new)
            if table.mode == LINKS:
                lists.append((name, since, new if apart else []))
            else:
                lists.append((name, since, (new[since:] if since > 0 else new) if apart
                              else None))
        out.append((kind, eid, change.fresh, project_of(op), lists, entity_row_json(op)))
    return out


def plan_rows(rows: list[Row], shapes: Shapes) -> Plan:
    """The statements' parameters of a batch described by `rows` (see describe)."""
    plan = Plan()
    for kind, eid, fresh, project, lists, data in rows:
        tables = LISTS[kind]
        if data is None:
            _lists(plan.deletes, kind, 1)[0].append(eid)
            for table in tables:
                key = (kind, eid, table.field)
                if not fresh:
                    _lists(plan.clears, table.table, 1)[0].append(eid)
                if table.mode == LINKS:
                    plan.links_after[key] = None
                plan.inline_gone.append(key)
            continue
        ids, projects, datas = _lists(plan.upserts, kind, 3)
        ids.append(eid)
        projects.append(project)
        datas.append(data)
        for name, since, items in lists:
            table = FIELDS[kind][name]
            key = (kind, eid, name)
            if key in shapes.inline:
                if since != SET:
                    raise ValueError(f"the list {name} of {kind} {eid} is in its entity row "
                                     "but only its new entries were given")
                plan.inline_gone.append(key)
            if table.mode == LINKS:
                _diff_links(plan, table, eid, shapes.links.get(key), items)
                continue
            if since == SET:
                if not fresh:
                    _lists(plan.clears, table.table, 1)[0].append(eid)
                since = 0
            if items:
                owners, idxs, entries = _lists(plan.inserts, table.table, 3)
                dumps = jsonio.dumps
                for i, entry in enumerate(items, since):
                    owners.append(eid)
                    idxs.append(i)
                    entries.append(dumps(entry))
    return plan


def _diff_links(plan: Plan, table: ListTable, owner: str,
                old: tuple[list[str], list[int]] | None, new: list[str]) -> None:
    """Rows that turn the stored link list `old` into `new`: the ids of `old` kept in order
    stay where they are, the others are deleted, the ids after them are added at the end."""
    old_ids, old_pos = old if old is not None else ([], [])
    if old_ids == new:
        return
    gone: list[int] = []
    if new[:len(old_ids)] == old_ids:  # only added at the end (the usual link)
        kept_ids, kept_pos, j = list(old_ids), list(old_pos), len(old_ids)
    else:
        kept_ids, kept_pos, j = [], [], 0
        for item, pos in zip(old_ids, old_pos):
            if j < len(new) and new[j] == item:
                kept_ids.append(item)
                kept_pos.append(pos)
                j += 1
            else:
                gone.append(pos)
    if gone:
        owners, positions = _lists(plan.unlinks, table.table, 2)
        owners.extend([owner] * len(gone))
        positions.extend(gone)
    nxt = (old_pos[-1] + 1) if old_pos else 0
    if j < len(new):
        owners, positions, targets = _lists(plan.inserts, table.table, 3)
        for item in new[j:]:
            owners.append(owner)
            positions.append(nxt)
            targets.append(item)
            kept_ids.append(item)
            kept_pos.append(nxt)
            nxt += 1
    plan.links_after[(table.kind, owner, table.field)] = (kept_ids, kept_pos) if kept_ids \
        else None


class Statements:
    """Names of the layout's tables in one schema, for the statements that read them."""

    def __init__(self, schema: str):
        from psycopg import sql

        self.sql = sql
        self.schema = schema

    def ident(self, table: str):
        return self.sql.Identifier(self.schema, table)


ENTITY_TABLES = {"project": "maestro_projects", "task": "maestro_tasks",
                 "session": "maestro_sessions"}


class Writer:
    """A batch's transaction as one SQL text of several statements (sent as one simple query,
    which the server runs as one transaction): one round trip, and every value quoted by
    libpq (`quote`, e.g. `pq.Escaping.escape_literal`) rather than by a Python adapter."""

    def __init__(self, schema: str, quote):
        from psycopg import sql

        self.quote = quote
        self.names = {name: sql.Identifier(schema, name).as_string().encode()
                      for name in (*ENTITY_TABLES.values(), "maestro_meta",
                                   *(t.table for t in ALL_LISTS))}

    def _rows(self, rows, casts: tuple[bytes, ...]) -> bytes:
        """`(v1, v2::cast), (...)`: each value a quoted literal (bytes or str), an int or None."""
        quote = self.quote
        out = []
        for row in rows:
            parts = []
            for value, cast in zip(row, casts):
                if value is None:
                    parts.append(b"NULL")
                elif type(value) is int:
                    parts.append(str(value).encode())
                else:
                    parts.append(quote(value if type(value) is bytes else value.encode())
                                 + cast)
            out.append(b"(" + b", ".join(parts) + b")")
        return b", ".join(out)

    def _list_rows(self, owners: list, positions: list, values: list, cast: bytes) -> bytes:
        """`(owner, n, value), ...` for a list table: the owner's id, an index or position,
        and an entry's JSON (bytes, `cast` "::json") or a link's target id (text). One
        formatting per row; a value of another type goes the general way (_rows)."""
        quote = self.quote
        try:
            if cast:
                return b", ".join([b"(%s, %d, %s%s)" % (quote(o.encode()), n, quote(v), cast)
                                   for o, n, v in zip(owners, positions, values)])
            return b", ".join([b"(%s, %d, %s)" % (quote(o.encode()), n, quote(v.encode()))
                               for o, n, v in zip(owners, positions, values)])
        except (TypeError, AttributeError):
            return self._rows(zip(owners, positions, values), (b"", b"", cast))

    def _entity_rows(self, ids: list, projects: list, data: list) -> bytes:
        """`(id, project_id, data::json), ...` for a task or session table (see _list_rows)."""
        quote = self.quote
        try:
            return b", ".join([b"(%s, %s, %s::json)" % (
                quote(i.encode()), b"NULL" if p is None else quote(p.encode()), quote(d))
                for i, p, d in zip(ids, projects, data)])
        except (TypeError, AttributeError):
            return self._rows(zip(ids, projects, data), (b"", b"", b"::json"))

    def text(self, plan: Plan, clear: bool = False) -> bytes:
        names = self.names
        out: list[bytes] = []
        if clear:
            out += [b"DELETE FROM " + name for key, name in names.items() if key != "maestro_meta"]
        for kind, (ids, projects, data) in plan.upserts.items():
            table = names[ENTITY_TABLES[kind]]
            if kind == "project":
                out.append(b"INSERT INTO " + table + b" (id, data) VALUES "
                           + self._rows(zip(ids, data), (b"", b"::json"))
                           + b" ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data, "
                             b"updated_at = now()")
            else:
                out.append(b"INSERT INTO " + table + b" (id, project_id, data) VALUES "
                           + self._entity_rows(ids, projects, data)
                           + b" ON CONFLICT (id) DO UPDATE SET project_id = "
                             b"EXCLUDED.project_id, data = EXCLUDED.data, updated_at = now()")
        for kind, (ids,) in plan.deletes.items():
            out.append(b"DELETE FROM " + names[ENTITY_TABLES[kind]] + b" WHERE id IN ("
                       + b", ".join(self.quote(i.encode()) for i in ids) + b")")
        for name, (owners,) in plan.clears.items():
            owner = TABLES_BY_NAME[name].owner.encode()
            out.append(b"DELETE FROM " + names[name] + b" WHERE " + owner + b" IN ("
                       + b", ".join(self.quote(o.encode()) for o in owners) + b")")
        for name, (owners, positions) in plan.unlinks.items():
            owner = TABLES_BY_NAME[name].owner.encode()
            out.append(b"DELETE FROM " + names[name] + b" WHERE (" + owner + b", position) IN ("
                       + self._rows(zip(owners, positions), (b"", b"")) + b")")
        for name, (owners, positions, values) in plan.inserts.items():
            table = TABLES_BY_NAME[name]
            owner = table.owner.encode()
            if table.mode == ENTRIES:
                out.append(b"INSERT INTO " + names[name] + b" (" + owner + b", idx, entry) "
                           b"VALUES " + self._list_rows(owners, positions, values, b"::json")
                           + b" ON CONFLICT (" + owner + b", idx) DO UPDATE SET entry = "
                             b"EXCLUDED.entry")
            else:
                target = table.target.encode()
                out.append(b"INSERT INTO " + names[name] + b" (" + owner + b", position, "
                           + target + b") VALUES "
                           + self._list_rows(owners, positions, values, b"")
                           + b" ON CONFLICT (" + owner + b", position) DO UPDATE SET "
                           + target + b" = EXCLUDED." + target)
        return b"; ".join(out)


def load_lists(conn, statements: Statements, kind: str, entities: dict[str, dict],
               shapes: Shapes, links_only: bool = False) -> None:
    """Put each list kept apart back into its entity (where the row holds `[]`), and learn the
    shapes: link rows, and non-empty lists found in the entity rows."""
    sql = statements.sql
    for table in LISTS[kind]:
        if links_only and table.mode != LINKS:
            continue
        name = table.field
        for eid, entity in entities.items():
            value = entity.get(name)
            if type(value) is list and value:
                shapes.inline.add((kind, eid, name))
        owner = sql.Identifier(table.owner)
        if table.mode == ENTRIES:
            rows = conn.execute(sql.SQL(
                "SELECT {}, '[' || string_agg(entry::text, ',' ORDER BY idx) || ']' "
                "FROM {} GROUP BY {}").format(owner, statements.ident(table.table), owner))
            for eid, text in rows:
                entity = entities.get(eid)
                if entity is not None and _placeholder(entity.get(name)) and \
                        (kind, eid, name) not in shapes.inline:
                    entity[name] = jsonio.loads(text)
            continue
        target = sql.Identifier(table.target)
        rows = conn.execute(sql.SQL(
            "SELECT {}, array_agg({} ORDER BY position), array_agg(position ORDER BY position) "
            "FROM {} GROUP BY {}").format(owner, target, statements.ident(table.table), owner))
        for eid, ids, positions in rows:
            shapes.links[(kind, eid, name)] = (ids, positions)
            entity = entities.get(eid)
            if entity is not None and _placeholder(entity.get(name)) and \
                    (kind, eid, name) not in shapes.inline:
                entity[name] = list(ids)


def _placeholder(value) -> bool:
    return type(value) is list and not value
