"""The hierarchy and dependency graph (SPEC §15.1) and readiness (SPEC §15.2) as pure functions of
plain lookups: which writes close a cycle, through dependencies, parents or both, and why a task
is or is not ready. No store, no server, no clock."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from test_readiness_rules import NOW, forests, lookup, task

from maestro.domain.graph import dependency_ids, describe_cycle, find_cycle, parent_id, successors
from maestro.domain.hierarchy import is_descendant, subtree_deepest_first
from maestro.domain.links import new_edges
from maestro.domain.readiness import (
    assess,
    blocked_ids,
    has_unfinished_children,
    is_held,
    live_claim,
    ready_ids,
    unmet,
)


# ------------------------------------------------------------------ edges
def test_edges_are_the_string_dependencies_then_the_parent():
    assert dependency_ids(None) == []
    assert dependency_ids({"dependencies": "a"}) == []
    assert dependency_ids({"dependencies": ["a", 7, None, "b"]}) == ["a", "b"]
    assert parent_id(None) is None
    assert parent_id({"parentId": ""}) is None
    assert parent_id({"parentId": 12}) is None
    assert parent_id({"parentId": "p"}) == "p"
    assert successors(task("c", deps=["x", "y"], parent="p")) == ["x", "y", "p"]
    assert successors(task("c")) == []


# ------------------------------------------------------------------ hierarchy
def test_a_task_cannot_be_its_own_parent_or_dependency():
    get = lookup(task("a"))
    assert find_cycle("a", ["a"], get, task("a", parent="a")) == ["a", "a"]
    assert find_cycle("a", ["a"], get, task("a", deps=["a"])) == ["a", "a"]


def test_a_task_moved_under_its_own_descendant_is_a_parent_cycle():
    # c is a grandchild of a: a under c means a → c → b → a.
    get = lookup(task("a"), task("b", parent="a"), task("c", parent="b"))
    assert find_cycle("a", ["c"], get, task("a", parent="c")) == ["a", "c", "b", "a"]
    assert describe_cycle(["a", "c", "b", "a"]) == "Dependency cycle: a -> c -> b -> a"


def test_moving_a_task_within_its_tree_or_to_the_top_is_no_cycle():
    get = lookup(task("a"), task("b", parent="a"), task("c", parent="a"), task("d", parent="c"))
    assert find_cycle("d", ["b"], get, task("d", parent="b")) is None  # to a sibling subtree
    assert find_cycle("c", [], get, task("c")) is None  # to the top
    assert find_cycle("b", ["a"], get, task("b", parent="a")) is None  # the parent it has


def test_a_child_depending_on_its_ancestor_is_a_cycle_but_a_sibling_is_not():
    # The child inherits the ancestor's dependencies: child → ancestor is already an edge.
    get = lookup(task("a"), task("b", parent="a"), task("c", parent="b"), task("s", parent="a"))
    assert find_cycle("a", ["c"], get, task("a", deps=["c"])) == ["a", "c", "b", "a"]
    assert find_cycle("c", ["s"], get, task("c", deps=["s"], parent="b")) is None


def test_a_cycle_through_dependencies_and_parents_together():
    # x depends on y, y's parent is z, z depends on x: x → y → z → x.
    get = lookup(task("x"), task("y", parent="z"), task("z", deps=["x"]))
    assert find_cycle("x", ["y"], get, task("x", deps=["y"])) == ["x", "y", "z", "x"]


def test_the_search_ends_on_a_loop_already_in_the_data_that_avoids_the_task():
    # A foreign file may hold a parent loop (m ↔ n); a write elsewhere is still judged.
    get = lookup(task("a"), task("m", parent="n"), task("n", parent="m"))
    assert find_cycle("a", ["m"], get, task("a", deps=["m"])) is None


def test_without_a_proposed_version_the_stored_task_is_followed():
    get = lookup(task("a", deps=["b"]), task("b", deps=["c"]), task("c"))
    assert find_cycle("c", ["a"], get) == ["c", "a", "b", "c"]


def test_a_loop_in_the_data_does_not_hang_the_hierarchy_searches():
    rows = (task("m", parent="n"), task("n", parent="m"))

    def children(tid):
        return [t["id"] for t in rows if t["parentId"] == tid]

    assert not is_descendant("x", "m", children) and is_descendant("n", "m", children)
    assert subtree_deepest_first("m", children) == ["n", "m"]


def test_only_added_dependencies_and_a_changed_parent_are_new_edges():
    old = task("t", deps=["a"], parent="p")
    assert new_edges(old, task("t", deps=["a", "b"], parent="p")) == ["b"]
    assert new_edges(old, task("t", deps=["b"], parent="q")) == ["b", "q"]
    assert new_edges(old, task("t", deps=[], parent=None)) == []
    assert new_edges(old, dict(task("t", deps=["a"]), parentId="")) == []


# ------------------------------------------------------------------ readiness
def test_a_claim_is_live_until_its_lease_runs_out():
    def claimed(expires):
        return task("t", claim={"sessionId": "s", "token": 1, "leaseExpiresAt": expires})

    assert live_claim(None, NOW) is None
    assert live_claim(task("t"), NOW) is None
    assert live_claim(dict(task("t"), claim="s"), NOW) is None
    assert live_claim(claimed(True), NOW) is None
    assert live_claim(claimed("later"), NOW) is None
    assert live_claim(claimed(NOW), NOW) is None
    assert live_claim(claimed(NOW + 1), NOW)["token"] == 1
    assert live_claim(claimed(NOW + 0.5), NOW) is not None


def test_unmet_dependencies_are_split_into_waiting_and_missing():
    get = lookup(task("done", status="completed"), task("open", status="in_progress"),
                 task("t", deps=["done", "open", "gone"]))
    assert unmet(get("t"), get) == (["open"], ["gone"])
    assert unmet(task("free"), get) == ([], [])


def test_only_a_pending_task_is_ready_or_blocked():
    get = lookup(task("open"),
                 *(task(s, status=s, deps=["open"]) for s in ("in_progress", "completed",
                                                                 "blocked")),
                 task("free_done", status="completed"))
    for status in ("in_progress", "completed", "blocked"):
        a = assess(status, get, NOW)
        assert a.held and not a.ready and not a.blocked, status
    assert not assess("free_done", get, NOW).ready


def test_an_ancestor_blocked_or_waiting_holds_every_descendant():
    get = lookup(task("open"), task("top", status="blocked"), task("mid", parent="top"),
                 task("leaf", parent="mid", deps=["open"]),
                 task("other", deps=["open", "lost"]), task("kid", parent="other"))
    leaf = assess("leaf", get, NOW)
    assert (leaf.blocked_ancestors, leaf.blocked_by) == (["top"], ["open"])
    kid = assess("kid", get, NOW)
    # The ancestor's unmet dependencies are the descendant's, each named once.
    assert (kid.blocked_ancestors, kid.blocked_by, kid.missing) == (["other"], ["open"], ["lost"])
    assert kid.body() == {"taskId": "kid", "ready": False, "blockedBy": ["open"],
                          "missingDependencies": ["lost"], "blockedAncestors": ["other"],
                          "claim": None}


def test_a_completed_or_in_progress_ancestor_holds_nothing():
    get = lookup(task("p", status="completed"), task("q", status="in_progress", parent="p"),
                 task("c", parent="q"))
    assert assess("c", get, NOW).ready


def test_readiness_ends_on_a_parent_loop_or_a_missing_parent():
    get = lookup(task("m", parent="n"), task("n", parent="m"), task("o", parent="gone"))
    assert assess("m", get, NOW).ready
    assert assess("o", get, NOW).ready
    assert not is_held(get("m"), get)


@settings(deadline=None, suppress_health_check=list(HealthCheck))
@given(forests())
def test_the_short_circuit_agrees_with_the_full_assessment(tasks):
    get = lookup(*tasks)
    for t in tasks:
        assert is_held(t, get) == assess(t["id"], get, NOW).held, t["id"]


def test_ready_and_blocked_lists_are_ordered_and_skip_unknown_ids():
    get = lookup(task("open"), task("lo", priority="low"), task("hi", priority="high", created=9),
                 task("hi0", priority="high", created=1), task("w1", deps=["open"], created=2),
                 task("w0", deps=["open"], priority="high", created=3))
    ids = ["lo", "hi", "hi0", "w1", "w0", "nope", "open"]
    assert ready_ids(ids, get, NOW) == ["hi0", "hi", "open", "lo"]
    assert blocked_ids(ids, get, NOW) == ["w0", "w1"]


def test_a_task_with_unfinished_children_is_not_for_claim_next():
    get = lookup(task("done", status="completed"), task("open"))
    assert not has_unfinished_children([], get)
    assert not has_unfinished_children(["done", "gone"], get)
    assert has_unfinished_children(["done", "open"], get)
