"""Claims with leases and fencing (SPEC §15.3) through the real server, on both stores: grant,
renewal, release, expiry (the sweep and an immediate takeover), fencing of a holder that lost
its lease, session end, heartbeat, and claims surviving kill -9. Leases of 1 s use the test
setting MAESTRO_CLAIM_MIN_TTL=1 (the API's minimum is 5 s)."""

from __future__ import annotations

import time

from helpers import (
    Snapshot,
    WsClient,
    assert_error,
    event_types,
    get,
    http_client,
    new_project,
    new_session,
    new_task,
    ok,
    wait_until,
)
from store_servers import store  # noqa: F401  (fixture)

SHORT = {"MAESTRO_CLAIM_MIN_TTL": "1", "MAESTRO_CLAIM_SWEEP_SECONDS": "0.2"}


def claim(api, tid, sid, **extra):
    return api.post(f"/api/tasks/{tid}/claim", json={"sessionId": sid, **extra})


def test_claim_grant_renew_release_and_errors(make_server):
    srv = make_server()
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        pid = new_project(api)["id"]
        up = new_task(api, pid, title="up")
        task = new_task(api, pid, title="t")
        waiting = new_task(api, pid, title="waits", dependencies=[up["id"]])
        s1, s2 = new_session(api, pid)["id"], new_session(api, pid)["id"]
        ws.barrier()
        granted = ok(claim(api, task["id"], s1, ttlSeconds=60))
        c = granted["claim"]
        assert c["sessionId"] == s1 and c["token"] == 1
        assert c["leaseExpiresAt"] - c["claimedAt"] == 60_000
        t = granted["task"]
        assert t["status"] == "in_progress" and t["startedAt"] is not None and t["claim"] == c
        assert t["sessionIds"] == [s1]  # the claiming session is linked (§8)
        events = ws.barrier()
        assert event_types(events) == ["task:claimed", "task:updated", "session:task_added",
                                       "task:session_added", "session:updated"]
        assert events[0]["data"] == {"taskId": task["id"], "sessionId": s1, "token": 1}
        # The same session again: lease renewed, same token.
        again = ok(claim(api, task["id"], s1))
        assert again["claim"]["token"] == 1 and again["claim"]["leaseExpiresAt"] > \
            c["leaseExpiresAt"]
        err = assert_error(claim(api, task["id"], s2), 409, "TASK_ALREADY_CLAIMED")
        assert err["details"] == {"sessionId": s1,
                                  "leaseExpiresAt": again["claim"]["leaseExpiresAt"]}
        err = assert_error(claim(api, waiting["id"], s2), 409, "TASK_NOT_READY")
        assert err["details"] == {"status": "pending", "blockedBy": [up["id"]],
                                  "missingDependencies": [], "blockedAncestors": []}
        renewed = ok(api.post(f"/api/tasks/{task['id']}/claim/renew",
                              json={"sessionId": s1, "token": 1, "ttlSeconds": 30}))
        assert set(renewed) == {"claim"} and renewed["claim"]["token"] == 1
        for body in ({"sessionId": s2, "token": 1}, {"sessionId": s1, "token": 2}):
            assert_error(api.post(f"/api/tasks/{task['id']}/claim/renew", json=body), 409,
                         "CLAIM_LOST")
            assert_error(api.post(f"/api/tasks/{task['id']}/claim/release", json=body), 409,
                         "CLAIM_LOST")
        ws.barrier()
        released = ok(api.post(f"/api/tasks/{task['id']}/claim/release",
                               json={"sessionId": s1, "token": 1, "reason": "need a break"}))
        assert released["task"]["claim"] is None and released["task"]["status"] == "pending"
        assert released["task"]["sessionIds"] == [s1]  # history: no unlink
        assert released["task"]["timeline"][-1]["message"] == \
            f"Claim of session {s1} released: need a break"
        assert event_types(ws.barrier()) == ["task:claim_released", "task:updated"]
        # Next grant on the task: the fencing token grows.
        assert ok(claim(api, task["id"], s2))["claim"]["token"] == 2
        # Validation, existence, session state.
        snap = Snapshot(api, srv)
        for ttl in (4, 86_401, "10", 1.5, True):
            assert_error(claim(api, up["id"], s1, ttlSeconds=ttl), 400, "VALIDATION_ERROR")
        assert_error(api.post(f"/api/tasks/{up['id']}/claim", json={}), 400, "VALIDATION_ERROR")
        assert_error(claim(api, "task_0_nope", s1), 404, "TASK_NOT_FOUND")
        assert_error(claim(api, up["id"], "sess_nope"), 404, "SESSION_NOT_FOUND")
        assert_error(api.post("/api/projects/proj_0_nope/claim-next", json={"sessionId": s1}),
                     404, "PROJECT_NOT_FOUND")
        assert_error(api.post(f"/api/tasks/{up['id']}/claim/renew",
                              json={"sessionId": s1, "token": "1"}), 400, "VALIDATION_ERROR")
        snap.assert_unchanged()
        ok(api.patch(f"/api/sessions/{s1}", json={"status": "completed"}))
        assert_error(claim(api, up["id"], s1), 409, "SESSION_NOT_ACTIVE")
        assert_error(api.post(f"/api/sessions/{s1}/heartbeat", json={}), 409,
                     "SESSION_NOT_ACTIVE")


def test_claim_next_order_parent_and_unfinished_children(make_server):
    srv = make_server()
    with http_client(srv) as api:
        pid = new_project(api)["id"]
        low = new_task(api, pid, title="low", priority="low")
        parent = new_task(api, pid, title="parent", priority="high")
        kid = new_task(api, pid, title="kid", parentId=parent["id"])
        high = new_task(api, pid, title="high", priority="high")
        sid = new_session(api, pid)["id"]

        def next_id(**body):
            got = ok(api.post(f"/api/projects/{pid}/claim-next", json={"sessionId": sid,
                                                                       **body}))
            return got["task"]["id"] if got["task"] else None

        # The parent comes first by priority but its work is in its unfinished child.
        assert next_id() == high["id"]
        assert next_id(parentId=parent["id"]) == kid["id"]
        assert next_id() == low["id"]
        assert next_id() is None
        ok(api.patch(f"/api/tasks/{kid['id']}", json={"status": "completed"}))
        assert next_id(ttlSeconds=30) == parent["id"]


def test_fencing_after_the_lease_runs_out(make_server, store):
    srv = make_server(env={**store["env"], **SHORT})
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        pid = new_project(api)["id"]
        task = new_task(api, pid)
        old, new = new_session(api, pid)["id"], new_session(api, pid)["id"]
        first = ok(claim(api, task["id"], old, ttlSeconds=1))["claim"]
        ws.barrier()
        # No renewal: the sweep returns the task to pending.
        back = wait_until(lambda: get(api, "task", task["id"])["status"] == "pending" and
                          get(api, "task", task["id"]), timeout=10, what="the expiry sweep")
        assert back["claim"] is None
        assert back["timeline"][-1]["message"] == f"Claim of session {old} expired"
        assert "task:claim_expired" in event_types(ws.barrier())
        second = ok(claim(api, task["id"], new, ttlSeconds=60))["claim"]
        assert second["token"] == first["token"] + 1
        before = get(api, "task", task["id"])
        ws.barrier()
        stale = {"X-Maestro-Claim-Token": str(first["token"])}
        snap = Snapshot(api, srv)
        assert_error(api.patch(f"/api/tasks/{task['id']}", json={"title": "mine"},
                               headers=stale), 409, "CLAIM_LOST")
        assert_error(api.post(f"/api/tasks/{task['id']}/timeline", json={"message": "done"},
                              headers=stale), 409, "CLAIM_LOST")
        assert_error(api.patch(f"/api/tasks/{task['id']}", json={"status": "completed"},
                               headers=stale), 409, "CLAIM_LOST")
        # A session's own report (E3) from the old holder.
        assert_error(api.patch(f"/api/tasks/{task['id']}", json={
            "sessionStatus": "completed", "updateSource": "session", "sessionId": old}),
            409, "CLAIM_LOST")
        assert_error(api.post(f"/api/tasks/{task['id']}/claim/renew",
                              json={"sessionId": old, "token": first["token"]}), 409,
                     "CLAIM_LOST")
        assert ws.barrier() == []
        snap.assert_unchanged()
        assert get(api, "task", task["id"]) == before
        # The live holder writes; completing ends its claim.
        live = {"X-Maestro-Claim-Token": str(second["token"])}
        done = ok(api.patch(f"/api/tasks/{task['id']}", json={"status": "completed"},
                            headers=live))
        assert done["claim"] is None and done["status"] == "completed"
        assert event_types(ws.barrier()) == ["task:claim_released", "task:updated"]
        assert_error(api.patch(f"/api/tasks/{task['id']}", json={"title": "x"},
                               headers={"X-Maestro-Claim-Token": "x"}), 400, "VALIDATION_ERROR")


def test_an_expired_lease_is_free_at_once(make_server):
    # A slow sweep: the takeover does not wait for it.
    srv = make_server(env={"MAESTRO_CLAIM_MIN_TTL": "1", "MAESTRO_CLAIM_SWEEP_SECONDS": "600"})
    with http_client(srv) as api:
        pid = new_project(api)["id"]
        task = new_task(api, pid)
        old, new = new_session(api, pid)["id"], new_session(api, pid)["id"]
        ok(claim(api, task["id"], old, ttlSeconds=1))
        time.sleep(1.2)
        assert get(api, "task", task["id"])["status"] == "in_progress"
        assert ok(api.get(f"/api/tasks/{task['id']}/readiness"))["claim"] is None
        taken = ok(claim(api, task["id"], new, ttlSeconds=60))
        assert taken["claim"]["sessionId"] == new and taken["claim"]["token"] == 2


def test_renewal_keeps_the_task(make_server, store):
    srv = make_server(env={**store["env"], **SHORT})
    with http_client(srv) as api:
        pid = new_project(api)["id"]
        task = new_task(api, pid)
        holder, rival = new_session(api, pid)["id"], new_session(api, pid)["id"]
        token = ok(claim(api, task["id"], holder, ttlSeconds=1))["claim"]["token"]
        deadline = time.monotonic() + 2.5
        renewals = 0
        while time.monotonic() < deadline:
            if renewals % 2:
                ok(api.post(f"/api/tasks/{task['id']}/claim/renew",
                            json={"sessionId": holder, "token": token, "ttlSeconds": 1}))
            else:
                beat = ok(api.post(f"/api/sessions/{holder}/heartbeat", json={"ttlSeconds": 1}))
                assert [c["taskId"] for c in beat["claims"]] == [task["id"]]
            renewals += 1
            assert_error(claim(api, task["id"], rival), 409, "TASK_ALREADY_CLAIMED")
            assert ok(api.post(f"/api/projects/{pid}/claim-next",
                               json={"sessionId": rival}))["task"] is None
            time.sleep(0.3)
        assert get(api, "task", task["id"])["claim"]["token"] == token


def test_session_end_releases_its_claims(make_server, store):
    srv = make_server(env=store["env"])
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        pid = new_project(api)["id"]
        for ending in ("completed", "failed", "deleted"):
            tasks = [new_task(api, pid)["id"] for _ in range(2)]
            sid = new_session(api, pid)["id"]
            for tid in tasks:
                ok(claim(api, tid, sid))
            ok(api.patch(f"/api/tasks/{tasks[1]}", json={"status": "completed"},
                         headers={"X-Maestro-Claim-Token": "1"}))
            ws.barrier()
            if ending == "deleted":
                ok(api.delete(f"/api/sessions/{sid}"))
            else:
                ok(api.patch(f"/api/sessions/{sid}", json={"status": ending}))
            events = ws.barrier()
            assert ("task:claim_released" in event_types(events)) and \
                event_types(events).count("task:claim_released") == 1, ending
            released = get(api, "task", tasks[0])
            assert released["claim"] is None and released["status"] == "pending", ending
            assert released["timeline"][-1]["message"].startswith(f"Session {sid} ")
            assert get(api, "task", tasks[1])["status"] == "completed"
            assert [t["id"] for t in ok(api.get("/api/tasks", params={
                "projectId": pid, "ready": "true"}))].count(tasks[0]) == 1


def test_live_claims_survive_kill_9(make_server, store):
    srv = make_server(env=store["env"])
    with http_client(srv) as api:
        pid = new_project(api)["id"]
        task = new_task(api, pid)
        holder, rival = new_session(api, pid)["id"], new_session(api, pid)["id"]
        granted = ok(claim(api, task["id"], holder, ttlSeconds=600))["claim"]
    srv.kill()
    srv.start()
    with http_client(srv) as api:
        assert get(api, "task", task["id"])["claim"] == granted
        err = assert_error(claim(api, task["id"], rival), 409, "TASK_ALREADY_CLAIMED")
        assert err["details"]["sessionId"] == holder
        assert ok(api.post(f"/api/projects/{pid}/claim-next",
                           json={"sessionId": rival}))["task"] is None
        ok(api.post(f"/api/tasks/{task['id']}/claim/renew",
                    json={"sessionId": holder, "token": granted["token"]}))
