"""Indexes of coordination (SPEC §15), kept up to date on every change of a task.

Readiness is never stored; what is kept is which tasks *could* be handed out: pending, not held
back by dependencies or ancestors (`domain.readiness.is_held`), with no claim. Whether a claim
is still live depends on the clock, so a claimed task is simply not eligible until its claim is
cleared (released, ended, or by the expiry sweep). A change to a task re-examines only the tasks
whose readiness can depend on it: the task, its descendants, the tasks naming it as a
dependency and their descendants. Lists are kept sorted (§15.2 order), so ready work and
claim-next cost in proportion to the answer, not to the project.

Also kept: the reverse dependency index, the claims of each session, the tasks whose
`sessionStatus` each session wrote, and a heap of lease expiries for the sweep."""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterator

from .domain.graph import dependency_ids
from .domain.readiness import is_held, order_key
from .state import Table

# Fields whose change can alter a task's own readiness or its place in the order.
_OWN_FIELDS = ("status", "dependencies", "parentId", "claim", "priority", "createdAt",
               "projectId")
# Every field the index reads: a replacement that changes none of them (a timeline append, a
# new description) costs one look at each and nothing more.
_READ_FIELDS = _OWN_FIELDS + ("sessionStatusBy",)


def _insort(groups: dict, name, key: tuple) -> None:
    """Put order key `key` into the sorted list of `groups[name]`."""
    keys = groups.get(name)
    if keys is None:
        groups[name] = [key]
    else:
        bisect.insort(keys, key)


def _take(groups: dict, name, key: tuple) -> None:
    """Take order key `key` out of the sorted list of `groups[name]` (dropped when empty)."""
    keys = groups.get(name)
    if keys is not None:
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            del keys[i]
            if not keys:
                del groups[name]


# The group of the tasks whose projectId is not a string (a foreign file): equal to no id.
_LOOSE = object()


def _merged(groups: dict) -> list[tuple]:
    """The sorted lists of `groups` merged into one (sorting concatenated sorted runs is a
    merge of the runs)."""
    lists = list(groups.values())
    if len(lists) == 1:
        return list(lists[0])
    return sorted(itertools.chain.from_iterable(lists))


def _claim_session(task: dict | None) -> str | None:
    claim = task.get("claim") if task is not None else None
    if isinstance(claim, dict) and isinstance(claim.get("sessionId"), str):
        return claim["sessionId"]
    return None


def _status_writer(task: dict | None) -> str | None:
    by = task.get("sessionStatusBy") if task is not None else None
    return by if isinstance(by, str) else None


def _add(index: dict, key, member: str) -> None:
    index.setdefault(key, {})[member] = None


def _drop(index: dict, key, member: str) -> None:
    bucket = index.get(key)
    if bucket is not None:
        bucket.pop(member, None)
        if not bucket:
            del index[key]


class ReadyIndex:
    def __init__(self, tasks: Table, track_expiries: bool = True, lazy: bool = False):
        self.tasks = tasks
        # Lazy: changes are only noted (per task, the fields the index reads of the version
        # before the first one, None if it did not exist) and followed when the index is next
        # read (`catch_up`) from there to the row of now, so a burst of writes that nobody
        # reads the readiness of in between costs one update per task, and the replaced
        # versions themselves are not kept alive meanwhile.
        self.lazy = lazy
        self._pending: dict[str, tuple | None] = {}
        # Only the index the sweeper reads needs the heap (the committed view's would grow).
        self.track_expiries = track_expiries
        self.get = tasks.rows.get
        # dependency id -> ids of the tasks naming it (the id may name no task).
        self.dependents: dict[str, dict[str, None]] = {}
        # task id -> its order key, for every eligible (ready unless its claim is live) task.
        self.ready_key: dict[str, tuple] = {}
        # Sorted keys per project (tasks whose projectId is no string under `_LOOSE`) and per
        # parent. The lists of every project together are merged only when someone asks for
        # them (`ready_all`), and kept until the next change of eligibility.
        self.ready_by_project: dict = {}
        self.ready_by_parent: dict[str, list[tuple]] = {}
        self._ready_all: list[tuple] | None = []
        # task id -> key for every pending task held back (`?blocked=true`).
        self.blocked_key: dict[str, tuple] = {}
        self.blocked_by_project: dict = {}
        self._blocked_all: list[tuple] | None = []
        self.claims_by_session: dict[str, dict[str, None]] = {}
        self.status_by_session: dict[str, dict[str, None]] = {}
        # (leaseExpiresAt, task id): may hold stale entries, checked when popped.
        self.expiries: list[tuple[int, str]] = []
        self.suspended = False

    def attach(self) -> None:
        self.tasks.listener = self.on_change if self.lazy else self._follow

    # ------------------------------------------------------------ following changes
    def on_change(self, old: dict | None, new: dict | None) -> None:
        if self.suspended:
            return
        if self.lazy:
            tid = (new or old)["id"]
            if tid not in self._pending:
                self._pending[tid] = None if old is None else tuple(map(old.get, _READ_FIELDS))
            return
        self._follow(old, new)

    def catch_up(self) -> None:
        """Follow the changes a lazy index has only noted (a task's version before its first
        change and its row of now are one change: the index is a function of the rows)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        rows = self.tasks.rows
        for tid, fields in pending.items():
            old = None if fields is None else dict(zip(_READ_FIELDS, fields), id=tid)
            new = rows.get(tid)
            if old is not None or new is not None:
                self._follow(old, new)

    def _follow(self, old: dict | None, new: dict | None) -> None:
        """Follow one change (the listener of an index that is not lazy)."""
        if self.suspended:
            return
        if old is None or new is None:
            task = new or old
            tid = task["id"]
            if task.get("dependencies") or task.get("claim") is not None \
                    or task.get("sessionStatusBy") is not None:
                self._follow_links(tid, old, new)
            if tid in self.tasks.indexes["parentId"].buckets or tid in self.dependents:
                self.refresh(self._affected(tid, True, True))
            else:  # a new task (or a deleted one) nothing else hangs on
                self._place(tid)
            return
        old_get, new_get = old.get, new.get
        changed = []
        for f in _READ_FIELDS:
            a, b = old_get(f), new_get(f)
            if a is not b and a != b:
                changed.append(f)
        if not changed:
            return
        tid = new["id"]
        if "dependencies" in changed or "claim" in changed or "sessionStatusBy" in changed:
            self._follow_links(tid, old, new)
        status = "status" in changed
        if "parentId" in changed or (
                "dependencies" in changed and dependency_ids(old) != dependency_ids(new)):
            self.refresh(self._affected(tid, status, True))
        elif status:
            if tid in self.tasks.indexes["parentId"].buckets or tid in self.dependents:
                self.refresh(self._affected(tid, True, False))
            else:  # no children and nothing depends on it (most tasks)
                self._place(tid)
        elif changed != ["sessionStatusBy"]:
            # Priority, creation time, claim or project: the task's own place only.
            self._place(tid)

    def _follow_links(self, tid: str, old: dict | None, new: dict | None) -> None:
        before, after = dependency_ids(old), dependency_ids(new)
        if before != after:
            for dep in before:
                if dep not in after:
                    _drop(self.dependents, dep, tid)
            for dep in after:
                _add(self.dependents, dep, tid)
        for reader, index in ((_claim_session, self.claims_by_session),
                              (_status_writer, self.status_by_session)):
            was, now = reader(old), reader(new)
            if was != now:
                if was is not None:
                    _drop(index, was, tid)
                if now is not None:
                    _add(index, now, tid)
        claim = new.get("claim") if new is not None else None
        if self.track_expiries and isinstance(claim, dict) and (
                old is None or old.get("claim") is not claim):
            expires = claim.get("leaseExpiresAt")
            if isinstance(expires, int) and not isinstance(expires, bool):
                heapq.heappush(self.expiries, (expires, tid))

    def _affected(self, tid: str, status_changed: bool, structure: bool) -> set[str]:
        """The tasks whose readiness may have changed with this change of `tid`: its
        descendants when its status or its edges changed, and the tasks depending on it (with
        theirs) when its status changed."""
        out = {tid}
        if status_changed or structure:
            out.update(self.descendants(tid))
        if status_changed:
            dependents = self.dependents.get(tid)
            for dependent in list(dependents) if dependents else ():
                out.add(dependent)
                out.update(self.descendants(dependent))
        return out

    def descendants(self, tid: str) -> Iterator[str]:
        children = self.tasks.indexes["parentId"]
        stack = list(children.get(tid))
        if not stack:
            return
        seen = {tid}
        while stack:
            cid = stack.pop()
            if cid in seen:
                continue
            seen.add(cid)
            yield cid
            stack.extend(children.get(cid))

    def refresh(self, ids) -> None:
        place = self._place
        for tid in ids:
            place(tid)

    def _place(self, tid: str) -> None:
        task = self.get(tid)
        eligible = blocked = False
        if task is None:
            key = project = parent = stored = None
        else:
            if task.get("status") == "pending":
                # No dependencies and no parent (most tasks): nothing can hold it back.
                held = (bool(task.get("dependencies")) or bool(task.get("parentId"))) \
                    and is_held(task, self.get)
                blocked = held
                eligible = not held and not isinstance(task.get("claim"), dict)
            key = order_key(task)
            project, parent = task.get("projectId"), task.get("parentId")
            if not isinstance(parent, str) or not parent:  # as graph.parent_id
                parent = None
            stored = key + (project, parent)
        old = self.ready_key.get(tid)
        if old is not None and (not eligible or old != stored):
            del self.ready_key[tid]
            self._ready_all = None
            _take(self.ready_by_project, old[3] if isinstance(old[3], str) else _LOOSE, old[:3])
            if old[4] is not None:
                _take(self.ready_by_parent, old[4], old[:3])
            old = None
        if eligible and old is None:
            self.ready_key[tid] = stored
            self._ready_all = None
            _insort(self.ready_by_project, project if isinstance(project, str) else _LOOSE, key)
            if parent is not None:
                _insort(self.ready_by_parent, parent, key)
        old = self.blocked_key.get(tid)
        if old is not None and (not blocked or old != stored):
            del self.blocked_key[tid]
            self._blocked_all = None
            _take(self.blocked_by_project, old[3] if isinstance(old[3], str) else _LOOSE,
                  old[:3])
            old = None
        if blocked and old is None:
            self.blocked_key[tid] = stored
            self._blocked_all = None
            _insort(self.blocked_by_project, project if isinstance(project, str) else _LOOSE,
                    key)

    def rebuild(self) -> None:
        """Everything from scratch (after loading, when changes were not followed)."""
        self.__init__(self.tasks, self.track_expiries, self.lazy)
        for task in self.tasks.rows.values():
            self._follow_links(task["id"], None, task)
        for tid in list(self.tasks.rows):
            self._place(tid)

    # ------------------------------------------------------------ answers
    def ready_source(self, project_id: str | None, parent: str | None) -> list[tuple]:
        """Sorted order keys to walk for the eligible tasks of a project and/or under a parent:
        with both, those under the parent (the caller checks the project)."""
        if parent is not None:
            keys = self.ready_by_parent.get(parent)
        elif project_id is not None:
            keys = self.ready_by_project.get(project_id)
        else:
            return self.ready_all
        return keys if keys is not None else []

    def ready_keys(self, project_id: str | None, parent: str | None) -> list[tuple]:
        """Order keys of the eligible tasks of a project and/or under a parent."""
        if parent is not None:
            keys = self.ready_by_parent.get(parent)
            if keys is None:
                return []
            if project_id is None:
                return keys
            return [k for k in keys if self.ready_key[k[2]][3] == project_id]
        if project_id is not None:
            keys = self.ready_by_project.get(project_id)
            return keys if keys is not None else []
        return self.ready_all

    def blocked_keys(self, project_id: str | None) -> list[tuple]:
        """Order keys of the pending tasks held back, of a project or of all."""
        if project_id is not None:
            keys = self.blocked_by_project.get(project_id)
            return keys if keys is not None else []
        return self.blocked_all

    @property
    def ready_all(self) -> list[tuple]:
        """Order keys of every eligible task (of all projects), sorted."""
        if self._ready_all is None:
            self._ready_all = _merged(self.ready_by_project)
        return self._ready_all

    @property
    def blocked_all(self) -> list[tuple]:
        """Order keys of every pending task held back, sorted."""
        if self._blocked_all is None:
            self._blocked_all = _merged(self.blocked_by_project)
        return self._blocked_all

    def blocked_ids(self, project_id: str | None) -> list[str]:
        return [k[2] for k in self.blocked_keys(project_id)]

    def due(self, now: int) -> list[str]:
        """Ids of tasks whose claim may have run out by `now` (each checked by the caller)."""
        out = []
        while self.expiries and self.expiries[0][0] <= now:
            _, tid = heapq.heappop(self.expiries)
            out.append(tid)
        return out

    def next_expiry(self) -> int | None:
        return self.expiries[0][0] if self.expiries else None
