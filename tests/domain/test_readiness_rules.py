"""The pure coordination rules (SPEC §15), without I/O: cycle detection over dependency and
child→parent edges, readiness, and the incrementally kept ready/blocked indexes, which must
equal a brute-force computation after any sequence of changes (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maestro.domain.graph import find_cycle
from maestro.domain.handoff import dependency_briefs, handoff_message, last_completion_report
from maestro.domain.readiness import assess, blocked_ids, order_key, ready_ids
from maestro.ready_index import ReadyIndex
from maestro.spawn.agent import build_prompt
from maestro.spawn.manifest import build_manifest, dependency_text, validate_manifest
from maestro.state import Table

NOW = 1_000_000
STATUSES = ("pending", "in_progress", "completed", "blocked")
PRIORITIES = ("low", "medium", "high")


def task(tid, status="pending", deps=(), parent=None, priority="medium", created=0, claim=None,
         project="p"):
    t = {"id": tid, "projectId": project, "parentId": parent, "status": status,
         "priority": priority, "dependencies": list(deps), "createdAt": created}
    if claim is not None:
        t["claim"] = claim
    return t


def lookup(*tasks):
    rows = {t["id"]: t for t in tasks}
    return rows.get


# ------------------------------------------------------------------ cycles
def test_a_new_edge_back_to_the_task_is_a_cycle_in_order():
    get = lookup(task("a"), task("b", deps=["c"]), task("c", deps=["a"]))
    proposed = task("a", deps=["b"])
    assert find_cycle("a", ["b"], get, proposed) == ["a", "b", "c", "a"]


def test_a_diamond_is_no_cycle():
    get = lookup(task("a", deps=["b", "c"]), task("b", deps=["d"]), task("c", deps=["d"]),
                 task("d"))
    assert find_cycle("a", ["b", "c"], get, task("a", deps=["b", "c"])) is None


def test_a_parent_depending_on_its_child_is_a_cycle():
    get = lookup(task("p"), task("c", parent="p"))
    assert find_cycle("p", ["c"], get, task("p", deps=["c"])) == ["p", "c", "p"]


def test_a_parent_moved_under_a_task_depending_on_its_descendant_is_a_cycle():
    # d depends on b, b is a child of a: a under d means a → d → b → a.
    get = lookup(task("a"), task("b", parent="a"), task("d", deps=["b"]))
    assert find_cycle("a", ["d"], get, task("a", parent="d")) == ["a", "d", "b", "a"]


def test_missing_tasks_end_the_search():
    get = lookup(task("a"), task("b", deps=["gone"]))
    assert find_cycle("a", ["b"], get, task("a", deps=["b"])) is None


# ------------------------------------------------------------------ readiness
def test_readiness_follows_dependencies_ancestors_and_claims():
    get = lookup(
        task("done", status="completed"), task("open"),
        task("r", deps=["done"]),
        task("w", deps=["open", "gone"]),
        task("held", status="blocked"), task("under", parent="held"),
        task("p", deps=["open"]), task("c", parent="p"), task("gc", parent="c"),
        task("claimed", claim={"sessionId": "s", "token": 1, "leaseExpiresAt": NOW + 1}),
        task("lapsed", claim={"sessionId": "s", "token": 1, "leaseExpiresAt": NOW}))
    assert assess("r", get, NOW).ready
    w = assess("w", get, NOW)
    assert (w.ready, w.blocked_by, w.missing) == (False, ["open"], ["gone"])
    assert assess("under", get, NOW).blocked_ancestors == ["held"]
    gc = assess("gc", get, NOW)
    assert gc.blocked_ancestors == ["p"] and gc.blocked_by == ["open"] and gc.blocked
    assert not assess("claimed", get, NOW).ready and not assess("claimed", get, NOW).blocked
    assert assess("lapsed", get, NOW).ready
    assert assess("nope", get, NOW) is None
    assert assess("claimed", get, NOW).body()["claim"]["token"] == 1


def test_order_is_priority_then_created_then_id():
    tasks = [task("b", priority="low", created=1), task("a", priority="high", created=5),
             task("c", priority="high", created=5), task("d", priority="medium", created=0)]
    assert [t["id"] for t in sorted(tasks, key=order_key)] == ["a", "c", "d", "b"]


# ------------------------------------------------------------------ oracle
@st.composite
def forests(draw):
    """Random forests with random dependencies (acyclic over both edge kinds, plus some ids
    naming no task), statuses, priorities and claims."""
    n = draw(st.integers(1, 14))
    ids = [f"t{i:02d}" for i in range(n)]
    tasks = []
    for i, tid in enumerate(ids):
        # Edges only towards earlier tasks keep the graph acyclic.
        parent = draw(st.one_of(st.none(), st.sampled_from(ids[:i]))) if i else None
        deps = draw(st.lists(st.sampled_from(ids[:i] + ["gone1", "gone2"]), max_size=3,
                             unique=True)) if i else []
        claim = draw(st.one_of(st.none(), st.builds(
            lambda s, exp: {"sessionId": s, "token": 1, "claimedAt": 0, "leaseExpiresAt": exp},
            st.sampled_from(["s1", "s2"]), st.sampled_from([NOW - 5, NOW + 5]))))
        tasks.append(task(tid, status=draw(st.sampled_from(STATUSES)), deps=deps,
                          parent=parent, priority=draw(st.sampled_from(PRIORITIES)),
                          created=draw(st.integers(0, 3)), claim=claim,
                          project=draw(st.sampled_from(["p", "q"]))))
    return tasks


def brute_ready(tasks, now, project=None, parent=None):
    """§15.2 straight from the definition."""
    rows = {t["id"]: t for t in tasks}

    def unmet(t):
        return any(d not in rows or rows[d]["status"] != "completed" for d in t["dependencies"])

    def ancestors(t):
        out, p = [], t["parentId"]
        while p is not None and p in rows:
            out.append(rows[p])
            p = rows[p]["parentId"]
        return out

    def live(t):
        c = t.get("claim")
        return c is not None and c["leaseExpiresAt"] > now

    ready, blocked = [], []
    for t in tasks:
        if project is not None and t["projectId"] != project:
            continue
        if parent is not None and t["parentId"] != parent:
            continue
        if t["status"] != "pending":
            continue
        held = unmet(t) or any(a["status"] == "blocked" or unmet(a) for a in ancestors(t))
        if held:
            blocked.append(t)
        elif not live(t):
            ready.append(t)
    key = order_key
    return [t["id"] for t in sorted(ready, key=key)], [t["id"] for t in sorted(blocked, key=key)]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forests())
def test_pure_readiness_equals_brute_force(tasks):
    get = lookup(*tasks)
    ids = [t["id"] for t in tasks]
    want_ready, want_blocked = brute_ready(tasks, NOW)
    assert ready_ids(ids, get, NOW) == want_ready
    assert blocked_ids(ids, get, NOW) == want_blocked


def index_answers(index: ReadyIndex, table: Table, project, parent):
    """What the server answers from the index (eligible minus live claims)."""
    ready = [k[2] for k in index.ready_keys(project, parent)
             if assess(k[2], table.rows.get, NOW).claim is None]
    blocked = [tid for tid in index.blocked_ids(project)
               if parent is None or table.rows[tid]["parentId"] == parent]
    return ready, blocked


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forests(), st.data(), st.booleans())
def test_the_incremental_index_equals_brute_force_after_any_changes(tasks, data, lazy):
    """Kept change by change, or (`lazy`, as the committed view's) followed only when read."""
    table = Table("createdAt", indexed=("projectId", "parentId", "status"))
    index = ReadyIndex(table, lazy=lazy)
    index.attach()
    for t in tasks:
        table.put(t)
    for _ in range(data.draw(st.integers(0, 12))):
        current = list(table.rows.values())
        victim = data.draw(st.sampled_from(current)) if current else None
        action = data.draw(st.sampled_from(["status", "deps", "delete", "priority", "claim"]))
        if victim is None:
            break
        changed = dict(victim)
        if action == "status":
            changed["status"] = data.draw(st.sampled_from(STATUSES))
        elif action == "deps":
            # Towards tasks created earlier only: stays acyclic.
            earlier = [t["id"] for t in current if t["id"] < victim["id"]] + ["gone1"]
            changed["dependencies"] = data.draw(st.lists(st.sampled_from(earlier), max_size=3,
                                                         unique=True))
        elif action == "priority":
            changed["priority"] = data.draw(st.sampled_from(PRIORITIES))
        elif action == "claim":
            changed["claim"] = None
        if action == "delete":
            table.delete(victim["id"])
        else:
            table.put(changed)
        if lazy and data.draw(st.booleans()):  # read now and then, between the changes
            index.catch_up()
    remaining = list(table.rows.values())
    index.catch_up()
    for project in (None, "p", "q"):
        for parent in (None, *[t["id"] for t in remaining[:3]]):
            want = brute_ready(remaining, NOW, project, parent)
            got_ready, got_blocked = index_answers(index, table, project, parent)
            # A claimed task (even a lapsed one) waits for the sweep to be handed out again.
            want_ready = [tid for tid in want[0] if not isinstance(table.rows[tid].get("claim"),
                                                                   dict)]
            assert got_ready == want_ready, (project, parent)
            assert got_blocked == want[1], (project, parent)
    # A rebuild from scratch agrees with what was kept incrementally.
    kept = (dict(index.ready_key), dict(index.blocked_key))
    index.rebuild()
    assert (index.ready_key, index.blocked_key) == kept


# ------------------------------------------------------------------ handoff
def test_last_completion_report_and_manifest_briefs():
    sessions = {
        "s1": {"id": "s1", "taskIds": ["up"], "timeline": [
            {"type": "task_completed", "message": "old", "timestamp": 1},
            {"type": "progress", "message": "x", "timestamp": 2}]},
        "s2": {"id": "s2", "taskIds": ["up", "other"], "timeline": [
            {"type": "task_completed", "message": "about other", "taskId": "other",
             "timestamp": 9},
            {"type": "task_completed", "message": "schema ready", "taskId": "up",
             "timestamp": 5}]},
    }
    up = dict(task("up", status="completed"), title="Schema", sessionIds=["s1", "s2"])
    assert last_completion_report(up, sessions.get) == "schema ready"
    assert last_completion_report(dict(up, sessionIds=[]), sessions.get) is None
    assert handoff_message(up, "schema ready") == \
        'Dependency up "Schema" completed. Report: schema ready'
    down = dict(task("down", deps=["up", "gone"]), title="API")
    briefs = dependency_briefs(down, lookup(up, down), sessions.get)
    assert briefs == [{"id": "up", "title": "Schema", "status": "completed",
                       "lastReport": "schema ready"},
                      {"id": "gone", "title": "", "status": "missing", "lastReport": None}]
    manifest = build_manifest(role="worker", project={"id": "p"},
                              tasks=[dict(down, createdAt=0)], skills=[],
                              dependencies=briefs)
    validate_manifest(manifest, "worker")  # the strict schema accepts it
    text = dependency_text(manifest)
    assert 'up "Schema" (completed) - last report: schema ready' in text
    assert 'gone "" (missing)' in text
    assert dependency_text(build_manifest(role="worker", project={"id": "p"},
                                          tasks=[down], skills=[])) == ""
    # The prompt handed to the agent says the same, before the guide to claiming more work.
    prompt = build_prompt("worker", manifest, "s1", {})
    assert 'up "Schema" (completed) - last report: schema ready' in prompt
    assert prompt.index("Work this depends on:") < prompt.index("maestro task claim --next")
