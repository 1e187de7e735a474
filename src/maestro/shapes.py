"""Request bodies checked against their declarations (the typed dicts of `server/api_models.py`):
each declaration is compiled once into a list of field checks, run in declaration order, so the
first malformed field is the one reported, with SPEC §6's messages:

- `str` -> "X must be a string"; `Annotated[str, Field(max_length=N)]` -> "X must be at most N
  characters"; `Field(pattern=P)` -> "X must match P";
- `Literal[...]` -> "X must be one of: a, b" (details name the allowed values);
- `list[str]` -> "X must be an array of strings" (entries of at most N characters when the item
  type says so: "X entries must be at most N characters");
- `dict[str, str]` / `dict[str, Any]` -> "X must be an object" ("X values must be strings");
- `list[SomeTypedDict]` -> "X must be an array of objects", each item checked in turn;
- `Ms` -> "X must be a number of milliseconds"; `Any` -> at most `MAX_DEPTH` levels deep.

`X | None` lets null stand for absence. The markers below carry what a type cannot say: the
message of a missing (`Required`) or blank (`NotBlank`, `NotEmpty`) value, a field's own wording
(`Says`), a rule of its own (`Rule`), or a field the service reads itself (`Free`). Only shapes are checked here; whatever
needs state (an unknown id is a 404) stays in the service."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from typing_extensions import NotRequired, is_typeddict

from .errors import validation

MAX_DEPTH = 100  # free-form JSON (metadata, event data): deeper is refused, not half-stored


class Required:
    """The field must be present and not null, else `message` (with `details`)."""

    __slots__ = ("message", "details")

    def __init__(self, message: str, details: dict | None = None):
        self.message, self.details = message, details


class NotBlank(Required):
    """A string that is not only white space, else `message` (checked before its length, or
    after it with `after_length`)."""

    __slots__ = ("after_length",)

    def __init__(self, message: str, details: dict | None = None, *,
                 after_length: bool = False):
        super().__init__(message, details)
        self.after_length = after_length


class NotEmpty(Required):
    """A string that is not empty, else `message`."""


class Says(Required):
    """A value of the wrong type is refused with `message` (and `details`) instead of the
    type's own wording."""


class Free:
    """Declared for the documentation; the service reads (and checks) it itself."""


class Rule:
    """The field is checked by `check(value)` (null stands for absence), for a rule no type
    says, such as which variable names an agent may be given."""

    __slots__ = ("check",)

    def __init__(self, check: Callable[[Any], None]):
        self.check = check


class Milliseconds:
    """An integer count of milliseconds since the epoch; a float with no fraction is taken as
    that integer (SPEC §3.2)."""


FREE = Free()
MS = Milliseconds()
Check = Callable[[Any], None]


# ------------------------------------------------------------------ free-form JSON depth
def shallow(value: Any, field: str, limit: int = MAX_DEPTH) -> Any:
    """`value` unless it nests deeper than `limit` levels (400): a scalar counts as a level, so a
    non-empty container at level `limit` is already too deep."""
    if not isinstance(value, (dict, list)):
        return value
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth >= limit and children:
            raise validation(f"{field} is nested too deeply (limit {limit} levels)",
                             {"field": field})
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return value


def timestamp(value: Any, field: str) -> int:
    """Integer milliseconds since the epoch (SPEC §3.2); 1.7e12 written as a float with no
    fraction is accepted as that integer."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise validation(f"{field} must be a number of milliseconds", {"field": field})
    return value


# ------------------------------------------------------------------ reading a declaration
def _unpack(annotation: Any) -> tuple[Any, list, bool]:
    """(base type, Annotated metadata, whether null is allowed) of a field's annotation."""
    meta: list = []
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            meta.extend(annotation.__metadata__)
            annotation = annotation.__origin__
        elif origin is NotRequired or origin is typing.Required:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(
                annotation):
            nullable = True
            rest = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]
        else:
            return annotation, meta, nullable


def _constraint(meta: list, name: str) -> Any:
    for m in meta:
        value = getattr(m, name, None)
        if value is not None and not isinstance(m, Required):
            return value
        for inner in getattr(m, "metadata", ()):  # pydantic's FieldInfo keeps them here
            value = getattr(inner, name, None)
            if value is not None:
                return value
    return None


def _marker(meta: list, kind: type) -> Any:
    return next((m for m in meta if type(m) is kind), None)


def _refuse(message: str, details: dict | None) -> None:
    raise validation(message, details) if details is not None else validation(message)


def _field_check(name: str, annotation: Any) -> Check | None:
    base, meta, nullable = _unpack(annotation)
    if any(isinstance(m, Free) for m in meta):
        return None
    rule = next((m for m in meta if isinstance(m, Rule)), None)
    if rule is not None:
        return rule.check
    says = _marker(meta, Says)
    detail = {"field": name}

    def wrong(default: str, details: dict | None = detail) -> None:
        if says is not None:
            _refuse(says.message, says.details)
        _refuse(default, details)

    if any(isinstance(m, Milliseconds) for m in meta):
        def check_ms(value: Any) -> None:
            timestamp(value, name)
        return check_ms
    if base is str:
        longest = _constraint(meta, "max_length")
        pattern = _constraint(meta, "pattern")
        matcher = re.compile(pattern).match if pattern else None
        blank = _marker(meta, NotBlank)
        empty = _marker(meta, NotEmpty)

        late = blank is not None and blank.after_length
        if not (longest or matcher or blank or empty or says):
            def check_plain(value: Any) -> None:  # the common case, kept short
                if value.__class__ is not str and not isinstance(value, str):
                    if value is None:
                        _refuse(f"{name} must be a string", None)
                    _refuse(f"{name} must be a string", detail)
            return check_plain

        def check_str(value: Any) -> None:
            if value.__class__ is not str and not isinstance(value, str):
                if value is None:  # a null where a string belongs (no details: SPEC §6)
                    wrong(f"{name} must be a string", None)
                if matcher is not None:
                    _refuse(f"{name} must match {pattern}", detail)
                wrong(f"{name} must be a string")
            if blank is not None and not late and not value.strip():
                _refuse(blank.message, blank.details)
            if empty is not None and not value:
                _refuse(empty.message, empty.details)
            if longest is not None and len(value) > longest:
                _refuse(f"{name} must be at most {longest} characters", detail)
            if late and not value.strip():
                _refuse(blank.message, blank.details)
            if matcher is not None and not matcher(value):
                _refuse(f"{name} must match {pattern}", detail)
        return check_str
    origin = typing.get_origin(base)
    if origin is Literal:
        allowed = typing.get_args(base)
        choices = {"field": name, "allowed": list(allowed)}
        text = f"{name} must be one of: {', '.join(map(str, allowed))}"

        def check_choice(value: Any) -> None:
            if value not in allowed or not isinstance(value, str):
                wrong(text, choices)
        return check_choice
    if origin is list:
        (item,) = typing.get_args(base)
        if is_typeddict(item):
            check_item = compile_shape(item, prefix=f"{name}.")

            def check_objects(value: Any) -> None:
                if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                    wrong(f"{name} must be an array of objects")
                for entry in value:
                    check_item(entry)
            return check_objects
        item_base, item_meta, _ = _unpack(item)
        longest = _constraint(item_meta, "max_length")

        def check_strings(value: Any) -> None:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                wrong(f"{name} must be an array of strings")
            if longest is not None and any(len(v) > longest for v in value):
                _refuse(f"{name} entries must be at most {longest} characters", detail)
        return check_strings
    if origin is dict:
        strings = typing.get_args(base)[1] is str

        def check_object(value: Any) -> None:
            if not isinstance(value, dict):
                wrong(f"{name} must be an object")
            shallow(value, name)
            if strings and not all(isinstance(v, str) for v in value.values()):
                _refuse(f"{name} values must be strings", detail)
        return check_object
    if base is Any:
        def check_json(value: Any) -> None:
            if isinstance(value, (dict, list)):
                shallow(value, name)
        return check_json
    if base is int:
        def check_int(value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, int):
                wrong(f"{name} must be an integer")
        return check_int
    raise TypeError(f"no check for {name}: {annotation!r}")


def compile_shape(declaration: type, prefix: str = "") -> Callable[[dict], dict]:
    """The check of a request body declared by the typed dict `declaration`: returns the body
    unchanged when it is well formed, else raises the first field's 400."""
    hints = typing.get_type_hints(declaration, include_extras=True)
    steps: list[tuple[str, Required | None, bool, Check]] = []
    for key, annotation in hints.items():
        check = _field_check(prefix + key, annotation)
        if check is None:
            continue
        _, meta, nullable = _unpack(annotation)
        steps.append((key, _marker(meta, Required), nullable, check))
    fields = tuple(steps)

    def check_body(body: dict) -> dict:
        for key, required, nullable, check in fields:
            value = body.get(key, body)  # the body itself stands for "absent"
            if value is body or value is None:
                if required is not None:
                    _refuse(required.message, required.details)
                if value is body or nullable:
                    continue
            check(value)
        return body

    check_body.__name__ = f"check_{declaration.__name__}"
    return check_body


_compiled: dict[type, Callable[[dict], dict]] = {}


def checked(declaration: type, body: dict) -> dict:
    """`body` checked against `declaration` (compiled on first use)."""
    check = _compiled.get(declaration)
    if check is None:
        check = _compiled[declaration] = compile_shape(declaration)
    return check(body)


def checker(declaration: type) -> Callable[[dict], dict]:
    """The compiled check of `declaration`, to call on the hot paths."""
    check = _compiled.get(declaration)
    if check is None:
        check = _compiled[declaration] = compile_shape(declaration)
    return check
