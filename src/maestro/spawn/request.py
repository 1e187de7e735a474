"""The body of a spawn request (SPEC §9.2), declared once: /openapi.json documents it and
`spawn.py` checks it from it, in the order of §9.3: the fields of checks 1-4 (`WHO`), each
refused with its own error code, then what needs the state (check 5: a parent session must
exist), then the role (check 6) and the options (check 7)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from .. import agent_env
from ..errors import validation
from ..shapes import FREE, NotBlank, Refused, Rule
from ..validate import MAX_TEXT
from ..vocabulary import (
    AGENT_MODELS,
    AGENT_ROLES,
    ISOLATIONS,
    PERMISSION_MODES,
    SPAWN_SOURCES,
    SPAWN_STRATEGIES,
)


def agent_variables(env: Any) -> None:
    """The request's `env`: variables for the agent, stored in the session's env next to the
    MAESTRO_* values (which, like the server's database and folders, it may not set)."""
    if not isinstance(env, dict):
        raise validation("env must be an object of strings", {"field": "env"})
    for name, value in env.items():
        problem = agent_env.request_problem(name, value)
        if problem is not None:
            raise validation(problem, {"field": "env", "name": name})


class SpawnRequest(TypedDict):
    """Spawn an agent session for tasks (SPEC §9.2)."""

    # §9.3 checks 1-6, each with its own error code
    projectId: Annotated[str, Refused("missing_project_id", "projectId is required"),
                         NotBlank("projectId is required")]
    taskIds: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1),
                       Refused("invalid_task_ids", "taskIds must be a non-empty array")]
    spawnSource: NotRequired[Annotated[Literal[SPAWN_SOURCES],  # type: ignore[valid-type]
                                       Refused("invalid_spawn_source",
                                               "spawnSource must be one of: "
                                               + ", ".join(SPAWN_SOURCES))]]
    sessionId: NotRequired[Annotated[str | None, Field(
        description="the parent session (required with spawnSource session)")]]
    role: NotRequired[Annotated[Literal[AGENT_ROLES],  # type: ignore[valid-type]
                                Refused("invalid_role", 'role must be "worker" or "orchestrator"')]]
    # check 7, in this order
    skills: NotRequired[list[str]]
    context: NotRequired[dict[str, Any]]
    agent: NotRequired[Annotated[str, Field(
        max_length=MAX_TEXT,
        description="claude, codex, or a command line with {prompt_file} / {manifest} "
                    "placeholders; handed to the agent as MAESTRO_AGENT"),
        NotBlank("agent must not be empty", {"field": "agent"}, after_length=True)] | None]
    env: NotRequired[Annotated[dict[str, str], Field(
        description="variables for the agent, stored in the session's env; not MAESTRO_*, "
                    "DATABASE_URL, PG*, DATA_DIR or SESSION_DIR"), Rule(agent_variables)]
        | None]
    model: NotRequired[Literal[AGENT_MODELS]]  # type: ignore[valid-type]
    permissionMode: NotRequired[Literal[PERMISSION_MODES]]  # type: ignore[valid-type]
    sessionName: NotRequired[Annotated[str, Field(max_length=MAX_TEXT)] | None]
    spawnedBy: NotRequired[str | None]
    spawnReason: NotRequired[str | None]
    strategy: NotRequired[Literal[SPAWN_STRATEGIES]]  # type: ignore[valid-type]
    # workspace/options.py, shared with projects
    isolation: NotRequired[Annotated[Literal[ISOLATIONS], FREE, Field(  # type: ignore[valid-type]
        description="worktree (default, or the project's isolation): its own git worktree "
                    "and branch when workingDir is in a git repository; none: work in "
                    "workingDir itself")]]
    baseRef: NotRequired[Annotated[str, FREE, Field(
        description="branch or commit the worktree starts from (default: the project's "
                    "baseRef, else the main worktree's current branch)")]]


WHO = ("projectId", "taskIds", "spawnSource", "sessionId")  # checks 1-4, before the state's
OPTIONS = tuple(k for k in SpawnRequest.__annotations__ if k not in WHO + ("role",))  # check 7
