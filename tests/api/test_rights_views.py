"""What an agent sees of a session with secrets, through the real server: the same redaction
whether the session is listed, fetched by id, returned by PATCH or by a timeline append, or sent
in a WebSocket event; the person's token sees the values themselves everywhere."""

from __future__ import annotations

import httpx
from test_agent_identity import Events

from maestro.policy import SECRET_NAME

USER_TOKEN = "user-token-for-rights-views-0123456789"
SECRETS = {"OPENAI_API_KEY": "sk-very-secret-1", "DB_PASSWORD": "pw-very-secret-2",
           "PLAIN": "visible"}


def redacted(env: dict) -> dict:
    return {k: ("[redacted]" if SECRET_NAME.search(k) else v) for k, v in env.items()}


def test_a_session_is_redacted_the_same_way_everywhere_for_agents_only(make_server):
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui"})
    user = httpx.Client(base_url=srv.url, timeout=10,
                        headers={"Authorization": f"Bearer {USER_TOKEN}"})
    person_events = Events(srv.ws_url + f"?token={USER_TOKEN}")
    project = user.post("/api/projects", json={"name": "Views"}).json()
    task = user.post("/api/tasks", json={"projectId": project["id"], "title": "T"}).json()
    spawned = user.post("/api/sessions/spawn", json={"projectId": project["id"],
                                                     "taskIds": [task["id"]], "env": SECRETS})
    assert spawned.status_code == 201, spawned.text
    sid = spawned.json()["sessionId"]
    request, _ = person_events.until(lambda e: e["type"] == "session:spawn_request"
                                     and e["data"]["session"]["id"] == sid)
    token = request["data"]["envVars"]["MAESTRO_SESSION_TOKEN"]
    agent = httpx.Client(base_url=srv.url, timeout=10,
                         headers={"Authorization": f"Bearer {token}"})
    agent_events = Events(srv.ws_url + f"?token={token}")
    try:
        full = user.get(f"/api/sessions/{sid}").json()["env"]
        assert {k: full[k] for k in SECRETS} == SECRETS
        hidden = redacted(full)
        assert hidden != full

        def envs(client: httpx.Client, status: str) -> list[dict]:
            listed = {s["id"]: s for s in client.get("/api/sessions").json()}[sid]
            fetched = client.get(f"/api/sessions/{sid}").json()
            patched = client.patch(f"/api/sessions/{sid}", json={"status": status})
            appended = client.post(f"/api/sessions/{sid}/timeline", json={"message": status})
            assert patched.status_code == 200 and appended.status_code == 200
            return [listed["env"], fetched["env"], patched.json()["env"],
                    appended.json()["env"]]

        assert envs(agent, "running") == [hidden] * 4
        assert envs(user, "spawning") == [full] * 4

        # The agent's own PATCH and the person's, as each stream carried them.
        def updated(events: Events, status: str) -> dict:
            event, _ = events.until(lambda e: e["type"] == "session:updated"
                                    and e["data"]["id"] == sid
                                    and e["data"]["status"] == status)
            return event["data"]["env"]

        assert updated(agent_events, "running") == hidden
        assert updated(agent_events, "spawning") == hidden
        assert updated(person_events, "running") == full
        assert updated(person_events, "spawning") == full
    finally:
        agent_events.close()
        person_events.close()
        agent.close()
        user.close()
