"""The service's coordination rules (SPEC §15), in-process on the in-memory store with a clock
moved by hand: dependencies and their cycles, ready and blocked work, claims granted exactly
once, leases that run out, release and renewal, fencing of writes to a claimed task, and the
handoff to dependents."""

from __future__ import annotations

import asyncio

from service_harness import clock, service  # noqa: F401  (fixtures)


def board(service, *deps_of: list[int]) -> tuple[dict, list[dict]]:
    """A project and one task per argument, task i depending on the tasks numbered in it."""
    project = service.project()
    tasks: list[dict] = []
    for deps in deps_of:
        tasks.append(service.task(project["id"], title=f"t{len(tasks)}",
                                  dependencies=[tasks[d]["id"] for d in deps]))
    service.take_events()
    return project, tasks


def ids(tasks: list[dict]) -> list[str]:
    return [t["id"] for t in tasks]


# ------------------------------------------------------------------ dependencies
def test_dependencies_are_added_removed_and_idempotent(service):
    _, (a, b) = board(service, [], [])
    added = service.add_dependency(b["id"], a["id"])
    assert added["dependencies"] == [a["id"]]
    assert service.store.entity("task", b["id"])["dependencies"] == [a["id"]]
    assert service.event_types() == ["task:updated"]
    assert service.add_dependency(b["id"], a["id"]) == added
    assert service.take_events() == []
    assert service.remove_dependency(b["id"], a["id"])["dependencies"] == []
    assert service.remove_dependency(b["id"], a["id"])["dependencies"] == []


def test_a_dependency_that_closes_a_cycle_is_refused_with_the_cycle(service):
    _, (a, b, c) = board(service, [], [0], [1])
    error = service.refused("add_dependency", a["id"], c["id"])
    cycle = [a["id"], c["id"], b["id"], a["id"]]
    assert (error.status, error.code) == (400, "DEPENDENCY_CYCLE")
    assert error.message == "Dependency cycle: " + " -> ".join(cycle)
    assert error.details == {"cycle": cycle}
    # The same through PATCH, and a task depending on itself.
    assert service.refused("update_task", a["id"], {"dependencies": [c["id"]]}).code == \
        "DEPENDENCY_CYCLE"
    assert service.refused("add_dependency", a["id"], a["id"]).message == \
        "A task cannot depend on itself"


def test_dependencies_stay_inside_one_project_and_name_existing_tasks(service):
    _, (a,) = board(service, [])
    foreign = service.task(service.project()["id"])
    service.take_events()
    assert service.refused("add_dependency", a["id"], foreign["id"]).message == \
        f"Dependency {foreign['id']} belongs to another project"
    assert service.refused("add_dependency", a["id"], "task_gone").code == "TASK_NOT_FOUND"


# ------------------------------------------------------------------ readiness
def test_ready_and_blocked_follow_completion_of_dependencies(service):
    project, (a, b, c) = board(service, [], [0], [0, 1])
    assert ids(service.list_ready(project["id"])) == [a["id"]]
    assert ids(service.list_blocked(project["id"])) == [b["id"], c["id"]]
    readiness = service.task_readiness(c["id"])
    assert (readiness["ready"], readiness["blockedBy"]) == (False, [a["id"], b["id"]])

    service.update_task(a["id"], {"status": "completed"})
    assert ids(service.list_ready(project["id"])) == [b["id"]]
    service.update_task(b["id"], {"status": "completed"})
    assert ids(service.list_ready(project["id"])) == [c["id"]]
    assert service.list_blocked(project["id"]) == []


def test_a_blocked_parent_holds_its_subtree(service):
    project = service.project()
    parent = service.task(project["id"])
    child = service.task(project["id"], parentId=parent["id"])
    service.update_task(parent["id"], {"status": "blocked"})
    assert ids(service.list_blocked(project["id"])) == [child["id"]]
    assert service.task_readiness(child["id"])["blockedAncestors"] == [parent["id"]]
    service.update_task(parent["id"], {"status": "in_progress"})
    assert ids(service.list_ready(project["id"])) == [child["id"]]


def test_ready_work_comes_by_priority_then_age(service):
    project = service.project()
    low = service.task(project["id"], priority="low")
    high = service.task(project["id"], priority="high")
    medium = service.task(project["id"])
    assert ids(service.list_ready(project["id"])) == [high["id"], medium["id"], low["id"]]


# ------------------------------------------------------------------ claims
def test_a_claim_is_granted_once_and_links_the_session(service):
    project, (task,) = board(service, [])
    one = service.session(project["id"])
    two = service.session(project["id"])
    service.take_events()
    granted = service.claim_task(task["id"], {"sessionId": one["id"]})
    claim = granted["claim"]
    assert (claim["sessionId"], claim["token"]) == (one["id"], 1)
    assert granted["task"]["status"] == "in_progress"
    assert service.get_session(one["id"])["taskIds"] == [task["id"]]
    assert service.store.entity("task", task["id"])["claim"] == claim
    assert service.event_types() == ["task:claimed", "task:updated", "session:task_added",
                                     "task:session_added", "session:updated"]
    error = service.refused("claim_task", task["id"], {"sessionId": two["id"]})
    assert (error.status, error.code, error.message) == (
        409, "TASK_ALREADY_CLAIMED", f"Task is already claimed by session {one['id']}")
    assert service.list_ready(project["id"]) == []


def test_racing_claims_of_one_task_grant_exactly_one(service):
    project, (task,) = board(service, [])
    sessions = [service.session(project["id"]) for _ in range(8)]

    async def race():
        return await asyncio.gather(*(service.service.claim_task(task["id"],
                                                                 {"sessionId": s["id"]})
                                      for s in sessions), return_exceptions=True)

    results = service.runner.run(race())
    granted = [r for r in results if isinstance(r, dict)]
    assert len(granted) == 1
    assert {r.code for r in results if not isinstance(r, dict)} == {"TASK_ALREADY_CLAIMED"}
    assert service.get_task(task["id"])["claim"] == granted[0]["claim"]


def test_claim_next_takes_ready_work_in_order_then_none(service):
    project, (a, b, c) = board(service, [], [0], [])
    session = service.session(project["id"])
    first = service.claim_next(project["id"], {"sessionId": session["id"]})
    second = service.claim_next(project["id"], {"sessionId": session["id"]})
    assert {first["task"]["id"], second["task"]["id"]} == {a["id"], c["id"]}
    assert service.claim_next(project["id"], {"sessionId": session["id"]}) == \
        {"task": None, "claim": None}


def test_only_an_active_session_of_the_project_may_claim_ready_work(service):
    project, (a, b) = board(service, [], [0])
    session = service.session(project["id"])
    stranger = service.session(service.project()["id"])
    ended = service.session(project["id"], status="completed")
    service.take_events()
    assert service.refused("claim_task", b["id"], {"sessionId": session["id"]}).code == \
        "TASK_NOT_READY"
    assert service.refused("claim_task", a["id"], {"sessionId": stranger["id"]}).message == \
        f"Session {stranger['id']} belongs to another project"
    assert service.refused("claim_task", a["id"], {"sessionId": ended["id"]}).code == \
        "SESSION_NOT_ACTIVE"
    assert service.refused("claim_task", a["id"], {"sessionId": "sess_gone"}).code == \
        "SESSION_NOT_FOUND"
    assert service.refused("claim_task", a["id"], {}).message == "sessionId is required"


def test_a_lease_runs_out_and_the_sweep_gives_the_task_back(service, clock):
    project, (task,) = board(service, [])
    one, two = service.session(project["id"]), service.session(project["id"])
    claim = service.claim_task(task["id"], {"sessionId": one["id"], "ttlSeconds": 60})["claim"]
    assert claim["leaseExpiresAt"] == clock.now + 60_000
    clock.advance(59)
    assert service.sweep_expired_claims() == 0
    clock.advance(1)
    # Lapsed: no longer live, though the task still shows it until the sweep.
    assert service.task_readiness(task["id"])["claim"] is None
    assert service.get_task(task["id"])["claim"] == claim
    assert service.sweep_expired_claims() == 1
    swept = service.get_task(task["id"])
    assert (swept["claim"], swept["status"]) == (None, "pending")
    assert "task:claim_expired" in service.event_types()
    again = service.claim_task(task["id"], {"sessionId": two["id"]})["claim"]
    assert again["token"] == 2  # fencing tokens only grow


def test_renewal_and_heartbeat_extend_the_lease_and_release_ends_it(service, clock):
    project, (task,) = board(service, [])
    session = service.session(project["id"])
    claim = service.claim_task(task["id"], {"sessionId": session["id"], "ttlSeconds": 30})["claim"]
    clock.advance(20)
    renewed = service.renew_claim(task["id"], {"sessionId": session["id"], "token": 1,
                                               "ttlSeconds": 30})["claim"]
    assert renewed["leaseExpiresAt"] == clock.now + 30_000 and renewed["token"] == claim["token"]
    clock.advance(20)
    beat = service.heartbeat_session(session["id"], {"ttlSeconds": 30})
    assert [c["taskId"] for c in beat["claims"]] == [task["id"]]
    service.take_events()
    assert service.refused("renew_claim", task["id"], {"sessionId": session["id"],
                                                      "token": 7}).code == "CLAIM_LOST"
    released = service.release_claim(task["id"], {"sessionId": session["id"], "token": 1,
                                                  "reason": "stuck"})["task"]
    assert (released["status"], released["claim"]) == ("pending", None)
    assert released["timeline"][-1]["message"] == \
        f"Claim of session {session['id']} released: stuck"
    service.take_events()
    assert service.refused("release_claim", task["id"], {"sessionId": session["id"],
                                                        "token": 1}).code == "CLAIM_LOST"


def test_a_lapsed_claim_may_be_taken_over_before_the_sweep(service, clock):
    project, (task,) = board(service, [])
    one, two = service.session(project["id"]), service.session(project["id"])
    service.claim_task(task["id"], {"sessionId": one["id"], "ttlSeconds": 10})
    clock.advance(10)
    taken = service.claim_task(task["id"], {"sessionId": two["id"]})["claim"]
    assert (taken["sessionId"], taken["token"]) == (two["id"], 2)
    assert service.sweep_expired_claims() == 0
    service.take_events()
    assert service.refused("update_task", task["id"], {"title": "late"}, actor=one["id"],
                           claim_token=1).code == "CLAIM_LOST"


def test_writes_to_a_claimed_task_are_fenced(service):
    project, (task, other) = board(service, [], [])
    holder, intruder = service.session(project["id"]), service.session(project["id"])
    service.claim_task(task["id"], {"sessionId": holder["id"]})
    service.take_events()
    error = service.refused("update_task", task["id"], {"title": "mine"}, actor=intruder["id"])
    assert (error.status, error.code) == (409, "CLAIM_LOST")
    assert error.details["sessionId"] == holder["id"]
    assert service.refused("update_task", task["id"], {"title": "x"}, claim_token=2).code == \
        "CLAIM_LOST"
    assert service.refused("add_dependency", task["id"], other["id"],
                           actor=intruder["id"]).code == "CLAIM_LOST"
    # The holder, with or without its token, and the user write freely.
    assert service.update_task(task["id"], {"title": "a"}, actor=holder["id"],
                               claim_token=1)["title"] == "a"
    assert service.update_task(task["id"], {"title": "b"})["title"] == "b"


def test_completing_a_task_ends_its_claim_and_hands_off_to_dependents(service):
    project, (up, down) = board(service, [], [0])
    session = service.session(project["id"])
    service.claim_task(up["id"], {"sessionId": session["id"]})
    service.add_session_timeline(session["id"], {"type": "task_completed", "taskId": up["id"],
                                                 "message": "schema ready"})
    service.take_events()
    done = service.update_task(up["id"], {"status": "completed"})
    assert done["claim"] is None
    assert service.get_task(down["id"])["timeline"][-1]["message"] == \
        f'Dependency {up["id"]} "t0" completed. Report: schema ready'
    assert service.event_types() == ["task:claim_released", "task:updated", "task:updated"]
    assert ids(service.list_ready(project["id"])) == [down["id"]]


def test_an_ended_session_gives_up_its_claims(service):
    project, (task,) = board(service, [])
    session = service.session(project["id"])
    service.claim_task(task["id"], {"sessionId": session["id"]})
    service.update_session(session["id"], {"status": "failed"})
    after = service.get_task(task["id"])
    assert (after["claim"], after["status"]) == (None, "pending")
    assert after["timeline"][-1]["message"] == \
        f"Session {session['id']} failed: its claim was released"
    assert service.store.entity("task", task["id"])["claim"] is None
