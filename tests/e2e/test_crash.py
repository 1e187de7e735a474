"""Crash safety through a real server process: `kill -9` at random moments under concurrent
writes, restart on the same data directory, and check every acknowledged change, every file and
the task<->session invariant (SPEC §0.2, §8, §14.3; issue 2 "Storage you can trust"); the same
under a stream of appends to one big session and task, whose changes the journal holds as
deltas."""

from __future__ import annotations

import itertools
import json
import os
import random
import threading
import time

import httpx
import pytest
from crash_driver import (
    ABSENT,
    Acknowledged,
    Worker,
    check_recovered,
    leftover_temp_files,
    read_entities,
)
from helpers import ok, pretty

KILL_CYCLES = 20
WORKERS = 6


def _health(srv) -> dict:
    return ok(httpx.get(srv.url + "/health", timeout=10.0, trust_env=False))


def _api_entities(srv) -> dict[str, dict[str, dict]]:
    with httpx.Client(base_url=srv.url, timeout=30.0, trust_env=False) as client:
        return {kind: {e["id"]: e for e in ok(client.get(f"/api/{kind}s"))}
                for kind in ("project", "task", "session")}


@pytest.mark.parametrize("checkpoint", ["default", "constant"])
def test_kill_9_at_random_moments_loses_no_acknowledged_write(make_server, checkpoint):
    """`constant`: a 32 KiB checkpoint threshold, so kills also land while a background
    checkpoint syncs the files of the previous journal (journal.old)."""
    seed = int(os.environ.get("MAESTRO_CRASH_SEED", random.randrange(10**9)))
    rng = random.Random(seed)
    env = {"MAESTRO_CHECKPOINT_BYTES": str(32 * 1024)} if checkpoint == "constant" else {}
    srv = make_server(start=False, env=env)
    srv.start()
    acked = Acknowledged()
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as client:
        for name in ("Alpha", "Beta"):
            acked.projects.add(ok(client.post("/api/projects", json={"name": name}), 201)["id"])
    journal = srv.data_dir / "journal"
    replayed_cycles = old_journals = 0
    for cycle in range(KILL_CYCLES):
        context = f"seed={seed} cycle={cycle}"
        live = sorted(sid for sid, fate in acked.sessions.items() if fate.acked != ABSENT)
        shares: list[list[str]] = [[] for _ in range(WORKERS)]
        for i, sid in enumerate(live):
            shares[i % WORKERS].append(sid)
        workers = [Worker(f"c{cycle}w{i}", srv.url, acked, shares[i],
                          random.Random(rng.random())) for i in range(WORKERS)]
        for w in workers:
            w.start()
        time.sleep(rng.uniform(0.1, 0.5))  # the random moment of the crash
        srv.kill()
        for w in workers:
            w.join(15)
            assert not w.is_alive(), context
        if journal.exists() and journal.stat().st_size:
            replayed_cycles += 1
        old_journals += (srv.data_dir / "journal.old").exists()
        srv.start()

        health = _health(srv)
        assert health["storage"]["quarantined"] == [], (context, health)
        assert journal.stat().st_size == 0, f"{context}: journal not emptied after replay"
        assert not (srv.data_dir / "journal.old").exists(), context
        assert leftover_temp_files(srv.data_dir) == [], context
        on_disk = read_entities(srv.data_dir)
        try:
            check_recovered(on_disk, acked)
        except AssertionError as exc:
            raise AssertionError(f"{context}: {exc}") from None
        # Nothing but entity files is counted, and what is served is what is on disk.
        assert health["counts"] == {"projects": len(on_disk["project"]),
                                    "tasks": len(on_disk["task"]),
                                    "sessions": len(on_disk["session"])}, context
        assert _api_entities(srv) == on_disk, context
    srv.stop()
    print(f"seed={seed}: {KILL_CYCLES} kill -9 cycles, {acked.acked_requests} acknowledged "
          f"writes, {len(acked.tasks)} tasks, {len(acked.sessions)} sessions, "
          f"{replayed_cycles} restarts replayed a non-empty journal, {old_journals} also an old one")
    assert acked.acked_requests > KILL_CYCLES * 10
    assert replayed_cycles > 0


def test_journal_replay_restores_files_a_power_loss_took(make_server):
    """kill -9 right after acknowledged writes, then put back the files as they were before
    those writes (what a power loss does to renames not yet synced): the journal still has
    the changes, and start-up brings the files up to date and empties the journal."""
    srv = make_server()
    journal = srv.data_dir / "journal"
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
        project = ok(api.post("/api/projects", json={"name": "P"}), 201)
        tasks = [ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"T{i}"}),
                    201) for i in range(3)]
    srv.stop()  # clean stop: checkpoint, journal empty
    assert journal.stat().st_size == 0
    task_dir = srv.data_dir / "tasks" / project["id"]
    before = {p.name: p.read_bytes() for p in task_dir.iterdir()}

    for attempt in range(5):
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
            patched = ok(api.patch(f"/api/tasks/{tasks[0]['id']}",
                                   json={"title": "après", "status": "in_progress"}))
            session = ok(api.post("/api/sessions", json={
                "projectId": project["id"], "taskIds": [t["id"] for t in tasks[1:]]}), 201)
            linked = [ok(api.get(f"/api/tasks/{t['id']}")) for t in tasks[1:]]
        srv.kill()  # well within the 1 s idle time before a checkpoint
        if journal.stat().st_size:
            break
        srv.start()  # a checkpoint came first after all; undo and try again
        with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
            ok(api.delete(f"/api/sessions/{session['id']}"))
        srv.stop()
    else:
        pytest.fail("never caught the journal before a checkpoint")

    for name, data in before.items():  # the power loss
        (task_dir / name).write_bytes(data)
    (srv.data_dir / "sessions" / f"{session['id']}.json").unlink()

    srv.start()
    assert journal.stat().st_size == 0
    notes = _health(srv)["storage"]["notes"]
    assert any("replayed" in n for n in notes), notes
    expected = {patched["id"]: patched, **{t["id"]: t for t in linked}}
    for task in expected.values():
        data = (task_dir / f"{task['id']}.json").read_bytes()
        assert data == pretty(task)
    session_file = srv.data_dir / "sessions" / f"{session['id']}.json"
    assert json.loads(session_file.read_bytes()) == session
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
        assert ok(api.get(f"/api/tasks/{patched['id']}")) == patched
        assert ok(api.get(f"/api/sessions/{session['id']}")) == session


def test_temp_files_left_by_a_crash_are_never_loaded(make_server):
    """A crash between staging a file and its rename leaves a temp file beside its target; it
    is not an entity and is removed at start-up."""
    srv = make_server()
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
        project = ok(api.post("/api/projects", json={"name": "P"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "real"}),
                  201)
    srv.kill()
    ghost = dict(task, id="task_1700000000000_ghost0000", title="never committed")
    staged = [
        srv.data_dir / "tasks" / project["id"] / f".{ghost['id']}.1a2b3c4d.tmp",
        srv.data_dir / "tasks" / project["id"] / f".{task['id']}.5e6f7a8b.tmp",
        srv.data_dir / "projects" / f".{project['id']}.0badf00d.tmp",
        srv.data_dir / "sessions" / ".sess_1.00000000.tmp",
    ]
    for path in staged:
        path.write_bytes(pretty(dict(ghost, title="uncommitted change")))
    srv.start()
    assert [p for p in staged if p.exists()] == []
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
        assert api.get(f"/api/tasks/{ghost['id']}").status_code == 404
        assert ok(api.get(f"/api/tasks/{task['id']}"))["title"] == "real"
        assert [t["id"] for t in ok(api.get("/api/tasks"))] == [task["id"]]
        assert ok(api.get("/api/sessions")) == []


class _Appender(threading.Thread):
    """Appends to one big session (events, timeline) and one big task (timeline) until the
    server dies, remembering in order what was acknowledged."""

    def __init__(self, name: str, url: str, session_id: str, task_id: str, seed: float):
        super().__init__(name=name, daemon=True)
        self.url, self.session_id, self.task_id = url, session_id, task_id
        self.rng = random.Random(seed)
        self.acked: dict[str, list[str]] = {"events": [], "timeline": [], "task": []}
        self.error: str | None = None

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10.0, trust_env=False) as client:
            for n in itertools.count():
                marker = f"{self.name}-{n}"
                kind = self.rng.choice(("events", "timeline", "task"))
                if kind == "events":
                    path = f"/api/sessions/{self.session_id}/events"
                    body = {"type": "file_modified", "data": {"file": marker}}
                elif kind == "timeline":
                    path, body = f"/api/sessions/{self.session_id}/timeline", {"message": marker}
                else:
                    path, body = f"/api/tasks/{self.task_id}/timeline", {"message": marker}
                headers = {"Prefer": "return=minimal"} if self.rng.random() < 0.5 else {}
                try:
                    resp = client.post(path, json=body, headers=headers)
                except httpx.TransportError:
                    return  # the server is gone: this append's outcome is unknown
                if resp.status_code != 200:
                    self.error = f"{path}: {resp.status_code} {resp.text[:200]}"
                    return
                self.acked[kind].append(marker)


def _markers(entries: list[dict], key: str) -> list[str]:
    out = []
    for entry in entries:
        value = entry.get("data", {}).get("file") if key == "data" else entry.get(key)
        if isinstance(value, str):
            out.append(value)
    return out


@pytest.mark.parametrize("checkpoint", ["default", "constant"])
def test_kill_9_under_append_load_on_a_big_session_loses_no_acknowledged_append(make_server,
                                                                               checkpoint):
    """Eight clients append to one big session and one big task (journaled as deltas, files
    rewritten at flushes); kill -9 at a random moment, restart, repeat. Every acknowledged
    append is there, in the order it was acknowledged, and the files equal the API.
    `constant`: a 32 KiB checkpoint threshold, so kills also land during flushes and journal
    rotations."""
    seed = int(os.environ.get("MAESTRO_CRASH_SEED", random.randrange(10**9)))
    rng = random.Random(seed)
    env = {"MAESTRO_CHECKPOINT_BYTES": str(32 * 1024)} if checkpoint == "constant" else {}
    srv = make_server(env=env)
    with httpx.Client(base_url=srv.url, timeout=10.0, trust_env=False) as api:
        project = ok(api.post("/api/projects", json={"name": "P"}), 201)
        task = ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "T"}), 201)
        session = ok(api.post("/api/sessions", json={"projectId": project["id"],
                                                     "taskIds": [task["id"]]}), 201)
        ok(api.patch(f"/api/sessions/{session['id']}", json={"events": [
            {"type": "seed", "data": {"file": f"seed/{i}.py"}} for i in range(500)]}))
        ok(api.patch(f"/api/tasks/{task['id']}", json={"timeline": [
            {"message": f"seeded step {i}"} for i in range(500)]}))
    acked: list[_Appender] = []
    replayed = 0
    for cycle in range(8):
        context = f"seed={seed} cycle={cycle}"
        workers = [_Appender(f"c{cycle}w{i}", srv.url, session["id"], task["id"], rng.random())
                   for i in range(8)]
        for w in workers:
            w.start()
        time.sleep(rng.uniform(0.2, 0.6))
        srv.kill()
        for w in workers:
            w.join(15)
            assert not w.is_alive() and w.error is None, (context, w.error)
        acked += workers
        replayed += bool((srv.data_dir / "journal").stat().st_size)
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=30.0, trust_env=False) as api:
            served_session = ok(api.get(f"/api/sessions/{session['id']}"))
            served_task = ok(api.get(f"/api/tasks/{task['id']}"))
            health = ok(api.get("/health"))
        assert health["storage"]["quarantined"] == [], context
        assert (srv.data_dir / "journal").stat().st_size == 0, context
        on_disk = read_entities(srv.data_dir)
        assert on_disk["session"][session["id"]] == served_session, context
        assert on_disk["task"][task["id"]] == served_task, context
        stored = {"events": _markers(served_session["events"], "data"),
                  "timeline": _markers(served_session.get("timeline", []), "message"),
                  "task": _markers(served_task["timeline"], "message")}
        for kind, markers in stored.items():
            position = {m: i for i, m in enumerate(markers)}
            assert len(position) == len(markers), f"{context}: {kind} holds a duplicate"
            for w in acked:
                lost = [m for m in w.acked[kind] if m not in position]
                assert not lost, f"{context}: acknowledged {kind} appends lost: {lost[:5]}"
                places = [position[m] for m in w.acked[kind]]
                assert places == sorted(places), f"{context}: {kind} out of order"
    srv.stop()
    total = sum(len(v) for w in acked for v in w.acked.values())
    print(f"seed={seed}: {total} acknowledged appends over 8 kill -9 cycles, "
          f"{replayed} restarts replayed a journal")
    assert total > 8 * 20
    assert replayed > 0
