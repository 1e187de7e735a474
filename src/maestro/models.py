"""The shapes of the REST API (entities, request bodies, query parameters, answers) declared once
as typed dicts, from which /openapi.json takes its JSON schemas (pydantic writes them) and the
service its checks of request bodies (`shapes.py` compiles each body's declaration, with SPEC's
exact error messages; the markers `Required`, `NotBlank`, `Says`… carry the wording a type
cannot). Entities keep members these declarations do not name (fields of other revisions, SPEC
§4.9), so every object allows additional properties.

They sit at the top of the package, beside `shapes.py` and `vocabulary.py`, because every layer
reads them: the server (openapi.py), the service and coordination.py (their body checks), spawn
and workspace routes, and the MCP tools. The CLI never imports them (it only speaks HTTP), which
keeps pydantic off its import path."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field
from typing_extensions import NotRequired, TypedDict

from .ids import MAX_ID_LENGTH
from .shapes import (
    FREE,
    INDEXED,
    MS,
    UNPLACED,
    NotBlank,
    NotEmpty,
    Required,
    Says,
    TooMany,
    Unique,
)
from .validate import MAX_TEXT
from .vocabulary import (
    ISOLATIONS,
    SESSION_STATUSES,
    SESSION_TASK_STATUSES,
    STRATEGIES,
    TASK_PRIORITIES,
    TASK_STATUSES,
    TIMELINE_TYPES,
)

OPEN = ConfigDict(extra="allow")

TaskStatus = Literal[TASK_STATUSES]  # type: ignore[valid-type]
TaskPriority = Literal[TASK_PRIORITIES]  # type: ignore[valid-type]
TimelineType = Literal[TIMELINE_TYPES]  # type: ignore[valid-type]
SessionStatus = Literal[SESSION_STATUSES]  # type: ignore[valid-type]
AgentStatus = Literal[SESSION_TASK_STATUSES]  # type: ignore[valid-type]
Strategy = Literal[STRATEGIES]  # type: ignore[valid-type]
Isolation = Annotated[Literal[ISOLATIONS], Field(  # type: ignore[valid-type]
    description="worktree (the default): each spawned session gets its own git worktree and "
                "branch; none: sessions work in workingDir itself")]
BaseRef = Annotated[str, Field(description="branch or commit new worktrees start from (empty or "
                                           "absent: the main worktree's current branch)")]
Ms = Annotated[int, Field(description="milliseconds since the Unix epoch"), MS]
Title = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Id = Annotated[str, Field(max_length=MAX_ID_LENGTH)]
Ttl = Annotated[int, Field(ge=5, le=86400, description="lease in seconds (default 600; the "
                                                       "server's MAESTRO_CLAIM_MIN_TTL is the "
                                                       "least)")]


# ------------------------------------------------------------------ errors
class Error(TypedDict):
    """The error body of every failed request (SPEC §6.1)."""

    __pydantic_config__ = ConfigDict(extra="forbid")
    error: Literal[True]
    code: Annotated[str, Field(description="e.g. VALIDATION_ERROR, TASK_NOT_FOUND")]
    message: Annotated[str, Field(description="human readable")]
    details: NotRequired[Any]
    statusCode: NotRequired[int]


# ------------------------------------------------------------------ entities
class Project(TypedDict):
    """A project (SPEC §4.1)."""

    __pydantic_config__ = OPEN
    id: str
    name: str
    workingDir: str
    description: str
    isolation: NotRequired[Isolation]
    baseRef: NotRequired[BaseRef]
    createdAt: Ms
    updatedAt: Ms


class TimelineEvent(TypedDict):
    """An entry of a task's timeline (SPEC §4.3); append-only."""

    __pydantic_config__ = OPEN
    id: str
    type: TimelineType
    timestamp: Ms
    message: NotRequired[str]
    sessionId: NotRequired[str]


class Claim(TypedDict):
    """A live lease on a task (SPEC §15.3); `token` grows with every new grant (fencing)."""

    __pydantic_config__ = OPEN
    sessionId: str
    token: int
    claimedAt: Ms
    leaseExpiresAt: Ms


class Task(TypedDict):
    """A task (SPEC §4.2), with its timeline, dependencies and claim."""

    __pydantic_config__ = OPEN
    id: str
    projectId: str
    parentId: str | None
    title: str
    description: str
    initialPrompt: NotRequired[str]
    status: TaskStatus
    priority: TaskPriority
    sessionIds: list[str]
    skillIds: NotRequired[list[str]]
    agentIds: NotRequired[list[str]]
    dependencies: NotRequired[list[str]]
    timeline: list[TimelineEvent]
    createdAt: Ms
    updatedAt: Ms
    startedAt: NotRequired[Ms | None]
    completedAt: NotRequired[Ms | None]
    sessionStatus: NotRequired[AgentStatus]
    sessionStatusBy: NotRequired[Annotated[str, Field(
        description="the session that wrote sessionStatus")]]
    claim: NotRequired[Claim | None]
    claimToken: NotRequired[Annotated[int, Field(description="the last fencing token "
                                                             "granted")]]


class SessionEvent(TypedDict):
    """An entry of a session's events (SPEC §4.5): `process_started`, `process_exit`
    (`{exitCode, signal, reason, message?}`), `file_modified` (`{file, timestamp}`), …"""

    __pydantic_config__ = OPEN
    id: str
    timestamp: Ms
    type: str
    data: NotRequired[Any]


class SessionTimelineEntry(TypedDict):
    """What an agent reported through its session (extension E2), naming the task it is about
    in `taskId`."""

    __pydantic_config__ = OPEN
    id: str
    type: str
    timestamp: Ms
    message: str
    taskId: NotRequired[str]
    metadata: NotRequired[Any]


class WorkspaceOverlap(TypedDict):
    """Files another live session's worktree also changes."""

    __pydantic_config__ = OPEN
    sessionId: str
    branch: str | None
    files: list[str]


class WorkspaceMerge(TypedDict):
    """How a session's branch was merged into its base branch."""

    __pydantic_config__ = OPEN
    head: Annotated[str, Field(description="the branch's commit that was merged")]
    before: Annotated[str | None, Field(description="the base branch's commit before")]
    at: Ms
    commit: Annotated[str | None, Field(description="the base branch's commit after")]
    fastForward: bool
    alreadyMerged: bool
    files: Annotated[list[str], Field(description="the files the merge changed")]


class Commit(TypedDict):
    __pydantic_config__ = OPEN
    sha: str
    subject: str


class Discarded(TypedDict):
    """Work thrown away by a forced clean-up."""

    __pydantic_config__ = OPEN
    uncommitted: list[str]
    commitCount: int
    commits: list[Commit]


class Workspace(TypedDict):
    """Where a spawned session works. mode `worktree`: its own git worktree (`path`, `cwd`) on
    its own `branch` made from `baseRef` at `baseCommit` in the repository whose main worktree
    is `repo`; `state` active, merged or removed. mode `shared`: the project's folder, with
    the `reason`."""

    __pydantic_config__ = OPEN
    mode: Literal["worktree", "shared"]
    reason: NotRequired[str]
    path: NotRequired[str]
    cwd: NotRequired[str]
    branch: NotRequired[str]
    baseRef: NotRequired[str]
    baseCommit: NotRequired[str]
    repo: NotRequired[str]
    state: NotRequired[Literal["active", "merged", "removed"]]
    createdAt: NotRequired[Ms]
    changedFiles: NotRequired[Annotated[list[str], Field(
        description="files the worktree changes against its base (at most 500 listed)")]]
    changedCount: NotRequired[int]
    scannedAt: NotRequired[Ms]
    overlaps: NotRequired[list[WorkspaceOverlap]]
    merge: NotRequired[WorkspaceMerge]
    removedAt: NotRequired[Ms]
    discarded: NotRequired[Discarded]
    copied: NotRequired[Annotated[list[str], Field(
        description="ignored settings files (.env) copied from workingDir into the worktree")]]


class Session(TypedDict):
    """An agent session (SPEC §4.4)."""

    __pydantic_config__ = OPEN
    id: str
    projectId: str
    taskIds: list[str]
    name: str
    agentId: NotRequired[str]
    status: SessionStatus
    env: dict[str, str]
    events: list[SessionEvent]
    timeline: NotRequired[list[SessionTimelineEntry]]
    metadata: NotRequired[dict[str, Any]]
    strategy: NotRequired[Strategy]
    startedAt: Ms
    lastActivity: Ms
    completedAt: Ms | None
    hostname: str
    platform: str
    workspace: NotRequired[Workspace]


class HistoryEntry(TypedDict):
    """One entry of a task's history: from its own timeline (`source: task`) or from a session's
    timeline naming it (`source: session`, `sessionId` that session)."""

    __pydantic_config__ = OPEN
    id: NotRequired[str]
    timestamp: NotRequired[Ms]
    type: NotRequired[str]
    message: NotRequired[str]
    sessionId: NotRequired[str]
    source: Literal["task", "session"]


class Readiness(TypedDict):
    """Whether a task is ready (SPEC §15.2) and what holds it back."""

    __pydantic_config__ = OPEN
    taskId: str
    ready: bool
    blockedBy: list[str]
    missingDependencies: list[str]
    blockedAncestors: list[str]
    claim: Claim | None


class Deleted(TypedDict):
    """The answer of every delete (with cascade, also the ids deleted)."""

    __pydantic_config__ = OPEN
    success: Literal[True]
    id: str
    deleted: NotRequired[list[str]]


class ProjectTree(TypedDict):
    __pydantic_config__ = OPEN
    sessions: list[str]
    tasks: Annotated[list[str], Field(description="children before their parents")]


class ProjectDeleted(TypedDict):
    """A deleted project; with cascade, also what went with it."""

    __pydantic_config__ = OPEN
    success: Literal[True]
    id: str
    deleted: NotRequired[ProjectTree]


class Planned(TypedDict):
    """A plan created: its new tasks and the existing tasks that gained dependencies."""

    __pydantic_config__ = OPEN
    tasks: Annotated[list[Task], Field(description="the new tasks, in the plan's order")]
    refs: Annotated[dict[str, str], Field(description="ref -> id of each new task")]
    updated: Annotated[list[Task], Field(description="existing tasks that gained "
                                                     "dependencies")]


class Claimed(TypedDict):
    """A granted claim; both null when claim-next found nothing ready."""

    __pydantic_config__ = OPEN
    task: Task | None
    claim: Claim | None


class Renewed(TypedDict):
    __pydantic_config__ = OPEN
    claim: Claim


class Released(TypedDict):
    __pydantic_config__ = OPEN
    task: Task


class SessionClaim(TypedDict):
    __pydantic_config__ = OPEN
    taskId: str
    sessionId: str
    token: int
    claimedAt: Ms
    leaseExpiresAt: Ms


class Heartbeat(TypedDict):
    __pydantic_config__ = OPEN
    sessionId: str
    claims: list[SessionClaim]


class Skill(TypedDict):
    """A skill of SKILLS_DIR (extension E4)."""

    __pydantic_config__ = OPEN
    id: str
    name: str
    description: str
    type: str
    version: str
    instructions: NotRequired[str]
    reloaded: NotRequired[bool]


class Health(TypedDict):
    """Server health: uptime in seconds, storage and WebSocket diagnostics, entity counts."""

    __pydantic_config__ = OPEN
    status: Literal["ok"]
    timestamp: NotRequired[Ms]  # absent from the liveness answer given without credentials
    uptime: NotRequired[float]
    storage: NotRequired[dict[str, Any]]
    counts: NotRequired[dict[str, int]]
    websocket: NotRequired[dict[str, Any]]


class WsClient(TypedDict):
    readyState: Literal[0, 1, 2, 3]
    readyStateText: Literal["CONNECTING", "OPEN", "CLOSING", "CLOSED"]


class WsStatus(TypedDict):
    """Connected WebSocket clients (extension E7)."""

    connectedClients: int
    clients: list[WsClient]


# ------------------------------------------------------------------ request bodies
# Fields are checked in the order declared: the first malformed one is the one reported.
class CreateProject(TypedDict):
    name: Annotated[Title, Required("name is required"), NotBlank("name is required")]
    workingDir: NotRequired[str]
    description: NotRequired[str]
    isolation: NotRequired[Annotated[Isolation, FREE]]  # workspace/options.py
    baseRef: NotRequired[Annotated[BaseRef, FREE]]


class UpdateProject(TypedDict, total=False):
    """Partial update: only the fields given change."""

    name: Annotated[Title, NotBlank("name cannot be empty")]
    workingDir: str
    description: str
    isolation: Annotated[Isolation, FREE]
    baseRef: Annotated[BaseRef, FREE]


class CreateTask(TypedDict):
    projectId: Annotated[Id, Required("projectId is required"),
                         NotBlank("projectId is required")]
    title: Annotated[Title, Required("title is required"), NotBlank("title is required")]
    priority: NotRequired[TaskPriority]
    description: NotRequired[str]
    initialPrompt: NotRequired[str]
    skillIds: NotRequired[list[str]]
    parentId: NotRequired[Id | None]
    dependencies: NotRequired[Annotated[list[Id], Field(
        description="ids of tasks of the same project this one waits for (no cycles)")]]


class NewTimelineEvent(TypedDict, total=False):
    id: Id | None
    type: Annotated[TimelineType, Says(
        f"timeline type must be one of: {', '.join(TIMELINE_TYPES)}",
        {"field": "timeline.type"})]
    timestamp: Ms | None
    message: Annotated[str, Says("timeline.message must be a string")] | None
    sessionId: Id | None


class UpdateTask(TypedDict, total=False):
    """Only the fields given change; `timeline` entries are appended. With `updateSource:
    "session"` only `sessionStatus` is applied (extension E3)."""

    title: Annotated[Title, NotBlank("title cannot be empty")]
    description: str
    status: TaskStatus
    priority: TaskPriority
    sessionStatus: AgentStatus
    parentId: Id | None
    sessionIds: list[Id]
    skillIds: list[str]
    agentIds: list[str]
    timeline: list[NewTimelineEvent]
    dependencies: list[Id]
    updateSource: Annotated[str, FREE]
    sessionId: Annotated[str, FREE, Field(description="the reporting session (with "
                                                      "updateSource: session)")]


class AddTimeline(TypedDict):
    message: Annotated[str, Field(min_length=1), Required("message is required"),
                       NotEmpty("message is required")]
    type: NotRequired[TimelineType]
    sessionId: NotRequired[Id]


class CreateSession(TypedDict):
    """`taskIds` is required; an older client's `taskId` alone stands for `[taskId]`."""

    taskIds: Annotated[list[Id], Required("taskIds is required")]
    projectId: Annotated[Id, Required("projectId is required"),
                         NotBlank("projectId is required")]
    id: NotRequired[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")] | None]
    name: NotRequired[Annotated[str, Field(max_length=MAX_TEXT)]]
    agentId: NotRequired[str]
    status: NotRequired[SessionStatus]
    env: NotRequired[dict[str, str]]
    metadata: NotRequired[dict[str, Any]]
    strategy: NotRequired[Strategy]
    taskId: NotRequired[Annotated[str, FREE]]


_EVENT_TYPE = "events[].type is required", {"field": "events.type"}


class NewSessionEvent(TypedDict):
    type: Annotated[str, Field(min_length=1), Required(*_EVENT_TYPE), Says(*_EVENT_TYPE),
                    NotEmpty(*_EVENT_TYPE)]
    id: NotRequired[Id | None]
    timestamp: NotRequired[Ms | None]
    data: NotRequired[Any]


class UpdateSession(TypedDict, total=False):
    """`events` are appended, `env` is merged, `taskIds` is the new full list."""

    status: SessionStatus
    agentId: str
    taskIds: list[Id]
    events: list[NewSessionEvent]
    env: dict[str, str]


class AddSessionEvent(TypedDict):
    type: Annotated[str, Field(min_length=1), Required("type is required"),
                    Says("type is required"), NotEmpty("type is required")]
    data: NotRequired[Any]


class AddSessionTimeline(TypedDict):
    message: Annotated[str, Field(min_length=1), Required("message is required"),
                       NotBlank("message is required")]
    type: NotRequired[Annotated[str, Field(description="default progress")]]
    taskId: NotRequired[Id]
    metadata: NotRequired[Any]


SessionRef = Annotated[Id, Required("sessionId is required"), NotBlank("sessionId is required")]
Token = Annotated[int, Required("token must be an integer", {"field": "token"}), Field(
    description="the claim's fencing token")]
ClaimTtl = Annotated[Ttl, FREE]  # its least is a setting of the server: the service checks it


class ClaimRequest(TypedDict):
    sessionId: SessionRef
    ttlSeconds: NotRequired[ClaimTtl]


class ClaimNextRequest(TypedDict):
    sessionId: SessionRef
    parentId: NotRequired[Id | None]
    ttlSeconds: NotRequired[ClaimTtl]


class RenewRequest(TypedDict):
    sessionId: SessionRef
    token: Token
    ttlSeconds: NotRequired[ClaimTtl]


class ReleaseRequest(TypedDict):
    sessionId: SessionRef
    token: Token
    reason: NotRequired[Annotated[str, Field(max_length=MAX_TEXT)]]


class HeartbeatRequest(TypedDict, total=False):
    ttlSeconds: ClaimTtl


REF = r"^[A-Za-z0-9_.:-]{1,64}$"
_BAD_REF = "{path} must match " + REF, {"field": "{path}"}
# Fields are checked in this order, item after item; only ref and parent are named by their
# place in the plan when their type is wrong (`tasks[2].parent`), the others by their key.


class PlanTask(TypedDict):
    ref: Annotated[str, Field(pattern=REF, description="this task's name inside the plan"),
                   Required(*_BAD_REF), Unique("ref {value} is used twice",
                                               {"field": "{path}", "ref": "{value}"})]
    title: Annotated[Title, Required("{path} is required"), NotBlank("{path} is required"),
                     UNPLACED]
    parent: NotRequired[Annotated[Id | None, Field(
        description="a ref of the plan or the id of an existing task of the project")]]
    dependsOn: NotRequired[Annotated[list[Id], Field(
        description="refs, or ids of existing tasks, this one waits for"), UNPLACED]]
    description: NotRequired[Annotated[str, UNPLACED]]
    initialPrompt: NotRequired[Annotated[str, UNPLACED]]
    priority: NotRequired[Annotated[TaskPriority, UNPLACED]]


_NEEDS = "{item} needs task and dependsOn (a ref or a task id)", {"field": "{item}"}
Endpoint = Annotated[Id, Field(min_length=1, description="a ref or a task id"),
                     Required(*_NEEDS), Says(*_NEEDS), NotEmpty(*_NEEDS)]


class PlanDependency(TypedDict):
    task: Endpoint
    dependsOn: Endpoint


_NO_TASKS = "tasks must be a non-empty array of objects", {"field": "tasks"}


class Plan(TypedDict):
    """A whole breakdown: new tasks named by local refs, and new dependencies of existing
    tasks (or of the plan's tasks)."""

    tasks: Annotated[list[PlanTask], Field(min_length=1, max_length=500), INDEXED,
                     Required(*_NO_TASKS), Says(*_NO_TASKS),
                     TooMany("a plan holds at most 500 tasks", {"field": "tasks"})]
    dependencies: NotRequired[Annotated[list[PlanDependency], INDEXED]]


# ------------------------------------------------------------------ query parameters


class PageQuery(TypedDict, total=False):
    limit: Annotated[int, Field(ge=1, le=1000, description=(
        "answer at most this many items (without it: the whole list); when more may follow, "
        "the answer has the headers `X-Next-Cursor` and `Link: <…>; rel=\"next\"`"))]
    cursor: Annotated[str, Field(description=(
        "the `X-Next-Cursor` of the previous page (needs `limit`): the page starts after "
        "that item, however many items were inserted or deleted meanwhile"))]


class TaskListQuery(PageQuery, total=False):
    projectId: str
    status: Annotated[str, Field(description="a task status (another value: empty list)")]
    parentId: Annotated[str, Field(description="`null` for root tasks")]
    ready: Annotated[bool, Field(description="`true`: only ready work (SPEC §15.2), in "
                                             "priority order (high first), then creation")]
    blocked: Annotated[bool, Field(description="`true`: only pending tasks held back by "
                                               "dependencies or ancestors, in priority order")]


class SessionListQuery(PageQuery, total=False):
    projectId: str
    taskId: Annotated[str, Field(description="sessions linked to this task")]
    status: str
    active: Annotated[bool, Field(description="`true`: only sessions not completed or failed")]


class DeleteTaskQuery(TypedDict, total=False):
    cascade: Annotated[bool, Field(description="`true`: also delete every subtask (without "
                                               "it, a task with subtasks is refused)")]


class DeleteProjectQuery(TypedDict, total=False):
    cascade: Annotated[bool, Field(description="`true`: also delete the project's sessions "
                                               "(their agents are stopped) and tasks, in one "
                                               "change")]
