"""HTTP routes of spawning and agent control, and their entries in /openapi.json:

- POST /api/sessions/spawn        create a session + manifest for tasks (SPEC §9)
- POST /api/sessions/{id}/stop    stop the session's agent (SIGTERM, SIGKILL after a grace period)
- GET  /api/sessions/{id}/log     the last lines of the agent's output (`?tail=N`)"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from ..config import Settings
from ..policy import redact_session
from ..server import api_models as m
from ..server.openapi import Op
from ..server.router import ApiRequest, Reply, Router
from ..service import Service
from .launcher import Launcher
from .manifest import MODELS, PERMISSION_MODES, ROLES
from .spawn import SPAWN_SOURCES, SPAWN_STRATEGIES, Spawner


class SpawnRequest(TypedDict):
    """Spawn an agent session for tasks (SPEC §9.2)."""

    projectId: str
    taskIds: Annotated[list[str], Field(min_length=1)]
    role: NotRequired[Literal[ROLES]]  # type: ignore[valid-type]
    skills: NotRequired[list[str]]
    model: NotRequired[Literal[MODELS]]  # type: ignore[valid-type]
    permissionMode: NotRequired[Literal[PERMISSION_MODES]]  # type: ignore[valid-type]
    sessionName: NotRequired[Annotated[str, Field(max_length=1000)]]
    spawnSource: NotRequired[Literal[SPAWN_SOURCES]]  # type: ignore[valid-type]
    sessionId: NotRequired[Annotated[str, Field(description="the parent session (required "
                                                            "with spawnSource session)")]]
    spawnedBy: NotRequired[str]
    spawnReason: NotRequired[str]
    context: NotRequired[dict[str, Any]]
    strategy: NotRequired[Literal[SPAWN_STRATEGIES]]  # type: ignore[valid-type]
    env: NotRequired[Annotated[dict[str, str], Field(
        description="variables for the agent, stored in the session's env; not MAESTRO_*, "
                    "DATABASE_URL, PG*, DATA_DIR or SESSION_DIR")]]
    agent: NotRequired[Annotated[str, Field(
        description="claude, codex, or a command line with {prompt_file} / {manifest} "
                    "placeholders; handed to the agent as MAESTRO_AGENT")]]


class SpawnResponse(TypedDict):
    __pydantic_config__ = m.OPEN
    success: Literal[True]
    sessionId: str
    manifestPath: str
    message: str
    session: m.Session


class StopResponse(TypedDict):
    __pydantic_config__ = m.OPEN
    success: Literal[True]
    sessionId: str
    signal: str | None
    graceSeconds: float
    session: m.Session


class SessionLog(TypedDict):
    __pydantic_config__ = m.OPEN
    sessionId: str
    lines: list[str]
    truncated: bool


class LogQuery(TypedDict, total=False):
    tail: Annotated[int, Field(ge=1, le=10000, description="how many last lines (default "
                                                           "100)")]


SPAWN = Op(
    "Spawn an agent session for tasks", body=SpawnRequest, ok=SpawnResponse, status=201,
    description="Writes the agent's manifest; the local launcher then starts the agent "
                "(`MAESTRO_LAUNCHER=ui`: a desktop UI does, on `session:spawn_request`).",
    errors={400: ("missing_project_id", "invalid_task_ids", "invalid_spawn_source",
                  "missing_session_id", "invalid_role"),
            404: ("parent_session_not_found", "task_not_found", "project_not_found"),
            500: ("manifest_generation_failed", "spawn_error")},
    events=("session:spawn_request", "session:created", "task:session_added",
            "task:updated"))
STOP = Op("Stop a session's agent (SIGTERM, then SIGKILL after MAESTRO_STOP_GRACE seconds)",
          ok=StopResponse, errors={404: ("SESSION_NOT_FOUND",),
                                   409: ("SESSION_NOT_LAUNCHED", "SESSION_NOT_RUNNING")},
          events=("session:updated",))
LOG = Op("Last lines of a session's agent output", query=LogQuery, ok=SessionLog,
         errors={404: ("SESSION_NOT_FOUND",), 409: ("SESSION_NOT_LAUNCHED",)})


def install(router: Router, service: Service, settings: Settings, extensions: list,
            tokens=None) -> Launcher:
    """Add the routes to `router` and the launcher to the app's `extensions` (started after the
    service, stopped before it). `tokens` (optional) mints each launched agent's own token."""
    spawner = Spawner(service, settings, tokens=tokens)
    launcher = Launcher(service, settings, tokens=tokens)
    spawner.on_spawned = launcher.submit

    async def spawn(r: ApiRequest):
        result = await spawner.spawn(await r.json())
        if r.identity is not None:  # an orchestrator agent: no secrets of the new session
            result = dict(result, session=redact_session(result["session"]))
        return Reply(result, 201)

    async def stop(r: ApiRequest):
        await r.json()
        return await launcher.stop_session(r.param())

    async def output(r: ApiRequest):
        return await launcher.read_log(r.param(), r.query("tail"))

    router.add("POST", "/api/sessions/spawn", spawn, SPAWN)
    router.add("POST", "/api/sessions/{id}/stop", stop, STOP)
    router.add("GET", "/api/sessions/{id}/log", output, LOG)
    extensions.append(launcher)
    return launcher
