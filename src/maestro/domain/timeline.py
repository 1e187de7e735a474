"""Timeline entries: the one builder of what is appended to a task's or a session's timeline
(SPEC §4.3, extension E2)."""

from __future__ import annotations

from typing import Any

from ..ids import make_id


def entry(now: int, type_: str, message: str | None = None, **fields: Any) -> dict:
    """`{id, type, timestamp, message?, ...fields}` stamped `now`; members that are None are
    left out (e.g. `entry(now, "session_started", sessionId=sid)`)."""
    out: dict[str, Any] = {"id": make_id("evt", now), "type": type_, "timestamp": now}
    if message is not None:
        out["message"] = message
    for key, value in fields.items():
        if value is not None:
            out[key] = value
    return out
