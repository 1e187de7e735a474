"""The OpenAPI 3.1 document of the REST API, served at /openapi.json, and a docs page at /docs."""

from __future__ import annotations

from functools import lru_cache

from .. import __version__
from ..validate import SESSION_STATUSES, SESSION_TASK_STATUSES, STRATEGIES, TASK_PRIORITIES, \
    TASK_STATUSES, TIMELINE_TYPES

_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_INT = {"type": "integer"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


# A project's workspace settings (README "Parallel agents, isolated").
_PROJECT_WORKSPACE = {
    "isolation": {"enum": ["worktree", "none"], "description": "worktree (the default): each "
                  "spawned session gets its own git worktree and branch; none: sessions share "
                  "workingDir"},
    "baseRef": {"type": "string", "description": "branch or commit new worktrees start from "
                "(default: the main worktree's current branch)"}}


SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "code", "message"], "properties": {
        "error": {"const": True}, "code": _STR, "message": _STR, "details": {}}},
    "Project": {"type": "object", "required": ["id", "name", "createdAt", "updatedAt"],
                "properties": {"id": _STR, "name": _STR, "workingDir": _STR,
                               "description": _STR, "createdAt": _INT, "updatedAt": _INT,
                               **_PROJECT_WORKSPACE}},
    "TimelineEvent": {"type": "object", "required": ["id", "type", "timestamp"], "properties": {
        "id": _STR, "type": {"enum": list(TIMELINE_TYPES)}, "timestamp": _INT,
        "message": _STR, "sessionId": _STR}},
    "Task": {"type": "object", "required": ["id", "projectId", "title", "status"], "properties": {
        "id": _STR, "projectId": _STR, "parentId": {"type": ["string", "null"]}, "title": _STR,
        "description": _STR, "initialPrompt": _STR, "status": _STR, "priority": _STR,
        "sessionIds": _STRS, "skillIds": _STRS, "agentIds": _STRS, "dependencies": _STRS,
        "timeline": {"type": "array", "items": _ref("TimelineEvent")},
        "createdAt": _INT, "updatedAt": _INT, "startedAt": {"type": ["integer", "null"]},
        "completedAt": {"type": ["integer", "null"]},
        "sessionStatus": {"enum": list(SESSION_TASK_STATUSES)},
        "sessionStatusBy": {"type": "string", "description": "the session that wrote "
                            "sessionStatus"},
        "claim": {"oneOf": [{"type": "null"}, _ref("Claim")]},
        "claimToken": {"type": "integer", "description": "the last fencing token granted"}}},
    "Claim": {"type": "object", "required": ["sessionId", "token", "claimedAt", "leaseExpiresAt"],
              "properties": {"sessionId": _STR, "token": _INT, "claimedAt": _INT,
                             "leaseExpiresAt": _INT}},
    "SessionClaim": {"type": "object", "properties": {
        "taskId": _STR, "sessionId": _STR, "token": _INT, "claimedAt": _INT,
        "leaseExpiresAt": _INT}},
    "Readiness": {"type": "object", "required": ["taskId", "ready"], "properties": {
        "taskId": _STR, "ready": {"type": "boolean"}, "blockedBy": _STRS,
        "missingDependencies": _STRS, "blockedAncestors": _STRS,
        "claim": {"oneOf": [{"type": "null"}, _ref("Claim")]}}},
    "ClaimRequest": {"type": "object", "required": ["sessionId"], "properties": {
        "sessionId": _STR, "ttlSeconds": {"type": "integer", "minimum": 5, "maximum": 86400,
                                          "default": 600}}},
    "ClaimNextRequest": {"type": "object", "required": ["sessionId"], "properties": {
        "sessionId": _STR, "parentId": _STR,
        "ttlSeconds": {"type": "integer", "minimum": 5, "maximum": 86400, "default": 600}}},
    "RenewRequest": {"type": "object", "required": ["sessionId", "token"], "properties": {
        "sessionId": _STR, "token": _INT,
        "ttlSeconds": {"type": "integer", "minimum": 5, "maximum": 86400, "default": 600}}},
    "ReleaseRequest": {"type": "object", "required": ["sessionId", "token"], "properties": {
        "sessionId": _STR, "token": _INT, "reason": _STR}},
    "HeartbeatRequest": {"type": "object", "properties": {
        "ttlSeconds": {"type": "integer", "minimum": 5, "maximum": 86400, "default": 600}}},
    "Claimed": {"type": "object", "properties": {
        "task": {"oneOf": [{"type": "null"}, _ref("Task")]},
        "claim": {"oneOf": [{"type": "null"}, _ref("Claim")]}}},
    "Renewed": {"type": "object", "properties": {"claim": _ref("Claim")}},
    "Released": {"type": "object", "properties": {"task": _ref("Task")}},
    "Heartbeat": {"type": "object", "properties": {
        "sessionId": _STR, "claims": {"type": "array", "items": _ref("SessionClaim")}}},
    "Plan": {"type": "object", "required": ["tasks"], "properties": {
        "tasks": {"type": "array", "minItems": 1, "maxItems": 500, "items": {
            "type": "object", "required": ["ref", "title"], "properties": {
                "ref": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$",
                        "description": "this task's name inside the plan"},
                "title": {"type": "string", "minLength": 1, "maxLength": 1000},
                "description": _STR, "initialPrompt": _STR,
                "priority": {"enum": list(TASK_PRIORITIES)},
                "parent": {"type": "string", "description": "a ref of the plan or the id of "
                           "an existing task of the project"},
                "dependsOn": {"type": "array", "items": _STR, "description": "refs or ids "
                              "of existing tasks this one waits for"}}}},
        "dependencies": {"type": "array", "description": "new dependencies of existing tasks "
                         "(or of the plan's tasks)", "items": {
                             "type": "object", "required": ["task", "dependsOn"],
                             "properties": {"task": _STR, "dependsOn": _STR}}}}},
    "Planned": {"type": "object", "properties": {
        "tasks": {"type": "array", "items": _ref("Task"), "description": "the new tasks, in "
                  "the plan's order"},
        "refs": {"type": "object", "additionalProperties": _STR,
                 "description": "ref -> id of each new task"},
        "updated": {"type": "array", "items": _ref("Task"), "description": "existing tasks "
                    "that gained dependencies"}}},
    "SessionEvent": {"type": "object", "required": ["id", "timestamp", "type"], "properties": {
        "id": _STR, "timestamp": _INT, "type": _STR, "data": {}}},
    "Session": {"type": "object", "required": ["id", "projectId", "taskIds", "status"],
                "properties": {
                    "id": _STR, "projectId": _STR, "taskIds": _STRS, "name": _STR,
                    "agentId": _STR, "status": _STR,
                    "env": {"type": "object", "additionalProperties": _STR},
                    "events": {"type": "array", "items": _ref("SessionEvent")},
                    "metadata": {"type": "object"}, "startedAt": _INT, "lastActivity": _INT,
                    "completedAt": {"type": ["integer", "null"]}, "hostname": _STR,
                    "platform": _STR, "workspace": _ref("Workspace")}},
    "Skill": {"type": "object", "required": ["id", "name"], "properties": {
        "id": _STR, "name": _STR, "description": _STR, "type": _STR, "version": _STR,
        "instructions": _STR, "reloaded": {"type": "boolean"}}},
    "Deleted": {"type": "object", "properties": {"success": {"const": True}, "id": _STR,
                                                 "deleted": _STRS}},
    "ProjectDeleted": {"type": "object", "properties": {
        "success": {"const": True}, "id": _STR,
        "deleted": {"type": "object", "description": "with cascade: what went with it",
                    "properties": {"sessions": _STRS, "tasks": _STRS}}}},
    "CreateProject": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 1000}, "workingDir": _STR,
        "description": _STR,
        **_PROJECT_WORKSPACE}},
    "UpdateProject": {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 1000}, "workingDir": _STR,
        "description": _STR,
        **_PROJECT_WORKSPACE}},
    "CreateTask": {"type": "object", "required": ["projectId", "title"], "properties": {
        "projectId": _STR, "title": {"type": "string", "minLength": 1, "maxLength": 1000},
        "parentId": {"type": ["string", "null"]}, "description": _STR,
        "priority": {"enum": list(TASK_PRIORITIES)}, "initialPrompt": _STR,
        "skillIds": _STRS, "dependencies": _STRS}},
    "UpdateTask": {"type": "object", "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 1000}, "description": _STR,
        "status": {"enum": list(TASK_STATUSES)}, "priority": {"enum": list(TASK_PRIORITIES)},
        "parentId": {"type": ["string", "null"]}, "sessionIds": _STRS, "skillIds": _STRS,
        "agentIds": _STRS, "dependencies": _STRS,
        "timeline": {"type": "array", "items": {"type": "object"}},
        "sessionStatus": {"enum": list(SESSION_TASK_STATUSES)}, "updateSource": _STR,
        "sessionId": _STR}},
    "AddTimeline": {"type": "object", "required": ["message"], "properties": {
        "message": {"type": "string", "minLength": 1}, "type": {"enum": list(TIMELINE_TYPES)},
        "sessionId": _STR}},
    "CreateSession": {"type": "object", "required": ["projectId", "taskIds"], "properties": {
        "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}, "projectId": _STR,
        "taskIds": _STRS, "taskId": _STR, "name": {"type": "string", "maxLength": 1000},
        "agentId": _STR, "status": {"enum": list(SESSION_STATUSES)},
        "env": {"type": "object", "additionalProperties": _STR}, "metadata": {"type": "object"},
        "strategy": {"enum": list(STRATEGIES)}}},
    "UpdateSession": {"type": "object", "properties": {
        "status": {"enum": list(SESSION_STATUSES)}, "agentId": _STR, "taskIds": _STRS,
        "events": {"type": "array", "items": {"type": "object", "required": ["type"]}},
        "env": {"type": "object", "additionalProperties": _STR}}},
    "AddSessionEvent": {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "minLength": 1}, "data": {}}},
    "AddSessionTimeline": {"type": "object", "required": ["message"], "properties": {
        "type": _STR, "message": {"type": "string", "minLength": 1}, "taskId": _STR,
        "metadata": {}}},
}

# path, method, summary, request schema, success status, response schema, path params
ROUTES: list[tuple] = [
    ("/health", "get", "Server health (without any credentials, when a token is required: "
     "only {\"status\":\"ok\"})", None, 200, None),
    ("/ws-status", "get", "Connected WebSocket clients", None, 200, None),
    ("/api/projects", "get", "List projects", None, 200, "Project[]"),
    ("/api/projects", "post", "Create a project", "CreateProject", 201, "Project"),
    ("/api/projects/{id}", "get", "Get a project", None, 200, "Project"),
    ("/api/projects/{id}", "put", "Update a project (partial)", "UpdateProject", 200, "Project"),
    ("/api/projects/{id}", "delete", "Delete a project without tasks or sessions; with "
     "cascade=true also its sessions (their agents are stopped) and tasks, in one change",
     None, 200, "ProjectDeleted"),
    ("/api/tasks", "get", "List tasks (filters: projectId, status, parentId; ready=true: ready "
     "work in priority order; blocked=true: pending tasks held back)", None, 200, "Task[]"),
    ("/api/tasks", "post", "Create a task", "CreateTask", 201, "Task"),
    ("/api/tasks/{id}", "get", "Get a task", None, 200, "Task"),
    ("/api/tasks/{id}", "patch", "Update a task", "UpdateTask", 200, "Task"),
    ("/api/tasks/{id}", "delete", "Delete a task (with children only with cascade=true); "
     "unlinks it, drops it from dependencies, releases its claim", None, 200, "Deleted"),
    ("/api/tasks/{id}/timeline", "post", "Append to a task's timeline", "AddTimeline", 200,
     "Task"),
    ("/api/tasks/{id}/children", "get", "Direct children of a task", None, 200, "Task[]"),
    ("/api/tasks/{id}/readiness", "get", "Whether a task is ready, and what holds it back",
     None, 200, "Readiness"),
    ("/api/tasks/{id}/dependencies/{dependsOnId}", "post", "Add one dependency (idempotent; "
     "refused if it closes a cycle)", None, 200, "Task"),
    ("/api/tasks/{id}/dependencies/{dependsOnId}", "delete", "Remove one dependency "
     "(idempotent)", None, 200, "Task"),
    ("/api/tasks/{id}/claim", "post", "Claim a ready task for a session (a lease with a "
     "fencing token)", "ClaimRequest", 200, "Claimed"),
    ("/api/tasks/{id}/claim/renew", "post", "Extend a live lease", "RenewRequest", 200,
     "Renewed"),
    ("/api/tasks/{id}/claim/release", "post", "Give a claim up; the task goes back to pending",
     "ReleaseRequest", 200, "Released"),
    ("/api/projects/{id}/claim-next", "post", "Claim the first ready task of a project "
     "(task null when nothing is ready)", "ClaimNextRequest", 200, "Claimed"),
    ("/api/projects/{id}/plan", "post", "Create a whole breakdown at once: tasks named by "
     "local refs, their parents and dependencies (and new dependencies of existing tasks), "
     "all or nothing, refused with DEPENDENCY_CYCLE if it closes a cycle", "Plan", 201,
     "Planned"),
    ("/api/sessions/{id}/heartbeat", "post", "Renew every live claim of a session",
     "HeartbeatRequest", 200, "Heartbeat"),
    ("/api/sessions", "get", "List sessions (filters: projectId, taskId, status, active)", None,
     200, "Session[]"),
    ("/api/sessions", "post", "Create a session and link its tasks", "CreateSession", 201,
     "Session"),
    ("/api/sessions/{id}", "get", "Get a session", None, 200, "Session"),
    ("/api/sessions/{id}", "patch", "Update a session", "UpdateSession", 200, "Session"),
    ("/api/sessions/{id}", "delete", "Delete a session (unlinks its tasks)", None, 200,
     "Deleted"),
    ("/api/sessions/{id}/tasks/{taskId}", "post", "Link a task to a session", None, 200,
     "Session"),
    ("/api/sessions/{id}/tasks/{taskId}", "delete", "Unlink a task from a session", None, 200,
     "Session"),
    ("/api/sessions/{id}/events", "post", "Append a session event", "AddSessionEvent", 200,
     "Session"),
    ("/api/sessions/{id}/timeline", "post", "Append to a session's timeline",
     "AddSessionTimeline", 200, "Session"),
    ("/api/skills", "get", "The skill catalogue of SKILLS_DIR", None, 200, "Skill[]"),
    ("/api/skills/role/{role}", "get", "The skills of a role (worker, orchestrator)", None, 200,
     "Skill[]"),
    ("/api/skills/{id}", "get", "A skill with its instructions", None, 200, "Skill"),
    ("/api/skills/{id}/reload", "post", "Read a skill again from disk", None, 200, "Skill"),
]

_QUERY = {
    ("/api/tasks", "get"): ["projectId", "status", "parentId", "ready", "blocked"],
    ("/api/tasks/{id}", "delete"): ["cascade"],
    ("/api/projects/{id}", "delete"): ["cascade"],
    ("/api/sessions/{id}/log", "get"): ["tail", "offset"],
    ("/api/sessions", "get"): ["projectId", "taskId", "status", "active"],
}

# Writes fenced by claims (SPEC §15.3).
_CLAIM_TOKEN_ROUTES = {("/api/tasks/{id}", "patch"), ("/api/tasks/{id}/timeline", "post"),
                       ("/api/tasks/{id}/dependencies/{dependsOnId}", "post"),
                       ("/api/tasks/{id}/dependencies/{dependsOnId}", "delete"),
                       ("/api/projects/{id}/plan", "post")}

_extra_routes: list[tuple] = []
_route_errors: dict[tuple[str, str], str] = {}


def register(path: str, method: str, summary: str, request: str | None, status: int,
             response: str | None, schemas: dict | None = None,
             errors: str | None = None) -> None:
    """Let other modules (spawn, launcher) add their routes to the document; `errors` lists the
    route's own error codes."""
    _extra_routes.append((path, method, summary, request, status, response))
    if errors:
        _route_errors[(path, method)] = errors
    if schemas:
        SCHEMAS.update(schemas)
    openapi_document.cache_clear()


def _response_schema(name: str | None) -> dict:
    if name is None:
        return {"type": "object"}
    if name.endswith("[]"):
        return {"type": "array", "items": _ref(name[:-2])}
    return _ref(name)


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    paths: dict = {}
    for path, method, summary, request, status, response in ROUTES + _extra_routes:
        op: dict = {"summary": summary, "responses": {
            str(status): {"description": "OK", "content": {
                "application/json": {"schema": _response_schema(response)}}},
            "4XX": {"description": _route_errors.get((path, method), "Client error"),
                    "content": {"application/json": {"schema": _ref("Error")}}}}}
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "string", "maxLength": 128}}
                  for p in ("id", "taskId", "dependsOnId", "role") if "{" + p + "}" in path]
        params += [{"name": q, "in": "query", "required": False, "schema": _STR}
                   for q in _QUERY.get((path, method), [])]
        if (path, method) in _CLAIM_TOKEN_ROUTES:
            params.append({"name": "X-Maestro-Claim-Token", "in": "header", "required": False,
                           "schema": _INT, "description": "the fencing token of the writer's "
                           "claim; refused with 409 CLAIM_LOST unless it is the live one"})
        if params:
            op["parameters"] = params
        if request:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": _ref(request)}}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Maestro API", "version": __version__,
                 "description": "Projects, hierarchical tasks and agent sessions. Every change "
                                "is also broadcast on the WebSocket at / (or /ws)."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def docs_page() -> bytes:
    doc = openapi_document()
    rows = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{path}</code>"
                        f"</td><td>{op['summary']}</td></tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Maestro API</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}"
            "td{padding:.25rem .75rem;border-bottom:1px solid #ddd}</style></head><body>"
            "<h1>Maestro API</h1><p>The machine-readable document is at "
            "<a href='/openapi.json'>/openapi.json</a>. Events: connect a WebSocket to "
            "<code>/</code>.</p><table>" + "".join(rows) + "</table></body></html>").encode()
