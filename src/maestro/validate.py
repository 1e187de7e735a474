"""Checks of request payloads: JSON types, enums, sizes. Each failure is a 400 VALIDATION_ERROR
naming the field, raised before anything changes."""

from __future__ import annotations

from typing import Any

from .errors import validation
from .ids import MAX_ID_LENGTH

MAX_TEXT = 1000  # project name, task title, session name (SPEC §3.3)

TASK_STATUSES = ("pending", "in_progress", "completed", "blocked")
TASK_PRIORITIES = ("low", "medium", "high")
TIMELINE_TYPES = ("created", "session_started", "session_ended", "update", "milestone", "blocker")
SESSION_STATUSES = ("spawning", "running", "completed", "failed")
SESSION_TASK_STATUSES = ("queued", "working", "needs_input", "blocked", "completed", "failed",
                         "skipped")
STRATEGIES = ("simple", "queue", "tree")

_MISSING = object()


def string(body: dict, key: str, *, required_message: str | None = None,
           max_len: int | None = None, nonblank_message: str | None = None) -> str | None:
    """A string field, or None when absent. `required_message` makes absence (or null) an
    error; `nonblank_message` makes a blank value an error."""
    value = body.get(key, _MISSING)
    if value is _MISSING or value is None:
        if required_message:
            raise validation(required_message)
        if value is None and key in body:
            raise validation(f"{key} must be a string")
        return None
    if not isinstance(value, str):
        raise validation(f"{key} must be a string", {"field": key})
    if nonblank_message and not value.strip():
        raise validation(nonblank_message)
    if max_len is not None and len(value) > max_len:
        raise validation(f"{key} must be at most {max_len} characters", {"field": key})
    return value


def ident(value: Any, field: str) -> str:
    """An id given by the client (as a string of at most 128 characters)."""
    if not isinstance(value, str):
        raise validation(f"{field} must be a string", {"field": field})
    if len(value) > MAX_ID_LENGTH:
        raise validation(f"{field} must be at most {MAX_ID_LENGTH} characters", {"field": field})
    return value


def string_list(body: dict, key: str, *, ids: bool = False) -> list[str] | None:
    value = body.get(key, _MISSING)
    if value is _MISSING:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise validation(f"{key} must be an array of strings", {"field": key})
    if ids and any(len(v) > MAX_ID_LENGTH for v in value):
        raise validation(f"{key} entries must be at most {MAX_ID_LENGTH} characters",
                         {"field": key})
    return value


def enum(body: dict, key: str, allowed: tuple[str, ...]) -> str | None:
    value = body.get(key, _MISSING)
    if value is _MISSING:
        return None
    if value not in allowed or not isinstance(value, str):
        raise validation(f"{key} must be one of: {', '.join(allowed)}",
                         {"field": key, "allowed": list(allowed)})
    return value


def obj(body: dict, key: str) -> dict | None:
    value = body.get(key, _MISSING)
    if value is _MISSING:
        return None
    if not isinstance(value, dict):
        raise validation(f"{key} must be an object", {"field": key})
    return shallow(value, key)


def str_map(body: dict, key: str) -> dict[str, str] | None:
    value = obj(body, key)
    if value is not None and not all(isinstance(v, str) for v in value.values()):
        raise validation(f"{key} values must be strings", {"field": key})
    return value


def object_list(body: dict, key: str) -> list[dict] | None:
    value = body.get(key, _MISSING)
    if value is _MISSING:
        return None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise validation(f"{key} must be an array of objects", {"field": key})
    return value


MAX_DEPTH = 100  # free-form JSON (metadata, event data): deeper is refused, not half-stored


def shallow(value: Any, field: str, limit: int = MAX_DEPTH) -> Any:
    """`value` unless it nests deeper than `limit` levels (400)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            raise validation(f"{field} is nested too deeply (limit {limit} levels)",
                             {"field": field})
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return value


def dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def timestamp(value: Any, field: str) -> int:
    """Integer milliseconds since the epoch (SPEC §3.2); 1.7e12 written as a float with no
    fraction is accepted as that integer."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation(f"{field} must be a number of milliseconds", {"field": field})
    return value
