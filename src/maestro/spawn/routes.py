"""HTTP routes of spawning and agent control, and their entries in /openapi.json:

- POST /api/sessions/spawn        create a session + manifest for tasks (SPEC §9)
- POST /api/sessions/{id}/stop    stop the session's agent (SIGTERM, SIGKILL after a grace period)
- GET  /api/sessions/{id}/log     the agent's output: the last lines (`?tail=N`), or the lines
                                  written from a byte on (`?offset=N`, to follow it)"""

from __future__ import annotations

from ..config import Settings
from ..policy import redact_session
from ..server.openapi import register
from ..server.router import ApiRequest, Reply, Router
from ..service import Service
from ..workspace.routes import install as install_workspaces
from .launcher import Launcher
from .manifest import MODELS, PERMISSION_MODES, ROLES
from .spawn import SPAWN_SOURCES, SPAWN_STRATEGIES, Spawner

_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}

SCHEMAS = {
    "SpawnRequest": {"type": "object", "required": ["projectId", "taskIds"], "properties": {
        "projectId": _STR, "taskIds": {"type": "array", "items": _STR, "minItems": 1},
        "role": {"enum": list(ROLES)}, "skills": _STRS, "model": {"enum": list(MODELS)},
        "permissionMode": {"enum": list(PERMISSION_MODES)},
        "sessionName": {"type": "string", "maxLength": 1000},
        "spawnSource": {"enum": list(SPAWN_SOURCES)}, "sessionId": _STR, "spawnedBy": _STR,
        "spawnReason": _STR, "context": {"type": "object"},
        "strategy": {"enum": list(SPAWN_STRATEGIES)},
        "env": {"type": "object", "additionalProperties": _STR,
                "description": "variables for the agent, stored in the session's env; not "
                "MAESTRO_*, DATABASE_URL, PG*, DATA_DIR or SESSION_DIR"},
        "agent": {"type": "string", "description": "claude, codex, or a command line with "
                  "{prompt_file} / {manifest} placeholders; handed to the agent as "
                  "MAESTRO_AGENT"},
        "isolation": {"enum": ["worktree", "none"], "description": "worktree (default, or the "
                      "project's isolation): its own git worktree and branch when workingDir "
                      "is in a git repository; none: work in workingDir itself"},
        "baseRef": {"type": "string", "description": "branch or commit the worktree starts "
                    "from (default: the project's baseRef, else the main worktree's current "
                    "branch)"}}},
    "SpawnResponse": {"type": "object", "properties": {
        "success": {"const": True}, "sessionId": _STR, "manifestPath": _STR,
        "message": {"type": "string", "description": "what happened: the local launcher "
                    "started the agent (with its pid), queued it, could not start it, or the "
                    "request was sent to an Agents UI"},
        "launch": {"type": "object", "description": "the same for programs", "properties": {
            "launcher": {"enum": ["local", "ui"]},
            "state": {"enum": ["started", "queued", "failed", "skipped", "starting",
                               "requested"]},
            "pid": {"type": "integer"}, "mode": {"enum": ["tmux", "pty"]}, "attach": _STR,
            "running": {"type": "integer"}, "maxAgents": {"type": "integer"},
            "message": _STR}},
        "session": {"$ref": "#/components/schemas/Session"}}},
    "StopResponse": {"type": "object", "properties": {
        "success": {"const": True}, "sessionId": _STR,
        "signal": {"type": ["string", "null"]}, "graceSeconds": {"type": "number"},
        "session": {"$ref": "#/components/schemas/Session"}}},
    "SessionLog": {"type": "object", "properties": {
        "sessionId": _STR, "lines": _STRS, "truncated": {"type": "boolean"},
        "finished": {"type": "boolean", "description": "the session has ended: no more lines "
                     "will come"},
        "offset": {"type": "integer"},
        "nextOffset": {"type": "integer", "description": "pass as offset to get what is "
                       "written next"},
        "size": {"type": "integer"}}},
}


def install(router: Router, service: Service, settings: Settings, extensions: list,
            tokens=None) -> Launcher:
    """Add the routes to `router` and the launcher to the app's `extensions` (started after the
    service, stopped before it). `tokens` (optional) mints each launched agent's own token."""
    spawner = Spawner(service, settings, tokens=tokens)
    launcher = Launcher(service, settings, tokens=tokens)
    spawner.on_spawned = launcher.submit
    spawner.workspaces = install_workspaces(router, service, settings, extensions)

    async def spawn(r: ApiRequest):
        result = await spawner.spawn(await r.json())
        if r.identity is not None:  # an orchestrator agent: no secrets of the new session
            result = dict(result, session=redact_session(result["session"]))
        return Reply(result, 201)

    async def stop(r: ApiRequest):
        await r.json()
        by = r.identity.session_id if r.identity is not None else None
        return await launcher.stop_session(r.param(), by=by)

    async def output(r: ApiRequest):
        return await launcher.read_log(r.param(), r.query("tail"), r.query("offset"))

    router.add("POST", "/api/sessions/spawn", spawn)
    router.add("POST", "/api/sessions/{id}/stop", stop)
    router.add("GET", "/api/sessions/{id}/log", output)
    register("/api/sessions/spawn", "post", "Spawn an agent session for tasks (writes its "
             "manifest; the local launcher then starts the agent)", "SpawnRequest", 201,
             "SpawnResponse", SCHEMAS)
    register("/api/sessions/{id}/stop", "post", "Stop a session's agent (SIGTERM, then SIGKILL "
             "after MAESTRO_STOP_GRACE seconds)", None, 200, "StopResponse")
    register("/api/sessions/{id}/log", "get", "A session's agent output: the last lines "
             "(query tail, default 100) or the lines written from byte offset on (query "
             "offset; follow with nextOffset). Agents read only their own",
             None, 200, "SessionLog")
    extensions.append(launcher)
    return launcher
