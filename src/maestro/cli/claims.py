"""What the CLI knows about claims (SPEC §15.3): who holds a task and until when, and the fencing
header a session sends when it writes to a task it holds, so that a write made after its claim
was lost is refused instead of overwriting the new holder's work."""

from __future__ import annotations

import time
from typing import Any

from .client import CLAIM_HEADER, seg
from .output import esc, fmt_time


def claim_of(task: dict | None) -> dict | None:
    """The task's claim object, or None (also for malformed data)."""
    claim = (task or {}).get("claim")
    return claim if isinstance(claim, dict) and claim.get("sessionId") else None


def lease_left_ms(claim: dict, now_ms: float | None = None) -> float | None:
    """Milliseconds until the lease ends by this machine's clock (negative once past)."""
    until = claim.get("leaseExpiresAt")
    if not isinstance(until, (int, float)) or isinstance(until, bool):
        return None
    return until - (time.time() * 1000 if now_ms is None else now_ms)


def claim_text(claim: dict | None) -> str:
    """`sess_1 (token 3) until 2025-01-01 12:00:00`, marked when the lease has run out."""
    if not claim:
        return "-"
    left = lease_left_ms(claim)
    text = (f"{esc(claim.get('sessionId'))} (token {esc(claim.get('token'))}) until "
            f"{fmt_time(claim.get('leaseExpiresAt'))}")
    if left is not None and left <= 0:
        text += " [red](lease expired)[/red]"
    return text


def held_by(task: dict | None, session_id: str | None) -> dict | None:
    """The task's claim when `session_id` holds it, else None."""
    claim = claim_of(task)
    if claim and session_id and claim.get("sessionId") == session_id:
        return claim
    return None


def fencing_headers(run: Any, task_id: str, task: dict | None = None) -> dict[str, str]:
    """`X-Maestro-Claim-Token` for a write to `task_id` when the current session holds its
    claim; empty outside a session or when it holds none. Reads the task when not given."""
    if not run.ctx.session:
        return {}
    if task is None:
        task = run.api.get(f"/api/tasks/{seg(task_id)}")
    claim = held_by(task, run.ctx.session)
    token = claim.get("token") if claim else None
    if isinstance(token, int) and not isinstance(token, bool):
        return {CLAIM_HEADER: str(token)}
    return {}
