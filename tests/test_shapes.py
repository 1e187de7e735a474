"""Request bodies checked from their declarations (`shapes.py` over `server/api_models.py`):
each rule of a field's type gives SPEC §6's message, fields are checked in declaration order,
and nested entries are checked with their parent's name. No server: plain function calls."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from maestro.errors import ApiError
from maestro.server import api_models as m
from maestro.shapes import MAX_DEPTH, Free, NotBlank, Required, Rule, Says, checked, \
    compile_shape
from maestro.spawn.request import SpawnRequest
from maestro.vocabulary import TASK_PRIORITIES, TIMELINE_TYPES


def even(value: Any) -> None:
    if value % 2:
        raise ApiError(400, "VALIDATION_ERROR", "n must be even")


def refusal(declaration: type, body: dict) -> tuple[str, Any]:
    with pytest.raises(ApiError) as caught:
        checked(declaration, body)
    assert caught.value.status == 400 and caught.value.code == "VALIDATION_ERROR"
    return caught.value.message, caught.value.details


def test_a_well_formed_body_comes_back_unchanged():
    body = {"projectId": "proj_1", "title": "Write tests", "priority": "high",
            "dependencies": ["task_1"], "parentId": None, "extra": 1}
    assert checked(m.CreateTask, body) is body


def test_required_and_blank_fields_say_their_own_message():
    assert refusal(m.CreateTask, {"title": "t"}) == ("projectId is required", None)
    assert refusal(m.CreateTask, {"projectId": None, "title": "t"}) == \
        ("projectId is required", None)
    assert refusal(m.CreateTask, {"projectId": "  ", "title": "t"}) == \
        ("projectId is required", None)
    assert refusal(m.UpdateTask, {"title": " "}) == ("title cannot be empty", None)
    assert refusal(m.AddTimeline, {"message": ""}) == ("message is required", None)
    checked(m.AddTimeline, {"message": " "})  # only empty is refused here


def test_types_give_the_documented_messages():
    assert refusal(m.CreateTask, {"projectId": 5, "title": "t"}) == \
        ("projectId must be a string", {"field": "projectId"})
    assert refusal(m.CreateTask, {"projectId": "p" * 129, "title": "t"}) == \
        ("projectId must be at most 128 characters", {"field": "projectId"})
    assert refusal(m.CreateTask, {"projectId": "p", "title": "t" * 1001}) == \
        ("title must be at most 1000 characters", {"field": "title"})
    assert refusal(m.CreateTask, {"projectId": "p", "title": "t", "priority": "urgent"}) == \
        (f"priority must be one of: {', '.join(TASK_PRIORITIES)}",
         {"field": "priority", "allowed": list(TASK_PRIORITIES)})
    assert refusal(m.UpdateTask, {"sessionIds": ["s", 1]}) == \
        ("sessionIds must be an array of strings", {"field": "sessionIds"})
    assert refusal(m.UpdateTask, {"dependencies": ["t" * 129]}) == \
        ("dependencies entries must be at most 128 characters", {"field": "dependencies"})
    assert refusal(m.CreateSession, {"taskIds": [], "projectId": "p", "env": {"A": 1}}) == \
        ("env values must be strings", {"field": "env"})
    assert refusal(m.CreateSession, {"taskIds": [], "projectId": "p", "id": "a b"}) == \
        ("id must match ^[A-Za-z0-9_-]{1,128}$", {"field": "id"})
    # A null where a string belongs names no field (SPEC §6 as the suite checks it).
    assert refusal(m.UpdateTask, {"description": None}) == ("description must be a string", None)


def test_null_stands_for_absence_only_where_declared():
    checked(m.UpdateTask, {"parentId": None})
    assert refusal(m.UpdateTask, {"status": None})[0].startswith("status must be one of")
    assert refusal(m.UpdateTask, {"skillIds": None})[0] == "skillIds must be an array of strings"


def test_the_first_malformed_field_in_declaration_order_is_reported():
    body = {"dependencies": 1, "priority": "x", "projectId": "p", "title": "t"}
    assert refusal(m.CreateTask, body)[0].startswith("priority must be one of")


def test_nested_entries_are_checked_with_the_parent_name():
    assert refusal(m.UpdateTask, {"timeline": [{"type": "note"}]}) == \
        (f"timeline type must be one of: {', '.join(TIMELINE_TYPES)}",
         {"field": "timeline.type"})
    assert refusal(m.UpdateTask, {"timeline": [{"timestamp": "now"}]}) == \
        ("timeline.timestamp must be a number of milliseconds", {"field": "timeline.timestamp"})
    assert refusal(m.UpdateTask, {"timeline": [{"message": 3}]}) == \
        ("timeline.message must be a string", None)
    assert refusal(m.UpdateTask, {"timeline": ["x"]}) == \
        ("timeline must be an array of objects", {"field": "timeline"})
    assert refusal(m.UpdateSession, {"events": [{"type": ""}]}) == \
        ("events[].type is required", {"field": "events.type"})
    checked(m.UpdateSession, {"events": [{"type": "x", "timestamp": 1.7e12, "id": None}]})


def test_free_form_json_is_refused_past_the_depth_limit():
    deep: dict = {}
    node = deep
    for _ in range(MAX_DEPTH):
        node["a"] = {}
        node = node["a"]
    assert refusal(m.AddSessionEvent, {"type": "x", "data": deep}) == \
        (f"data is nested too deeply (limit {MAX_DEPTH} levels)", {"field": "data"})
    checked(m.AddSessionEvent, {"type": "x", "data": deep["a"]})


def test_markers_compose_on_any_declaration():
    class Thing(TypedDict):
        name: Annotated[str, Field(max_length=3), Required("name please"), NotBlank("no blank")]
        kind: NotRequired[Annotated[Literal["a", "b"], Says("kind is a or b", {"f": "kind"})]]
        note: NotRequired[Annotated[str, Free()]]
        count: NotRequired[int]

    check = compile_shape(Thing)
    check({"name": "abc", "note": 5})  # a free field is the service's to read
    for body, said in (({}, "name please"), ({"name": " "}, "no blank"),
                       ({"name": "abcd"}, "name must be at most 3 characters"),
                       ({"name": "a", "kind": "c"}, "kind is a or b"),
                       ({"name": "a", "count": True}, "count must be an integer")):
        with pytest.raises(ApiError) as caught:
            check(body)
        assert caught.value.message == said


def test_a_rule_of_its_own_and_a_blank_check_after_the_length():
    assert refusal(SpawnRequest, {"env": {"MAESTRO_TOKEN": "x"}}) == \
        ("MAESTRO_TOKEN is never handed to agents", {"field": "env", "name": "MAESTRO_TOKEN"})
    assert refusal(SpawnRequest, {"agent": " " * 1001}) == \
        ("agent must be at most 1000 characters", {"field": "agent"})
    assert refusal(SpawnRequest, {"agent": " "}) == \
        ("agent must not be empty", {"field": "agent"})
    checked(SpawnRequest, {"agent": None, "env": None, "projectId": 5})  # 5: spawn.py's to say

    class Pair(TypedDict):
        n: Annotated[int, Rule(even)]

    checked(Pair, {"n": 2})
    assert refusal(Pair, {"n": 3}) == ("n must be even", None)
