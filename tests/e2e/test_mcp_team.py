"""A team of scripted agents working through MCP alone: five at once (three on the server's
`/mcp`, two on the server `maestro mcp` builds) claim ready work until none is left, report and
complete it. Every one of 30 tasks with dependencies is completed exactly once, and each only
after all of its dependencies (checked on the server's own event stream)."""

from __future__ import annotations

import random
import time

import anyio
import httpx
from helpers import ok
from mcp_helpers import http_client_mcp, local_client, spawn_with_token
from test_agent_identity import USER_TOKEN, Events

TASKS = 30
AGENTS = 5


def make_board(user: httpx.Client, project_id: str) -> dict[str, list[str]]:
    """30 tasks, each waiting for up to three earlier ones (a fixed random DAG); returns task
    id -> its dependencies."""
    rng = random.Random(20240601)
    ids: list[str] = []
    deps: dict[str, list[str]] = {}
    for n in range(TASKS):
        wanted = rng.sample(ids, k=min(len(ids), rng.choice((0, 1, 1, 2, 3))))
        task = ok(user.post("/api/tasks", json={
            "projectId": project_id, "title": f"Step {n}", "dependencies": wanted,
            "priority": rng.choice(("low", "medium", "high"))}), 201)
        ids.append(task["id"])
        deps[task["id"]] = wanted
    return deps


async def agent(number: int, client, log: list, problems: list) -> None:
    """Claim ready work until nothing is pending or in progress; report and complete each."""
    idle_since = None
    while True:
        result = await client.call_tool("task_claim", {})
        if result.is_error:
            problems.append(f"agent {number}: {result.content[0].text}")
            return
        answer = result.structured_content
        if not answer["claimed"]:
            if answer["waiting"] == 0 and answer["inProgress"] == 0:
                return
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > 60:
                problems.append(f"agent {number}: waited a minute: {answer['message']}")
                return
            await anyio.sleep(0.05)
            continue
        idle_since = None
        task = answer["task"]
        unfinished = [d["id"] for d in task.get("dependencies", [])
                      if d["status"] != "completed"]
        if unfinished:
            problems.append(f"agent {number} got {task['id']} before {unfinished}")
        log.append((number, task["id"]))
        for kind, message in (("progress", "started"),
                              ("completed", f"{task['id']} done by agent {number}")):
            report = await client.call_tool("task_report", {"task_id": task["id"],
                                                            "kind": kind, "message": message})
            if report.is_error:
                problems.append(f"agent {number}: {report.content[0].text}")
                return


def test_five_agents_complete_thirty_tasks_exactly_once_in_dependency_order(make_server,
                                                                            tmp_path):
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui"})
    user = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {USER_TOKEN}"},
                        timeout=30)
    listener = Events(srv.ws_url + f"?token={USER_TOKEN}")
    try:
        project = ok(user.post("/api/projects", json={"name": "Team"}), 201)
        deps = make_board(user, project["id"])
        first = next(iter(deps))
        sessions = [spawn_with_token(user, listener, project["id"], [first])
                    for _ in range(AGENTS)]
        log: list[tuple[int, str]] = []
        problems: list[str] = []

        async def run_team():
            async with anyio.create_task_group() as team:
                for number, (sid, token) in enumerate(sessions):
                    team.start_soon(run_one, number, sid, token)

        async def run_one(number, sid, token):
            if number < 3:
                async with http_client_mcp(srv.url + "/mcp", token) as client:
                    await agent(number, client, log, problems)
            else:
                env = {"MAESTRO_SERVER_URL": srv.url, "MAESTRO_SESSION_ID": sid,
                       "MAESTRO_SESSION_TOKEN": token}
                async with local_client(tmp_path / f"agent{number}", env) as client:
                    await agent(number, client, log, problems)

        anyio.run(run_team)
        assert problems == []
        events = listener.drain(1.0)
        tasks = {t["id"]: t for t in ok(user.get("/api/tasks",
                                                 params={"projectId": project["id"]}))}
    finally:
        listener.close()
        user.close()

    claimed = [tid for _, tid in log]
    assert sorted(claimed) == sorted(deps), "every task claimed exactly once"
    assert len({n for n, _ in log}) > 1, "the work was shared"
    assert all(t["status"] == "completed" and t.get("claim") is None for t in tasks.values())

    # The server's own order of events: each task completed once, after its dependencies.
    status: dict[str, str] = {}
    completed_at: dict[str, int] = {}
    granted_at: dict[str, int] = {}
    for position, event in enumerate(e for e in events if e["type"].startswith("task:")):
        data = event["data"]
        if event["type"] == "task:claimed":
            assert data["taskId"] not in granted_at, f"{data['taskId']} granted twice"
            granted_at[data["taskId"]] = position
        if event["type"] == "task:updated" and data["id"] in deps:
            before, status[data["id"]] = status.get(data["id"]), data["status"]
            if data["status"] == "completed" and before != "completed":
                assert data["id"] not in completed_at, f"{data['id']} completed twice"
                completed_at[data["id"]] = position
    assert set(completed_at) == set(deps) == set(granted_at)
    for task_id, upstream in deps.items():
        for dep in upstream:
            assert completed_at[dep] < granted_at[task_id] < completed_at[task_id], \
                (task_id, dep)
        # Each dependency's completion report was handed to the task waiting for it.
        handed = [e["message"] for e in tasks[task_id]["timeline"]
                  if e["type"] == "update" and e["message"].startswith("Dependency ")]
        assert len(handed) == len(upstream)
        assert all("done by agent" in message for message in handed)
