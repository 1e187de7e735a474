"""Several `maestro serve` processes on one PostgreSQL database (active-active replicas): every
replica publishes the same events under the same gapless `seq`, serves the same documents,
reads its own writes and applies the others' within milliseconds; claims stay exactly once
across replicas; a broken LISTEN connection, a WebSocket client moving to another replica with
`?since=` and a replica killed under load lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter

import httpx
import psycopg
import pytest
from helpers import ok, wait_until
from maestro import jsonio
from maestro.store.base import Op
from maestro.store.postgres import PostgresStore
from test_pg_migrations import run_db
from test_pg_rows import task_with_inline_timeline
from test_postgres_server import client, database, pg_env, served, stored  # noqa: F401
from websockets.sync.client import connect


class Stream:
    """A WebSocket client recording (arrival time, message) of everything it receives."""

    def __init__(self, url: str):
        self._stack = contextlib.ExitStack()
        self.conn = self._stack.enter_context(connect(
            url, proxy=None, compression=None, max_size=None, max_queue=None, open_timeout=10))
        self.got: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        try:
            for message in self.conn:
                item = (time.monotonic(), json.loads(message))
                with self._lock:
                    self.got.append(item)
        except Exception:
            pass

    def messages(self) -> list[dict]:
        with self._lock:
            return [m for _, m in self.got]

    def events(self) -> list[dict]:
        return [m for m in self.messages() if "seq" in m and m.get("type") != "resync"]

    def seqs(self) -> list[int]:
        return [m["seq"] for m in self.events()]

    def last_seq(self) -> int:
        seqs = self.seqs()
        return seqs[-1] if seqs else 0

    def wait_for(self, seq: int, timeout: float = 30.0) -> None:
        wait_until(lambda: self.last_seq() >= seq, timeout=timeout,
                   what=f"event {seq} on a WebSocket client (at {self.last_seq()})")

    def close(self) -> None:
        self._stack.close()


def event_head(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT value FROM maestro_meta WHERE name = 'event_seq'"
                            ).fetchone()[0]


def replicas(make_server, url: str, count: int, **env) -> list:
    return [make_server(env={**pg_env(url), **env}) for _ in range(count)]


def assert_same_stream(streams: list[Stream], head: int, first: int = 1) -> None:
    """Every stream holds exactly events first..head, in order, the same on each."""
    for stream in streams:
        stream.wait_for(head)
    expected = list(range(first, head + 1))
    shown = []
    for stream in streams:
        assert stream.seqs() == expected
        shown.append([(m["type"], (m.get("data") or {}).get("id")) for m in stream.events()])
    assert all(s == shown[0] for s in shown)


def assert_converged(servers: list, url: str) -> None:
    apis = [client(s) for s in servers]
    try:
        wait_until(lambda: all(served(a) == served(apis[0]) for a in apis[1:]),
                   what="every replica to serve the same documents")
        assert served(apis[0]) == stored(url)
    finally:
        for api in apis:
            api.close()


async def _async_clients(servers: list, connections: int = 50) -> list[httpx.AsyncClient]:
    return [httpx.AsyncClient(base_url=s.url, timeout=60, trust_env=False,
                              limits=httpx.Limits(max_connections=connections))
            for s in servers]


# ---------------------------------------------------------------------- one order everywhere
# 150 creates, 150 mixed changes, then 60 link changes: 360 concurrent changes in all.
async def _mixed_burst(servers: list, project_id: str) -> None:
    clients = await _async_clients(servers)
    try:
        creates = await asyncio.gather(*[
            clients[i % 3].post("/api/tasks", json={"projectId": project_id, "title": f"T{i}"})
            for i in range(150)])
        assert [r.status_code for r in creates] == [201] * 150, \
            [r.text for r in creates if r.status_code != 201][:3]
        ids = [r.json()["id"] for r in creates]
        rnd = random.Random(17)
        calls = []
        for i in range(100):
            body = {"title": f"edit {i}"} if i % 2 else {"status": "in_progress"}
            calls.append(clients[rnd.randrange(3)].patch(f"/api/tasks/{rnd.choice(ids)}",
                                                         json=body))
        for _ in range(50):
            calls.append(clients[rnd.randrange(3)].post("/api/sessions", json={
                "projectId": project_id, "taskIds": rnd.sample(ids, 2)}))
        rnd.shuffle(calls)
        answers = await asyncio.gather(*calls)
        assert all(a.status_code in (200, 201) for a in answers), \
            [a.text for a in answers if a.status_code not in (200, 201)][:3]
        # Links removed and added on other replicas than the ones that made them (the link
        # rows' positions must follow on every replica for the next change to write right).
        sessions = [a.json() for a in answers if a.request.method == "POST"]
        relinks = []
        for session in sessions[:30]:
            gone = session["taskIds"][0]
            relinks.append(clients[rnd.randrange(3)].delete(
                f"/api/sessions/{session['id']}/tasks/{gone}"))
            relinks.append(clients[rnd.randrange(3)].post(
                f"/api/sessions/{session['id']}/tasks/{rnd.choice(ids)}"))
        answers = await asyncio.gather(*relinks)
        assert all(a.status_code == 200 for a in answers), \
            [a.text for a in answers if a.status_code != 200][:3]
    finally:
        for c in clients:
            await c.aclose()


def test_three_replicas_publish_one_gapless_order_and_serve_the_same_documents(
        make_server, database):
    servers = replicas(make_server, database, 3)
    streams = [Stream(s.ws_url) for s in servers]
    try:
        with client(servers[0]) as api:
            project = ok(api.post("/api/projects", json={"name": "Replicas"}), 201)
        asyncio.run(_mixed_burst(servers, project["id"]))
        head = event_head(database)
        assert head > 300
        assert_same_stream(streams, head)
        assert_converged(servers, database)
        with client(servers[1]) as api:
            tasks = ok(api.get("/api/tasks", params={"projectId": project["id"]}))
            sessions = ok(api.get("/api/sessions"))
        assert len(tasks) == 150 and len(sessions) == 50
        for session in sessions:  # links are two-sided on every replica
            for tid in session["taskIds"]:
                assert session["id"] in next(t for t in tasks if t["id"] == tid)["sessionIds"]
    finally:
        for stream in streams:
            stream.close()


# ---------------------------------------------------------------------- read your writes
def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def test_a_replica_reads_its_own_writes_and_the_others_follow_within_milliseconds(
        make_server, database):
    servers = replicas(make_server, database, 3)
    streams = [Stream(s.ws_url) for s in servers]
    apis = [client(s) for s in servers]
    try:
        project = ok(apis[0].post("/api/projects", json={"name": "Lag"}), 201)
        task = ok(apis[1].post("/api/tasks", json={"projectId": project["id"], "title": "v"}),
                  201)
        writes = 150
        for i in range(writes):
            api = apis[i % 3]
            ok(api.patch(f"/api/tasks/{task['id']}", json={"title": f"v{i}"}))
            # The replica that answered already serves the change.
            assert ok(api.get(f"/api/tasks/{task['id']}"))["title"] == f"v{i}"
        head = event_head(database)
        for stream in streams:
            stream.wait_for(head)
        arrivals = []
        for stream in streams:
            seen = {}
            with stream._lock:
                for at, m in stream.got:
                    if m.get("type") == "task:updated":
                        seen.setdefault(m["data"]["title"], at)
            arrivals.append(seen)
        lags = []
        for i in range(writes):
            title = f"v{i}"
            writer = arrivals[i % 3][title]
            lags += [arrivals[r][title] - writer for r in range(3) if r != i % 3]
        p50, p99 = percentile(lags, 50) * 1000, percentile(lags, 99) * 1000
        print(f"\nother replicas applied a write after p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
              f"max {max(lags) * 1000:.1f} ms ({len(lags)} samples)")
        assert statistics.median(lags) < 0.05
        assert p99 < 250, f"p99 {p99:.1f} ms"
    finally:
        for api in apis:
            api.close()
        for stream in streams:
            stream.close()


# ---------------------------------------------------------------------- taking turns
async def _flat_out(servers: list, ids: list[str], writes: int, per_server: int = 16) -> list:
    """`writes` PATCHes of random tasks, `per_server` at a time on each server."""
    clients = await _async_clients(servers, per_server)
    count = iter(range(writes))
    answers: list = []

    async def worker(api: httpx.AsyncClient, rnd: random.Random) -> None:
        for i in count:
            answers.append(await api.patch(f"/api/tasks/{rnd.choice(ids)}",
                                           json={"title": f"w{i}", "priority": "high"}))

    try:
        await asyncio.gather(*(worker(c, random.Random(n * 100 + k))
                               for n, c in enumerate(clients) for k in range(per_server)))
    finally:
        for c in clients:
            await c.aclose()
    return answers


def _board(api: httpx.Client, tasks: int) -> list[str]:
    project = ok(api.post("/api/projects", json={"name": "Turns"}), 201)
    return [ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"t{i}"}),
               201)["id"] for i in range(tasks)]


@pytest.mark.parametrize("min_ops", ["24", "1"])
def test_replicas_writing_flat_out_take_turns_instead_of_refusing_each_other(
        make_server, database, min_ops):
    """Replicas that write themselves (MAESTRO_FORWARD_WRITES=0, or while the write lead
    cannot be reached). With MAESTRO_PIPELINE_MIN_OPS=1 each replica has two batches at its
    writer process whenever it can: one refused as behind the log takes the one after it along,
    and both are run again once caught up."""
    servers = replicas(make_server, database, 2, MAESTRO_PIPELINE_MIN_OPS=min_ops,
                       MAESTRO_FORWARD_WRITES="0")
    apis = [client(s) for s in servers]
    try:
        ids = _board(apis[0], 200)
        writes = 1200
        answers = asyncio.run(_flat_out(servers, ids, writes))
        assert [a.status_code for a in answers] == [200] * writes
        health = [ok(api.get("/health"))["replication"] for api in apis]
        conflicts = sum(h["conflicts"] for h in health)
        print(f"\n{writes} writes over two replicas: {conflicts} refused and run again, turns "
              f"taken {[h['turns'] for h in health]}")
        # Each replica's first refusal makes it take turns; from then on the log refuses
        # nothing (without turns about every second write was refused once).
        assert all(h["turns"] > 0 for h in health)
        assert conflicts < writes / 10
        assert_converged(servers, database)
    finally:
        for api in apis:
            api.close()


def test_a_turn_held_and_never_given_back_delays_writes_but_does_not_stop_them(
        make_server, database):
    """A server that hangs holding the turn (here: the test holds the turn lock) costs the
    others one wait of WAIT_MS; then they write without turns, still refused by the log when
    built on old state, so nothing goes wrong. (Replicas that write themselves: with the
    write lead, only it writes and nobody takes turns.)"""
    from maestro.store.postgres import TURN_CLASS, _signed32
    from maestro.turns import WAIT_MS

    servers = replicas(make_server, database, 2, MAESTRO_FORWARD_WRITES="0")
    apis = [client(s) for s in servers]
    try:
        ids = _board(apis[0], 100)
        with psycopg.connect(database, autocommit=True) as holder:
            schema = holder.execute("SELECT current_schema()").fetchone()[0]
            key = (_signed32(TURN_CLASS), _signed32(zlib.crc32(schema.encode())))
            assert holder.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0]
            started = time.monotonic()
            answers = asyncio.run(_flat_out(servers, ids, 600))
            took = time.monotonic() - started
        assert [a.status_code for a in answers] == [200] * 600
        health = [ok(api.get("/health"))["replication"] for api in apis]
        assert sum(h["turnTimeouts"] for h in health) >= 1
        assert sum(h["turns"] for h in health) == 0
        # One wait per server at most (a server that timed out writes without turns for
        # REFRAIN_SECONDS), not one per refused change.
        assert took < 2 * WAIT_MS / 1000 + 20, took
        assert_converged(servers, database)
    finally:
        for api in apis:
            api.close()


def test_db_status_lists_the_servers_of_the_database_and_the_log_head(make_server, database):
    servers = replicas(make_server, database, 2, MAESTRO_REPLICA_HEARTBEAT_SECONDS="1",
                       MAESTRO_REPLICA_TIMEOUT_SECONDS="3")
    ids = []
    for srv in servers:
        with client(srv) as api:
            ids.append(ok(api.get("/health"))["replica"]["id"])
    with client(servers[0]) as api:
        ok(api.post("/api/projects", json={"name": "Status"}), 201)
    shown = run_db(database, "status", "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["logHead"] >= 1
    assert sorted(r["id"] for r in status["replicas"]) == sorted(ids)
    assert all(r["state"] == "live" and r["url"].startswith("http://127.0.0.1:")
               for r in status["replicas"])
    text = run_db(database, "status").stdout
    assert "shared log:" in text and all(i in text for i in ids)
    # The first server started leads the writes; the secret replicas prove they know is never
    # shown.
    lead = status["writeLead"]
    assert (lead["id"], lead["held"]) == (ids[0], True)
    assert lead["address"].startswith("127.0.0.1:") and "secret" not in lead
    assert f"write lead: {ids[0]} at {lead['address']}" in text
    with psycopg.connect(database) as conn:
        secret = conn.execute("SELECT secret FROM maestro_write_lead").fetchone()[0]
    assert secret not in shown.stdout and secret not in text
    # A timeout that is not a number of seconds is refused with its name, nothing shown.
    bad = subprocess.run([sys.executable, "-m", "maestro", "db", "status"], check=False,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "DATABASE_URL": database,
                              "MAESTRO_REPLICA_TIMEOUT_SECONDS": "soon"})
    assert bad.returncode == 2 and bad.stdout == ""
    assert "MAESTRO_REPLICA_TIMEOUT_SECONDS must be a number of seconds" in bad.stderr

    # A server killed stops beating: it is shown silent, then taken over by the other.
    servers[1].kill()
    def gone() -> dict:
        shown = json.loads(run_db(database, "status", "--json").stdout)
        return next(r for r in shown["replicas"] if r["id"] == ids[1])
    wait_until(lambda: gone()["state"] != "live", timeout=20, what="the killed server silent")
    wait_until(lambda: gone()["takenOverBy"] == ids[0], timeout=20,
               what="the killed server taken over")
    assert gone()["state"] == "taken over"
    assert f"taken over by {ids[0]}" in run_db(database, "status").stdout
    # The lead killed: its lock is free, nobody leads until a server takes it.
    servers[0].kill()
    wait_until(lambda: json.loads(run_db(database, "status", "--json").stdout)
               ["writeLead"]["held"] is False, what="the lead's lock free")
    assert f"write lead: none now (the last was {ids[0]}" in run_db(database, "status").stdout


# ---------------------------------------------------------------------- claims
async def _race(servers: list, project_id: str, sessions: list[str]) -> list[dict]:
    clients = await _async_clients(servers, 60)
    try:
        answers = await asyncio.gather(*[
            clients[i % 3].post(f"/api/projects/{project_id}/claim-next",
                                json={"sessionId": sid}) for i, sid in enumerate(sessions)])
    finally:
        for c in clients:
            await c.aclose()
    assert all(a.status_code == 200 for a in answers), \
        [a.text for a in answers if a.status_code != 200][:3]
    return [a.json() for a in answers]


def test_sixty_racers_on_three_replicas_claim_each_ready_task_exactly_once(
        make_server, database):
    servers = replicas(make_server, database, 3)
    with client(servers[0]) as api:
        project = ok(api.post("/api/projects", json={"name": "Race"}), 201)
        ready = [ok(api.post("/api/tasks", json={"projectId": project["id"],
                                                 "title": f"ready {i}"}), 201)["id"]
                 for i in range(20)]
        sessions = [ok(api.post("/api/sessions", json={"projectId": project["id"],
                                                        "taskIds": []}), 201)["id"]
                    for _ in range(60)]
    assert_converged(servers, database)
    answers = asyncio.run(_race(servers, project["id"], sessions))
    winners = [a["task"]["id"] for a in answers if a["task"] is not None]
    assert not [t for t, n in Counter(winners).items() if n > 1], "a task granted twice"
    assert sorted(winners) == sorted(ready)
    assert_converged(servers, database)
    with client(servers[2]) as api:
        for a in answers:
            if a["task"] is not None:
                held = ok(api.get(f"/api/tasks/{a['task']['id']}"))
                assert held["claim"]["sessionId"] == a["claim"]["sessionId"]
                assert held["status"] == "in_progress"


# ---------------------------------------------------------------------- the LISTEN connection
def terminate_listener(url: str, srv) -> None:
    name = f"maestro log listener pid {srv.proc.pid}"

    def kill() -> bool:
        with psycopg.connect(url, autocommit=True) as admin:
            rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name = %s", (name,)).fetchall()
        return rows == [(True,)]

    wait_until(kill, what="the listener connection to exist")


def test_a_terminated_listener_reconnects_and_nothing_is_missing(make_server, database):
    writer, follower = replicas(make_server, database, 2)
    stream = Stream(follower.ws_url)
    try:
        with client(writer) as api, client(follower) as reader:
            project = ok(api.post("/api/projects", json={"name": "Listen"}), 201)
            for i in range(60):
                if i in (5, 30):
                    terminate_listener(database, follower)
                ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"T{i}"}),
                   201)
            head = event_head(database)
            assert_same_stream([stream], head)
            wait_until(lambda: ok(reader.get("/health"))["replication"]["listener"]
                       == "listening", what="the listener to be back")
        assert_converged([writer, follower], database)
        assert "log listener lost its connection" in follower.log()
    finally:
        stream.close()


# ---------------------------------------------------------------------- ?since=
def test_a_websocket_client_moving_to_another_replica_with_since_misses_nothing(
        make_server, database):
    first, second, writer = replicas(make_server, database, 3, MAESTRO_WS_REPLAY="50")
    stream = Stream(first.ws_url)
    with client(writer) as api:
        project = ok(api.post("/api/projects", json={"name": "Since"}), 201)
        tasks = [ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"T{i}"}),
                    201) for i in range(10)]
        stream.wait_for(event_head(database))
        last = stream.last_seq()
        stream.close()
        for i, task in enumerate(tasks):  # while the client is away
            ok(api.patch(f"/api/tasks/{task['id']}", json={"title": f"edit {i}"}))
        moved = Stream(second.ws_url + f"?since={last}")
        try:
            for i in range(5):  # and after it is back
                ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"U{i}"}),
                   201)
            head = event_head(database)
            assert_same_stream([moved], head, first=last + 1)
            assert [m["data"]["title"] for m in moved.events()[:10]] == \
                [f"edit {i}" for i in range(10)]
        finally:
            moved.close()
        # Older than what a replica keeps (50 events here): told to resync, then live events.
        for i in range(50):
            ok(api.patch(f"/api/tasks/{tasks[0]['id']}", json={"title": f"again {i}"}))
        head = event_head(database)
        with client(second) as other:
            wait_until(lambda: ok(other.get("/health"))["replication"]["eventSeq"] == head,
                       what="the other replica to apply every change")
        stale = Stream(second.ws_url + f"?since={last}")
        try:
            wait_until(lambda: stale.messages(), what="a first message")
            first_message = stale.messages()[0]
            assert first_message["type"] == "resync"
            assert first_message["data"] == {"since": last, "seq": event_head(database)}
            ok(api.patch(f"/api/tasks/{tasks[0]['id']}", json={"title": "live"}))
            stale.wait_for(event_head(database))
            assert [m["data"]["title"] for m in stale.events()] == ["live"]
        finally:
            stale.close()


def test_a_replica_that_has_just_started_replays_what_the_log_can_rebuild(
        make_server, database):
    """A server started after the events were published rebuilds them from the log: a client
    coming back with `?since=` gets exactly what it missed, as the writer published it, back
    to the newest event about an entity that a later change changed again (older: resync)."""
    writer = make_server(env=pg_env(database))
    live = Stream(writer.ws_url)
    try:
        with client(writer) as api:
            project = ok(api.post("/api/projects", json={"name": "Restart"}), 201)
            edited = ok(api.post("/api/tasks", json={"projectId": project["id"],
                                                     "title": "edited"}), 201)
            tasks = [ok(api.post("/api/tasks", json={"projectId": project["id"],
                                                     "title": f"T{i}"}), 201) for i in range(4)]
            # The events so far name entities that change again below: not rebuilt.
            boundary = event_head(database)
            ok(api.post("/api/sessions", json={"projectId": project["id"],
                                               "taskIds": [t["id"] for t in tasks]}), 201)
            ok(api.patch(f"/api/tasks/{edited['id']}", json={"title": "edited again"}))
            for i in range(3):
                ok(api.post("/api/tasks", json={"projectId": project["id"],
                                                "title": f"U{i}"}), 201)
        head = event_head(database)
        live.wait_for(head)
        published = {m["seq"]: m for m in live.events()}
    finally:
        live.close()
    assert writer.stop() == 0
    started = make_server(env=pg_env(database))  # a replica that was not running then

    def replayed(since: int) -> list[dict]:
        stream = Stream(started.ws_url + f"?since={since}")
        try:
            if since < head:
                wait_until(lambda: stream.messages(), what="a first message")
                if stream.messages()[0]["type"] != "resync":
                    stream.wait_for(head)
            time.sleep(0.2)
            return stream.messages()
        finally:
            stream.close()

    def without_time(message: dict) -> dict:
        return {k: v for k, v in message.items() if k != "timestamp"}

    assert head - boundary == 13  # 9 for the session and its 4 links, 1 patch, 3 tasks
    for since in (boundary, boundary + 3, head - 1):
        got = replayed(since)
        assert [m["seq"] for m in got] == list(range(since + 1, head + 1))
        assert [without_time(m) for m in got] == \
            [without_time(published[n]) for n in range(since + 1, head + 1)]
    assert replayed(head) == []
    older = replayed(boundary - 1)
    assert [m["type"] for m in older] == ["resync"]
    assert older[0]["data"] == {"since": boundary - 1, "seq": head}


# ---------------------------------------------------------------------- kill -9 under load
async def _load(servers: list, project_id: str, victim, stop_after: float) -> list[str]:
    """Task creates on every replica until `stop_after` seconds; `victim` is killed with
    SIGKILL a third of the way. Returns the ids of the creates that were acknowledged."""
    clients = await _async_clients(servers, 10)
    acknowledged: list[str] = []
    deadline = time.monotonic() + stop_after
    loop = asyncio.get_running_loop()

    async def worker(c: httpx.AsyncClient, n: int) -> None:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                r = await c.post("/api/tasks", json={"projectId": project_id,
                                                     "title": f"w{n}-{i}"})
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
                continue
            if r.status_code == 201:
                acknowledged.append(r.json()["id"])

    async def killer() -> None:
        await asyncio.sleep(stop_after / 3)
        await loop.run_in_executor(None, victim.kill)

    try:
        await asyncio.gather(killer(), *[worker(clients[n % len(servers)], n)
                                         for n in range(3 * len(servers))])
    finally:
        for c in clients:
            await c.aclose()
    return acknowledged


def test_a_replica_killed_under_load_loses_nothing_acknowledged(make_server, database):
    servers = replicas(make_server, database, 3)
    streams = [Stream(s.ws_url) for s in servers]
    try:
        with client(servers[0]) as api:
            project = ok(api.post("/api/projects", json={"name": "Kill"}), 201)
        acknowledged = asyncio.run(_load(servers, project["id"], servers[2], 3.0))
        assert servers[2].proc.poll() is not None
        assert len(acknowledged) > 100
        # The killed replica's WebSocket client moves to another one with what it last got.
        orphan = streams.pop()
        last = orphan.last_seq()
        assert orphan.seqs() == list(range(1, last + 1))
        orphan.close()
        streams.append(Stream(servers[1].ws_url + f"?since={last}"))
        head = event_head(database)
        assert_same_stream(streams[:2], head)
        assert_same_stream(streams[2:], head, first=last + 1)
        assert_converged(servers[:2], database)
        with client(servers[1]) as api:
            held = {t["id"] for t in ok(api.get("/api/tasks",
                                                params={"projectId": project["id"]}))}
        assert set(acknowledged) <= held
        assert set(acknowledged) <= set(stored(database)["task"])
        # The killed replica may have held the turn lock (replicas writing at once take turns,
        # see turns.py); the database gave it back with its connection, so nobody waited for
        # it until WAIT_MS ran out.
        for srv in servers[:2]:
            with client(srv) as api:
                assert ok(api.get("/health"))["replication"]["turnTimeouts"] == 0
    finally:
        for stream in streams:
            stream.close()


# ---------------------------------------------------------------------- retention
def test_the_log_keeps_the_records_of_its_retention_only(database):
    store = PostgresStore(database)
    store.open()
    try:
        store.log_retention = 3
        for i in range(10):
            value = {"id": f"proj_{i}", "name": f"P{i}"}
            store.commit_now([[Op("project", value["id"], value, jsonio.dumps(value))]])
        store.maintenance()
        with psycopg.connect(database) as conn:
            assert [r[0] for r in conn.execute("SELECT seq FROM maestro_log ORDER BY seq")] \
                == [8, 9, 10]
            assert conn.execute("SELECT value FROM maestro_meta WHERE name = 'log_seq'"
                                ).fetchone()[0] == 10
    finally:
        store.close()


def test_a_replica_that_missed_trimmed_records_says_it_needs_a_restart(make_server, database):
    # (The writer starts first: it leads the writes, the lagging one forwards to it.)
    writer, behind = replicas(make_server, database, 2)
    with client(writer) as api, client(behind) as lagging:
        project = ok(api.post("/api/projects", json={"name": "Gap"}), 201)
        wait_until(lambda: lagging.get(f"/api/projects/{project['id']}").status_code == 200)
        os.kill(behind.proc.pid, signal.SIGSTOP)
        try:
            for i in range(5):
                ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"T{i}"}),
                   201)
            with psycopg.connect(database, autocommit=True) as admin:  # as a trim would
                admin.execute("DELETE FROM maestro_log WHERE seq < (SELECT max(seq) - 1 "
                              "FROM maestro_log)")
        finally:
            os.kill(behind.proc.pid, signal.SIGCONT)
        health = wait_until(lambda: (lambda h: h if h["storage"]["restartNeeded"] else None)(
            ok(lagging.get("/health"))), what="the lagging replica to notice the gap")
        assert "no longer holds records" in health["replication"]["gap"]
        refused = lagging.post("/api/tasks", json={"projectId": project["id"], "title": "x"})
        assert refused.status_code == 500
        assert "restart this server" in refused.json()["message"]
        assert ok(api.get("/health"))["storage"]["restartNeeded"] is False
        # It no longer forwards: what it forwarded could not be applied here.
        assert ok(lagging.get("/health"))["writeLead"]["role"] == "writing"


# ---------------------------------------------------------------------- inline lists moved
def test_a_list_one_replica_moves_out_of_the_entity_row_is_appended_to_right_by_another(
        make_server, database):
    """A task row holding its whole timeline (written back by another program) is loaded by
    two replicas; the first append, on A, moves the list to its rows. B (whose writer process
    holds the link rows, the server only which lists are inline) must learn that from A's
    record: its own append then adds one row (the two before it are not written again), and
    the stored document is what both serve."""

    def timeline_rows() -> dict[int, str]:
        with psycopg.connect(database) as conn:
            return dict(conn.execute("SELECT idx, xmin::text FROM maestro_task_timeline "
                                     "WHERE task_id = %s", (task,)).fetchall())

    _, task = task_with_inline_timeline(make_server, database)
    a, b = replicas(make_server, database, 2)
    with client(a) as api_a, client(b) as api_b:
        ok(api_a.post(f"/api/tasks/{task}/timeline", json={"message": "on A"}))
        wait_until(lambda: len(ok(api_b.get(f"/api/tasks/{task}"))["timeline"]) == 2,
                   what="B to apply A's append")
        moved = timeline_rows()
        assert sorted(moved) == [0, 1]
        ok(api_b.post(f"/api/tasks/{task}/timeline", json={"message": "on B"}))
        wait_until(lambda: len(ok(api_a.get(f"/api/tasks/{task}"))["timeline"]) == 3,
                   what="A to apply B's append")
        timelines = [ok(api.get(f"/api/tasks/{task}"))["timeline"] for api in (api_a, api_b)]
    assert timelines[0] == timelines[1]
    assert [e.get("message") for e in timelines[0][1:]] == ["on A", "on B"]
    after = timeline_rows()
    assert sorted(after) == [0, 1, 2]
    assert {idx: after[idx] for idx in moved} == moved  # only the new entry was written
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT data::text FROM maestro_tasks WHERE id = %s",
                           (task,)).fetchone()[0]
    assert json.loads(row)["timeline"] == []
    assert_converged([a, b], database)
