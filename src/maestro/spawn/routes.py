"""HTTP routes of spawning and agent control, and their entries in /openapi.json:

- POST /api/sessions/spawn        create a session + manifest for tasks (SPEC §9)
- POST /api/sessions/{id}/stop    stop the session's agent (SIGTERM, SIGKILL after a grace period)
- GET  /api/sessions/{id}/log     the agent's output: the last lines (`?tail=N`), or the lines
                                  written from a byte on (`?offset=N`, to follow it)"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from ..config import Settings
from ..errors import ApiError
from ..policy import OWN_PROJECT, forbidden, seen_by
from .. import models as m
from ..server.openapi import Act, Op
from ..server.router import ApiRequest, Reply, Router
from ..service import Service
from ..workspace.routes import install as install_workspaces
from .forward import LOG_TIMEOUT, STOP_TIMEOUT, Forwarder
from .launcher import Launcher
from .request import SpawnRequest
from .spawn import Spawner


class Launch(TypedDict):
    """What became of the agent, for programs (`message` says it for people)."""

    __pydantic_config__ = m.OPEN
    launcher: Literal["local", "ui"]
    state: NotRequired[Literal["started", "queued", "failed", "skipped", "starting",
                               "requested"]]
    pid: NotRequired[int]
    mode: NotRequired[Literal["tmux", "pty"]]
    attach: NotRequired[Annotated[str, Field(description="the command that attaches a "
                                                         "terminal to the agent")]]
    running: NotRequired[Annotated[int, Field(description="agents running (queued)")]]
    maxAgents: NotRequired[Annotated[int, Field(description="MAESTRO_MAX_AGENTS (queued)")]]
    message: NotRequired[Annotated[str, Field(description="why it did not start")]]


class SpawnResponse(TypedDict):
    __pydantic_config__ = m.OPEN
    success: Literal[True]
    sessionId: str
    manifestPath: str
    message: Annotated[str, Field(
        description="what happened: the local launcher started the agent (with its pid), "
                    "queued it, could not start it, or the request was sent to an Agents UI")]
    launch: Launch
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
    truncated: Annotated[bool, Field(description="older lines were left out (tail)")]
    finished: Annotated[bool, Field(description="the session has ended: no more lines will "
                                                "come")]
    offset: NotRequired[Annotated[int, Field(description="the offset asked for")]]
    nextOffset: Annotated[int, Field(description="pass as offset to get what is written "
                                                 "next")]
    size: NotRequired[Annotated[int, Field(description="the log's size in bytes (offset)")]]


class LogQuery(TypedDict, total=False):
    tail: Annotated[int, Field(ge=1, le=10000, description="how many last lines (default "
                                                           "100)")]
    offset: Annotated[int, Field(ge=0, description=(
        "instead of the last lines, the whole lines written from this byte on (0: from the "
        "start); follow the output by passing each answer's nextOffset"))]


SPAWN = Op(
    "Spawn an agent session for tasks", acts=Act("session", "spawn", id=None),
    body=SpawnRequest, ok=SpawnResponse, status=201,
    description="Gives the session its own git worktree when the project's workingDir is in "
                "a git repository (see `isolation`; `session.workspace` says where it works), "
                "writes the agent's manifest, and the local launcher then starts the agent "
                "(`MAESTRO_LAUNCHER=ui`: a desktop UI does, on `session:spawn_request`); "
                "`message` and `launch` say what became of it.",
    errors={400: ("missing_project_id", "invalid_task_ids", "invalid_spawn_source",
                  "missing_session_id", "invalid_role"),
            404: ("parent_session_not_found", "task_not_found", "project_not_found"),
            500: ("manifest_generation_failed", "spawn_error", "workspace_error")},
    events=("session:spawn_request", "session:created", "task:session_added",
            "task:updated"))
REPLICAS = (" An agent another replica launched: this replica forwards the request, once, "
            "to that replica and answers what it answers; `409 SESSION_NOT_LAUNCHED` when "
            "that replica is gone, cannot be reached, or the request was already forwarded "
            "(header `X-Maestro-Forwarded-By`), with `details.replica` and `details.reason` "
            "(`gone`, `unreachable`, `forwarded`).")
STOP = Op("Stop a session's agent (SIGTERM, then SIGKILL after MAESTRO_STOP_GRACE seconds)",
          acts=Act("session", "stop"), ok=StopResponse, errors={404: ("SESSION_NOT_FOUND",),
                                   409: ("SESSION_NOT_LAUNCHED", "SESSION_NOT_RUNNING")},
          description=REPLICAS.strip(),
          events=("session:updated",))
LOG = Op("A session's agent output: the last lines, or the lines written from an offset on",
         acts=Act("session", "read_log"), query=LogQuery, ok=SessionLog,
         description="`tail` (default 100) answers the last lines; `offset` the whole lines "
                     "written from that byte on, which is how a client follows the output. "
                     "Agents read only their own." + REPLICAS,
         errors={404: ("SESSION_NOT_FOUND",), 409: ("SESSION_NOT_LAUNCHED",)})


def install(router: Router, service: Service, settings: Settings, extensions: list,
            tokens=None) -> Launcher:
    """Add the routes to `router` and the launcher to the app's `extensions` (started after the
    service, stopped before it). `tokens` (optional) mints each launched agent's own token."""
    spawner = Spawner(service, settings, tokens=tokens)
    launcher = Launcher(service, settings, tokens=tokens)
    forwarder = Forwarder(settings.replica_id)
    launcher.forwarder = forwarder  # app.py hands it the replica once the server joined
    spawner.on_spawned = launcher.submit
    spawner.workspaces = install_workspaces(router, service, settings, extensions)

    def shown(r: ApiRequest, result: dict) -> dict:
        """An answer holding a session, as the caller may see it (an agent: no secrets)."""
        if r.identity is None:
            return result
        seen = seen_by(r.identity, result, result["session"].get("projectId"))
        if seen is None:
            raise forbidden(OWN_PROJECT)
        return seen

    async def spawn(r: ApiRequest):
        return Reply(shown(r, await spawner.spawn(await r.json())), 201)

    async def stop(r: ApiRequest):
        await r.json()
        sid = r.param()
        # Another replica's agent: that replica answers (forward.py).
        answer = await forwarder.forward(r, service.get_session(sid), STOP_TIMEOUT,
                                         await r.raw_json())
        if isinstance(answer, ApiError):
            raise answer
        if answer is not None:
            return answer
        by = r.identity.session_id if r.identity is not None else None
        return shown(r, await launcher.stop_session(sid, by=by))

    async def output(r: ApiRequest):
        sid = r.param()
        tail, offset = r.query("tail"), r.query("offset")
        answer = await forwarder.forward(r, service.get_session(sid), LOG_TIMEOUT)
        if isinstance(answer, Reply):
            return answer
        try:
            return await launcher.read_log(sid, tail, offset)
        except ApiError as exc:
            # The launching replica cannot answer, and the log is not in a SESSION_DIR this
            # server shares with it: say which replica that is and why.
            if answer is not None and exc.code == "SESSION_NOT_LAUNCHED":
                raise answer from None
            raise

    router.add("POST", "/api/sessions/spawn", spawn, SPAWN)
    router.add("POST", "/api/sessions/{id}/stop", stop, STOP)
    router.add("GET", "/api/sessions/{id}/log", output, LOG)
    extensions.append(launcher)
    extensions.append(forwarder)
    return launcher
