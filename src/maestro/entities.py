"""Shapes of the embedded records and of loaded entities: timeline entries and session events
as clients send them (normalised once checked against their declarations, SPEC §4.3, §4.5,
§7.3.4) and the load-time migrations of SPEC §5.3."""

from __future__ import annotations

from typing import Any

from .ids import make_id, now_ms
from .vocabulary import DEFAULT_TIMELINE_TYPE


def bump(previous: Any) -> int:
    """now, but strictly after `previous` so quick successive updates stay ordered."""
    now = now_ms()
    if isinstance(previous, int) and not isinstance(previous, bool) and previous >= now:
        return previous + 1
    return now


def with_changes(entity: dict, **changes) -> dict:
    """A new version of `entity` (entities are never changed in place)."""
    new = dict(entity)
    new.update(changes)
    return new


def as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else []


def timeline_entry(raw: dict) -> dict:
    """A client timeline entry (§7.3.4), already checked against its declaration
    (`NewTimelineEvent`): only the known keys, the type defaulting to update."""
    out: dict[str, Any] = {}
    if raw.get("id") is not None:
        out["id"] = raw["id"]
    out["type"] = raw.get("type", DEFAULT_TIMELINE_TYPE)
    if raw.get("timestamp") is not None:
        out["timestamp"] = int(raw["timestamp"])
    if raw.get("message") is not None:
        out["message"] = raw["message"]
    if raw.get("sessionId") is not None:
        out["sessionId"] = raw["sessionId"]
    return out


def fill_timeline_entry(entry: dict) -> dict:
    now = now_ms()
    out = {"id": entry.get("id") or make_id("evt", now), "type": entry["type"],
           "timestamp": entry.get("timestamp", now)}
    for key in ("message", "sessionId"):
        if key in entry:
            out[key] = entry[key]
    return out


def session_event(raw: dict) -> dict:
    """A client session event (§4.5), already checked against its declaration
    (`NewSessionEvent`): only the known keys."""
    out: dict[str, Any] = {"type": raw["type"]}
    if raw.get("id") is not None:
        out["id"] = raw["id"]
    if raw.get("timestamp") is not None:
        out["timestamp"] = int(raw["timestamp"])
    if "data" in raw:
        out["data"] = raw["data"]
    return out


def fill_session_event(entry: dict) -> dict:
    now = now_ms()
    out = {"id": entry.get("id") or make_id("evt", now), "timestamp": entry.get("timestamp", now),
           "type": entry["type"]}
    if "data" in entry:
        out["data"] = entry["data"]
    return out


def migrate_task(t: dict) -> dict:
    """§5.3 migrations, in memory (written back when the task next changes)."""
    missing = [k for k in ("sessionIds", "skillIds", "agentIds", "dependencies", "timeline")
               if k not in t]
    if not missing:
        return t
    t = dict(t)
    for k in missing:
        t[k] = []
    return t


def migrate_session(s: dict) -> dict:
    s = dict(s)
    if "taskIds" not in s and "taskId" in s:
        tid = s.pop("taskId")
        s["taskIds"] = [tid] if tid is not None else []
    for key, default in (("taskIds", []), ("env", {}), ("events", [])):
        if key not in s:
            s[key] = default
    if "name" not in s:
        s["name"] = f"Session {s['id']}"
    return s
