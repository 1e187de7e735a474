"""Maestro's MCP tools against a real server: every tool for a worker, an orchestrator and a
person (the SDK's in-memory client on the server `maestro mcp` builds), refusals as tool errors
with actionable messages, narrowing the tool set, the size of a worker's tool list, `maestro mcp`
over stdio (nothing but the protocol on stdout) and `/mcp` over HTTP with the REST token rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import anyio
import httpx
import pytest
from servers import ROOT
from helpers import ok
from mcp import Client, StdioServerParameters
from mcp_helpers import (
    call,
    http_client_mcp,
    local_client,
    refused,
    spawn_with_token,
    tool_names,
)
from test_agent_identity import USER_TOKEN, Events

from maestro.mcp.catalog import ALL_TOOLS, WORKER_TOOLS

TOOL_LIST_BUDGET = 12 * 1024


@pytest.fixture
def world(make_server, tmp_path):
    """A token-protected server (`ui` launcher: nothing is started), project A with tasks
    design -> build (build waits for design), epic with a child part, and a spare task; project
    B with a foreign task; two workers and an orchestrator spawned for the epic, each with its
    own token."""
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui",
                           "MAESTRO_CLAIM_MIN_TTL": "1"})
    user = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {USER_TOKEN}"},
                        timeout=10)
    listener = Events(srv.ws_url + f"?token={USER_TOKEN}")

    def task(project, title, **fields):
        return ok(user.post("/api/tasks", json={"projectId": project["id"], "title": title,
                                                **fields}), 201)

    a = ok(user.post("/api/projects", json={"name": "A"}), 201)
    b = ok(user.post("/api/projects", json={"name": "B"}), 201)
    design = task(a, "Design the schema", priority="high")
    build = task(a, "Write the API", dependencies=[design["id"]])
    epic = task(a, "Epic", priority="low")
    part = task(a, "Part", parentId=epic["id"], priority="low")
    spare = task(a, "Spare", priority="low")
    foreign = task(b, "Foreign")
    w1 = spawn_with_token(user, listener, a["id"], [epic["id"]])
    w2 = spawn_with_token(user, listener, a["id"], [epic["id"]])
    orch = spawn_with_token(user, listener, a["id"], [epic["id"]], role="orchestrator")
    listener.close()

    def env(session) -> dict:
        return {"MAESTRO_SERVER_URL": srv.url, "MAESTRO_SESSION_ID": session[0],
                "MAESTRO_SESSION_TOKEN": session[1]}

    yield {"srv": srv, "user": user, "a": a, "b": b, "design": design, "build": build,
           "epic": epic, "part": part, "spare": spare, "foreign": foreign, "w1": w1, "w2": w2,
           "orch": orch, "env": env, "home": tmp_path / "home"}
    user.close()


def rest_task(world, task_id: str) -> dict:
    return ok(world["user"].get(f"/api/tasks/{task_id}"))


def test_a_worker_does_its_whole_job_through_the_tools(world):
    w = world
    sid = w["w1"][0]

    async def main():
        async with local_client(w["home"], w["env"](w["w1"])) as client:
            assert await tool_names(client) == list(WORKER_TOOLS)
            context = await call(client, "session_context")
            assert context["role"] == "worker" and context["session"]["id"] == sid
            assert context["project"] == {"id": w["a"]["id"], "name": "A"}
            assert [t["id"] for t in context["tasks"]] == [w["epic"]["id"]]
            assert context["claims"] == [] and context["serverTime"].endswith("Z")
            assert context["tools"] == list(WORKER_TOOLS)

            ready = await call(client, "task_ready")
            ids = [t["id"] for t in ready["tasks"]]
            assert ids[0] == w["design"]["id"] and w["build"]["id"] not in ids
            assert ready["total"] == len(ids) and ready["truncated"] is False
            assert (await call(client, "task_ready", limit=1))["truncated"] is True

            claimed = await call(client, "task_claim")
            assert claimed["claimed"] is True and claimed["task"]["id"] == w["design"]["id"]
            assert claimed["claim"]["sessionId"] == sid and claimed["claim"]["token"] == 1
            assert claimed["task"]["status"] == "in_progress"
            held = await call(client, "session_context")
            assert [c["taskId"] for c in held["claims"]] == [w["design"]["id"]]

            design = w["design"]["id"]
            for kind, status in (("progress", "working"), ("needs_input", "needs_input"),
                                 ("blocked", "blocked")):
                report = await call(client, "task_report", task_id=design, kind=kind,
                                    message=f"{kind} note")
                assert report["sessionStatus"] == status
                assert rest_task(w, design)["sessionStatus"] == status
            done = await call(client, "task_report", task_id=design, kind="completed",
                              message="Schema in db/schema.sql")
            assert done["status"] == "completed"

            build = await call(client, "task_get", task_id=w["build"]["id"])
            assert build["dependencies"] == [{"id": design, "title": "Design the schema",
                                              "status": "completed",
                                              "report": "Schema in db/schema.sql"}]
            assert build["ready"] is True and "waitsFor" not in build
            assert "Schema in db/schema.sql" in build["recent"][-1]["message"]

            claimed = await call(client, "task_claim", task_id=w["build"]["id"])
            assert claimed["task"]["dependencies"][0]["report"] == "Schema in db/schema.sql"
            follow = await call(client, "task_create", title="Migration script",
                                blocks=w["build"]["id"], priority="high")
            child = await call(client, "task_create", title="Endpoint tests",
                               parent_id=w["build"]["id"])
            released = await call(client, "task_release", task_id=w["build"]["id"],
                                  reason="waits for the migration")
            assert released["status"] == "pending"
            return follow["task"], child["task"]

    follow, child = anyio.run(main)
    design = rest_task(w, w["design"]["id"])
    assert design["status"] == "completed" and design.get("claim") is None
    timeline = ok(w["user"].get(f"/api/sessions/{sid}"))["timeline"]
    assert [(e["type"], e["message"]) for e in timeline] == [
        ("progress", "progress note"), ("needs_input", "needs_input note"),
        ("task_blocked", "blocked note"), ("task_completed", "Schema in db/schema.sql")]
    build = rest_task(w, w["build"]["id"])
    assert build["dependencies"] == [w["design"]["id"], follow["id"]]
    assert build["status"] == "pending" and build.get("claim") is None
    assert follow["priority"] == "high" and "parentId" not in follow
    assert child["parentId"] == w["build"]["id"]
    # The claim tokens lived where the CLI keeps them, and are gone with the claims.
    assert not (w["home"] / ".maestro" / "claims" / f"{sid}.json").exists()


def test_an_orchestrator_and_a_person_get_every_tool(world):
    w = world
    epic = w["epic"]["id"]

    async def main():
        async with local_client(w["home"], w["env"](w["orch"])) as client:
            assert await tool_names(client) == list(ALL_TOOLS)
            planned = await call(client, "task_plan", tasks=[
                {"ref": "api", "title": "API", "parent": epic, "priority": "high"},
                {"ref": "ui", "title": "UI", "parent": epic, "depends_on": ["api"],
                 "description": "Login form"}])
            refs = {t["ref"]: t["id"] for t in planned["created"]}
            assert list(refs) == ["api", "ui"] and planned["updated"] == []
            ready = await call(client, "task_list", status="ready")
            waiting = await call(client, "task_list", status="waiting")
            assert refs["api"] in [t["id"] for t in ready["tasks"]]
            assert [t["id"] for t in waiting["tasks"]] == [w["build"]["id"], refs["ui"]]
            everything = await call(client, "task_list", limit=3)
            assert everything["total"] == 7 and everything["truncated"] is True

            text = await refused(client, "task_update", task_id=refs["api"],
                                 add_dependencies=[refs["ui"]])
            assert "Dependency cycle" in text and "[DEPENDENCY_CYCLE]" in text
            updated = await call(client, "task_update", task_id=refs["ui"], title="Login UI",
                                 priority="low", remove_dependencies=[refs["api"]],
                                 add_dependencies=[w["design"]["id"]])
            assert updated["task"]["title"] == "Login UI"
            assert updated["task"]["dependencies"] == [w["design"]["id"]]

            spawned = await call(client, "session_spawn", task_ids=[refs["api"]],
                                 reason="build the API", name="API worker")
            assert spawned["status"] == "spawning" and spawned["taskIds"] == [refs["api"]]
            sessions = await call(client, "session_list")
            listed = {s["id"]: s for s in sessions["sessions"]}
            assert listed[spawned["sessionId"]]["name"] == "API worker"
            assert listed[w["orch"][0]]["role"] == "orchestrator"
            return refs, spawned["sessionId"]

    refs, child = anyio.run(main)
    session = ok(w["user"].get(f"/api/sessions/{child}"))
    assert session["metadata"]["spawnedBy"] == w["orch"][0]
    assert session["metadata"]["spawnReason"] == "build the API"
    assert rest_task(w, refs["ui"])["priority"] == "low"

    person = {"MAESTRO_SERVER_URL": w["srv"].url, "MAESTRO_TOKEN": USER_TOKEN,
              "MAESTRO_PROJECT_ID": w["a"]["id"]}

    async def as_person():
        async with local_client(w["home"], person) as client:
            assert await tool_names(client) == list(ALL_TOOLS)
            context = await call(client, "session_context")
            assert context["role"] == "person" and "session" not in context
            assert context["project"]["id"] == w["a"]["id"]
            await call(client, "task_report", task_id=w["spare"]["id"], kind="progress",
                       message="looked at it")
            text = await refused(client, "task_claim")
            assert "needs a Maestro session" in text
            other = await call(client, "task_list", project_id=w["b"]["id"])
            assert [t["id"] for t in other["tasks"]] == [w["foreign"]["id"]]

    anyio.run(as_person)
    spare = rest_task(w, w["spare"]["id"])
    assert spare["timeline"][-1]["message"] == "looked at it"


def test_refusals_are_tool_errors_that_say_what_to_do(world):
    w = world
    part, spare = w["part"]["id"], w["spare"]["id"]
    w2 = w["w2"][0]

    async def main():
        async with local_client(w["home"] / "w1", w["env"](w["w1"])) as one, \
                local_client(w["home"] / "w2", w["env"](w["w2"])) as two:
            text = await refused(one, "task_get", task_id=w["foreign"]["id"])
            assert text.startswith("Error executing tool task_get: not allowed: This session "
                                   "may only read its own project") and "[FORBIDDEN]" in text

            await call(two, "task_claim", task_id=part)
            text = await refused(one, "task_claim", task_id=part)
            assert f"task {part} is claimed by session {w2} until 20" in text
            assert "[TASK_ALREADY_CLAIMED]" in text
            text = await refused(one, "task_report", task_id=part, kind="progress",
                                 message="mine now")
            assert f"claimed by session {w2}" in text
            text = await refused(one, "task_release", task_id=part)
            assert f"held by session {w2}" in text

            # A stale claim token: the lease of `one` runs out, `two` takes the task over, and
            # the report `one` sends with the token it was granted is refused.
            first = await call(one, "task_claim", task_id=spare, ttl_seconds=1)
            assert first["claim"]["token"] == 1
            deadline = time.monotonic() + 15
            while True:
                result = await two.call_tool("task_claim", {"task_id": spare})
                if not result.is_error:
                    break
                assert time.monotonic() < deadline, result.content[0].text
                await anyio.sleep(0.2)
            assert result.structured_content["claim"]["token"] == 2
            text = await refused(one, "task_report", task_id=spare, kind="completed",
                                 message="done (not really)")
            assert f"no longer holds the claim on task {spare} (session {w2} holds it" in text
            assert "[CLAIM_LOST]" in text

            text = await refused(one, "task_claim", task_id=w["build"]["id"])
            assert f"waits for {w['design']['id']}" in text and "[TASK_NOT_READY]" in text
            text = await refused(one, "task_get", task_id="task_missing")
            assert "Task not found" in text and "[TASK_NOT_FOUND]" in text
            unknown = await one.call_tool("task_plan", {"tasks": [{"ref": "a", "title": "A"}]})
            assert unknown.is_error and "Unknown tool" in unknown.content[0].text
            text = await refused(one, "task_create", title="Elsewhere")
            assert "not allowed" in text and "child tasks under its own tasks" in text

    anyio.run(main)
    spare_task = rest_task(w, spare)
    assert spare_task["status"] == "in_progress" and spare_task["claim"]["sessionId"] == w2
    assert spare_task.get("sessionStatus") is None


def test_tools_can_be_narrowed(world, make_server):
    w = world

    async def main():
        async with local_client(w["home"], w["env"](w["w1"]),
                                tools="task_claim,task_report,task_list") as client:
            assert await tool_names(client) == ["task_claim", "task_report"]
        async with local_client(w["home"], w["env"](w["orch"]),
                                tools="orchestrator") as client:
            assert await tool_names(client) == ["task_list", "task_plan", "task_update",
                                                "session_spawn", "session_list"]

    anyio.run(main)
    bad = make_server(env={"MAESTRO_MCP_TOOLS": "worker,task_fly"}, start=False)
    with pytest.raises(RuntimeError) as failure:
        bad.start(timeout=30)
    assert "MAESTRO_MCP_TOOLS: unknown tool(s) task_fly" in str(failure.value)
    result = subprocess.run([sys.executable, "-m", "maestro", "mcp", "--tools", "task_fly"],
                            capture_output=True, text=True, timeout=60, cwd=str(ROOT),
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and result.stdout == ""
    assert "unknown tool(s) task_fly" in result.stderr


def test_a_workers_tool_list_stays_small(world):
    w = world

    async def main():
        async with local_client(w["home"], w["env"](w["w1"])) as client:
            return (await client.list_tools()).tools

    tools = anyio.run(main)
    listing = [t.model_dump(by_alias=True, exclude_none=True, mode="json") for t in tools]
    size = len(json.dumps(listing, separators=(",", ":")))
    print(f"worker tool list: {len(tools)} tools, {size} bytes")
    assert size < TOOL_LIST_BUDGET
    for tool in listing:
        assert tool["description"] and tool["inputSchema"]["type"] == "object"
        assert tool["outputSchema"]["type"] == "object"
        assert not generated_titles(tool["inputSchema"]), tool["name"]
        assert not generated_titles(tool["outputSchema"]), tool["name"]


def generated_titles(schema) -> list:
    """`title` keywords of a JSON schema (not properties that are named title)."""
    found = []
    if isinstance(schema, list):
        for item in schema:
            found += generated_titles(item)
    elif isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("properties", "$defs"):
                for sub in value.values():
                    found += generated_titles(sub)
            elif key == "title":
                found.append(value)
            else:
                found += generated_titles(value)
    return found


def test_maestro_mcp_speaks_only_the_protocol_on_stdout(world):
    w = world
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")},
           **w["env"](w["w1"]), "HOME": str(w["home"])}
    w["home"].mkdir(exist_ok=True)

    async def main():
        params = StdioServerParameters(command=sys.executable, args=["-m", "maestro", "mcp"],
                                       env=env, cwd=str(ROOT))
        async with Client(params) as client:
            assert await tool_names(client) == list(WORKER_TOOLS)
            context = await call(client, "session_context")
            assert context["session"]["id"] == w["w1"][0]
            claimed = await call(client, "task_claim")
            assert claimed["task"]["id"] == w["design"]["id"]
            text = await refused(client, "task_get", task_id=w["foreign"]["id"])
            assert "not allowed" in text

    anyio.run(main)

    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "session_context", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
         "params": {"name": "task_get", "arguments": {"task_id": "task_missing"}}},
    ]
    proc = subprocess.Popen([sys.executable, "-m", "maestro", "mcp"], env=env, cwd=str(ROOT),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    answers = {}
    for message in messages:
        proc.stdin.write((json.dumps(message) + "\n").encode())
        proc.stdin.flush()
        if "id" in message:
            line = proc.stdout.readline()
            answer = json.loads(line)
            assert answer["jsonrpc"] == "2.0" and answer["id"] == message["id"], line
            answers[answer["id"]] = answer
    rest, errors = proc.communicate(timeout=30)  # closes stdin: the client is done
    assert rest == b"", rest  # nothing but the answers
    assert proc.returncode == 0, errors.decode()
    assert [t["name"] for t in answers[2]["result"]["tools"]] == list(WORKER_TOOLS)
    assert answers[3]["result"]["structuredContent"]["session"]["id"] == w["w1"][0]
    assert answers[4]["result"]["isError"] is True


def test_mcp_over_http_follows_the_rest_token_rules(world):
    w = world
    url = w["srv"].url + "/mcp"
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    for token in (None, "not-a-token", w["w1"][1] + "x"):
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx.post(url, json=initialize, headers={**headers, **auth}, timeout=10)
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "UNAUTHORIZED"
    # A web page elsewhere cannot call the tools with a token it got hold of, nor rebind a name.
    page = httpx.post(url, json=initialize, headers={
        **headers, "Authorization": f"Bearer {USER_TOKEN}", "Origin": "https://evil.example"},
        timeout=10)
    assert page.status_code == 403 and page.json()["code"] == "ORIGIN_NOT_ALLOWED"
    rebound = httpx.post(url, json=initialize, headers={
        **headers, "Authorization": f"Bearer {USER_TOKEN}", "Host": "evil.example"},
        timeout=10)
    assert rebound.status_code == 421

    async def main():
        async with http_client_mcp(url, w["w1"][1]) as client:
            assert await tool_names(client) == list(WORKER_TOOLS)
            context = await call(client, "session_context")
            assert context["session"]["id"] == w["w1"][0] and context["role"] == "worker"
            text = await refused(client, "task_get", task_id=w["foreign"]["id"])
            assert "not allowed" in text and "[FORBIDDEN]" in text
            claimed = await call(client, "task_claim")
            assert claimed["claim"]["sessionId"] == w["w1"][0]
            await call(client, "task_report", task_id=claimed["task"]["id"], kind="completed",
                       message="done over HTTP")
            plan = await client.call_tool("task_plan", {"tasks": [{"ref": "a", "title": "A"}]})
            assert plan.is_error and "Unknown tool" in plan.content[0].text
        async with http_client_mcp(url, w["orch"][1]) as client:
            assert await tool_names(client) == list(ALL_TOOLS)
            text = await refused(client, "task_list", project_id=w["b"]["id"])
            assert "may only read its own project" in text
        async with http_client_mcp(url, USER_TOKEN) as client:
            assert await tool_names(client) == list(ALL_TOOLS)
            context = await call(client, "session_context")
            assert context["role"] == "person"
            foreign = await call(client, "task_get", task_id=w["foreign"]["id"])
            assert foreign["title"] == "Foreign"

    anyio.run(main)
    design = rest_task(w, w["design"]["id"])
    assert design["status"] == "completed" and design.get("claim") is None
    timeline = ok(w["user"].get(f"/api/sessions/{w['w1'][0]}"))["timeline"]
    assert timeline[-1]["message"] == "done over HTTP"


def test_the_prompt_names_only_tools_that_exist():
    import re

    from maestro.spawn.guide import guide

    for role, allowed in (("worker", WORKER_TOOLS), ("orchestrator", ALL_TOOLS)):
        text = guide(role, "task_1")
        named = set(re.findall(r"`([a-z]+_[a-z_]+)`", text))
        assert named and named <= set(allowed), named - set(allowed)
    assert "task_plan" in guide("orchestrator", "task_1")
    assert "task_plan" not in guide("worker", "task_1")
