"""The readiness index kept change by change, under every kind of change a task can go through
(status, dependencies, parent, project, priority, creation time, claims taken and dropped,
`sessionStatusBy`, fields readiness does not read, deletes and re-creations), on the task table
the server uses: its lists must equal a brute force, its link indexes and lists a rebuild from
scratch, and the table's own indexes a fresh table's."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_readiness_rules import NOW, PRIORITIES, STATUSES, brute_ready, forests
from test_state_indexes import _assert_same_indexes

from maestro.ready_index import ReadyIndex
from maestro.state import State

ACTIONS = ("status", "deps", "delete", "recreate", "priority", "created", "claim", "unclaim",
           "parent", "project", "writer", "unrelated")


def _changed(action: str, victim: dict, current: list[dict], data) -> dict:
    changed = dict(victim)
    earlier = [t["id"] for t in current if t["id"] < victim["id"]]
    if action == "status":
        changed["status"] = data.draw(st.sampled_from(STATUSES))
    elif action == "deps":
        # Towards tasks created earlier only: stays acyclic.
        changed["dependencies"] = data.draw(st.lists(st.sampled_from(earlier + ["gone1"]),
                                                     max_size=3, unique=True))
    elif action == "priority":
        changed["priority"] = data.draw(st.sampled_from(PRIORITIES))
    elif action == "created":
        changed["createdAt"] = data.draw(st.integers(0, 3))
    elif action == "claim":
        changed["claim"] = {"sessionId": data.draw(st.sampled_from(["s1", "s2"])), "token": 2,
                            "claimedAt": 0, "leaseExpiresAt": NOW + data.draw(st.integers(1, 9))}
    elif action == "unclaim":
        changed.pop("claim", None)
    elif action == "parent":
        changed["parentId"] = data.draw(st.sampled_from([None, *earlier]))
    elif action == "project":
        changed["projectId"] = data.draw(st.sampled_from(["p", "q", "r"]))
    elif action == "writer":
        changed["sessionStatusBy"] = data.draw(st.sampled_from([None, "s1", "s2"]))
    else:
        changed["description"] = data.draw(st.text(max_size=3))
        changed["timeline"] = [*victim.get("timeline", []), {"type": "note"}]
    return changed


def _links(index: ReadyIndex) -> tuple:
    def plain(groups: dict) -> dict:
        return {key: set(members) for key, members in groups.items() if members}

    lists = {name: {key: list(keys) for key, keys in getattr(index, name).items()}
             for name in ("ready_by_project", "ready_by_parent", "blocked_by_project")}
    return (plain(index.dependents), plain(index.claims_by_session),
            plain(index.status_by_session), dict(index.ready_key), dict(index.blocked_key),
            lists, list(index.ready_all), list(index.blocked_all))


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forests(), st.data(), st.booleans())
def test_the_index_equals_brute_force_and_a_rebuild_after_any_kind_of_change(tasks, data, lazy):
    table = State().tasks
    index = ReadyIndex(table, lazy=lazy)
    index.attach()
    for t in tasks:
        table.put(t)
    deleted: dict[str, dict] = {}
    for _ in range(data.draw(st.integers(0, 16))):
        current = list(table.rows.values())
        if not current:
            break
        action = data.draw(st.sampled_from(ACTIONS))
        if action == "recreate":
            if deleted:
                tid = data.draw(st.sampled_from(sorted(deleted)))
                table.put(deleted.pop(tid))
            continue
        victim = data.draw(st.sampled_from(current))
        if action == "delete":
            deleted[victim["id"]] = victim
            table.delete(victim["id"])
        else:
            table.put(_changed(action, victim, current, data))
        if data.draw(st.booleans()):  # read now and then, between the changes
            index.ready_keys(None, None)
    remaining = list(table.rows.values())
    index.catch_up()
    for project in (None, "p", "q", "r"):
        for parent in (None, *[t["id"] for t in remaining[:3]]):
            want_ready, want_blocked = brute_ready(remaining, NOW, project, parent)
            got_ready = [k[2] for k in index.ready_keys(project, parent)]
            got_blocked = [tid for tid in index.blocked_ids(project)
                           if parent is None or table.rows[tid]["parentId"] == parent]
            # A claimed task (even a lapsed one) waits for the sweep to be handed out again.
            assert got_ready == [tid for tid in want_ready
                                 if not isinstance(table.rows[tid].get("claim"), dict)]
            assert got_blocked == want_blocked
    kept = _links(index)
    fresh = ReadyIndex(table, lazy=lazy)
    fresh.rebuild()
    assert _links(fresh) == kept
    _assert_same_indexes(table, "task")


def test_the_lists_of_all_projects_follow_changes_after_being_read():
    table = State().tasks
    index = ReadyIndex(table)
    index.attach()
    for n, project in enumerate(["p", "q", "p", 7]):  # 7: a foreign file's odd project
        table.put({"id": f"t{n}", "projectId": project, "parentId": None, "status": "pending",
                   "priority": "medium", "dependencies": [], "createdAt": 10 - n})
    assert [k[2] for k in index.ready_keys(None, None)] == ["t3", "t2", "t1", "t0"]
    table.put({**table.rows["t0"], "priority": "high"})
    table.put({**table.rows["t2"], "dependencies": ["t1"]})
    assert [k[2] for k in index.ready_keys(None, None)] == ["t0", "t3", "t1"]
    assert index.blocked_ids(None) == ["t2"]
    assert index.blocked_ids("p") == ["t2"]
    table.delete("t3")
    assert [k[2] for k in index.ready_keys(None, None)] == ["t0", "t1"]
