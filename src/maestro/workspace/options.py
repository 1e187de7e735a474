"""What a spawn request and a project say about workspaces (`isolation`, `baseRef`), and the
two kinds of `session.workspace` record: a worktree of its own, or shared with the reason."""

from __future__ import annotations

from typing import Any

from ..errors import conflict, validation
from ..vocabulary import ISOLATIONS

MAX_REF_LENGTH = 255


def _ref(value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_REF_LENGTH or value.startswith("-") \
            or not value.isprintable() or any(c.isspace() for c in value):
        raise validation(f"{field} must be a branch name or commit (no spaces, not starting "
                         f"with '-', at most {MAX_REF_LENGTH} characters)", {"field": field})
    return value


def _isolation(body: dict) -> str | None:
    value = body.get("isolation")
    if value is None:
        return None
    if value not in ISOLATIONS or not isinstance(value, str):
        raise validation(f"isolation must be one of: {', '.join(ISOLATIONS)}",
                         {"field": "isolation", "allowed": list(ISOLATIONS)})
    return value


def spawn_options(body: dict) -> dict:
    """`isolation` and `baseRef` of a spawn request (400 when malformed)."""
    return {"isolation": _isolation(body), "baseRef": _ref(body.get("baseRef"), "baseRef")}


def project_settings(body: dict) -> dict:
    """The workspace settings a project create/update may carry: `isolation` and `baseRef`
    (an empty `baseRef` goes back to the main worktree's current branch)."""
    out: dict[str, Any] = {}
    isolation = _isolation(body)
    if isolation is not None:
        out["isolation"] = isolation
    if "baseRef" in body:
        out["baseRef"] = _ref(body.get("baseRef"), "baseRef") or ""
    return out


def shared(path: str, reason: str) -> dict:
    """The workspace of a session that runs in the project's own folder."""
    return {"mode": "shared", "path": path, "reason": reason}


def worktree_of(session: dict) -> dict:
    """The session's worktree record, or 409 NOT_A_WORKSPACE_SESSION."""
    ws = session.get("workspace")
    if not isinstance(ws, dict) or ws.get("mode") != "worktree":
        details: dict[str, Any] = {"sessionId": session.get("id")}
        if isinstance(ws, dict):
            details.update(mode=ws.get("mode"), reason=ws.get("reason"))
        raise conflict("NOT_A_WORKSPACE_SESSION",
                       "This session has no worktree of its own (it runs in the project's "
                       "folder)", details)
    return ws
