"""Request bodies checked against their declarations (the typed dicts of `models.py`):
each declaration is compiled once into a list of field checks, run in declaration order, so the
first malformed field is the one reported, with SPEC §6's messages:

- `str` -> "X must be a string"; `Annotated[str, Field(max_length=N)]` -> "X must be at most N
  characters"; `Field(pattern=P)` -> "X must match P";
- `Literal[...]` -> "X must be one of: a, b" (details name the allowed values);
- `list[str]` -> "X must be an array of strings" (entries of at most N characters when the item
  type says so: "X entries must be at most N characters");
- `dict[str, str]` / `dict[str, Any]` -> "X must be an object" ("X values must be strings");
- `list[SomeTypedDict]` -> "X must be an array of objects", each item checked in turn, its
  fields named `X.field`; with `Indexed`, items are named by their place (`X[2].field`, "X[2]
  must be an object"), and a field marked `Unique` may not repeat across the items;
- `Field(min_length=N)` / `Field(max_length=N)` on a list -> "X must not be empty" / "X must
  hold at most N items" (`TooMany` gives the latter its own wording);
- `Ms` -> "X must be a number of milliseconds"; `Any` -> at most `MAX_DEPTH` levels deep.

`X | None` lets null stand for absence. The markers below carry what a type cannot say: the
message of a missing (`Required`) or blank (`NotBlank`, `NotEmpty`) value, a field's own wording
(`Says`), an error code of its own (`Refused`), a rule of its own (`Rule`), a field named by
its key alone inside an item (`Unplaced`), or a field the service reads itself (`Free`). A
marker's message or details may name the field's place in the body with `{path}`
(`tasks[2].title`) and the item holding it with `{item}` (`tasks[2]`). Only shapes are checked
here; whatever needs state (an unknown id is a 404) stays in the service."""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from typing_extensions import NotRequired, is_typeddict

from .errors import ApiError, validation

MAX_DEPTH = 100  # free-form JSON (metadata, event data): deeper is refused, not half-stored


class Required:
    """The field must be present and not null, else `message` (with `details`)."""

    __slots__ = ("message", "details")

    def __init__(self, message: str, details: dict | None = None):
        self.message, self.details = message, details

    def refuse(self) -> None:
        _refuse(self.message, self.details)

    def placed(self, path: str) -> "Required":
        """This marker with `{path}` and `{item}` in its wording made `path`'s."""
        item = path.rsplit(".", 1)[0]
        marker = copy.copy(self)
        marker.message, marker.details = (
            _fill(text, {"{path}": path, "{item}": item}) for text in (self.message, self.details))
        return marker


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


class Refused(Required):
    """Every refusal of the field (absent when the declaration requires it, null, of the wrong
    type or value) answers `status` with the field's own error `code` and `message`, without
    details: the spawn request's checks 1-6 (SPEC §9.3)."""

    __slots__ = ("code", "status")

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status

    def refuse(self) -> None:
        raise ApiError(self.status, self.code, self.message)


class TooMany(Required):
    """The wording of a list longer than its `max_length`."""


class Unique(Required):
    """In a list of objects, no two items may give this field the same value; the message and
    details may quote it with `{value}`."""


class Indexed:
    """The items of a list of objects are named by their place in it (`tasks[2].title`)."""


class Unplaced:
    """The wording of the field's type names it by its key alone, not by its place in the body
    (a plan's item fields other than ref and parent have always been reported so)."""


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
INDEXED = Indexed()
UNPLACED = Unplaced()
Check = Callable[[Any], None]
_AT = "[\x00]"  # the place of an item of an indexed list, until its index is known


def _fill(text: Any, words: dict[str, str]) -> Any:
    """`text` (a message, or details holding messages) with each of `words` replaced."""
    if isinstance(text, str):
        for word, value in words.items():
            text = text.replace(word, value)
        return text
    if isinstance(text, dict):
        return {k: _fill(v, words) for k, v in text.items()}
    return text


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
    refused = _marker(meta, Refused)
    if refused is None:
        return _type_check(name, base, meta)
    check = _type_check(name, base, meta)

    def check_refused(value: Any) -> None:
        try:
            check(value)
        except ApiError:
            refused.refuse()
    return check_refused


def _type_check(path: str, base: Any, meta: list) -> Check:
    name = path.rsplit(".", 1)[-1] if any(isinstance(m, Unplaced) for m in meta) else path
    says = _marker(meta, Says)
    says = says.placed(path) if says is not None else None
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
        blank = blank.placed(path) if blank is not None else None
        empty = _marker(meta, NotEmpty)
        empty = empty.placed(path) if empty is not None else None

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
        if is_typeddict(item) and any(isinstance(m, Indexed) for m in meta):
            return _indexed_check(name, item, meta, wrong)
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
        fewest = _constraint(meta, "min_length")
        shortest = _constraint(item_meta, "min_length")

        def check_strings(value: Any) -> None:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                wrong(f"{name} must be an array of strings")
            if fewest is not None and len(value) < fewest:
                wrong(f"{name} must not be empty")
            if shortest is not None and any(len(v) < shortest for v in value):
                _refuse(f"{name} entries must not be empty", detail)
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
    raise TypeError(f"no check for {name}: {base!r}")


def _indexed_check(name: str, item: type, meta: list, wrong: Callable) -> Check:
    """A list of objects whose items are named by their place (`tasks[2].title`), checked one
    after the other, each field in declaration order (a `Unique` one right after its own
    check)."""
    check_item = compile_shape(item, f"{name}{_AT}.")
    fewest = _constraint(meta, "min_length")
    most = _constraint(meta, "max_length")
    too_many = _marker(meta, TooMany)

    def check_items(value: Any) -> None:
        if not isinstance(value, list):
            wrong(f"{name} must be an array of objects")
        if fewest is not None and len(value) < fewest:
            wrong(f"{name} must not be empty")
        if most is not None and len(value) > most:
            if too_many is not None:
                too_many.refuse()
            _refuse(f"{name} must hold at most {most} items", {"field": name})
        seen: dict[str, set] = {}
        for index, entry in enumerate(value):
            try:
                if not isinstance(entry, dict):
                    _refuse(f"{name}{_AT} must be an object", {"field": f"{name}{_AT}"})
                check_item(entry, seen)
            except ApiError as exc:  # now the item's place is known
                place = {_AT: f"[{index}]"}
                raise ApiError(exc.status, exc.code, _fill(exc.message, place),
                               _fill(exc.details, place)) from None
    return check_items


Step = tuple  # (key, Required | None, nullable, check, Unique | None)


def _steps(declaration: type, prefix: str = "", only: Any = None) -> tuple[Step, ...]:
    hints = typing.get_type_hints(declaration, include_extras=True)
    steps: list[Step] = []
    for key, annotation in hints.items():
        if only is not None and key not in only:
            continue
        check = _field_check(prefix + key, annotation)
        if check is None:
            continue
        _, meta, nullable = _unpack(annotation)
        required = _marker(meta, Required) or _marker(meta, Refused)
        if required is not None and type(required) is Refused \
                and not _declared_required(declaration, annotation):
            required = None  # an optional field with a code of its own: absent is fine
        unique = _marker(meta, Unique)
        steps.append((key, required.placed(prefix + key) if required is not None else None,
                      nullable, check,
                      unique.placed(prefix + key) if unique is not None else None))
    return tuple(steps)


def _declared_required(declaration: type, annotation: Any) -> bool:
    """Whether the typed dict requires the field (`__required_keys__` cannot say it when the
    annotations are strings)."""
    origin = typing.get_origin(annotation)
    if origin is NotRequired:
        return False
    return origin is typing.Required or getattr(declaration, "__total__", True)


def compile_shape(declaration: type, prefix: str = "",
                  only: Any = None) -> Callable[[dict], dict]:
    """The check of a request body declared by the typed dict `declaration` (of its fields
    named in `only`, when given): returns the body unchanged when it is well formed, else raises
    the first field's 400."""
    fields = _steps(declaration, prefix, only)

    def check_body(body: dict, seen: dict[str, set] | None = None) -> dict:
        """In an item of a list, `seen` collects the values of its `Unique` fields."""
        for key, required, nullable, check, unique in fields:
            value = body.get(key, body)  # the body itself stands for "absent"
            if value is body or value is None:
                if required is not None:
                    required.refuse()
                if value is body or nullable:
                    continue
            check(value)
            if unique is not None and seen is not None:
                bucket = seen.setdefault(key, set())
                if value in bucket:
                    said = {"{value}": str(value)}
                    _refuse(_fill(unique.message, said), _fill(unique.details, said))
                bucket.add(value)
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
