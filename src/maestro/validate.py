"""Field checks written by hand, for the bodies whose items are named by their index (a plan's
`tasks[2].title`, see plan.py) and for ids read outside a declared field. Every other request
body is checked from its declaration (`shapes.py`). Each failure is a 400 VALIDATION_ERROR
naming the field, raised before anything changes."""

from __future__ import annotations

from typing import Any

from .errors import validation
from .ids import MAX_ID_LENGTH

MAX_TEXT = 1000  # project name, task title, session name (SPEC §3.3)

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


def dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))
