"""HTTP routes of session workspaces, their entries in /openapi.json, and the wiring:

- GET  /api/sessions/{id}/diff      the session's work against its base (stat and patch)
- POST /api/sessions/{id}/merge     merge its branch into the base branch of the main worktree
- POST /api/sessions/{id}/cleanup   remove its worktree and branch
- GET  /api/workspaces              every session worktree, and strays found on disk"""

from __future__ import annotations

from ..server.openapi import register
from ..server.router import ApiRequest, Router
from .manager import WorkspaceManager

_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}
_FILES = {"type": "array", "items": _STR}

SCHEMAS = {
    "Workspace": {"type": "object", "required": ["mode"], "description": (
        "Where a spawned session works. mode worktree: its own git worktree (path, cwd) on its "
        "own branch made from baseRef at baseCommit in the repository whose main worktree is "
        "repo; state active, merged or removed. mode shared: the project's folder, with the "
        "reason."), "properties": {
        "mode": {"enum": ["worktree", "shared"]}, "reason": _STR, "path": _STR, "cwd": _STR,
        "branch": _STR, "baseRef": _STR, "baseCommit": _STR, "repo": _STR,
        "state": {"enum": ["active", "merged", "removed"]}, "createdAt": _INT,
        "changedFiles": _FILES, "changedCount": _INT, "scannedAt": _INT,
        "overlaps": {"type": "array", "items": {"type": "object", "properties": {
            "sessionId": _STR, "branch": _STR, "files": _FILES}}},
        "merge": {"type": "object"}, "removedAt": _INT, "discarded": {"type": "object"},
        "copied": {"type": "array", "items": _STR, "description": "ignored settings files "
                   "(.env) copied from workingDir into the worktree"}}},
    "WorkspaceDiff": {"type": "object", "properties": {
        "sessionId": _STR, "branch": _STR, "baseRef": _STR, "baseCommit": _STR,
        "head": {"type": ["string", "null"]}, "path": _STR,
        "includesUncommitted": {"type": "boolean", "description": "true while the worktree "
                                "exists: files and patch then include uncommitted changes "
                                "and new (untracked, not ignored) files"},
        "files": {"type": "array", "items": {"type": "object", "properties": {
            "path": _STR, "status": {"enum": ["A", "M", "D", "T"]},
            "added": {"type": ["integer", "null"]}, "deleted": {"type": ["integer", "null"]},
            "uncommitted": _BOOL}}},
        "uncommitted": _FILES, "commitCount": _INT,
        "commits": {"type": "array", "items": {"type": "object", "properties": {
            "sha": _STR, "subject": _STR}}},
        "stat": {"type": "object", "properties": {"files": _INT, "added": _INT,
                                                  "deleted": _INT}},
        "patch": _STR, "truncated": _BOOL}},
    "MergeRequest": {"type": "object", "properties": {
        "commitUncommitted": {"type": "boolean", "default": False, "description": "commit "
                              "the worktree's uncommitted changes on its branch first"},
        "message": {"type": "string", "description": "the merge commit's message"},
        "cleanup": {"type": "boolean", "default": True, "description": "remove the worktree "
                    "and branch after the merge when the session has ended and nothing is "
                    "left uncommitted"}}},
    "MergeResult": {"type": "object", "properties": {
        "success": {"const": True}, "sessionId": _STR, "branch": _STR, "baseRef": _STR,
        "commit": _STR, "head": _STR, "before": _STR, "fastForward": _BOOL,
        "alreadyMerged": _BOOL, "files": _FILES, "removed": _BOOL,
        "session": {"$ref": "#/components/schemas/Session"}}},
    "CleanupRequest": {"type": "object", "properties": {
        "force": {"type": "boolean", "default": False, "description": "throw away uncommitted "
                  "changes"},
        "discardUnmerged": {"type": "boolean", "default": False, "description": "with force: "
                            "also delete commits not merged into the base"}}},
    "CleanupResult": {"type": "object", "properties": {
        "success": {"const": True}, "sessionId": _STR, "removed": _BOOL,
        "alreadyRemoved": _BOOL, "discarded": {"type": "object"},
        "session": {"$ref": "#/components/schemas/Session"}}},
    "WorkspaceList": {"type": "object", "properties": {
        "root": _STR, "workspaces": {"type": "array", "items": {"type": "object"}},
        "strays": {"type": "array", "items": {"type": "object"}},
        "missing": {"type": "array", "items": {"type": "object"}}, "checkedAt": _INT}},
}

ERRORS_DIFF = "404 SESSION_NOT_FOUND; 409 NOT_A_WORKSPACE_SESSION, WORKSPACE_REMOVED"
ERRORS_MERGE = ("404 SESSION_NOT_FOUND; 409 NOT_A_WORKSPACE_SESSION, WORKSPACE_REMOVED, "
                "WORKTREE_DIRTY (details.files), BASE_NOT_CHECKED_OUT, MAIN_WORKTREE_DIRTY "
                "(details.files), MERGE_CONFLICT (details.files); nothing changes on any of them")
ERRORS_CLEANUP = ("404 SESSION_NOT_FOUND; 409 NOT_A_WORKSPACE_SESSION, SESSION_ACTIVE, "
                  "UNMERGED_WORK (details.uncommitted, commitCount, commits, needs)")


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

    router.add("GET", "/api/sessions/{id}/diff", diff)
    router.add("POST", "/api/sessions/{id}/merge", merge)
    router.add("POST", "/api/sessions/{id}/cleanup", cleanup)
    router.add("GET", "/api/workspaces", listing)
    register("/api/sessions/{id}/diff", "get", "The session's work against its base commit: "
             "per-file stat, commits and patch, including uncommitted changes while its "
             "worktree exists", None, 200, "WorkspaceDiff", SCHEMAS, errors=ERRORS_DIFF)
    register("/api/sessions/{id}/merge", "post", "Merge the session's branch into the base "
             "branch of the main worktree (fast-forward when possible, else a merge commit); "
             "event session:merged", "MergeRequest", 200, "MergeResult", errors=ERRORS_MERGE)
    register("/api/sessions/{id}/cleanup", "post", "Remove the session's worktree and branch "
             "(never while it runs; unmerged work only with force / discardUnmerged)",
             "CleanupRequest", 200, "CleanupResult", errors=ERRORS_CLEANUP)
    register("/api/workspaces", "get", "Session worktrees (query projectId), and folders under "
             "the worktree root that no session owns (strays) or sessions whose worktree is "
             "gone (missing)", None, 200, "WorkspaceList")
    extensions.append(manager)
    return manager

