"""What an agent may do with its session token (the security issue's "agent identities").

An agent reads everything of its own project (of the sessions' diffs only its own); it changes
only its own session, the tasks linked to that session and their descendants (fields, timeline,
dependencies), creates child tasks under those, claims work of its own project for its own
session (a claim links the task), and, as an orchestrator, spawns sub-sessions for them and
stops the sessions it spawned. It never merges or removes a worktree. Everything else is 403.
The user (MAESTRO_TOKEN, or no token on a loopback-only server) is never checked here."""

from __future__ import annotations

import re
from typing import Any

from .errors import ApiError
from .identity import AgentIdentity
from .plan import plan_refs

SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
REDACTED = "[redacted]"


def forbidden(message: str, details: Any = None) -> ApiError:
    return ApiError(403, "FORBIDDEN", message, details)


def has_secrets(session: dict) -> bool:
    env = session.get("env")
    return isinstance(env, dict) and any(SECRET_NAME.search(k) for k in env)


def redact_env(env: dict) -> dict:
    return {k: (REDACTED if SECRET_NAME.search(k) else v) for k, v in env.items()}


def redact_session(session: dict) -> dict:
    """The session as an agent may see it: secret-looking env values replaced."""
    if not has_secrets(session):
        return session
    out = dict(session)
    out["env"] = redact_env(session["env"])
    return out


def redact_payload(data: Any) -> Any:
    """Redact sessions inside an event payload (a session, or a spawn request)."""
    if not isinstance(data, dict):
        return data
    if "env" in data and "taskIds" in data and isinstance(data.get("env"), dict):
        return redact_session(data)
    if isinstance(data.get("session"), dict) or isinstance(data.get("envVars"), dict):
        out = dict(data)
        if isinstance(out.get("session"), dict):
            out["session"] = redact_session(out["session"])
        if isinstance(out.get("envVars"), dict):
            out["envVars"] = redact_env(out["envVars"])
        return out
    return data


class Policy:
    def __init__(self, state):
        self.state = state

    # ------------------------------------------------------------ scope
    def task_scope(self, identity: AgentIdentity) -> set[str]:
        """Tasks the agent may change: those linked to its session and all their descendants."""
        session = self.state.sessions.get(identity.session_id) or {}
        roots = session.get("taskIds") if isinstance(session.get("taskIds"), list) else []
        children = self.state.tasks.indexes["parentId"]
        scope: set[str] = set()
        stack = [t for t in roots if isinstance(t, str)]
        while stack:
            tid = stack.pop()
            if tid in scope:
                continue
            scope.add(tid)
            stack.extend(children.get(tid))
        return scope

    def _require_task(self, identity: AgentIdentity, task_id: str) -> None:
        if self.state.tasks.get(task_id) is None:
            return  # the route answers 404
        if task_id not in self.task_scope(identity):
            raise forbidden("This session may only change its own tasks and their children",
                            {"taskId": task_id})

    def _require_project_entity(self, identity: AgentIdentity, entity: dict | None) -> None:
        if entity is not None and entity.get("projectId") != identity.project_id:
            raise forbidden("This session may only read its own project")

    def _require_own_session(self, identity: AgentIdentity, session_id: str) -> None:
        if session_id != identity.session_id:
            raise forbidden("This session may only change itself", {"sessionId": session_id})

    def _require_parent_in_project(self, identity: AgentIdentity, body: dict) -> None:
        """A parent named in a spawn (`sessionId`, `spawnedBy`) must be a session of the agent's
        own project. A session elsewhere and no session at all get the same answer, so the
        refusal tells nothing about other projects."""
        for key in ("sessionId", "spawnedBy"):
            named = body.get(key)
            if not isinstance(named, str) or not named:
                continue  # absent, or malformed: the route answers 400
            parent = self.state.sessions.get(named)
            if parent is None or parent.get("projectId") != identity.project_id:
                raise forbidden("This session may only name a session of its own project as "
                                "the parent", {"field": key})

    # ------------------------------------------------------------ the rules
    def check(self, identity: AgentIdentity, method: str, template: str,
              params: dict[str, str], body: dict | None, query) -> str | None:
        """Raise 403 unless `identity` may do this; returns the project id lists must be
        restricted to, when the route is a list."""
        sid = params.get("id")
        if method == "GET":
            if template in ("/health", "/ws-status") or template.startswith("/api/skills"):
                return None
            if template == "/api/projects":
                return identity.project_id
            if template == "/api/projects/{id}":
                if sid != identity.project_id and self.state.projects.get(sid) is not None:
                    raise forbidden("This session may only read its own project")
                return None
            if template in ("/api/tasks", "/api/sessions"):
                asked = query("projectId")
                if asked is not None and asked != identity.project_id:
                    raise forbidden("This session may only read its own project")
                return identity.project_id
            if template.startswith("/api/tasks/{id}"):
                self._require_project_entity(identity, self.state.tasks.get(sid))
                return None
            if template == "/api/sessions/{id}/diff" and sid != identity.session_id:
                raise forbidden("This session may only read its own diff",
                                {"sessionId": sid})
            if template == "/api/sessions/{id}/log":
                # An agent's output may hold what it read (keys, files): its own only.
                if self.state.sessions.get(sid) is not None and sid != identity.session_id:
                    raise forbidden("This session may only read its own output log",
                                    {"sessionId": sid})
                return None
            if template.startswith("/api/sessions/{id}"):
                self._require_project_entity(identity, self.state.sessions.get(sid))
                return None
            raise forbidden("Not available to agent sessions")
        body = body or {}
        if template in ("/api/sessions/{id}/merge", "/api/sessions/{id}/cleanup"):
            raise forbidden("Only a person merges or removes a session's worktree")
        if template in ("/api/tasks/{id}", "/api/tasks/{id}/timeline") \
                and method in ("PATCH", "POST"):
            self._require_task(identity, sid)
            parent = body.get("parentId")
            if method == "PATCH" and isinstance(parent, str):
                self._require_task(identity, parent)
            wanted = body.get("sessionIds")
            if method == "PATCH" and isinstance(wanted, list):
                # Linking or unlinking a session changes that session: only its own.
                task = self.state.tasks.get(sid) or {}
                current = task.get("sessionIds") if isinstance(task.get("sessionIds"), list) \
                    else []
                changed = set(map(str, wanted)) ^ set(map(str, current))
                if changed - {identity.session_id}:
                    raise forbidden("This session may only link or unlink itself",
                                    {"sessionIds": sorted(changed - {identity.session_id})})
            return None
        if template in ("/api/tasks/{id}/claim", "/api/tasks/{id}/claim/renew",
                        "/api/tasks/{id}/claim/release") and method == "POST":
            # Claiming is how an agent comes to own a task: any task of its own project,
            # for its own session only.
            if body.get("sessionId") is not None:  # absent: the route answers 400
                self._require_own_session(identity, body.get("sessionId"))
            self._require_project_entity(identity, self.state.tasks.get(sid))
            return None
        if template == "/api/projects/{id}/claim-next" and method == "POST":
            if sid != identity.project_id:
                raise forbidden("This session may only claim work of its own project")
            if body.get("sessionId") is not None:
                self._require_own_session(identity, body.get("sessionId"))
            return None
        if template == "/api/projects/{id}/plan" and method == "POST":
            self._check_plan(identity, sid, body)
            return None
        if template == "/api/sessions/{id}/heartbeat" and method == "POST":
            self._require_own_session(identity, sid)
            return None
        if template == "/api/tasks/{id}/dependencies/{dependsOnId}" \
                and method in ("POST", "DELETE"):
            self._require_task(identity, sid)
            return None
        if template == "/api/tasks" and method == "POST":
            if body.get("projectId") != identity.project_id:
                raise forbidden("This session may only create tasks in its own project")
            parent = body.get("parentId")
            if not isinstance(parent, str) or parent not in self.task_scope(identity):
                raise forbidden("This session may only create child tasks under its own tasks")
            return None
        if template == "/api/sessions/{id}" and method == "PATCH":
            self._require_own_session(identity, sid)
            wanted = body.get("taskIds")
            if isinstance(wanted, list):
                scope = self.task_scope(identity)
                outside = [t for t in wanted if t not in scope]
                if outside:
                    raise forbidden("This session may only link its own tasks",
                                    {"taskId": outside[0]})
            return None
        if template in ("/api/sessions/{id}/events", "/api/sessions/{id}/timeline") \
                and method == "POST":
            self._require_own_session(identity, sid)
            return None
        if template == "/api/sessions/{id}/tasks/{taskId}" and method in ("POST", "DELETE"):
            self._require_own_session(identity, sid)
            self._require_task(identity, params.get("taskId", ""))
            return None
        if template == "/api/sessions/spawn" and method == "POST":
            if not identity.orchestrator:
                raise forbidden("Only orchestrator sessions may spawn sessions")
            if body.get("projectId") != identity.project_id:
                raise forbidden("This session may only spawn in its own project")
            self._require_parent_in_project(identity, body)
            task_ids = body.get("taskIds")
            if isinstance(task_ids, list):
                scope = self.task_scope(identity)
                for tid in task_ids:
                    if isinstance(tid, str) and self.state.tasks.get(tid) is not None \
                            and tid not in scope:
                        raise forbidden("This session may only spawn for its own tasks",
                                        {"taskId": tid})
            return None
        if template == "/api/sessions/{id}/stop" and method == "POST":
            target = self.state.sessions.get(sid)
            if target is None or sid == identity.session_id:
                return None
            meta = target.get("metadata") if isinstance(target.get("metadata"), dict) else {}
            if identity.orchestrator and meta.get("spawnedBy") == identity.session_id:
                return None
            raise forbidden("This session may only stop itself or the sessions it spawned")
        raise forbidden("Not available to agent sessions")

    def _check_plan(self, identity: AgentIdentity, project_id: str, body: dict) -> None:
        """A plan of an agent: in its own project; new dependencies only on its own tasks; each
        new task under another new task, under one of its own tasks, or beside (same parent) a
        task of its own that the plan makes wait for it (follow-up work it found)."""
        if project_id != identity.project_id:
            raise forbidden("This session may only plan work in its own project")
        tasks, refs, edges = plan_refs(body)
        scope = self.task_scope(identity)
        waiting: dict[str, set] = {}  # new task ref -> parents of own tasks that wait for it
        for task_name, dep_name in edges:
            if not isinstance(task_name, str) or task_name in refs:
                continue
            existing = self.state.tasks.get(task_name)
            if existing is None:
                continue  # the route answers 404
            if task_name not in scope:
                raise forbidden("This session may only add dependencies to its own tasks",
                                {"taskId": task_name})
            if isinstance(dep_name, str) and dep_name in refs:
                waiting.setdefault(dep_name, set()).add(existing.get("parentId") or None)
        for task in tasks:
            parent = task.get("parent") or None
            if isinstance(parent, str) and (parent in refs or parent in scope):
                continue
            if parent is not None and not isinstance(parent, str):
                continue  # the route answers 400
            if parent in waiting.get(task.get("ref"), ()):
                continue
            raise forbidden("This session may only plan tasks under its own tasks, or beside "
                            "a task of its own that waits for them", {"ref": task.get("ref")})

    def event_visible(self, identity: AgentIdentity, project_id: str | None) -> bool:
        return project_id is not None and project_id == identity.project_id
