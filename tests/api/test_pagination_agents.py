"""Pages and task histories as an agent sees them: only its own project, like the unpaged lists
(fixtures of test_agent_identity.py: a token-protected server and a spawned worker)."""

from __future__ import annotations

from test_agent_identity import world  # noqa: F401  (fixture)


def test_an_agent_pages_only_its_own_project(world):  # noqa: F811
    agent, a = world["agent"], world["a"]
    projects = agent.get("/api/projects", params={"limit": "1"})
    assert [p["id"] for p in projects.json()] == [a["id"]]
    assert "x-next-cursor" not in projects.headers
    first = agent.get("/api/tasks", params={"limit": "2"})
    rest = agent.get("/api/tasks", params={"limit": "2",
                                           "cursor": first.headers["x-next-cursor"]})
    walked = first.json() + rest.json()
    assert "x-next-cursor" not in rest.headers
    assert [t["id"] for t in walked] == [t["id"] for t in agent.get("/api/tasks").json()]
    assert {t["projectId"] for t in walked} == {a["id"]} and len(walked) == 3
    assert agent.get("/api/tasks", params={"projectId": world["b"]["id"],
                                           "limit": "5"}).status_code == 403
    sessions = agent.get("/api/sessions", params={"limit": "5"}).json()
    assert [s["id"] for s in sessions] == [world["sid"]]
    assert agent.get(f"/api/tasks/{world['a1']['id']}/history").status_code == 200
    assert agent.get(f"/api/tasks/{world['b1']['id']}/history").status_code == 403
