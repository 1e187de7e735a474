"""The in-memory picture of every entity, with the indexes the list filters need.

Entities are plain dicts (unknown keys survive, SPEC §4.9) and are never mutated in place: a
change puts a new dict. That makes the compact JSON of an entity cacheable by object identity,
so each version is encoded once for the response, the events and the journal. A big entity is
encoded by parts (encoding.py): a new version reuses the parts of the one it replaces, so an
append to a long list costs the new entry, not the list."""

from __future__ import annotations

import bisect
import operator
from typing import Any, Iterable

from . import jsonio
from .encoding import BIG_ENTITY_BYTES, Growth, Spliced

# Replaced versions whose spliced encoding stays reachable for a while: answers and events of
# earlier requests in the same batch are still being written when a later one replaced them.
RETIRED_KEPT = 64
from .paging import walk


def _order_key(entity: dict, field: str) -> tuple:
    ts = entity.get(field)
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        ts = 0
    return (ts, entity["id"])


class _Index:
    """value -> ordered set of ids; for the values someone paged through, also the ids sorted
    by order key (`paged`, built on first use and kept up to date from then on)."""

    __slots__ = ("buckets", "paged")

    def __init__(self) -> None:
        self.buckets: dict[Any, dict[str, None]] = {}
        self.paged: dict[Any, list[str]] = {}

    def add(self, key: Any, eid: str) -> None:
        try:
            self.buckets.setdefault(key, {})[eid] = None
        except TypeError:  # unhashable value from a foreign file: not indexable, never matched
            pass

    def remove(self, key: Any, eid: str) -> None:
        try:
            bucket = self.buckets.get(key)
        except TypeError:
            return
        if bucket is not None:
            bucket.pop(eid, None)
            if not bucket:
                del self.buckets[key]
                self.paged.pop(key, None)

    def get(self, key: Any) -> dict[str, None]:
        try:
            return self.buckets.get(key, {})
        except TypeError:
            return {}

    def sorted_ids(self, key: Any) -> list[str] | None:
        """The sorted ids of a bucket someone paged through, else None."""
        try:
            return self.paged.get(key)
        except TypeError:
            return None


def _insert(ids: list[str], eid: str, key: tuple, key_of) -> None:
    """Put `eid` (order key `key`) into the sorted `ids`; new entities usually go last."""
    if not ids or key_of(ids[-1]) < key:
        ids.append(eid)
        return
    i = bisect.bisect_left(ids, key, key=key_of)
    if i < len(ids) and ids[i] == eid:
        return
    ids.insert(i, eid)


def _discard(ids: list[str], eid: str, key: tuple, key_of) -> None:
    """Take `eid` (order key `key`) out of the sorted `ids`."""
    i = bisect.bisect_left(ids, key, key=key_of)
    if i < len(ids) and ids[i] == eid:
        del ids[i]
    elif eid in ids:  # not where its key says (cannot happen while keys are kept): still gone
        ids.remove(eid)


def _key_picker(fields: tuple[str, ...]):
    """entity -> the tuple of its `fields` in one call (KeyError when one is missing)."""
    if len(fields) == 1:
        return lambda entity: (entity[fields[0]],)
    return operator.itemgetter(*fields)


class Table:
    """One kind of entity: the records, their order, their indexes and encoded forms."""

    def __init__(self, order_field: str, indexed: Iterable[str] = (), multi: Iterable[str] = (),
                 compound: Iterable[tuple[str, ...]] = (), twin: "Table | None" = None):
        self.order_field = order_field
        self.rows: dict[str, dict] = {}
        self._sorted = True
        self._last_key: tuple | None = None
        self.indexes = {name: _Index() for name in indexed}
        # Several fields at once (e.g. projectId + status): a combined filter then costs in
        # proportion to its result, not to the larger of the single-field buckets.
        self.compound = {frozenset(fields): (tuple(fields), _Index()) for fields in compound}
        # Fields holding a list of ids, indexed by each member (session.taskIds).
        self.multi = {name: _Index() for name in multi}
        # Every field some index reads, with the indexes that read it as (index, the field for
        # a single-field one, the key picker and fields for a compound one): a replacement
        # moves only the indexes of the fields it changed.
        self._readers: dict[str, list[tuple]] = {}
        self._compound_keys = [(_key_picker(fields), fields, idx)
                               for fields, idx in self.compound.values()]
        for name, idx in self.indexes.items():
            self._readers.setdefault(name, []).append((idx, name, None, None))
        for fields, idx in self.compound.values():
            for f in fields:
                self._readers.setdefault(f, []).append((idx, None, _key_picker(fields), fields))
        # Encoded forms by entity identity, and recently replaced versions of big entities
        # (id -> (entity, its spliced encoding)); both shared with the twin table of the other
        # state (working and committed views hold the same entity objects), so each version
        # of an entity is encoded once for both.
        self._encoded: dict[int, tuple[dict, bytes | Spliced]] = \
            twin._encoded if twin is not None else {}
        self._retired: dict[int, tuple[dict, Spliced]] = \
            twin._retired if twin is not None else {}
        # Bumped on every change; keys the cached encoding of the whole table.
        self._version = 0
        self._all: tuple[int, bytes] | None = None
        # Called as listener(old, new) after every put (old None: created) and delete (new
        # None), undo included: derived indexes (readiness) follow every change.
        self.listener = None
        # Ids of the whole table sorted by order key, once someone paged through it; `_paging`
        # says whether any sorted id list (here or in an index) has to follow changes.
        self._all_paged: list[str] | None = None
        self._paging = False

    def __len__(self) -> int:
        return len(self.rows)

    def get(self, eid: str) -> dict | None:
        return self.rows.get(eid)

    def put(self, entity: dict, growth: Growth | None = None) -> dict | None:
        """Insert or replace; returns the previous version (for undo). `growth` tells which
        lists of `entity` extend those of the version it replaces (see encoding.Growth)."""
        eid = entity["id"]
        self._version += 1
        old = self.rows.get(eid)
        if old is not None:
            hit = self._encoded.pop(id(old), None)
            self.rows[eid] = entity
            self._reindex(old, entity)
            encoding = hit[1] if hit is not None and hit[0] is old else None
            if growth or id(entity) in self._retired or not (
                    encoding is None or type(encoding) is bytes
                    and len(encoding) < BIG_ENTITY_BYTES):
                self._splice(old, encoding, entity, growth)
            if self._paging:
                self._page_move(old, entity)
            if self.listener is not None:
                self.listener(old, entity)
            return old
        else:
            self.rows[eid] = entity
            if self._retired:
                self._splice(entity, None, entity, None)  # an undo of a delete: revive
            key = _order_key(entity, self.order_field)
            if self._last_key is not None and key < self._last_key:
                self._sorted = False
            self._last_key = key if self._last_key is None else max(key, self._last_key)
        self._index(entity)
        if self._paging:
            self._page_add(entity)
        if self.listener is not None:
            self.listener(None, entity)
        return old

    def delete(self, eid: str) -> dict | None:
        old = self.rows.pop(eid, None)
        self._version += 1
        if old is not None:
            self._unindex(old)
            if self._paging:
                self._page_remove(old)
            hit = self._encoded.pop(id(old), None)
            if hit is not None and isinstance(hit[1], Spliced):
                self._retire(old, hit[1])
            if self.listener is not None:
                self.listener(old, None)
        return old

    def _splice(self, old: dict, encoding: bytes | Spliced | None, new: dict,
                growth: Growth | None) -> None:
        """Encode a big entity's new version from the parts of the one it replaces (`put`
        calls it only when there is something to do: a big or growing entity, or a replaced
        version put back)."""
        if isinstance(encoding, Spliced):
            self._retire(old, encoding)
        current = self._encoded.get(id(new))
        if current is not None and current[0] is new:  # encoded already, by the twin table
            return
        retired = self._retired.pop(id(new), None)
        if retired is not None and retired[0] is new:  # an undo puts a version back
            retired[1].revive()
            self._encoded[id(new)] = retired
            return
        if isinstance(encoding, Spliced):
            spliced = encoding
        elif encoding is not None and len(encoding) >= BIG_ENTITY_BYTES:
            spliced = Spliced.of(old)  # became big: split once
        elif encoding is None and growth:
            # Not encoded since it was loaded: an append finds out whether it is big.
            spliced = Spliced.of(old)
            if spliced.size < BIG_ENTITY_BYTES:
                return
        else:
            return
        self._encoded[id(new)] = (new, spliced.derive(old, new, growth))

    def _retire(self, entity: dict, spliced: Spliced) -> None:
        spliced.retire()
        retired = self._retired
        retired[id(entity)] = (entity, spliced)
        if len(retired) > RETIRED_KEPT:
            del retired[next(iter(retired))]

    def _index(self, e: dict) -> None:
        eid = e["id"]
        get = e.get
        for name, idx in self.indexes.items():
            idx.add(get(name), eid)
        for pick, fields, idx in self._compound_keys:
            try:
                key = pick(e)
            except KeyError:
                key = tuple([get(f) for f in fields])
            idx.add(key, eid)
        for name, idx in self.multi.items():
            members = e.get(name)
            if isinstance(members, list):
                for m in members:
                    idx.add(m, eid)

    def _reindex(self, old: dict, new: dict) -> None:
        """Move `new` (replacing `old`, same id) in the indexes whose field changed only."""
        eid = new["id"]
        old_get, new_get = old.get, new.get
        moves: list | None = None
        for name, readers in self._readers.items():
            before, after = old_get(name), new_get(name)
            if before is after or before == after:
                continue
            if moves is None:
                moves = readers
            else:  # a compound index reading both fields moves once
                moves = list(dict.fromkeys(moves + readers))
        for idx, name, pick, fields in moves or ():
            if name is not None:
                before, after = old_get(name), new_get(name)
            else:
                try:
                    before, after = pick(old), pick(new)
                except KeyError:
                    before = tuple([old_get(f) for f in fields])
                    after = tuple([new_get(f) for f in fields])
            # remove(before) and add(after), inline: this runs for every moved index.
            buckets = idx.buckets
            try:
                bucket = buckets[before]
                del bucket[eid]
                if not bucket:
                    del buckets[before]
                    idx.paged.pop(before, None)
            except (KeyError, TypeError):
                pass
            try:
                bucket = buckets.get(after)
                if bucket is None:
                    buckets[after] = {eid: None}
                else:
                    bucket[eid] = None
            except TypeError:
                pass
        for name, idx in self.multi.items():
            before, after = old_get(name), new_get(name)
            if before is after or before == after:
                continue
            gone = before if isinstance(before, list) else ()
            come = after if isinstance(after, list) else ()
            for m in gone:
                if m not in come:
                    idx.remove(m, eid)
            for m in come:
                idx.add(m, eid)

    def _unindex(self, e: dict) -> None:
        eid = e["id"]
        for name, idx in self.indexes.items():
            idx.remove(e.get(name), eid)
        for fields, idx in self.compound.values():
            idx.remove(tuple(e.get(f) for f in fields), eid)
        for name, idx in self.multi.items():
            members = e.get(name)
            if isinstance(members, list):
                for m in members:
                    idx.remove(m, eid)

    def ordered(self) -> list[dict]:
        if not self._sorted:
            items = sorted(self.rows.values(), key=lambda e: _order_key(e, self.order_field))
            # Re-filled in place: others hold bound methods of this dict (rows.get).
            self.rows.clear()
            self.rows.update((e["id"], e) for e in items)
            self._sorted = True
        return list(self.rows.values())

    def query(self, equals: dict[str, Any], contains: dict[str, Any] | None = None,
              predicate=None) -> list[dict]:
        """Entities whose fields equal `equals`, whose list fields contain `contains`, and that
        pass `predicate`; cost follows the smallest index bucket, in creation order."""
        if not equals and not contains and predicate is None:
            return self.ordered()
        candidates: dict[str, None] | None = None
        combined = self.compound.get(frozenset(equals)) if len(equals) > 1 else None
        if combined is not None:
            fields, idx = combined
            candidates = idx.get(tuple(equals[f] for f in fields))
        for name, value in equals.items():
            index = self.indexes.get(name)
            if index is None:  # a field not indexed here: filtered below
                continue
            bucket = index.get(value)
            if candidates is None or len(bucket) < len(candidates):
                candidates = bucket
        for name, value in (contains or {}).items():
            bucket = self.multi[name].get(value)
            if candidates is None or len(bucket) < len(candidates):
                candidates = bucket
        if candidates is None:
            rows = self.ordered()
        else:
            rows = [self.rows[i] for i in candidates]
        out = []
        for e in rows:
            if any(e.get(k) != v for k, v in equals.items()):
                continue
            if contains and any(not isinstance(e.get(k), list) or v not in e[k]
                                for k, v in contains.items()):
                continue
            if predicate is not None and not predicate(e):
                continue
            out.append(e)
        if candidates is not None and len(out) > 1:
            out.sort(key=lambda e: _order_key(e, self.order_field))
        return out

    def encoding(self, entity: dict) -> bytes | Spliced | None:
        """The cached encoding of `entity` without joining a spliced one (None: not cached)."""
        hit = self._encoded.get(id(entity)) or self._retired.get(id(entity))
        if hit is not None and hit[0] is entity:
            return hit[1]
        return None
    # ------------------------------------------------------------ pages
    def key_of(self, eid: str) -> tuple:
        """The order key of a stored entity: `(createdAt or startedAt, id)`."""
        return _order_key(self.rows[eid], self.order_field)

    def page(self, equals: dict[str, Any], contains: dict[str, Any] | None = None,
             predicate=None, after: tuple | None = None,
             limit: int = 100) -> tuple[list[dict], tuple | None]:
        """Up to `limit` entities matching as in `query`, in order, past the order key `after`;
        and the order key of the last one when more may follow. Walks ids kept sorted from a
        binary search, so the cost follows the page (plus entities passed over by filters that
        no index answers exactly), not the table."""
        ids, exact = self._page_source(equals, contains or {})
        rows = self.rows
        if exact and predicate is None:
            found, last = walk(ids, after, limit, None, key=self.key_of)
            return [rows[i] for i in found], last
        else:
            def accept(eid: str) -> dict | None:
                e = rows[eid]
                if not exact:
                    if any(e.get(k) != v for k, v in equals.items()):
                        return None
                    if contains and any(not isinstance(e.get(k), list) or v not in e[k]
                                        for k, v in contains.items()):
                        return None
                if predicate is not None and not predicate(e):
                    return None
                return e
        return walk(ids, after, limit, accept, key=self.key_of)

    def _page_source(self, equals: dict[str, Any], contains: dict[str, Any]) \
            -> tuple[list[str], bool]:
        """Sorted ids to walk for a filter, and whether every one of them matches it."""
        if not equals and not contains:
            if self._all_paged is None:
                self.ordered()
                self._all_paged = list(self.rows)
                self._paging = True
            return self._all_paged, True
        choices: list[tuple[_Index, Any, bool]] = []
        if len(equals) > 1:
            combined = self.compound.get(frozenset(equals))
            if combined is not None:
                fields, idx = combined
                choices.append((idx, tuple(equals[f] for f in fields), not contains))
        for name, value in equals.items():
            if name in self.indexes:
                choices.append((self.indexes[name], value, len(equals) == 1 and not contains))
        for name, value in contains.items():
            choices.append((self.multi[name], value, not equals and len(contains) == 1))
        if not choices:  # filters on fields not indexed here: walk everything, filtered
            return self._page_source({}, {})[0], False
        exact = [c for c in choices if c[2]]
        idx, key, is_exact = exact[0] if exact else min(choices, key=lambda c: len(c[0].get(c[1])))
        found = idx.sorted_ids(key)
        if found is None:
            bucket = idx.get(key)
            if not bucket:
                return [], True
            found = sorted(bucket, key=self.key_of)
            idx.paged[key] = found
            self._paging = True
        return found, is_exact

    def _paged_lists(self, e: dict) -> dict[int, list[str]]:
        """The sorted id lists `e` belongs in (by identity)."""
        out: dict[int, list[str]] = {}
        if self._all_paged is not None:
            out[id(self._all_paged)] = self._all_paged
        get = e.get
        for name, idx in self.indexes.items():
            if idx.paged:
                found = idx.sorted_ids(get(name))
                if found is not None:
                    out[id(found)] = found
        for fields, idx in self.compound.values():
            if idx.paged:
                found = idx.sorted_ids(tuple([get(f) for f in fields]))
                if found is not None:
                    out[id(found)] = found
        for name, idx in self.multi.items():
            members = get(name)
            if idx.paged and isinstance(members, list):
                for m in members:
                    found = idx.sorted_ids(m)
                    if found is not None:
                        out[id(found)] = found
        return out

    def _keyer(self, eid: str, key: tuple):
        """Order keys of listed ids, `eid` at `key` (it may be gone, or stored with a new key)."""
        rows, field = self.rows, self.order_field
        return lambda i: key if i == eid else _order_key(rows[i], field)

    def _page_add(self, e: dict) -> None:
        key = _order_key(e, self.order_field)
        key_of = self._keyer(e["id"], key)
        for ids in self._paged_lists(e).values():
            _insert(ids, e["id"], key, key_of)

    def _page_remove(self, e: dict) -> None:
        key = _order_key(e, self.order_field)
        key_of = self._keyer(e["id"], key)
        for ids in self._paged_lists(e).values():
            _discard(ids, e["id"], key, key_of)

    def _page_move(self, old: dict, new: dict) -> None:
        """Follow a replaced entity in the sorted id lists (indexes already moved it)."""
        before_key = _order_key(old, self.order_field)
        after_key = _order_key(new, self.order_field)
        if before_key != after_key:  # a new position everywhere
            self._page_remove(old)
            self._page_add(new)
            return
        before, after = self._paged_lists(old), self._paged_lists(new)
        if before.keys() == after.keys():
            return
        key_of = self._keyer(new["id"], after_key)
        for ident, ids in before.items():
            if ident not in after:
                _discard(ids, new["id"], before_key, key_of)
        for ident, ids in after.items():
            if ident not in before:
                _insert(ids, new["id"], after_key, key_of)

    def encode(self, entity: dict) -> bytes:
        """Compact JSON of a stored entity, computed once per version."""
        hit = self._encoded.get(id(entity))
        if hit is not None and hit[0] is entity:
            encoded = hit[1]
            return encoded if type(encoded) is bytes else encoded.join()
        hit = self._retired.get(id(entity))
        if hit is not None and hit[0] is entity:
            return hit[1].join(keep=False)
        data = jsonio.dumps(entity)
        if self.rows.get(entity.get("id")) is entity:
            # orjson's result keeps an oversized buffer (a 450-byte answer holds ~4 KB); a
            # cached copy is made exact, or 50k cached tasks would cost ~400 MB.
            data = bytes(memoryview(data))
            self._encoded[id(entity)] = (entity, data)
        return data

    def encode_list(self, entities: list[dict]) -> bytes:
        cache = self._encoded
        parts = []
        append = parts.append
        for e in entities:
            hit = cache.get(id(e))
            if hit is not None and hit[0] is e and type(hit[1]) is bytes:
                append(hit[1])
            else:
                append(self.encode(e))
        return b"[" + b",".join(parts) + b"]"

    def encode_all(self) -> bytes:
        """The whole table as a JSON array in creation order, rebuilt only after a change."""
        if self._all is None or self._all[0] != self._version:
            self._all = (self._version, self.encode_list(self.ordered()))
        return self._all[1]


class State:
    """Every entity with its indexes. `twin`: the committed view of this working state, another
    State holding the same entities; the two share their encoding caches. Lists are read from
    the committed view, so a working state keeps only the indexes mutations look up (a
    project's tasks and sessions, a task's children and sessions); the others (status, the
    combined ones) would be kept up to date on every write for nobody. A filter on a field
    without an index is still answered, from another field's bucket or a scan."""

    def __init__(self, twin: "State | None" = None) -> None:
        view = twin is None
        self.projects = Table("createdAt", twin=twin.projects if twin else None)
        self.tasks = Table("createdAt",
                           indexed=("projectId", "parentId", "status") if view
                           else ("projectId", "parentId"),
                           compound=(("projectId", "status"), ("projectId", "parentId"),
                                     ("parentId", "status"),
                                     ("projectId", "parentId", "status")) if view else (),
                           twin=twin.tasks if twin else None)
        self.sessions = Table("startedAt",
                              indexed=("projectId", "status") if view else ("projectId",),
                              multi=("taskIds",),
                              compound=(("projectId", "status"),) if view else (),
                              twin=twin.sessions if twin else None)
        self._tables = {"project": self.projects, "task": self.tasks, "session": self.sessions}
        self.table = self._tables.__getitem__  # table(kind) -> Table

    def apply(self, changes) -> None:
        """Put or delete each (kind, id, value-or-None) of `changes`, in order."""
        table = self.table
        for kind, eid, value in changes:
            if value is None:
                table(kind).delete(eid)
            else:
                table(kind).put(value)
