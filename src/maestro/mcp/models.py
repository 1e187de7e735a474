"""What the tools answer: small structured records (the tool's output schema and its
`structuredContent`), never whole entities or whole timelines. Times are UTC ISO-8601 strings
(`2025-01-01T12:03:00Z`) of the server's clock."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


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


class TaskBrief(Record):
    id: str
    title: str
    status: str
    priority: str | None = None
    parentId: str | None = None
    dependencies: list[str] | None = None
    claimedBy: str | None = None


class Claim(Record):
    sessionId: str
    token: int
    leaseExpiresAt: str | None = None


class Dependency(Record):
    id: str
    title: str
    status: str
    report: str | None = None


class Note(Record):
    type: str
    message: str
    at: str | None = None


class TaskDetail(Record):
    id: str
    title: str
    status: str
    priority: str | None = None
    description: str | None = None
    initialPrompt: str | None = None
    parentId: str | None = None
    claim: Claim | None = None
    sessionStatus: str | None = None
    ready: bool | None = None
    waitsFor: list[str] | None = None
    dependencies: list[Dependency] | None = None
    children: list[TaskBrief] | None = None
    recent: list[Note] | None = None
    timelineEntries: int | None = None


class Held(Record):
    taskId: str
    title: str
    token: int
    leaseExpiresAt: str | None = None


class SessionBrief(Record):
    id: str
    name: str | None = None
    status: str
    role: str | None = None
    taskIds: list[str] | None = None
    lastActivity: str | None = None


class ProjectBrief(Record):
    id: str
    name: str
    workingDir: str | None = None


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
    taskId: str
    kind: str
    status: str
    sessionStatus: str | None = None
    message: str


class Released(Record):
    taskId: str
    status: str
    message: str


class Created(Record):
    task: TaskBrief
    message: str


class PlannedTask(Record):
    ref: str
    id: str
    title: str


class Planned(Record):
    created: list[PlannedTask]
    updated: list[str]
    message: str


class Updated(Record):
    task: TaskBrief
    message: str


class Spawned(Record):
    sessionId: str
    status: str
    role: str
    taskIds: list[str]
    message: str


class SessionList(Record):
    sessions: list[SessionBrief]
    total: int
    truncated: bool
