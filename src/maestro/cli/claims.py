"""What the CLI knows about claims (SPEC §15.3): who holds a task and until when, and the fencing
header a session sends when it writes to a task it holds, so that a write made after its claim
was lost is refused instead of overwriting the new holder's work.

The token of each claim this machine's CLI was granted is kept in
`~/.maestro/claims/<session>.json` and sent with every later write of that session to that task:
the server compares it with the live token, so a claim lost between two commands (expired and
granted to someone else) cannot go unnoticed. Keeping it is best effort; without it the token is
read from the task."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .client import CLAIM_HEADER, seg
from .output import EXIT_CLAIMED, CliError, esc, fmt_time


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


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _claims_file(run: Any, session_id: str) -> Path:
    env = run.ctx.env.environ if run.ctx.env is not None else os.environ
    home = Path(env.get("HOME") or Path.home())
    return home / ".maestro" / "claims" / f"{quote(session_id, safe='')}.json"


def kept_tokens(run: Any, session_id: str) -> dict[str, int]:
    """Task id -> token of the claims this session was granted through this CLI."""
    try:
        data = json.loads(_claims_file(run, session_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and _is_token(v)}


def _write_tokens(run: Any, session_id: str, tokens: dict[str, int]) -> None:
    path = _claims_file(run, session_id)
    try:
        if not tokens:
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        spare = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        spare.write_text(json.dumps(tokens), encoding="utf-8")
        os.replace(spare, path)
    except OSError:
        pass  # best effort: the token can still be read from the task


def keep_token(run: Any, session_id: str, task_id: str, token: Any) -> None:
    """Remember the token of a claim just granted to `session_id`."""
    if _is_token(token):
        _write_tokens(run, session_id, {**kept_tokens(run, session_id), task_id: token})


def forget_token(run: Any, session_id: str | None, task_id: str) -> None:
    """Drop a kept token once the claim has ended (released, task completed or deleted)."""
    if not session_id:
        return
    tokens = kept_tokens(run, session_id)
    if tokens.pop(task_id, None) is not None:
        _write_tokens(run, session_id, tokens)


def fencing_headers(run: Any, task_id: str) -> dict[str, str]:
    """`X-Maestro-Claim-Token` for a write by the current session to `task_id`.

    The token kept from the grant is sent as is (the server refuses it once the claim is
    lost). Without one, the task is read: the session's own claim lends its token, and a live
    claim of another session makes the write fail here with exit 6, as the server would refuse
    it from that session's own identity. Outside a session, or on a task nobody holds, there is
    no header."""
    session = run.ctx.session
    if not session:
        return {}
    kept = kept_tokens(run, session).get(task_id)
    if kept is not None:
        return {CLAIM_HEADER: str(kept)}
    task = run.api.get(f"/api/tasks/{seg(task_id)}")
    claim = claim_of(task)
    if claim is None:
        return {}
    if claim.get("sessionId") == session:
        return {CLAIM_HEADER: str(claim["token"])} if _is_token(claim.get("token")) else {}
    left = lease_left_ms(claim)
    if left is not None and left > 0:
        raise CliError("claim_lost", f"Task {task_id} is claimed by session "
                       f"{claim.get('sessionId')}, not by {session}.",
                       exit_code=EXIT_CLAIMED,
                       details={"taskId": task_id, "sessionId": session, "holder": claim},
                       suggestion="Leave it to its holder; `maestro task ready` lists free work.")
    return {}
