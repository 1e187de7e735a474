"""Request bodies checked from their declarations (`shapes.py` over `models.py`):
each rule of a field's type gives SPEC §6's message, fields are checked in declaration order,
and nested entries are checked with their parent's name. No server: plain function calls."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import Field
from typing_extensions import NotRequired, TypedDict

from maestro.errors import ApiError
from maestro import models as m
from maestro.shapes import INDEXED, MAX_DEPTH, UNPLACED, Free, NotBlank, Refused, Required, \
    Rule, Says, Unique, checked, compile_shape
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
    who = {"projectId": "p", "taskIds": ["t"]}
    assert refusal(SpawnRequest, {**who, "env": {"MAESTRO_TOKEN": "x"}}) == \
        ("MAESTRO_TOKEN is never handed to agents", {"field": "env", "name": "MAESTRO_TOKEN"})
    assert refusal(SpawnRequest, {**who, "agent": " " * 1001}) == \
        ("agent must be at most 1000 characters", {"field": "agent"})
    assert refusal(SpawnRequest, {**who, "agent": " "}) == \
        ("agent must not be empty", {"field": "agent"})
    checked(SpawnRequest, {**who, "agent": None, "env": None, "sessionId": None})

    class Pair(TypedDict):
        n: Annotated[int, Rule(even)]

    checked(Pair, {"n": 2})
    assert refusal(Pair, {"n": 3}) == ("n must be even", None)


def test_items_of_an_indexed_list_are_named_by_their_place():
    one = {"ref": "a", "title": "A"}
    assert refusal(m.Plan, {"tasks": [one, {"ref": "b", "title": " "}]}) == \
        ("tasks[1].title is required", None)
    assert refusal(m.Plan, {"tasks": [one, "x"]}) == \
        ("tasks[1] must be an object", {"field": "tasks[1]"})
    assert refusal(m.Plan, {"tasks": [one, {"ref": "a b", "title": "B"}]}) == \
        (f"tasks[1].ref must match {m.REF}", {"field": "tasks[1].ref"})
    assert refusal(m.Plan, {"tasks": [one, {"title": "B"}]}) == \
        (f"tasks[1].ref must match {m.REF}", {"field": "tasks[1].ref"})
    assert refusal(m.Plan, {"tasks": [one, {"ref": "b", "title": "B", "parent": 5}]}) == \
        ("tasks[1].parent must be a string", {"field": "tasks[1].parent"})
    # The other fields of an item are named by their key alone, as they always were.
    assert refusal(m.Plan, {"tasks": [{"ref": "a", "title": 5}]}) == \
        ("title must be a string", {"field": "title"})
    assert refusal(m.Plan, {"tasks": [{"ref": "a", "title": "A", "dependsOn": "b"}]}) == \
        ("dependsOn must be an array of strings", {"field": "dependsOn"})
    assert refusal(m.Plan, {"tasks": [one], "dependencies": [{"task": "a"}]}) == \
        ("dependencies[0] needs task and dependsOn (a ref or a task id)",
         {"field": "dependencies[0]"})
    assert refusal(m.Plan, {"tasks": [one], "dependencies": [
        {"task": "a", "dependsOn": "b"}, {"task": "a", "dependsOn": "t" * 129}]}) == \
        ("dependencies[1].dependsOn must be at most 128 characters",
         {"field": "dependencies[1].dependsOn"})
    checked(m.Plan, {"tasks": [{**one, "parent": None}], "dependencies": []})


class Item(TypedDict):
    key: Annotated[str, Unique("{path} repeats {value}", {"field": "{item}"})]
    note: NotRequired[Annotated[int, UNPLACED]]


class Box(TypedDict):
    items: Annotated[list[Item], Field(max_length=2), INDEXED]


def test_a_list_says_how_long_it_may_be_and_a_unique_field_may_not_repeat():
    one = {"ref": "a", "title": "A"}
    for body in ({}, {"tasks": None}, {"tasks": []}, {"tasks": {}}):
        assert refusal(m.Plan, body) == \
            ("tasks must be a non-empty array of objects", {"field": "tasks"})
    assert refusal(m.Plan, {"tasks": [one] * 501}) == \
        ("a plan holds at most 500 tasks", {"field": "tasks"})
    # the repeat is reported right after its own field, before the item's later fields
    assert refusal(m.Plan, {"tasks": [one, {"ref": "a", "title": None}]}) == \
        ("ref a is used twice", {"field": "tasks[1].ref", "ref": "a"})

    check = compile_shape(Box)
    check({"items": [{"key": "x"}, {"key": "y"}]})
    for body, said in (({"items": [{"key": "x"}, {"key": "x"}]}, "items[1].key repeats x"),
                       ({"items": [{"key": "x"}] * 3}, "items must hold at most 2 items"),
                       ({"items": [{"key": "x", "note": "n"}]}, "note must be an integer")):
        with pytest.raises(ApiError) as caught:
            check(body)
        assert caught.value.message == said


def test_a_field_with_an_error_code_of_its_own():
    def refused(body: dict) -> tuple[int, str, str, Any]:
        with pytest.raises(ApiError) as caught:
            compile_shape(SpawnRequest, only=("projectId", "taskIds", "spawnSource",
                                              "sessionId", "role"))(body)
        e = caught.value
        return e.status, e.code, e.message, e.details

    who = {"projectId": "p", "taskIds": ["t"]}
    for project in (None, 5, " "):
        assert refused({**who, "projectId": project}) == \
            (400, "missing_project_id", "projectId is required", None)
    assert refused({"taskIds": ["t"]})[1] == "missing_project_id"
    for tasks in (None, [], ["t", ""], ["t", 1], "t"):
        assert refused({**who, "taskIds": tasks}) == \
            (400, "invalid_task_ids", "taskIds must be a non-empty array", None)
    assert refused({**who, "spawnSource": None})[1:3] == \
        ("invalid_spawn_source", "spawnSource must be one of: manual, orchestrator, ui, cli, "
                                 "api, session")
    assert refused({**who, "role": "boss"}) == \
        (400, "invalid_role", 'role must be "worker" or "orchestrator"', None)
    assert refused({**who, "sessionId": 5}) == \
        (400, "VALIDATION_ERROR", "sessionId must be a string", {"field": "sessionId"})

    class Thing(TypedDict):
        n: Annotated[int, Refused("bad_n", "n is wrong", 422)]

    with pytest.raises(ApiError) as caught:
        compile_shape(Thing)({})
    assert (caught.value.status, caught.value.code) == (422, "bad_n")
