"""The body of a spawn request (SPEC §9.2), declared once: /openapi.json documents it and
`spawn.py` checks its options (check 7 of §9.3) from it. Checks 1-6 answer their own error codes
and need the state (a parent session must exist), so spawn.py makes them itself, in order,
before these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from .. import agent_env
from ..errors import validation
from ..shapes import FREE, NotBlank, Rule
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

    # §9.3 checks 1-6, each with its own error code (spawn.py)
    projectId: Annotated[str, FREE]
    taskIds: Annotated[list[str], Field(min_length=1), FREE]
    spawnSource: NotRequired[Annotated[Literal[SPAWN_SOURCES], FREE]]  # type: ignore[valid-type]
    sessionId: NotRequired[Annotated[str, FREE, Field(
        description="the parent session (required with spawnSource session)")]]
    role: NotRequired[Annotated[Literal[AGENT_ROLES], FREE]]  # type: ignore[valid-type]
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
