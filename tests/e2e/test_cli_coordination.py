"""The `maestro` CLI for a team of agents (SPEC §15), against a real server: dependencies, ready
and blocked work, claims and their exit codes (6 claimed by another session or claim lost,
7 not ready), fencing with the claim token, task delete, claim-next from eight processes at
once, and the agent guide whose every command must exist."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

from test_cli_helpers import ROOT as REPO_ROOT
from test_cli_helpers import Cli, new_task

pytest_plugins = ["test_cli_helpers"]


def new_session(rest, project_id: str, name: str = "Worker") -> str:
    resp = rest.post("/api/sessions", json={"projectId": project_id, "name": name,
                                              "taskIds": []})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def task_of(rest, task_id: str) -> dict:
    resp = rest.get(f"/api/tasks/{task_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def ids(tasks) -> list[str]:
    return [t["id"] for t in tasks]


def line_with(text: str, needle: str) -> str:
    found = [line for line in text.splitlines() if needle in line]
    assert found, f"no line with {needle!r} in:\n{text}"
    return found[0]


# ------------------------------------------------------------------ dependencies
def test_dependencies_ready_blocked_show_and_tree(cli, rest, project):
    env = {"MAESTRO_PROJECT_ID": project["id"]}
    design = cli.data("task", "create", "Design", env=env)
    build = cli.data("task", "create", "Build", "--depends-on", design["id"], env=env)
    assert build["dependencies"] == [design["id"]]
    ship = cli.data("task", "create", "Ship", env=env)
    step = cli.data("task", "create", "Ship step", "--parent", ship["id"], env=env)

    depended = cli.data("task", "depend", ship["id"], "--on", build["id"], env=env)
    assert depended["dependencies"] == [build["id"]]
    assert depended == task_of(rest, ship["id"])
    again = cli.data("task", "depend", ship["id"], "--on", build["id"], env=env)
    assert again["dependencies"] == [build["id"]]  # adding an edge twice changes nothing

    ready, blocked, shown, shown_human, blocked_human, tree, tree_json = cli.many(
        (("task", "ready", "--json"), {"env": env}),
        (("task", "blocked", "--json"), {"env": env}),
        ("task", "show", build["id"], "--json"),
        ("task", "show", build["id"]),
        (("task", "blocked",), {"env": env}),
        (("task", "tree",), {"env": env}),
        (("task", "tree", "--json"), {"env": env}))
    assert ready.data == rest.get("/api/tasks", params={"ready": "true",
                                                        "projectId": project["id"]}).json()
    assert ids(ready.data) == [design["id"]]

    waiting = {t["id"]: t["readiness"] for t in blocked.data}
    assert set(waiting) == {build["id"], ship["id"], step["id"]}
    assert waiting[build["id"]]["blockedBy"] == [design["id"]]
    assert waiting[build["id"]]["ready"] is False
    assert build["id"] in waiting[step["id"]]["blockedBy"]  # inherited from its parent
    assert line_with(blocked_human.stdout, "Build").count(design["id"]) == 1

    shown = shown.data
    assert shown["readiness"]["ready"] is False
    assert shown["readiness"]["blockedBy"] == [design["id"]]
    assert shown["dependencies"] == [{"id": design["id"], "title": "Design",
                                      "status": "pending"}]
    assert "Depends on" in shown_human.stdout and design["id"] in shown_human.stdout
    assert "Ready" in shown_human.stdout and "after " + design["id"] in shown_human.stdout

    assert "ready" in line_with(tree.stdout, "Design")
    build_line = line_with(tree.stdout, "Build")
    assert "blocked" in build_line and "after: Design" in build_line
    nodes = {n["id"]: n for n in tree_json.data}
    assert nodes[design["id"]]["readiness"] == "ready"
    assert nodes[ship["id"]]["readiness"] == "blocked"
    assert nodes[ship["id"]]["children"][0]["readiness"] == "blocked"

    # Removing the edge frees the subtree; the parent waits only for its own child now.
    removed = cli.data("task", "depend", ship["id"], "--on", build["id"], "--remove", env=env)
    assert removed["dependencies"] == []
    assert set(ids(cli.data("task", "ready", env=env))) == {design["id"], ship["id"],
                                                            step["id"]}


def test_bad_dependencies_are_refused_and_change_nothing(cli, rest, project):
    other = rest.post("/api/projects", json={"name": "Other"}).json()
    first = new_task(rest, project["id"], title="First")
    second = new_task(rest, project["id"], title="Second", dependencies=[first["id"]])
    foreign = new_task(rest, other["id"], title="Foreign")
    before = [task_of(rest, t["id"]) for t in (first, second)]

    itself, cycle, cycle_json, unknown, elsewhere, no_on = cli.many(
        ("task", "depend", first["id"], "--on", first["id"]),
        ("task", "depend", first["id"], "--on", second["id"]),
        ("task", "depend", first["id"], "--on", second["id"], "--json"),
        ("task", "depend", first["id"], "--on", "task_missing"),
        ("task", "depend", first["id"], "--on", foreign["id"]),
        ("task", "depend", first["id"]))
    assert itself.code == 1 and "cannot depend on itself" in itself.stderr
    assert cycle.code == 1 and "DEPENDENCY_CYCLE" in cycle.stderr
    body = cycle_json.json
    assert cycle_json.code == 1 and body["success"] is False
    assert body["details"]["code"] == "DEPENDENCY_CYCLE"
    assert set(body["details"]["server"]["cycle"]) == {first["id"], second["id"]}
    assert unknown.code == 2 and "TASK_NOT_FOUND" in unknown.stderr
    assert elsewhere.code == 1 and "another project" in elsewhere.stderr
    assert no_on.code == 1 and "--on" in no_on.stderr
    assert [task_of(rest, t["id"]) for t in (first, second)] == before


# ------------------------------------------------------------------ claims
def test_claim_release_and_their_exit_codes(cli, rest, project):
    alpha = new_task(rest, project["id"], title="Alpha", priority="high")
    beta = new_task(rest, project["id"], title="Beta", dependencies=[alpha["id"]])
    s1, s2 = new_session(rest, project["id"], "One"), new_session(rest, project["id"], "Two")
    one, two = {"MAESTRO_SESSION_ID": s1}, {"MAESTRO_SESSION_ID": s2}

    got = cli.data("task", "claim", alpha["id"], env=one)
    claim = got["claim"]
    assert got["task"]["status"] == "in_progress"
    assert claim["sessionId"] == s1 and isinstance(claim["token"], int)
    assert claim["leaseExpiresAt"] > claim["claimedAt"]
    assert task_of(rest, alpha["id"])["claim"] == claim
    renewed = cli.data("task", "claim", alpha["id"], "--ttl", "60", env=one)
    assert renewed["claim"]["token"] == claim["token"]  # same holder: renewed, same token

    taken, taken_json, not_ready, not_ready_json, no_session, neither, both = cli.many(
        (("task", "claim", alpha["id"]), {"env": two}),
        (("task", "claim", alpha["id"], "--json"), {"env": two}),
        (("task", "claim", beta["id"]), {"env": two}),
        (("task", "claim", beta["id"], "--json"), {"env": two}),
        ("task", "claim", alpha["id"]),
        (("task", "claim",), {"env": two}),
        (("task", "claim", alpha["id"], "--next"), {"env": two}))
    assert taken.code == 6 and "TASK_ALREADY_CLAIMED" in taken.stderr
    assert taken_json.code == 6
    assert taken_json.json["error"] == "task_claimed"
    assert taken_json.json["details"]["server"]["sessionId"] == s1
    assert not_ready.code == 7 and "TASK_NOT_READY" in not_ready.stderr
    assert not_ready_json.code == 7
    assert not_ready_json.json["error"] == "task_not_ready"
    assert not_ready_json.json["details"]["server"]["blockedBy"] == [alpha["id"]]
    assert no_session.code == 1 and "MAESTRO_SESSION_ID" in no_session.stderr
    assert neither.code == 1 and both.code == 1
    assert task_of(rest, alpha["id"])["claim"]["sessionId"] == s1

    shown, tree = cli.many(("task", "show", alpha["id"]),
                           ("task", "tree", "--project", project["id"]))
    claim_line = line_with(shown.stdout, "Claim")
    assert s1 in claim_line and "until" in claim_line
    assert f"claimed by {s1} until" in line_with(tree.stdout, "Alpha")

    # Only the holder releases from inside a session; a person outside one may free any task.
    wrong = cli("task", "release", alpha["id"], "--json", env=two)
    assert wrong.code == 6 and wrong.json["error"] == "claim_lost"
    assert task_of(rest, alpha["id"])["claim"]["sessionId"] == s1
    released = cli.data("task", "release", alpha["id"], "--reason", "wrong task", env=one)
    assert released["task"]["status"] == "pending" and released["task"].get("claim") is None
    assert not (cli.home / ".maestro" / "claims" / f"{s1}.json").exists()
    nothing = cli("task", "release", alpha["id"])
    assert nothing.code == 1 and "not claimed" in nothing.stderr

    cli.ok("task", "claim", alpha["id"], env=two)
    freed = cli.data("task", "release", alpha["id"])  # no session: the person frees it
    assert freed["task"].get("claim") is None


def test_claim_next_order_parent_and_nothing_left(cli, rest, project):
    env = {"MAESTRO_PROJECT_ID": project["id"]}
    low = new_task(rest, project["id"], title="Low", priority="low")
    high = new_task(rest, project["id"], title="High", priority="high")
    epic = new_task(rest, project["id"], title="Epic")
    part = new_task(rest, project["id"], title="Part", parentId=epic["id"])
    session = new_session(rest, project["id"])
    me = {**env, "MAESTRO_SESSION_ID": session}

    assert cli.ok("task", "claim", "--next", "-q", env=me).stdout.strip() == high["id"]
    under = cli.data("task", "claim", "--next", "--parent", epic["id"],
                     env={"MAESTRO_SESSION_ID": session})  # the project comes from the parent
    assert under["task"]["id"] == part["id"] and under["claim"]["sessionId"] == session
    assert cli.data("task", "claim", "--next", "--parent", epic["id"], env=me) == {
        "task": None, "claim": None}
    assert cli.ok("task", "claim", "--next", "-q", env=me).stdout.strip() == low["id"]
    # Epic still has an unfinished subtask, so --next passes it over.
    empty, human, quiet = cli.many(
        (("task", "claim", "--next", "--json"), {"env": me}),
        (("task", "claim", "--next"), {"env": me}),
        (("task", "claim", "--next", "-q"), {"env": me}))
    assert empty.data == {"task": None, "claim": None}
    assert human.code == 0 and "Nothing is ready" in human.stdout
    assert quiet.code == 0 and quiet.stdout == ""
    kept = json.loads((cli.home / ".maestro" / "claims" / f"{session}.json").read_text())
    assert set(kept) == {high["id"], part["id"], low["id"]}

    no_project = cli("task", "claim", "--next", env={"MAESTRO_SESSION_ID": session})
    assert no_project.code == 1 and "No project" in no_project.stderr


def test_writes_of_a_session_that_lost_its_claim_are_refused(cli, rest, project):
    task = new_task(rest, project["id"], title="Contested")
    s1, s2, s3 = (new_session(rest, project["id"], n) for n in ("Late", "Next", "Bystander"))
    late, nxt, bystander = ({"MAESTRO_SESSION_ID": s} for s in (s1, s2, s3))

    first = cli.data("task", "claim", task["id"], env=late)
    cli.ok("task", "release", task["id"])  # a person takes it away from the first session
    second = cli.data("task", "claim", task["id"], env=nxt)
    assert second["claim"]["token"] > first["claim"]["token"]
    before = task_of(rest, task["id"])

    # The first session still sends the token it was granted: the server refuses it.
    report, complete = cli.many(
        (("report", "progress", "still on it", "--task", task["id"], "--json"), {"env": late}),
        (("task", "complete", task["id"], "--json"), {"env": late}))
    for result in (report, complete):
        assert result.code == 6, result
        assert result.json["error"] == "claim_lost"
        assert result.json["details"]["code"] == "CLAIM_LOST"
    # A session that never held it is stopped before writing.
    update = cli("task", "update", task["id"], "--priority", "low", "--json", env=bystander)
    assert update.code == 6 and update.json["details"]["holder"]["sessionId"] == s2
    assert task_of(rest, task["id"]) == before

    # The kept token is what is sent: a wrong one is refused even for the holder.
    kept = cli.home / ".maestro" / "claims" / f"{s2}.json"
    good = kept.read_text()
    kept.write_text(json.dumps({task["id"]: second["claim"]["token"] + 100}))
    forged = cli("report", "progress", "x", "--task", task["id"], "--json", env=nxt)
    assert forged.code == 6 and forged.json["details"]["code"] == "CLAIM_LOST"
    kept.write_text(good)

    cli.ok("report", "complete", "all done", "--task", task["id"], env=nxt)
    done = cli.data("task", "complete", task["id"], env=nxt)
    assert done["status"] == "completed" and done.get("claim") is None
    assert done["sessionStatus"] == "completed"
    assert not kept.exists()


def test_watch_shows_claim_events_of_the_watched_project_and_task(cli, rest, srv):
    from test_cli_live import Lines, start_watch, stop, wait_until, ws_clients

    project = rest.post("/api/projects", json={"name": "Watched claims"}).json()
    task = new_task(rest, project["id"], title="Watched")
    other = new_task(rest, project["id"], title="Unwatched")
    session = new_session(rest, project["id"])
    before = ws_clients(srv.url)
    by_project = start_watch(cli, "--project", project["id"])
    by_task = start_watch(cli, "--task", task["id"], "--json")
    try:
        lines, json_lines = Lines(by_project.stdout), Lines(by_task.stdout)
        wait_until(lambda: ws_clients(srv.url) == before + 2, what="both watchers connected")
        me = {"MAESTRO_SESSION_ID": session}
        cli.ok("task", "claim", other["id"], env=me)
        cli.ok("task", "claim", task["id"], env=me)
        cli.ok("task", "release", task["id"], env=me)
        claimed = lines.wait_for(lambda text: "task:claimed" in text)
        assert other["id"] in claimed and session in claimed and "token 1" in claimed
        released = lines.wait_for(lambda text: "task:claim_released" in text)
        assert task["id"] in released
        seen = json.loads(json_lines.wait_for(lambda text: "task:claim_released" in text))
        assert seen["data"]["data"]["taskId"] == task["id"]
        kinds = [json.loads(line)["data"]["type"] for line in json_lines.seen]
        assert "task:claimed" in kinds
        assert all(json.loads(line)["data"]["data"].get("taskId", task["id"]) == task["id"]
                   for line in json_lines.seen)
    finally:
        stop(by_project)
        stop(by_task)


# ------------------------------------------------------------------ delete
def test_task_delete_with_and_without_cascade(cli, rest, project):
    parent = new_task(rest, project["id"], title="Parent")
    child = new_task(rest, project["id"], title="Child", parentId=parent["id"])
    waiter = new_task(rest, project["id"], title="Waiter", dependencies=[parent["id"]])

    refused = cli("task", "delete", parent["id"])
    assert refused.code == 1 and "TASK_HAS_CHILDREN" in refused.stderr
    assert task_of(rest, parent["id"])["id"] == parent["id"]

    deleted = cli.data("task", "delete", parent["id"], "--cascade")
    assert deleted["success"] is True and deleted["id"] == parent["id"]
    assert set(deleted["deleted"]) == {parent["id"], child["id"]}
    assert rest.get(f"/api/tasks/{child['id']}").status_code == 404
    assert task_of(rest, waiter["id"])["dependencies"] == []

    human = cli.ok("task", "delete", waiter["id"])
    assert "Deleted task" in human.stdout and waiter["id"] in human.stdout
    assert rest.get(f"/api/tasks/{waiter['id']}").status_code == 404
    missing = cli("task", "delete", waiter["id"])
    assert missing.code == 2 and "TASK_NOT_FOUND" in missing.stderr


# ------------------------------------------------------------------ exactly once
CLAIM_LOOP = """
while :; do
  out=$("$PY" -m maestro task claim --next -q) || exit $?
  [ -z "$out" ] && exit 0
  echo "$out"
done
"""


def test_eight_processes_claim_fifteen_ready_tasks_exactly_once(cli, rest):
    project = rest.post("/api/projects", json={"name": "Race"}).json()
    pid = project["id"]

    def task(title, **fields):
        return new_task(rest, pid, title=title, **fields)["id"]

    first, second = task("Prerequisite 1"), task("Prerequisite 2")
    ready = {first, second} | {task(f"Plain {i}", priority=("high", "medium", "low")[i % 3])
                               for i in range(13)}
    wait1 = task("Waits for 1", dependencies=[first])
    waiting = {wait1, task("Also waits for 1", dependencies=[first]),
               task("Waits for 2", dependencies=[second]),
               task("Waits for a waiter", dependencies=[wait1])}
    stuck = new_task(rest, pid, title="Stuck parent")
    rest.patch(f"/api/tasks/{stuck['id']}", json={"status": "blocked"})
    waiting.add(task("Child of a blocked task", parentId=stuck["id"]))
    pending = rest.get("/api/tasks", params={"projectId": pid, "status": "pending"}).json()
    assert len(pending) == 20 and len(ready) == 15
    assert set(ids(rest.get("/api/tasks", params={"ready": "true",
                                                  "projectId": pid}).json())) == ready

    sessions = [new_session(rest, pid, f"Racer {i}") for i in range(8)]
    procs = [subprocess.Popen(["bash", "-c", CLAIM_LOOP], cwd=str(cli.cwd), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=cli.env(PY=sys.executable, MAESTRO_PROJECT_ID=pid,
                                          MAESTRO_SESSION_ID=sid))
             for sid in sessions]
    grants: list[tuple[str, str]] = []
    for sid, proc in zip(sessions, procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        grants += [(line.strip(), sid) for line in out.splitlines() if line.strip()]

    granted = [task_id for task_id, _ in grants]
    assert len(granted) == 15 and len(set(granted)) == 15
    assert set(granted) == ready
    for task_id, sid in grants:
        held = task_of(rest, task_id)
        assert held["status"] == "in_progress"
        assert held["claim"]["sessionId"] == sid
    for task_id in waiting:
        left = task_of(rest, task_id)
        assert left["status"] == "pending" and left.get("claim") is None


# ------------------------------------------------------------------ what agents are told
def prompt_commands(text: str) -> list[list[str]]:
    """Every `maestro ...` command quoted in a prompt, placeholders filled in, as argv."""
    commands = []
    for quoted in re.findall(r"`(maestro [^`]+)`", text):
        filled = re.sub(r"<[^>]+>", "task_1_abc", quoted)
        commands.append(shlex.split(filled)[1:])
    return commands


def test_every_command_in_the_agent_prompt_exists(cli, tmp_path):
    from maestro.spawn.guide import guide
    from maestro.spawn.agent import build_prompt

    manifest = {"tasks": [{"id": "task_1_abc", "title": "Add login", "priority": "high",
                           "description": "Email and password", "projectId": "proj_1",
                           "acceptanceCriteria": ["Tests pass"]}]}
    texts = {"worker guide": guide("worker", "task_1_abc"),
             "orchestrator guide": guide("orchestrator", "task_1_abc"),
             "worker prompt": build_prompt("worker", manifest, "sess_1", {}),
             "orchestrator prompt": build_prompt("orchestrator", manifest, "sess_1", {}),
             "prompt in a worktree": build_prompt("worker", manifest, "sess_1", {}, {
                 "branch": "maestro/add-login-3f2a", "baseRef": "main"})}
    assert "branch `maestro/add-login-3f2a`, made from `main`" in texts["prompt in a worktree"]
    assert "`maestro session diff`" in texts["prompt in a worktree"]
    assert "`maestro task claim --next`" in texts["worker guide"]
    assert "maestro task release" in texts["worker guide"]
    assert "maestro task depend" in texts["orchestrator guide"]
    calls = {}
    for name, text in texts.items():
        for argv in prompt_commands(text):
            calls.setdefault(tuple(argv), name)
    assert len(calls) >= 8
    offline = Cli(tmp_path, "http://127.0.0.1:9")
    results = offline.many(*[(*argv, "--help") for argv in calls])
    for (argv, name), result in zip(calls.items(), results):
        assert result.code == 0, f"{name}: maestro {' '.join(argv)} --help\n{result.stderr}"
        assert "Usage:" in result.stdout


def test_readme_coordination_walkthrough_runs(cli, rest, tmp_path):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Coordinate a team of agents"):]
    block = section[section.index("```bash") + len("```bash"):]
    script = tmp_path / "coordinate.sh"
    script.write_text("set -e\n" + f'maestro() {{ "{sys.executable}" -m maestro "$@"; }}\n'
                      + block[:block.index("```")].strip() + '\necho "$MAESTRO_PROJECT_ID"\n')
    run = subprocess.run(["bash", str(script)], env=cli.env(), cwd=str(cli.cwd),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    project_id = run.stdout.strip().splitlines()[-1]
    tasks = {t["title"]: t for t in rest.get("/api/tasks",
                                             params={"projectId": project_id}).json()}
    assert tasks["Design the schema"]["status"] == "completed"
    assert tasks["Write the API"]["dependencies"] == [tasks["Design the schema"]["id"]]
    assert tasks["Write the API"].get("claim") is None
    assert ids(rest.get("/api/tasks", params={"ready": "true", "projectId": project_id}).json()) \
        == [tasks["Write the API"]["id"]]
    assert tasks["Design the schema"]["sessionStatus"] == "completed"
