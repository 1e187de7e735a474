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


SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "code", "message"], "properties": {
        "error": {"const": True}, "code": _STR, "message": _STR, "details": {}}},
    "Project": {"type": "object", "required": ["id", "name", "createdAt", "updatedAt"],
                "properties": {"id": _STR, "name": _STR, "workingDir": _STR,
                               "description": _STR, "createdAt": _INT, "updatedAt": _INT}},
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
        "sessionStatus": {"enum": list(SESSION_TASK_STATUSES)}}},
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
                    "platform": _STR}},
    "Skill": {"type": "object", "required": ["id", "name"], "properties": {
        "id": _STR, "name": _STR, "description": _STR, "type": _STR, "version": _STR,
        "instructions": _STR, "reloaded": {"type": "boolean"}}},
    "Deleted": {"type": "object", "properties": {"success": {"const": True}, "id": _STR}},
    "CreateProject": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 1000}, "workingDir": _STR,
        "description": _STR}},
    "UpdateProject": {"type": "object", "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 1000}, "workingDir": _STR,
        "description": _STR}},
    "CreateTask": {"type": "object", "required": ["projectId", "title"], "properties": {
        "projectId": _STR, "title": {"type": "string", "minLength": 1, "maxLength": 1000},
        "parentId": {"type": ["string", "null"]}, "description": _STR,
        "priority": {"enum": list(TASK_PRIORITIES)}, "initialPrompt": _STR,
        "skillIds": _STRS}},
    "UpdateTask": {"type": "object", "properties": {
        "title": {"type": "string", "minLength": 1, "maxLength": 1000}, "description": _STR,
        "status": {"enum": list(TASK_STATUSES)}, "priority": {"enum": list(TASK_PRIORITIES)},
        "parentId": {"type": ["string", "null"]}, "sessionIds": _STRS, "skillIds": _STRS,
        "agentIds": _STRS, "timeline": {"type": "array", "items": {"type": "object"}},
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
    ("/api/projects/{id}", "delete", "Delete a project without tasks or sessions", None, 200,
     "Deleted"),
    ("/api/tasks", "get", "List tasks (filters: projectId, status, parentId)", None, 200,
     "Task[]"),
    ("/api/tasks", "post", "Create a task", "CreateTask", 201, "Task"),
    ("/api/tasks/{id}", "get", "Get a task", None, 200, "Task"),
    ("/api/tasks/{id}", "patch", "Update a task", "UpdateTask", 200, "Task"),
    ("/api/tasks/{id}", "delete", "Delete a task (no cascade)", None, 200, "Deleted"),
    ("/api/tasks/{id}/timeline", "post", "Append to a task's timeline", "AddTimeline", 200,
     "Task"),
    ("/api/tasks/{id}/children", "get", "Direct children of a task", None, 200, "Task[]"),
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
    ("/api/tasks", "get"): ["projectId", "status", "parentId"],
    ("/api/sessions", "get"): ["projectId", "taskId", "status", "active"],
}

_extra_routes: list[tuple] = []


def register(path: str, method: str, summary: str, request: str | None, status: int,
             response: str | None, schemas: dict | None = None) -> None:
    """Let other modules (spawn, launcher) add their routes to the document."""
    _extra_routes.append((path, method, summary, request, status, response))
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
            "4XX": {"description": "Client error",
                    "content": {"application/json": {"schema": _ref("Error")}}}}}
        params = [{"name": p, "in": "path", "required": True,
                   "schema": {"type": "string", "maxLength": 128}}
                  for p in ("id", "taskId", "role") if "{" + p + "}" in path]
        params += [{"name": q, "in": "query", "required": False, "schema": _STR}
                   for q in _QUERY.get((path, method), [])]
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
