"""Projects (SPEC §7.2): list, read, create, update and delete, with the cascade that takes a
project's sessions and tasks with it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..domain.hierarchy import children_first
from ..entities import bump as _bump
from ..entities import with_changes as _with
from ..errors import ApiError, project_not_found
from ..ids import make_id, now_ms
from .. import models as shape
from ..shapes import checker
from ..workspace.options import project_settings
from ..write_lead import forwardable

if TYPE_CHECKING:
    from ..commit import Tx

_check_create = checker(shape.CreateProject)
_check_update = checker(shape.UpdateProject)


class Projects:
    """Part of the Service: uses its `state`, `_mutate` and the task and session deletions."""

    def list_projects(self) -> list[dict]:
        return self.state.projects.ordered()

    def get_project_or_none(self, project_id: str) -> dict | None:
        """The project, or None when there is none (never raises)."""
        return self.state.projects.get(project_id)

    def get_project(self, project_id: str) -> dict:
        p = self.state.projects.get(project_id)
        if p is None:
            raise project_not_found(project_id)
        return p

    @forwardable
    async def create_project(self, body: dict) -> dict:
        _check_create(body)
        name = body["name"]
        working_dir = body.get("workingDir") or ""
        description = body.get("description") or ""
        workspace = project_settings(body)

        def apply(tx: Tx) -> dict:
            now = now_ms()
            project = {"id": make_id("proj", now), "name": name.strip(), "workingDir": working_dir,
                       "description": description, **workspace, "createdAt": now,
                       "updatedAt": now}
            tx.put("project", project)
            tx.emit("project:created", project)
            return project

        return await self._mutate(apply)

    @forwardable
    async def update_project(self, project_id: str, body: dict) -> dict:
        _check_update(body)
        name = body.get("name")
        working_dir = body.get("workingDir")
        description = body.get("description")
        workspace = project_settings(body)

        def apply(tx: Tx) -> dict:
            old = self.get_project(project_id)
            changes: dict[str, Any] = dict(workspace)
            if name is not None:
                changes["name"] = name.strip()
            if working_dir is not None:
                changes["workingDir"] = working_dir
            if description is not None:
                changes["description"] = description
            changes["updatedAt"] = _bump(old.get("updatedAt"))
            project = tx.put("project", _with(old, **changes))
            tx.emit("project:updated", project)
            return project

        return await self._mutate(apply)

    @forwardable
    async def delete_project(self, project_id: str, cascade: bool = False) -> dict:
        """§7.2.5: refused while the project has tasks or sessions, unless `cascade`: then its
        sessions (their agent tokens die with them, and the launcher stops their agents),
        its tasks (children before parents) and the project go in one change."""
        def apply(tx: Tx) -> dict:
            self.get_project(project_id)
            if cascade:
                return self._delete_project_tree(tx, project_id)
            n_tasks = len(self.state.tasks.indexes["projectId"].get(project_id))
            if n_tasks:
                raise ApiError(400, "PROJECT_HAS_DEPENDENCIES",
                               f"Cannot delete project with {n_tasks} existing task(s)",
                               {"projectId": project_id, "tasks": n_tasks})
            n_sessions = len(self.state.sessions.indexes["projectId"].get(project_id))
            if n_sessions:
                raise ApiError(400, "PROJECT_HAS_DEPENDENCIES",
                               f"Cannot delete project with {n_sessions} existing session(s)",
                               {"projectId": project_id, "sessions": n_sessions})
            tx.delete("project", project_id)
            tx.emit("project:deleted", {"id": project_id})
            return {"success": True, "id": project_id}

        return await self._mutate(apply)

    def _delete_project_tree(self, tx: Tx, project_id: str) -> dict:
        sessions = [s["id"] for s in self.state.sessions.query({"projectId": project_id})]
        for sid in sessions:
            self._delete_session_in_tx(tx, sid)
        task_ids = [t["id"] for t in self.state.tasks.query({"projectId": project_id})]
        ordered = children_first(task_ids, self.state.tasks.get)
        doomed = set(task_ids)
        for tid in ordered:
            self._delete_one_task(tx, tid, doomed)
        tx.delete("project", project_id)
        tx.emit("project:deleted", {"id": project_id})
        return {"success": True, "id": project_id,
                "deleted": {"sessions": sessions, "tasks": ordered}}
