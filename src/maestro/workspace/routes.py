"""HTTP routes of session workspaces, their declarations for /openapi.json, and the wiring:

- GET  /api/sessions/{id}/diff      the session's work against its base (stat and patch)
- POST /api/sessions/{id}/merge     merge its branch into the base branch of the main worktree
- POST /api/sessions/{id}/cleanup   remove its worktree and branch
- GET  /api/workspaces              every session worktree, and strays found on disk"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from .. import models as m
from ..server.openapi import Act, Op
from ..server.router import ApiRequest, Router
from .manager import WorkspaceManager


class DiffFile(TypedDict):
    __pydantic_config__ = m.OPEN
    path: str
    status: Annotated[Literal["A", "M", "D", "T"], Field(
        description="added, modified, deleted, type changed")]
    added: Annotated[int | None, Field(description="lines added (null: a binary file)")]
    deleted: Annotated[int | None, Field(description="lines deleted (null: a binary file)")]
    uncommitted: bool


class DiffStat(TypedDict):
    __pydantic_config__ = m.OPEN
    files: int
    added: int
    deleted: int


class WorkspaceDiff(TypedDict):
    """A session's work against its base commit."""

    __pydantic_config__ = m.OPEN
    sessionId: str
    branch: str
    baseRef: str
    baseCommit: str
    head: str | None
    path: str
    includesUncommitted: Annotated[bool, Field(
        description="true while the worktree exists: files and patch then include "
                    "uncommitted changes and new (untracked, not ignored) files")]
    files: list[DiffFile]
    uncommitted: Annotated[list[str], Field(description="files with uncommitted changes")]
    commitCount: Annotated[int, Field(description="commits the branch has that the base "
                                                  "commit lacks")]
    commits: Annotated[list[m.Commit], Field(description="the newest 50 of them")]
    stat: DiffStat
    patch: str
    truncated: Annotated[bool, Field(description="the patch was cut at 2,000,000 "
                                                 "characters")]


class MergeRequest(TypedDict, total=False):
    commitUncommitted: Annotated[bool, Field(
        description="commit the worktree's uncommitted changes on its branch first (default "
                    "false)")]
    message: Annotated[str, Field(min_length=1, description="the merge commit's message")]
    cleanup: Annotated[bool, Field(
        description="remove the worktree and branch after the merge when the session has "
                    "ended and nothing is left uncommitted (default true)")]


class MergeResult(TypedDict):
    __pydantic_config__ = m.OPEN
    success: Literal[True]
    sessionId: str
    branch: str
    baseRef: str
    commit: Annotated[str | None, Field(description="the base branch's commit after")]
    head: Annotated[str, Field(description="the branch's commit that was merged")]
    before: Annotated[str | None, Field(description="the base branch's commit before")]
    at: m.Ms
    fastForward: bool
    alreadyMerged: bool
    files: Annotated[list[str], Field(description="the files the merge changed")]
    removed: Annotated[bool, Field(description="the worktree and branch were removed")]
    session: m.Session


class CleanupRequest(TypedDict, total=False):
    force: Annotated[bool, Field(description="throw away uncommitted changes (default "
                                             "false)")]
    discardUnmerged: Annotated[bool, Field(description="with force: also delete commits not "
                                                       "merged into the base (default false)")]


class CleanupResult(TypedDict):
    __pydantic_config__ = m.OPEN
    success: Literal[True]
    sessionId: str
    removed: bool
    alreadyRemoved: bool
    discarded: m.Discarded
    session: m.Session


class SessionWorkspace(m.Workspace):
    """A session's workspace record, named by its session."""

    __pydantic_config__ = m.OPEN
    sessionId: str
    projectId: str | None
    status: str | None
    name: str | None


class StrayWorktree(TypedDict):
    __pydantic_config__ = m.OPEN
    path: str
    branch: NotRequired[str | None]
    uncommitted: NotRequired[list[str]]
    error: NotRequired[str]


class MissingWorktree(TypedDict):
    __pydantic_config__ = m.OPEN
    sessionId: str
    path: str | None
    branch: str | None


class WorkspaceList(TypedDict):
    __pydantic_config__ = m.OPEN
    root: Annotated[str, Field(description="the folder new worktrees go under")]
    workspaces: list[SessionWorkspace]
    strays: Annotated[list[StrayWorktree], Field(
        description="folders under the root that no session owns (kept, never deleted)")]
    missing: Annotated[list[MissingWorktree], Field(
        description="sessions whose worktree folder is gone")]
    checkedAt: m.Ms


class WorkspaceQuery(TypedDict, total=False):
    projectId: Annotated[str, Field(description="only this project's sessions")]


S404 = {404: ("SESSION_NOT_FOUND",)}
DIFF = Op(
    "A session's work against its base commit: per-file stat, commits and patch",
    acts=Act("session", "diff"),
    ok=WorkspaceDiff, errors={**S404, 409: ("NOT_A_WORKSPACE_SESSION", "WORKSPACE_REMOVED")},
    description="Includes uncommitted changes and new files while the worktree exists; after "
                "a clean-up, the branch's (or the merged) commit. Agents read only their own.")
MERGE = Op(
    "Merge a session's branch into the base branch of the main worktree",
    acts=Act("session", "merge"),
    body=MergeRequest, ok=MergeResult,
    description="A fast-forward when possible, else a merge commit. Refused, with nothing "
                "changed, when the worktree has uncommitted changes (`WORKTREE_DIRTY`, "
                "`details.files`; or pass `commitUncommitted`), when the main worktree is not "
                "on the base branch (`BASE_NOT_CHECKED_OUT`) or has uncommitted changes "
                "(`MAIN_WORKTREE_DIRTY`, `details.files`), or when the merge would conflict "
                "(`MERGE_CONFLICT`, `details.files`). People only: agents get 403.",
    errors={**S404, 409: ("NOT_A_WORKSPACE_SESSION", "WORKSPACE_REMOVED", "WORKTREE_DIRTY",
                          "BASE_NOT_CHECKED_OUT", "MAIN_WORKTREE_DIRTY", "MERGE_CONFLICT"),
            500: ("GIT_FAILED",)},
    events=("session:merged", "session:updated", "task:updated"))
CLEANUP = Op(
    "Remove a session's worktree and branch", acts=Act("session", "cleanup"),
    body=CleanupRequest, ok=CleanupResult,
    description="Never while the session runs (`SESSION_ACTIVE`). Work not merged is refused "
                "with `UNMERGED_WORK` (`details`: uncommitted, commitCount, commits, needs) "
                "unless `force` (uncommitted changes) and `discardUnmerged` (commits) say to "
                "throw it away. People only: agents get 403.",
    errors={**S404, 409: ("NOT_A_WORKSPACE_SESSION", "SESSION_ACTIVE", "UNMERGED_WORK"),
            500: ("GIT_FAILED",)},
    events=("session:updated",))
LIST = Op(
    "Session worktrees, and worktree folders no session owns",
    acts=Act("workspace", "list", id=None),
    query=WorkspaceQuery, ok=WorkspaceList,
    description="Checks the disk on each call: `strays` are folders under the worktree root "
                "that no session owns, `missing` sessions whose worktree is gone. People "
                "only: agents get 403.")


def install(router: Router, service, settings, extensions: list) -> WorkspaceManager:
    """Add the routes and the manager (an app extension); returns the manager, which the
    spawner uses to give each new session its worktree."""
    manager = WorkspaceManager(service, settings)
    service.health_sections["workspaces"] = manager.health

    async def diff(r: ApiRequest):
        return await manager.diff(r.param())

    async def merge(r: ApiRequest):
        return await manager.merge(r.param(), await r.json())

    async def cleanup(r: ApiRequest):
        return await manager.cleanup(r.param(), await r.json())

    async def listing(r: ApiRequest):
        report = await manager.reconcile(announce=False)
        return {"root": report["root"], "workspaces": manager.list(r.query("projectId")),
                "strays": report["strays"], "missing": report["missing"],
                "checkedAt": report["checkedAt"]}

    router.add("GET", "/api/sessions/{id}/diff", diff, DIFF)
    router.add("POST", "/api/sessions/{id}/merge", merge, MERGE)
    router.add("POST", "/api/sessions/{id}/cleanup", cleanup, CLEANUP)
    router.add("GET", "/api/workspaces", listing, LIST)
    extensions.append(manager)
    return manager
