"""What the servers of one PostgreSQL database share beside the entities and the log: agents'
token digests (a token minted by one server works on every other at once; an ended session's
token works on none), each server's heartbeat on the database's clock, the takeover of a server
that is gone (its agents' sessions marked failed, exactly once however many servers notice),
and leases on the shared clock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time

import httpx
import psycopg
import pytest
from helpers import wait_until
from test_agent_identity import USER_TOKEN, Events, spawned_agent
from test_launcher import agent_cmd, reap_agents
from test_postgres_server import database, pg_env  # noqa: F401 - the PostgreSQL fixture

from websockets.sync.client import connect

from maestro.config import Settings
from maestro.events import EventBus
from maestro.identity import TokenRegistry
from maestro.ids import now_ms
from maestro.replicas import Replica
from maestro.server.security import Security
from maestro.service import Service
from maestro.spawn.processes import pid_alive
from maestro.state import State
from maestro.store.memory import MemoryStore
from maestro.store.pg_side import SideConnection
from maestro.store.postgres import PostgresStore
from maestro.token_stores import FileTokenStore, PostgresTokenStore

FAST = {"MAESTRO_REPLICA_HEARTBEAT_SECONDS": "0.2", "MAESTRO_REPLICA_TIMEOUT_SECONDS": "1"}


@pytest.fixture
def migrated(database) -> str:
    """The database's schema brought to the latest layout (as a server's start would)."""
    PostgresStore(database).run_migrations()
    return database


def schema_of(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT current_schema()").fetchone()[0]


def user_client(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, timeout=10, trust_env=False,
                        headers={"Authorization": f"Bearer {USER_TOKEN}"})


def spawned_session(sid: str, project_id: str = "proj_1", **metadata) -> dict:
    return {"id": sid, "projectId": project_id, "status": "running", "startedAt": 1000,
            "metadata": {"spawnSource": "ui", "role": "worker", **metadata}}


def registry(url: str, sessions: State) -> TokenRegistry:
    """A token registry on the database, as another server's would be."""
    tokens = TokenRegistry("/nonexistent", sessions.sessions)
    tokens.use(PostgresTokenStore(SideConnection(url, schema_of(url), "tokens")))
    return tokens


# ------------------------------------------------------------------ tokens
def test_a_token_minted_by_one_server_is_accepted_by_another_at_once(migrated):
    one, other = State(), State()
    for state in (one, other):
        state.sessions.put(spawned_session("sess_a"))
    minting, checking = registry(migrated, one), registry(migrated, other)
    token = minting.mint(spawned_session("sess_a"))
    with psycopg.connect(migrated) as conn:
        rows = conn.execute("SELECT session_id, digest FROM maestro_session_tokens").fetchall()
    assert rows == [("sess_a", hashlib.sha256(token.encode()).hexdigest())]
    identity = checking.identify(token.encode())
    assert identity is not None and identity.session_id == "sess_a"
    assert checking.identify((token[:-1] + ("0" if token[-1] != "0" else "1")).encode()) is None
    # Launched again by the first server: the new token works on the other at once, although
    # the other holds the earlier digest in its cache.
    again = minting.mint(spawned_session("sess_a"))
    assert checking.identify(again.encode()) is not None


def test_an_ended_session_s_token_is_refused_everywhere_and_its_digest_removed(migrated):
    one, other = State(), State()
    for state in (one, other):
        state.sessions.put(spawned_session("sess_b"))
    minting, checking = registry(migrated, one), registry(migrated, other)
    token = minting.mint(spawned_session("sess_b"))
    assert checking.identify(token.encode()) is not None
    ended = dict(spawned_session("sess_b"), status="failed", tokenRevokedAt=1)
    for state in (one, other):  # the end reaches both servers' memory
        state.sessions.put(ended)
    minting.on_commit([("session", "sess_b", ended)])
    assert checking.identify(token.encode()) is None
    assert minting.identify(token.encode()) is None
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM maestro_session_tokens").fetchone()[0] == 0


def test_a_digest_never_stands_for_a_session_created_again_under_its_id(migrated):
    state = State()
    state.sessions.put(spawned_session("sess_c"))
    tokens = registry(migrated, state)
    token = tokens.mint(spawned_session("sess_c"))
    assert tokens.identify(token.encode()) is not None
    # Deleted (its digest left behind, as by a crash) and created again under the same id.
    state.sessions.put(dict(spawned_session("sess_c"), startedAt=2000))
    assert tokens.identify(token.encode()) is None
    assert registry(migrated, state).identify(token.encode()) is None


def test_the_start_up_sweep_keeps_a_fresh_digest_of_a_session_not_yet_known(migrated):
    one, other = State(), State()
    one.sessions.put(spawned_session("sess_new"))
    one.sessions.put(spawned_session("sess_old"))
    minting = registry(migrated, one)
    minting.mint(spawned_session("sess_new"))
    minting.mint(spawned_session("sess_old"))
    other.sessions.put(dict(spawned_session("sess_old"), status="completed"))
    # The other server knows sess_old as ended, and sess_new not yet (another server is about
    # to create it): only the digest of the ended session goes.
    assert registry(migrated, other).sweep() == 1
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT session_id FROM maestro_session_tokens").fetchall() == \
            [("sess_new",)]


def test_a_spawned_agent_s_token_lives_in_the_database_not_in_session_dir(make_server,
                                                                         database):
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui",
                           **pg_env(database)})
    with user_client(srv) as user:
        project = user.post("/api/projects", json={"name": "p"}).json()
        task = user.post("/api/tasks", json={"projectId": project["id"], "title": "t"}).json()
        sid, token = spawned_agent(srv, user, project["id"], task["id"])
        assert not (srv.session_dir / sid / "token.sha256").exists()
        # Another server of the database accepts the token (its memory holds the session).
        state = State()
        state.sessions.put(user.get(f"/api/sessions/{sid}").json())
        assert registry(database, state).identify(token.encode()).session_id == sid
        agent = {"Authorization": f"Bearer {token}"}
        assert user.get("/api/tasks", headers=agent).status_code == 200
        assert user.patch(f"/api/sessions/{sid}", json={"status": "completed"}
                          ).status_code == 200
        assert user.get("/api/tasks", headers=agent).status_code == 401
        with psycopg.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM maestro_session_tokens "
                                "WHERE session_id = %s", (sid,)).fetchone()[0] == 0


def test_two_replicas_accept_an_agent_s_token_at_once_and_refuse_it_once_ended(make_server,
                                                                              database):
    env = {"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui", **pg_env(database)}
    a = make_server(env={"MAESTRO_REPLICA_ID": "replica-a", **env})
    b = make_server(env={"MAESTRO_REPLICA_ID": "replica-b", **env})
    with user_client(a) as on_a, user_client(b) as on_b:
        project = on_a.post("/api/projects", json={"name": "p"}).json()
        task = on_a.post("/api/tasks", json={"projectId": project["id"], "title": "t"}).json()
        for _ in range(3):
            sid, token = spawned_agent(a, on_a, project["id"], task["id"])
            agent = {"Authorization": f"Bearer {token}"}
            # The first request on the other replica, as soon as the agent has its token.
            mine = on_b.get(f"/api/sessions/{sid}", headers=agent)
            assert mine.status_code == 200, mine.text
            with connect(b.ws_url + f"?token={token}", open_timeout=5):
                pass
            assert on_a.patch(f"/api/sessions/{sid}", json={"status": "completed"}
                              ).status_code == 200
            wait_until(lambda: on_b.get("/api/tasks", headers=agent).status_code == 401,
                       timeout=5)
            assert on_a.get("/api/tasks", headers=agent).status_code == 401
            with pytest.raises(Exception):
                connect(b.ws_url + f"?token={token}", open_timeout=5).close()
        # Forged tokens of sessions no replica knows are refused.
        forged = {"Authorization": "Bearer mst.sess_0_nobody." + "0" * 64}
        assert on_b.get("/api/tasks", headers=forged).status_code == 401


def test_a_token_of_a_session_not_yet_applied_here_waits_for_the_log(migrated):
    """The agent's first request may reach a replica before that replica has applied the
    session's creation from the log: the replica catches up before it refuses."""
    here, there = State(), State()
    there.sessions.put(spawned_session("sess_d"))
    token = registry(migrated, there).mint(spawned_session("sess_d"))
    tokens = registry(migrated, here)
    caught_up = []

    async def catch_up() -> None:  # what applying the log does to this replica's memory
        caught_up.append(True)
        here.sessions.put(spawned_session("sess_d"))

    async def inner(scope, receive, send):
        identity = scope["state"]["identity"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": identity.session_id.encode()})

    secured = Security(inner, Settings(token="user-token-" + "x" * 32),
                       token_checker=tokens.identify)
    secured.awaits_session, secured.catch_up = tokens.awaits_session, catch_up

    async def ask(presented: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=secured)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.get("/api/tasks", headers={"Authorization": f"Bearer {presented}"})

    answer = asyncio.run(ask(token))
    assert answer.status_code == 200 and answer.text == "sess_d" and caught_up == [True]
    forged = "mst.sess_e." + "0" * 64  # no replica knows it: refused after one catch-up
    assert asyncio.run(ask(forged)).status_code == 401 and len(caught_up) == 2
    wrong = token[:-1] + ("0" if token[-1] != "0" else "1")  # a known session: no catch-up
    assert asyncio.run(ask(wrong)).status_code == 401 and len(caught_up) == 2


# ------------------------------------------------------------------ heartbeat and takeover
def replica_row(url: str, replica_id: str) -> dict | None:
    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT *, now() AS db_now FROM maestro_replicas "
                           "WHERE replica_id = %s", (replica_id,))
        row = cur.fetchone()
        return dict(zip([c.name for c in cur.description], row)) if row else None


def test_a_server_beats_on_the_database_clock_and_says_so_on_health(make_server, database):
    srv = make_server(env={"MAESTRO_REPLICA_ID": "replica-one", **FAST, **pg_env(database)})
    health = httpx.get(srv.url + "/health", timeout=5).json()
    assert health["replica"]["id"] == "replica-one"
    assert health["replica"]["heartbeatError"] is None
    assert health["replica"]["heartbeatAgeSeconds"] < 5
    assert abs(health["replica"]["clockOffsetMs"]) < 1000  # one machine, one clock
    assert {"lag", "listener"} <= set(health["replica"])
    first = replica_row(database, "replica-one")
    assert first["url"] == srv.url  # MAESTRO_REPLICA_URL's default: http://<HOST>:<PORT>
    assert first["pid"] == srv.proc.pid and first["taken_over_by"] is None
    wait_until(lambda: replica_row(database, "replica-one")["heartbeat_at"]
               > first["heartbeat_at"], timeout=5)
    row = replica_row(database, "replica-one")
    assert (row["db_now"] - row["heartbeat_at"]).total_seconds() < 5


def test_the_sessions_of_a_gone_server_s_agents_are_marked_failed(make_server, database):
    srv = make_server(env={"MAESTRO_REPLICA_ID": "survivor", **FAST, **pg_env(database)})
    api = httpx.Client(base_url=srv.url, timeout=10, trust_env=False)
    listener = Events(srv.ws_url)
    try:
        project = api.post("/api/projects", json={"name": "p"}).json()
        task = api.post("/api/tasks", json={"projectId": project["id"], "title": "t"}).json()

        def session(sid: str, replica: str, launched_by: str = "local") -> None:
            body = {"id": sid, "projectId": project["id"], "taskIds": [task["id"]],
                    "status": "running", "metadata": {"spawnSource": "ui", "role": "worker",
                                                      "launchedBy": launched_by,
                                                      "replica": replica}}
            assert api.post("/api/sessions", json=body).status_code == 201

        session("sess_lost", "gone-one")
        session("sess_ui", "gone-one", launched_by="ui")  # no agent of that server's
        session("sess_alive", "survivor")
        claim = api.post(f"/api/tasks/{task['id']}/claim", json={"sessionId": "sess_lost"})
        assert claim.status_code == 200, claim.text
        with psycopg.connect(database) as conn:
            conn.execute("INSERT INTO maestro_replicas (replica_id, heartbeat_at) "
                         "VALUES ('gone-one', now() - interval '1 minute')")
        wait_until(lambda: api.get("/api/sessions/sess_lost").json()["status"] == "failed",
                   timeout=10)
        lost = api.get("/api/sessions/sess_lost").json()
        assert lost["metadata"]["endReason"] == "replica_lost"
        assert "gone-one" in lost["metadata"]["endMessage"]
        assert lost["tokenRevokedAt"]
        assert lost["events"][-1]["type"] == "replica_lost"
        assert lost["events"][-1]["data"] == {"replica": "gone-one", "takenOverBy": "survivor"}
        assert api.get("/api/sessions/sess_ui").json()["status"] == "running"
        assert api.get("/api/sessions/sess_alive").json()["status"] == "running"
        # Its claim went with it, and every client heard.
        assert api.get(f"/api/tasks/{task['id']}").json()["status"] == "pending"
        listener.until(lambda e: e["type"] == "session:updated"
                       and e["data"]["id"] == "sess_lost" and e["data"]["status"] == "failed")
        row = replica_row(database, "gone-one")
        assert row["taken_over_by"] == "survivor" and row["takeover_done_at"] is not None
        # Taken over once: later heartbeats of the survivor leave it alone.
        time.sleep(0.6)
        assert replica_row(database, "gone-one")["taken_over_at"] == row["taken_over_at"]
        assert [e["type"] for e in api.get("/api/sessions/sess_lost").json()["events"]
                ].count("replica_lost") == 1
    finally:
        listener.close()
        api.close()


class _Clock:
    clock_offset_ms = 0


def test_of_many_servers_noticing_a_gone_one_exactly_one_takes_it_over(migrated):
    schema = schema_of(migrated)
    with psycopg.connect(migrated) as conn:
        conn.execute("INSERT INTO maestro_replicas (replica_id, heartbeat_at) "
                     "VALUES ('gone', now() - interval '1 minute'), ('fresh', now())")
    racers = [Replica(_Clock(), SideConnection(migrated, schema, "replica"), f"r{i}", "", 1, 5)
              for i in range(8)]
    start = threading.Barrier(len(racers))
    won: dict[str, list[str]] = {}

    def race(replica: Replica) -> None:
        start.wait()
        won[replica.id] = replica._claim_takeovers()

    threads = [threading.Thread(target=race, args=(r,)) for r in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    winners = [rid for rid, gone in won.items() if gone]
    assert len(won) == len(racers) and len(winners) == 1
    assert won[winners[0]] == ["gone"]  # never the live one
    # A server coming back under its id clears the mark with its first heartbeat.
    back = Replica(_Clock(), SideConnection(migrated, schema, "replica"), "gone", "", 1, 5)
    back._beat()
    row = replica_row(migrated, "gone")
    assert row["taken_over_by"] is None
    assert (row["db_now"] - row["heartbeat_at"]).total_seconds() < 5
    for replica in racers + [back]:
        replica.db.close()


def test_kill_9_of_a_replica_fails_its_agents_sessions_on_the_other(make_server, database):
    """Two real replicas; one is killed while its agent runs: the other marks the agent's
    session failed; the killed one, started again, stops the agent it finds so ended."""
    shared = {**FAST, **pg_env(database), "MAESTRO_TMUX": "0",
              "MAESTRO_AGENT_COMMAND": agent_cmd("sleepy_agent.py", "120")}
    a = make_server(env={"MAESTRO_REPLICA_ID": "replica-a", **shared})
    b = make_server(env={"MAESTRO_REPLICA_ID": "replica-b", **shared})
    try:
        with httpx.Client(base_url=a.url, timeout=10, trust_env=False) as api:
            project = api.post("/api/projects", json={"name": "p"}).json()
            task = api.post("/api/tasks", json={"projectId": project["id"],
                                                "title": "t"}).json()
            spawned = api.post("/api/sessions/spawn", json={"projectId": project["id"],
                                                            "taskIds": [task["id"]]})
            assert spawned.status_code == 201, spawned.text
            sid = spawned.json()["sessionId"]
            wait_until(lambda: api.get(f"/api/sessions/{sid}").json()["status"] == "running")
        other = httpx.Client(base_url=b.url, timeout=10, trust_env=False)
        session = wait_until(lambda: other.get(f"/api/sessions/{sid}").json())
        assert session["metadata"]["replica"] == "replica-a"
        a.kill()
        wait_until(lambda: other.get(f"/api/sessions/{sid}").json()["status"] == "failed",
                   timeout=10)
        ended = other.get(f"/api/sessions/{sid}").json()
        assert ended["metadata"]["endReason"] == "replica_lost"
        assert ended["events"][-1]["data"] == {"replica": "replica-a",
                                               "takenOverBy": "replica-b"}
        info = json.loads((a.session_dir / sid / "process.json").read_text())
        assert pid_alive(info["agentPid"], info["agentStart"])  # the agent outlived its server
        a.start()
        wait_until(lambda: not pid_alive(info["agentPid"], info["agentStart"]), timeout=15)
        assert replica_row(database, "replica-a")["taken_over_by"] is None
        other.close()
    finally:
        reap_agents(a)


# ------------------------------------------------------------------ leases
def test_leases_are_granted_checked_and_expired_on_the_shared_clock():
    """A replica whose clock runs a minute behind the database's (offset +60 s) grants and
    expires leases on the database's time."""
    async def main():
        service = Service(MemoryStore(), EventBus())
        await service.start()
        try:
            project = await service.create_project({"name": "P"})
            task = await service.create_task({"projectId": project["id"], "title": "T"})
            session = await service.create_session({"projectId": project["id"],
                                                    "taskIds": []})
            service.clock_offset_ms = 60_000
            before = now_ms()
            claim = (await service.claim_task(task["id"], {"sessionId": session["id"],
                                                           "ttlSeconds": 30}))["claim"]
            assert before + 60_000 <= claim["claimedAt"] <= now_ms() + 60_000
            assert claim["leaseExpiresAt"] == claim["claimedAt"] + 30_000
            assert await service.sweep_expired_claims() == 0
            # By this machine's own clock the lease has 30 s left; by the shared one, none.
            service.clock_offset_ms = 90_001
            assert await service.sweep_expired_claims() == 1
            assert service.get_task(task["id"])["status"] == "pending"
        finally:
            await service.stop()

    asyncio.run(main())


def test_two_replicas_sweeping_one_expired_lease_expire_it_once(make_server, database):
    env = {**pg_env(database), "MAESTRO_CLAIM_MIN_TTL": "1",
           "MAESTRO_CLAIM_SWEEP_SECONDS": "0.05"}
    a = make_server(env={"MAESTRO_REPLICA_ID": "replica-a", **env})
    b = make_server(env={"MAESTRO_REPLICA_ID": "replica-b", **env})
    streams = [Events(a.ws_url), Events(b.ws_url)]
    try:
        with httpx.Client(base_url=a.url, timeout=10, trust_env=False) as api:
            project = api.post("/api/projects", json={"name": "p"}).json()
            tasks = [api.post("/api/tasks", json={"projectId": project["id"],
                                                  "title": f"t{i}"}).json() for i in range(5)]
            session = api.post("/api/sessions", json={"projectId": project["id"],
                                                      "taskIds": []}).json()
            for task in tasks:
                got = api.post(f"/api/tasks/{task['id']}/claim",
                               json={"sessionId": session["id"], "ttlSeconds": 1})
                assert got.status_code == 200, got.text
        with httpx.Client(base_url=b.url, timeout=10, trust_env=False) as other:
            for task in tasks:
                wait_until(lambda t=task: other.get(f"/api/tasks/{t['id']}").json()["status"]
                           == "pending", timeout=10)
                timeline = other.get(f"/api/tasks/{task['id']}").json()["timeline"]
                assert [e.get("message") for e in timeline].count(
                    f"Claim of session {session['id']} expired") == 1
        for stream in streams:
            expired = [e for e in stream.drain(1.0) if e["type"] == "task:claim_expired"]
            assert sorted(e["data"]["taskId"] for e in expired) == \
                sorted(t["id"] for t in tasks)
    finally:
        for stream in streams:
            stream.close()


def test_replicas_sharing_a_session_dir_follow_only_their_own_agents(make_server, database,
                                                                     tmp_path):
    """Two replicas on one machine with one SESSION_DIR: a replica restarting while the other's
    agent runs leaves that agent to the replica that started it (one exit recorded)."""
    shared = {**FAST, **pg_env(database), "MAESTRO_TMUX": "0",
              "MAESTRO_AGENT_COMMAND": agent_cmd("sleepy_agent.py", "3")}
    a = make_server(env={"MAESTRO_REPLICA_ID": "replica-a", **shared}, tmp=tmp_path / "one")
    b = make_server(env={"MAESTRO_REPLICA_ID": "replica-b", **shared}, tmp=tmp_path / "one")
    try:
        with httpx.Client(base_url=a.url, timeout=10, trust_env=False) as api:
            project = api.post("/api/projects", json={"name": "p"}).json()
            task = api.post("/api/tasks", json={"projectId": project["id"],
                                                "title": "t"}).json()
            sid = api.post("/api/sessions/spawn", json={"projectId": project["id"],
                                                        "taskIds": [task["id"]]}
                           ).json()["sessionId"]
            wait_until(lambda: api.get(f"/api/sessions/{sid}").json()["status"] == "running")
            b.restart()  # finds the agent's records in the shared SESSION_DIR
            ended = wait_until(lambda: (s := api.get(f"/api/sessions/{sid}").json())["status"]
                               == "completed" and s, timeout=15)
            time.sleep(1.0)  # a second follower would record its exit by now
            events = api.get(f"/api/sessions/{sid}").json()["events"]
        assert [e["type"] for e in events].count("process_exit") == 1, events
        assert ended["metadata"]["replica"] == "replica-a"
    finally:
        reap_agents(a)


def test_digests_kept_in_files_by_an_earlier_server_move_to_the_database(make_server, database):
    """A server of a version that kept digests under SESSION_DIR on PostgreSQL too: once
    upgraded, the tokens of its live agents keep working, now on every replica."""
    srv = make_server(env={"MAESTRO_TOKEN": USER_TOKEN, "MAESTRO_LAUNCHER": "ui",
                           **pg_env(database)})
    with user_client(srv) as user:
        location = user.get("/health").json()["storage"]["database"]
        project = user.post("/api/projects", json={"name": "p"}).json()
        task = user.post("/api/tasks", json={"projectId": project["id"], "title": "t"}).json()
        sid, token = spawned_agent(srv, user, project["id"], task["id"])
    srv.stop()
    with psycopg.connect(database) as conn:  # as the earlier version left things
        conn.execute("DELETE FROM maestro_session_tokens")
    files = FileTokenStore(srv.session_dir)
    files.bind(location)
    files.put(sid, hashlib.sha256(token.encode()).hexdigest())
    srv.start()
    with user_client(srv) as user:
        assert user.get("/api/tasks", headers={"Authorization": f"Bearer {token}"}
                        ).status_code == 200
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT session_id FROM maestro_session_tokens").fetchall() == \
            [(sid,)]
