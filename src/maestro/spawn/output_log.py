"""Reading an agent's output log for GET /api/sessions/:id/log: the last lines (`?tail=N`), or
the whole lines written from a byte offset on (`?offset=N`), which is how clients follow it like
`tail -f` (`nextOffset` says where to ask next, `finished` when nothing more will come)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ..errors import ApiError, validation
from ..vocabulary import FINAL_SESSION_STATUSES
from .processes import LOG_FILE, RECORD_FILE, lines_from, read_json, tail_lines_at

MAX_TAIL = 10_000
DEFAULT_TAIL = 100


async def read_output(session: dict, folder: Path, *, running: bool, tail: str | None,
                      offset: str | None) -> dict:
    """The agent's output of `session` (whose launcher files are in `folder`): the last `tail`
    lines (default 100, at most 10000), or with `offset` the whole lines written from that
    byte on. `running`: the launcher still follows its agent (more output may come)."""
    count, start = DEFAULT_TAIL, None
    if tail is not None:
        count = _whole(tail, "tail", 1, MAX_TAIL)
    if offset is not None:
        start = _whole(offset, "offset", 0, 2 ** 62)
    session_id = session["id"]
    finished = session.get("status") in FINAL_SESSION_STATUSES and not running
    path = folder / LOG_FILE
    answer = {"sessionId": session_id, "finished": finished}
    if not path.exists():
        if read_json(folder / RECORD_FILE) is None:
            raise ApiError(409, "SESSION_NOT_LAUNCHED",
                           f"Session {session_id} was not launched by this server",
                           {"sessionId": session_id})
        return {**answer, "lines": [], "truncated": False, "nextOffset": 0}
    if start is not None:
        lines, after, size = await asyncio.to_thread(lines_from, path, start, finished)
        return {**answer, "lines": lines, "truncated": False, "offset": start,
                "nextOffset": after, "size": size}
    lines, truncated, end = await asyncio.to_thread(tail_lines_at, path, count)
    return {**answer, "lines": lines, "truncated": truncated, "nextOffset": end}


def _whole(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise validation(f"{name} must be a whole number between {low} and {high}",
                         {"field": name})
    return value
