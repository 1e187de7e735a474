"""Appends to sessions and tasks whatever their size (SPEC §11 E1, E2, §7.3.4; "Storage you can
trust"): the per-entry size limit (413, nothing changed), `Prefer: return=minimal`, the journal
recording an append to a big entity as the new entry only, replay of such deltas after kill -9
and from a hand-written journal, and the big entity's file catching up (idle, clean shutdown,
before a CLI-generated manifest) without losing the last append."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import httpx
import pytest
from helpers import (
    Snapshot,
    WsClient,
    assert_error,
    assert_file_matches,
    http_client,
    new_project,
    new_session,
    new_task,
    ok,
    pretty,
    wait_until,
    write_then_kill,
)

LIMIT = 64 * 1024


def seed_session(api, session_id: str, events: int = 300) -> dict:
    """Make a session big (~30 KB of events: over the size at which changes are deltas)."""
    return ok(api.patch(f"/api/sessions/{session_id}", json={"events": [
        {"type": "file_modified", "data": {"file": f"src/module_{i}.py", "n": i}}
        for i in range(events)]}))


def seed_task(api, task_id: str, entries: int = 300) -> dict:
    return ok(api.patch(f"/api/tasks/{task_id}", json={"timeline": [
        {"type": "update", "message": f"step {i} of the seeded work is done"}
        for i in range(entries)]}))


def journal_records(data_dir: Path) -> list[tuple[int, list[dict]]]:
    """(line length, ops) of every journal line."""
    raw = (data_dir / "journal").read_bytes()
    return [(len(line) + 1, json.loads(line[9:])) for line in raw.splitlines()]


def journal_line(ops: list[dict]) -> bytes:
    body = json.dumps(ops, ensure_ascii=False, separators=(",", ":")).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


# ---------------------------------------------------------------------- the size limit
@pytest.mark.parametrize("route", ["event", "session timeline", "task timeline",
                                   "patch events", "patch timeline"])
def test_an_entry_over_64_kib_is_413_and_changes_nothing(srv, api, route):
    project = new_project(api)
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [task["id"]])
    big, fits = "x" * (LIMIT + 10), "y" * (LIMIT - 300)

    def send(text: str) -> httpx.Response:
        if route == "event":
            return api.post(f"/api/sessions/{session['id']}/events",
                            json={"type": "file_modified", "data": {"file": text}})
        if route == "session timeline":
            return api.post(f"/api/sessions/{session['id']}/timeline", json={"message": text})
        if route == "task timeline":
            return api.post(f"/api/tasks/{task['id']}/timeline", json={"message": text})
        if route == "patch events":
            return api.patch(f"/api/sessions/{session['id']}", json={
                "status": "completed", "events": [{"type": "ok"}, {"type": "t", "data": text}]})
        return api.patch(f"/api/tasks/{task['id']}", json={
            "title": "changed", "timeline": [{"message": "ok"}, {"message": text}]})

    before = Snapshot(api, srv)
    with WsClient(srv.ws_url) as ws:
        ws.barrier()
        err = assert_error(send(big), 413, "VALIDATION_ERROR")
        assert ws.barrier() == []
    assert err["message"].endswith(f"the limit is {LIMIT} bytes per entry "
                                   "(MAESTRO_MAX_ENTRY_BYTES)"), err
    assert err["details"]["limit"] == LIMIT and err["details"]["size"] > LIMIT
    before.assert_unchanged()
    ok(send(fits))  # just under the limit, in a body far under 1 MiB


def test_the_entry_limit_is_a_setting(make_server):
    srv = make_server(env={"MAESTRO_MAX_ENTRY_BYTES": "2048"})
    with http_client(srv) as api:
        project = new_project(api)
        session = new_session(api, project["id"])
        err = assert_error(api.post(f"/api/sessions/{session['id']}/timeline",
                                    json={"message": "m" * 3000}), 413, "VALIDATION_ERROR")
        assert err["details"] == {"size": err["details"]["size"], "limit": 2048}
        ok(api.post(f"/api/sessions/{session['id']}/timeline", json={"message": "m" * 1500}))
    bad = make_server(start=False, env={"MAESTRO_MAX_ENTRY_BYTES": "lots"})
    bad.start(wait=False)
    assert bad.proc.wait(timeout=20) != 0
    assert "MAESTRO_MAX_ENTRY_BYTES" in bad.log()


# ---------------------------------------------------------------------- return=minimal
def test_prefer_return_minimal_answers_the_appended_entry_only(srv, api):
    project = new_project(api)
    task = new_task(api, project["id"])
    session = new_session(api, project["id"], [task["id"]])
    seed_session(api, session["id"])
    minimal = {"Prefer": "return=minimal"}
    with WsClient(srv.ws_url) as ws:
        ws.barrier()
        event = api.post(f"/api/sessions/{session['id']}/events", headers=minimal,
                         json={"type": "file_modified", "data": {"file": "a.py"}})
        line = api.post(f"/api/sessions/{session['id']}/timeline", headers=minimal,
                        json={"message": "halfway", "taskId": task["id"]})
        entry = api.post(f"/api/tasks/{task['id']}/timeline", headers=minimal,
                         json={"message": "done", "type": "milestone"})
        events = ws.barrier()
    for resp in (event, line, entry):
        assert resp.headers["preference-applied"] == "return=minimal"
    event, line, entry = ok(event), ok(line), ok(entry)
    assert set(event) == {"id", "timestamp", "type", "data"}
    assert event["data"] == {"file": "a.py"} and event["type"] == "file_modified"
    assert set(line) == {"id", "type", "timestamp", "message", "taskId"}
    assert line["type"] == "progress"
    assert set(entry) == {"id", "type", "timestamp", "message"} and entry["type"] == "milestone"
    stored = ok(api.get(f"/api/sessions/{session['id']}"))
    assert stored["events"][-1] == event and stored["timeline"][-1] == line
    assert stored["lastActivity"] == line["timestamp"]
    assert ok(api.get(f"/api/tasks/{task['id']}"))["timeline"][-1] == entry
    # Events still carry the whole entity, as every client expects.
    assert [e["type"] for e in events] == ["session:updated"] * 2 + ["task:updated"]
    assert events[1]["data"] == stored
    # Without the header: the whole entity, as before.
    whole = ok(api.post(f"/api/sessions/{session['id']}/events", json={"type": "x"}))
    assert whole["id"] == session["id"] and len(whole["events"]) == len(stored["events"]) + 1


# ---------------------------------------------------------------------- journal deltas
@pytest.mark.parametrize("writer", ["process", "in-process"])
def test_appends_to_big_entities_journal_the_new_entry_and_survive_kill_9(make_server,
                                                                         writer):
    """Each append to a session of ~30 KB (and to a task as big) is a journal record of the
    new entry and the changed fields, not of the whole entity; after kill -9 the restart
    replays them onto the files and serves exactly what was acknowledged."""
    srv = make_server(start=False,
                      env={} if writer == "process" else {"MAESTRO_STORE_PROCESS": "0"})
    srv.start()
    with http_client(srv) as api:
        project = new_project(api)
        task = new_task(api, project["id"])
        session = new_session(api, project["id"], [task["id"]])
        seed_session(api, session["id"])
        seed_task(api, task["id"])
    srv.stop()  # clean: the seeded entities are in their files, the journal is empty
    assert (srv.data_dir / "journal").stat().st_size == 0

    def append(api):
        for i in range(20):
            ok(api.post(f"/api/sessions/{session['id']}/events",
                        json={"type": "file_modified", "data": {"file": f"new_{i}.py"}}))
            ok(api.post(f"/api/sessions/{session['id']}/timeline", json={"message": f"m{i}"}))
            ok(api.post(f"/api/tasks/{task['id']}/timeline", json={"message": f"t{i}"}))
        other = new_session(api, project["id"])  # linking adds a timeline entry to the task
        ok(api.post(f"/api/sessions/{other['id']}/tasks/{task['id']}"))
        ok(api.patch(f"/api/tasks/{task['id']}", json={"sessionStatus": "working",
                                                        "updateSource": "session"}))
        return (ok(api.get(f"/api/sessions/{session['id']}")),
                ok(api.get(f"/api/tasks/{task['id']}")))

    acked_session, acked_task = write_then_kill(srv, append)
    assert len(acked_session["events"]) == 320 and len(acked_task["timeline"]) == 323
    records = journal_records(srv.data_dir)
    big = [(size, op) for size, ops in records for op in ops
           if op["id"] in (session["id"], task["id"])]
    assert len(big) >= 60
    for size, op in big:
        assert "v" not in op and set(op["d"]) <= {"set", "push"}, op
        assert size < 1500, f"a {size}-byte journal record for one append"
    first = big[0][1]["d"]  # the first new event goes at index 300
    assert first["push"]["events"][0] == 300 and len(first["push"]["events"][1]) == 1
    assert set(first["set"]) == {"lastActivity"}

    srv.start()
    with http_client(srv) as api:
        assert ok(api.get(f"/api/sessions/{session['id']}")) == acked_session
        assert ok(api.get(f"/api/tasks/{task['id']}")) == acked_task
        notes = ok(api.get("/health"))["storage"]["notes"]
    assert any("replayed" in n for n in notes), notes
    assert (srv.data_dir / "journal").stat().st_size == 0
    assert_file_matches(srv.data_dir, "session", acked_session)
    assert_file_matches(srv.data_dir, "task", acked_task)


@pytest.mark.parametrize("writer", ["process", "in-process"])
def test_a_big_entitys_file_catches_up_and_keeps_the_last_append(make_server, writer):
    """A big entity's file is not rewritten per append but at a flush (after a second of
    idleness here): it then holds every append, the last one included; a clean shutdown
    leaves every file exactly as GET, in the original's layout, and an empty journal."""
    srv = make_server(env={} if writer == "process" else {"MAESTRO_STORE_PROCESS": "0"})
    with http_client(srv) as api:
        project = new_project(api)
        task = new_task(api, project["id"])
        session = new_session(api, project["id"], [task["id"]])
        seed_session(api, session["id"])
        seed_task(api, task["id"])
        for i in range(30):
            ok(api.post(f"/api/sessions/{session['id']}/events", json={"type": f"e{i}"}))
            ok(api.post(f"/api/tasks/{task['id']}/timeline", json={"message": f"t{i}"}))
        last = ok(api.post(f"/api/sessions/{session['id']}/events", json={"type": "last"}))
        wait_until(lambda: ok(api.get("/health"))["storage"]["filesBehind"] == 0,
                   what="the files to catch up")
        assert_file_matches(srv.data_dir, "session", last)
        assert_file_matches(srv.data_dir, "task", ok(api.get(f"/api/tasks/{task['id']}")))
        for i in range(5):  # behind again, until the shutdown
            last = ok(api.post(f"/api/sessions/{session['id']}/timeline",
                               json={"message": f"late {i}"}))
    assert srv.stop() == 0
    assert_file_matches(srv.data_dir, "session", last)
    assert (srv.data_dir / "journal").stat().st_size == 0
    assert sorted(p.name for p in srv.data_dir.iterdir()) \
        == [".maestro.lock", ".spares", "journal", "projects", "sessions", "tasks"]


def test_a_journal_of_deltas_is_replayed_exactly(make_server):
    """Deltas written by hand in the store's format: `push` puts entries at an index (so one
    replayed over a file that already holds them changes nothing), `set` replaces fields; a
    delta for an entity that does not exist is skipped and reported; a torn last line is
    ignored."""
    srv = make_server(start=False)
    data = srv.data_dir
    session = {"id": "sess_d", "projectId": "proj_d", "taskIds": [], "name": "S",
               "status": "running", "env": {},
               "events": [{"id": f"evt_{i}", "type": "seed"} for i in range(4)],
               "startedAt": 1, "lastActivity": 1, "completedAt": None}
    (data / "sessions").mkdir(parents=True)
    # The file is newer than the journal's first record (it holds evt_2 and evt_3 already).
    (data / "sessions" / "sess_d.json").write_bytes(pretty(session))

    def delta(at: int, names: list[str], activity: int) -> dict:
        return {"k": "session", "id": "sess_d", "p": None,
                "d": {"set": {"lastActivity": activity},
                      "push": {"events": [at, [{"id": n, "type": "new"} for n in names]]}}}

    (data / "journal").write_bytes(
        journal_line([delta(2, ["evt_2"], 2)])
        + journal_line([delta(3, ["evt_3"], 3)])
        + journal_line([delta(4, ["evt_4", "evt_5"], 4),
                        {"k": "session", "id": "sess_gone", "p": None,
                         "d": {"set": {"status": "failed"}}}])
        + journal_line([{"k": "session", "id": "sess_d", "p": None,
                         "d": {"set": {"status": "completed", "extra": {"new": "key"}}}}])
        + journal_line([delta(6, ["evt_never"], 9)])[:-30])
    srv.start()
    expected = dict(session, lastActivity=4, status="completed", extra={"new": "key"},
                    events=session["events"][:2] + [{"id": n, "type": "new"} for n in
                                                     ("evt_2", "evt_3", "evt_4", "evt_5")])
    with http_client(srv) as api:
        assert ok(api.get("/api/sessions/sess_d")) == expected
        assert_error(api.get("/api/sessions/sess_gone"), 404, "SESSION_NOT_FOUND")
        notes = ok(api.get("/health"))["storage"]["notes"]
    assert any("replayed 4 record" in n for n in notes), notes
    assert any("skipped 1 change" in n for n in notes), notes
    assert any("incomplete" in n for n in notes), notes
    assert (data / "sessions" / "sess_d.json").read_bytes() == pretty(expected)
    assert (data / "journal").stat().st_size == 0


# ---------------------------------------------------------------------- readers of DATA_DIR
GENERATOR = '''#!{python}
"""Stands in for the original CLI's `manifest generate`: reads the tasks from DATA_DIR."""
import json, os, sys
from pathlib import Path
from maestro.spawn.manifest import build_manifest
args = dict(zip(sys.argv[3::2], sys.argv[4::2]))
data = Path(os.environ["DATA_DIR"])
pid = args["--project-id"]
project = json.loads((data / "projects" / f"{{pid}}.json").read_text())
tasks = [json.loads((data / "tasks" / pid / f"{{t}}.json").read_text())
         for t in args["--task-ids"].split(",")]
out = Path(args["--output"])
out.write_text(json.dumps(build_manifest(role=args["--role"], project=project, tasks=tasks,
                                         skills=[])))
(out.parent / "seen-tasks.json").write_text(json.dumps(tasks))
'''


def test_a_cli_generated_manifest_reads_the_big_tasks_last_appends(make_server, tmp_path):
    """SPEC §5.5: with MANIFEST_GENERATOR=cli the generator reads the tasks from disk, so a
    big task's file is brought up to date before it runs."""
    import sys

    generator = tmp_path / "generate.py"
    generator.write_text(GENERATOR.format(python=sys.executable))
    generator.chmod(0o755)
    srv = make_server(env={"MAESTRO_LAUNCHER": "ui", "MANIFEST_GENERATOR": "cli",
                           "MAESTRO_CLI_PATH": str(generator)})
    with http_client(srv) as api:
        project = new_project(api, workingDir=str(tmp_path))
        task = new_task(api, project["id"])
        seed_task(api, task["id"])
        for i in range(10):
            ok(api.post(f"/api/tasks/{task['id']}/timeline", json={"message": f"fresh {i}"}))
        expected = ok(api.get(f"/api/tasks/{task['id']}"))
        body = ok(api.post("/api/sessions/spawn", json={"projectId": project["id"],
                                                        "taskIds": [task["id"]]}), 201)
    seen = json.loads((Path(body["manifestPath"]).parent / "seen-tasks.json").read_text())
    assert seen == [expected]


def test_a_big_file_catches_up_under_a_steady_stream_of_appends(make_server):
    """Without a second of idleness the file is still rewritten: at the latest 10 s after it
    fell behind (FLUSH_SECONDS), while the appends go on."""
    import time

    srv = make_server()
    with http_client(srv) as api:
        project = new_project(api)
        session = new_session(api, project["id"])
        seed_session(api, session["id"])
        path = srv.data_dir / "sessions" / f"{session['id']}.json"
        ok(api.post(f"/api/sessions/{session['id']}/events", json={"type": "first"}))
        deadline = time.monotonic() + 40
        caught_up = None
        n = 0
        while caught_up is None and time.monotonic() < deadline:
            n += 1
            ok(api.post(f"/api/sessions/{session['id']}/events", json={"type": f"e{n}"}))
            on_disk = json.loads(path.read_bytes())
            if on_disk["events"][-1]["type"] != "file_modified":  # a later version is there
                caught_up = on_disk
            time.sleep(0.2)  # never a second of idleness
        assert caught_up is not None, "the file never caught up while appends went on"
        served = ok(api.get(f"/api/sessions/{session['id']}"))
        assert served["events"][:len(caught_up["events"])] == caught_up["events"]
