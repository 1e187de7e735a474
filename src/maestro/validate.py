"""Checks of values read outside a declared field (an id the service reads itself), and the
limits the declarations share. Request bodies are checked from their declarations
(`shapes.py`). Each failure is a 400 VALIDATION_ERROR naming the field, raised before anything
changes."""

from __future__ import annotations

from typing import Any

from .errors import validation
from .ids import MAX_ID_LENGTH

MAX_TEXT = 1000  # project name, task title, session name (SPEC §3.3)


def ident(value: Any, field: str) -> str:
    """An id given by the client (as a string of at most 128 characters)."""
    if not isinstance(value, str):
        raise validation(f"{field} must be a string", {"field": field})
    if len(value) > MAX_ID_LENGTH:
        raise validation(f"{field} must be at most {MAX_ID_LENGTH} characters", {"field": field})
    return value


def dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))
