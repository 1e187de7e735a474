"""What the tools take and answer, derived from the REST declarations (`models.py`):
a tool's parameter or a record's field has the type of the REST field it stands for (`like`),
narrowed where a tool takes or shows fewer. Answers are small structured records (the tool's
output schema and its `structuredContent`), never whole entities or whole timelines. Times are
UTC ISO-8601 strings (`2025-01-01T12:03:00Z`) of the server's clock."""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import NotRequired

from .. import models as rest
from ..vocabulary import AGENT_ROLES, TASK_STATUSES


def like(declaration: type, name: str, **field: Any) -> Any:
    """The type of the REST field `name` of `declaration` (a typed dict of maestro/models.py), with
    `field` (a description, a narrower bound) added."""
    hint = typing.get_type_hints(declaration, include_extras=True)[name]
    while typing.get_origin(hint) in (NotRequired, typing.Required):
        hint = typing.get_args(hint)[0]
    return Annotated[hint, Field(**field)] if field else hint


def shown(declaration: type, name: str) -> Any:
    """The type of a record's field showing the REST field `name`: as `like`, but an enum is
    shown as the string the API answered (the tool list stays small, and a record never fails
    on a value of another revision)."""
    hint = like(declaration, name)
    return str if typing.get_origin(hint) is Literal else hint


# ------------------------------------------------------------------ parameters
TaskId = Annotated[rest.Id, Field(description="Task id")]
Priority = like(rest.CreateTask, "priority")
TaskStatus = like(rest.UpdateTask, "status")
SessionStatus = like(rest.Session, "status")
Title = like(rest.CreateTask, "title")
Role = Literal[AGENT_ROLES]  # type: ignore[valid-type]
# task_list also filters by readiness: ready (can start now), waiting (held back)
TaskFilter = Literal[TASK_STATUSES + ("ready", "waiting")]  # type: ignore[valid-type]
MAX_TEXT = rest.MAX_TEXT


def compact_schema(schema: Any) -> Any:
    """A JSON schema without what only makes it longer: pydantic's generated `title`s (they
    repeat the property names; a property *named* title is kept), `default: null`, and the
    `null` branch of an optional value (absent values are left out of every answer, and
    arguments may simply be omitted)."""
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    branches = schema.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        merged = {k: v for k, v in schema.items() if k != "anyOf"}
        if len(rest) == 1 and isinstance(rest[0], dict):
            merged = {**rest[0], **merged}
        else:
            merged["anyOf"] = rest
        schema = merged
    out = {}
    for key, value in schema.items():
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: compact_schema(sub) for name, sub in value.items()}
        elif key == "title" and isinstance(value, str):
            continue
        elif key == "default" and value is None:
            continue
        else:
            out[key] = compact_schema(value)
    return out


class Record(BaseModel):
    """Base of every answer; absent (None) values are left out of what is sent."""

    model_config = ConfigDict(extra="forbid")

    def content(self) -> dict:
        return self.model_dump(mode="json", exclude_none=True)


T, S, C = rest.Task, rest.Session, rest.Claim


class TaskBrief(Record):
    id: shown(T, "id")
    title: shown(T, "title")
    status: shown(T, "status")
    priority: shown(T, "priority") | None = None
    parentId: shown(T, "parentId") = None
    dependencies: shown(T, "dependencies") | None = None
    claimedBy: shown(C, "sessionId") | None = None


class Claim(Record):
    sessionId: shown(C, "sessionId")
    token: shown(C, "token")
    leaseExpiresAt: str | None = None


class Dependency(Record):
    id: shown(T, "id")
    title: shown(T, "title")
    status: str  # a task status, or missing (a task this caller cannot see)
    report: str | None = None


class Note(Record):
    type: str
    message: str
    at: str | None = None


class TaskDetail(Record):
    id: shown(T, "id")
    title: shown(T, "title")
    status: shown(T, "status")
    priority: shown(T, "priority") | None = None
    description: shown(T, "description") | None = None
    initialPrompt: shown(T, "initialPrompt") | None = None
    parentId: shown(T, "parentId") = None
    claim: Claim | None = None
    sessionStatus: shown(T, "sessionStatus") | None = None
    ready: shown(rest.Readiness, "ready") | None = None
    waitsFor: list[str] | None = None
    dependencies: list[Dependency] | None = None
    children: list[TaskBrief] | None = None
    recent: list[Note] | None = None
    timelineEntries: int | None = None


class Held(Record):
    taskId: shown(rest.SessionClaim, "taskId")
    title: shown(T, "title")
    token: shown(rest.SessionClaim, "token")
    leaseExpiresAt: str | None = None


class SessionBrief(Record):
    id: shown(S, "id")
    name: shown(S, "name") | None = None
    status: shown(S, "status")
    role: str | None = None  # from the session's metadata, as it was written
    taskIds: shown(S, "taskIds") | None = None
    lastActivity: str | None = None


class ProjectBrief(Record):
    id: shown(rest.Project, "id")
    name: shown(rest.Project, "name")
    workingDir: shown(rest.Project, "workingDir") | None = None


class SessionContext(Record):
    role: str
    session: SessionBrief | None = None
    project: ProjectBrief | None = None
    tasks: list[TaskBrief]
    claims: list[Held]
    serverTime: str | None = None
    tools: list[str]


class TaskList(Record):
    tasks: list[TaskBrief]
    total: int
    truncated: bool


class Claimed(Record):
    claimed: bool
    message: str
    task: TaskDetail | None = None
    claim: Claim | None = None
    waiting: int | None = None
    inProgress: int | None = None


class Reported(Record):
    taskId: shown(T, "id")
    kind: str
    status: shown(T, "status")
    sessionStatus: shown(T, "sessionStatus") | None = None
    message: str


class Released(Record):
    taskId: shown(T, "id")
    status: shown(T, "status")
    message: str


class Created(Record):
    task: TaskBrief
    message: str


class PlannedTask(Record):
    ref: str  # as the plan named it (empty if the answer left it out)
    id: shown(T, "id")
    title: shown(T, "title")


class Planned(Record):
    created: list[PlannedTask]
    updated: list[shown(T, "id")]
    message: str


class Updated(Record):
    task: TaskBrief
    message: str


class Spawned(Record):
    sessionId: shown(S, "id")
    status: str  # the new session's status as the spawn answered it
    role: Role
    taskIds: shown(S, "taskIds")
    message: str


class SessionList(Record):
    sessions: list[SessionBrief]
    total: int
    truncated: bool
