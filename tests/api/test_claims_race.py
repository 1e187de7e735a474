"""Exactly once (SPEC §15.3), on both stores: many sessions racing through real async HTTP for
ready work get each task at most once, and a build that checks, waits, then grants (the
test-only MAESTRO_CLAIM_RACE_DELAY_MS) is caught by the same checks."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from helpers import http_client, new_project, new_session, new_task, ok
from store_servers import edit_task, store  # noqa: F401  (fixture)

RACE_HOOK = {"MAESTRO_CLAIM_RACE_DELAY_MS": "50"}


def build_board(make_server, store, extra_env=None):
    """20 pending tasks of which exactly 15 are ready, 60 sessions; returns (srv, project,
    ready ids, session ids)."""
    srv = make_server(env={**store["env"], **(extra_env or {})})
    with http_client(srv) as api:
        project = new_project(api, name="Race")
        pid = project["id"]
        done = new_task(api, pid, title="done")
        ok(api.patch(f"/api/tasks/{done['id']}", json={"status": "completed"}))
        blocker = new_task(api, pid, title="blocked parent")
        ok(api.patch(f"/api/tasks/{blocker['id']}", json={"status": "blocked"}))
        ready = [new_task(api, pid, title=f"ready {i}",
                          dependencies=[done["id"]] if i < 3 else [])["id"] for i in range(14)]
        upstream = new_task(api, pid, title="upstream (ready)")
        ready.append(upstream["id"])
        waiting = new_task(api, pid, title="waits on upstream", dependencies=[upstream["id"]])
        new_task(api, pid, title="also waits", dependencies=[upstream["id"]])
        new_task(api, pid, title="waits on a waiter", dependencies=[waiting["id"]])
        new_task(api, pid, title="child of a blocked task", parentId=blocker["id"])
        orphan = new_task(api, pid, title="names a deleted task")
        sessions = [new_session(api, pid)["id"] for _ in range(60)]
    # A dependency on a task that no longer exists: written behind the server's back.
    assert srv.stop() == 0
    edit_task(store, srv, orphan, lambda t: t.update(dependencies=["task_1_deleted"]))
    srv.start()
    with http_client(srv) as api:
        pending = ok(api.get("/api/tasks", params={"projectId": pid, "status": "pending"}))
        assert len(pending) == 20
        listed = ok(api.get("/api/tasks", params={"projectId": pid, "ready": "true"}))
        assert sorted(t["id"] for t in listed) == sorted(ready)
        readiness = ok(api.get(f"/api/tasks/{orphan['id']}/readiness"))
        assert readiness["missingDependencies"] == ["task_1_deleted"]
    return srv, project, ready, sessions


async def _claim_next_all(url: str, project_id: str, sessions: list[str]) -> list[dict]:
    limits = httpx.Limits(max_connections=len(sessions))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 trust_env=False) as client:
        answers = await asyncio.gather(*[
            client.post(f"/api/projects/{project_id}/claim-next", json={"sessionId": sid})
            for sid in sessions])
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers
                                                        if a.status_code != 200][:3]
    return [a.json() for a in answers]


def check_exactly_once(answers: list[dict], ready: list[str]) -> None:
    winners = [a["task"]["id"] for a in answers if a["task"] is not None]
    doubles = [tid for tid, n in Counter(winners).items() if n > 1]
    assert not doubles, f"granted more than once: {doubles}"
    assert sorted(winners) == sorted(ready)
    for a in answers:
        if a["task"] is None:
            assert a == {"task": None, "claim": None}
        else:
            assert a["claim"]["token"] == 1 and a["task"]["claim"] == a["claim"]


def test_sixty_sessions_racing_for_fifteen_ready_tasks(make_server, store):
    srv, project, ready, sessions = build_board(make_server, store)
    answers = asyncio.run(_claim_next_all(srv.url, project["id"], sessions))
    check_exactly_once(answers, ready)
    with http_client(srv) as api:
        assert ok(api.get("/api/tasks", params={"projectId": project["id"],
                                                "ready": "true"})) == []
        for a in answers:
            if a["task"] is not None:
                stored = ok(api.get(f"/api/tasks/{a['task']['id']}"))
                assert stored["claim"]["sessionId"] == a["claim"]["sessionId"]
                assert stored["status"] == "in_progress"
                assert a["claim"]["sessionId"] in stored["sessionIds"]


async def _claim_one(url: str, task_id: str, sessions: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(sessions))
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 trust_env=False) as client:
        return list(await asyncio.gather(*[
            client.post(f"/api/tasks/{task_id}/claim", json={"sessionId": sid})
            for sid in sessions]))


def check_one_winner(answers: list[httpx.Response]) -> None:
    granted = [a for a in answers if a.status_code == 200]
    assert len(granted) == 1, f"{len(granted)} claims granted"
    holder = granted[0].json()["claim"]["sessionId"]
    refused = [a for a in answers if a.status_code != 200]
    assert len(refused) == len(answers) - 1
    for a in refused:
        body = a.json()
        assert a.status_code == 409 and body["code"] == "TASK_ALREADY_CLAIMED", body
        assert body["details"]["sessionId"] == holder
        assert body["details"]["leaseExpiresAt"] == granted[0].json()["claim"]["leaseExpiresAt"]


def test_fifty_claimers_of_one_task(make_server, store):
    srv = make_server(env=store["env"])
    with http_client(srv) as api:
        pid = new_project(api)["id"]
        task = new_task(api, pid)
        sessions = [new_session(api, pid)["id"] for _ in range(50)]
    check_one_winner(asyncio.run(_claim_one(srv.url, task["id"], sessions)))


def test_the_race_tests_catch_a_check_then_act_claim(make_server, store):
    # With the test hook, a claim checks readiness, sleeps, then grants in a second step:
    # exactly the race the checks above exist to catch.
    srv, project, ready, sessions = build_board(make_server, store, RACE_HOOK)
    answers = asyncio.run(_claim_next_all(srv.url, project["id"], sessions))
    with pytest.raises(AssertionError, match="granted more than once"):
        check_exactly_once(answers, ready)
    with http_client(srv) as api:
        pid = project["id"]
        task = new_task(api, pid)
    with pytest.raises(AssertionError, match="claims granted"):
        check_one_winner(asyncio.run(_claim_one(srv.url, task["id"], sessions[:50])))
