"""Reads of lists as pages (`?limit=&cursor=`, see paging.py) and a task's merged history, as a
part of the Service. Every read uses the committed view (`self.state` outside a mutation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .domain.history import merged_history
from .domain.readiness import live_claim
from .paging import PageRequest, page_of, walk
from .vocabulary import FINAL_SESSION_STATUSES

if TYPE_CHECKING:
    from .ready_index import ReadyIndex
    from .state import State

Page = tuple[list[dict], "tuple | None"]


def task_filter(project_id: str | None, status: str | None, parent_id: str | None) \
        -> dict[str, Any]:
    """The field values `GET /api/tasks` filters on (SPEC §7.3.1; `parentId=null`: roots)."""
    equals: dict[str, Any] = {}
    if project_id:
        equals["projectId"] = project_id
    if status:
        equals["status"] = status
    if parent_id:
        equals["parentId"] = None if parent_id == "null" else parent_id
    return equals


def session_filter(project_id: str | None, task_id: str | None, status: str | None,
                   active: str | None):
    """`(equals, contains, predicate)` of `GET /api/sessions` (SPEC §7.4.1)."""
    equals: dict[str, Any] = {}
    if project_id:
        equals["projectId"] = project_id
    if status:
        equals["status"] = status
    contains = {"taskIds": task_id} if task_id else None
    predicate = _is_active if active == "true" else None
    return equals, contains, predicate


def _is_active(session: dict) -> bool:
    return session.get("status") not in FINAL_SESSION_STATUSES


class Listing:
    """Mixed into the Service: uses its `state`, `ready_index`, `get_task` and `claim_now`."""

    state: State
    ready_index: ReadyIndex
    claim_now: Callable[[], int]

    def page_projects(self, page: PageRequest, only: str | None = None) -> Page:
        """A page of projects in creation order; `only`: just that project (an agent's)."""
        projects = self.state.projects
        if only is not None:
            found = projects.get(only)
            return page_of([found] if found is not None else [], page,
                           lambda p: projects.key_of(p["id"]))
        return projects.page({}, after=page.after, limit=page.limit)

    def page_tasks(self, page: PageRequest, project_id: str | None, status: str | None,
                   parent_id: str | None) -> Page:
        """A page of `GET /api/tasks` with its filters, in creation order."""
        return self.state.tasks.page(task_filter(project_id, status, parent_id),
                                     after=page.after, limit=page.limit)

    def page_children(self, task_id: str, page: PageRequest) -> Page:
        """A page of a task's direct children (404 for an unknown task)."""
        self.get_task(task_id)
        return self.state.tasks.page({"parentId": task_id}, after=page.after, limit=page.limit)

    def page_sessions(self, page: PageRequest, project_id: str | None, task_id: str | None,
                      status: str | None, active: str | None) -> Page:
        """A page of `GET /api/sessions` with its filters, in order of `startedAt`."""
        equals, contains, predicate = session_filter(project_id, task_id, status, active)
        return self.state.sessions.page(equals, contains, predicate, after=page.after,
                                        limit=page.limit)

    def page_ready(self, page: PageRequest, project_id: str | None, parent_id: str | None,
                   status: str | None) -> Page:
        """A page of ready work (SPEC §15.2), in priority order."""
        if status is not None and status != "pending":
            return [], None
        now = self.claim_now()  # the lease clock (coordination.py)
        get = self.state.tasks.rows.get
        index = self.ready_index
        check_project = parent_id is not None and project_id is not None

        def accept(key: tuple) -> dict | None:
            task = get(key[2])
            if task is None or live_claim(task, now) is not None:
                return None
            if check_project and index.ready_key.get(key[2], (None,) * 4)[3] != project_id:
                return None
            return task

        return walk(index.ready_source(project_id, parent_id), page.after, page.limit, accept)

    def page_blocked(self, page: PageRequest, project_id: str | None, parent_id: str | None,
                     status: str | None) -> Page:
        """A page of pending tasks held back (SPEC §15.2), in priority order."""
        if status is not None and status != "pending":
            return [], None
        get = self.state.tasks.rows.get

        def accept(key: tuple) -> dict | None:
            task = get(key[2])
            if task is None or (parent_id is not None and task.get("parentId") != parent_id):
                return None
            return task

        return walk(self.ready_index.blocked_keys(project_id), page.after, page.limit, accept)

    def task_history(self, task_id: str) -> list[dict]:
        """`GET /api/tasks/:id/history`: the task's timeline merged with what its sessions
        reported about it, oldest first (domain/history.py)."""
        task = self.get_task(task_id)
        return merged_history(task, self.state.sessions.query({}, {"taskIds": task_id}))
