"""The write lead (write_lead.py): replicas forward their changes to the one replica that holds
the lead lock, which checks and writes them all; real servers, real PostgreSQL, real kills."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import time

import httpx
import psycopg
import pytest
from helpers import ok, wait_until
from maestro import jsonio
from maestro.write_lead import HUNG_SECONDS, LEAD, proof
from test_postgres_server import client, database, pg_env, stored  # noqa: F401
from test_replicas import _async_clients, _mixed_burst, assert_converged, replicas


def health(api) -> dict:
    return ok(api.get("/health"))


def lead_of(apis) -> list[str]:
    return [health(api)["writeLead"]["role"] for api in apis]


@contextlib.contextmanager
def lead_and_forwarder(make_server, database):
    """Two replicas, the first leading the writes and the second forwarding to it: (the lead,
    the other, a client of each)."""
    lead, other = replicas(make_server, database, 2)
    with client(lead) as a, client(other) as b:
        wait_until(lambda: lead_of([a, b]) == ["lead", "forwarding"], what="B to forward")
        yield lead, other, a, b


def test_changes_made_through_any_replica_are_checked_and_written_by_the_lead(make_server,
                                                                               database):
    """Three replicas: the first one started leads, the others forward. A burst of creates,
    patches, sessions and link changes spread over all three: nothing is refused because
    another replica wrote first, nobody takes turns, every change sent to B or C was run by A,
    and all three serve what the database holds."""
    servers = replicas(make_server, database, 3)
    apis = [client(s) for s in servers]
    try:
        a_id = health(apis[0])["replica"]["id"]
        wait_until(lambda: lead_of(apis) == ["lead", "forwarding", "forwarding"],
                   what="A to lead and B, C to forward to it")
        assert [health(api)["writeLead"]["lead"] for api in apis] == [a_id] * 3
        project = ok(apis[1].post("/api/projects", json={"name": "Lead"}), 201)
        asyncio.run(_mixed_burst(servers, project["id"]))
        states = [health(api) for api in apis]
        assert [h["replication"]["conflicts"] for h in states] == [0, 0, 0]
        assert [h["replication"]["turns"] for h in states] == [0, 0, 0]
        forwarded = [h["writeLead"]["forwarded"] for h in states]
        assert forwarded[0] == 0 and forwarded[1] > 100 and forwarded[2] > 100
        assert states[0]["writeLead"]["served"] == forwarded[1] + forwarded[2]
        assert all(h["writeLead"]["fallbacks"] == 0 and h["writeLead"]["lost"] == 0
                   for h in states)
        assert_converged(servers, database)
    finally:
        for api in apis:
            api.close()


def test_a_replica_reads_what_it_forwarded_at_once(make_server, database):
    """The forwarding replica answers only once it has applied the lead's record: a GET right
    after each forwarded write, on that replica, sees it."""
    with lead_and_forwarder(make_server, database) as (lead, other, a, b):
        project = ok(b.post("/api/projects", json={"name": "RYW"}), 201)
        assert ok(b.get(f"/api/projects/{project['id']}")) == project
        for i in range(60):
            task = ok(b.post("/api/tasks", json={"projectId": project["id"],
                                                 "title": f"t{i}"}), 201)
            assert ok(b.get(f"/api/tasks/{task['id']}")) == task
            changed = ok(b.patch(f"/api/tasks/{task['id']}", json={"status": "in_progress"}))
            assert ok(b.get(f"/api/tasks/{task['id']}")) == changed
            assert changed["status"] == "in_progress"
        session = ok(b.post("/api/sessions", json={"projectId": project["id"],
                                                   "taskIds": [task["id"]]}), 201)
        assert session["id"] in ok(b.get(f"/api/tasks/{task['id']}"))["sessionIds"]
        assert health(b)["writeLead"]["forwarded"] >= 122
        assert health(b)["replication"]["conflicts"] == 0


def test_a_forwarded_refusal_is_the_leads_answer(make_server, database):
    """Refusals come back as the lead gave them: the same status and error body as when the
    lead is asked directly, and nothing changes."""
    with lead_and_forwarder(make_server, database) as (lead, other, a, b):
        project = ok(a.post("/api/projects", json={"name": "No"}), 201)
        task = ok(a.post("/api/tasks", json={"projectId": project["id"], "title": "t"}), 201)
        session = ok(a.post("/api/sessions", json={"projectId": project["id"],
                                                   "taskIds": []}), 201)
        before = stored(database)
        for method, path, body in [
            ("POST", "/api/tasks", {"projectId": "proj_missing", "title": "x"}),
            ("POST", "/api/tasks", {"projectId": 5}),
            ("PATCH", f"/api/tasks/{task['id']}", {"status": "nonsense"}),
            ("PATCH", "/api/tasks/task_missing", {"title": "x"}),
            ("POST", f"/api/tasks/{task['id']}/dependencies/{task['id']}", None),
            ("DELETE", "/api/sessions/sess_missing", None),
        ]:
            on_b = b.request(method, path, json=body)
            on_a = a.request(method, path, json=body)
            assert 400 <= on_b.status_code < 500, (path, on_b.text)
            assert (on_b.status_code, on_b.json()) == (on_a.status_code, on_a.json()), path
        # A claim refused as held by someone else: 409 from either replica.
        claim = {"sessionId": session["id"], "ttlSeconds": 60}
        ok(b.post(f"/api/tasks/{task['id']}/claim", json=claim))
        other_session = ok(a.post("/api/sessions", json={"projectId": project["id"],
                                                         "taskIds": []}), 201)
        again = {"sessionId": other_session["id"], "ttlSeconds": 60}
        on_b = b.post(f"/api/tasks/{task['id']}/claim", json=again)
        on_a = a.post(f"/api/tasks/{task['id']}/claim", json=again)
        assert on_b.status_code == 409
        assert (on_b.status_code, on_b.json()["code"]) == (on_a.status_code,
                                                            on_a.json()["code"])
        after = stored(database)
        assert after["project"] == before["project"]
        assert set(after["task"]) == set(before["task"])


async def _writes_until(servers, project_id: str, stop: asyncio.Event, out: dict) -> None:
    clients = await _async_clients(servers, 10)
    try:
        async def worker(c: httpx.AsyncClient, n: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = await c.post("/api/tasks", json={"projectId": project_id,
                                                         "title": f"w{n}-{i}"})
                except httpx.HTTPError:
                    out.setdefault("unreachable", []).append(str(c.base_url).rstrip("/"))
                    await asyncio.sleep(0.05)
                    continue
                if r.status_code == 201:
                    out.setdefault("acked", []).append((time.monotonic(), str(c.base_url).rstrip("/"),
                                                        r.json()["id"]))
                else:
                    out.setdefault("refused", []).append((str(c.base_url).rstrip("/"), r.status_code,
                                                          r.json()))
        await asyncio.gather(*[worker(clients[n % len(clients)], n)
                               for n in range(3 * len(clients))])
    finally:
        for c in clients:
            await c.aclose()


def _run_writes(servers, project_id: str, during) -> dict:
    """Task creates on `servers` while `during()` runs in a thread; returns what happened."""
    out: dict = {}

    async def main() -> None:
        stop = asyncio.Event()
        load = asyncio.create_task(_writes_until(servers, project_id, stop, out))
        try:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(during)
            await asyncio.sleep(1.0)
        finally:
            stop.set()
            await load

    asyncio.run(main())
    return out


def test_the_lead_killed_under_load_is_replaced_and_nothing_acknowledged_is_lost(make_server,
                                                                                  database):
    """kill -9 of the lead while all three replicas write: another replica takes the lead
    within seconds, the survivors keep acknowledging writes, a change caught in flight is
    answered 503 (it may or may not have been made), and every acknowledged change is stored
    and served by both survivors."""
    servers = replicas(make_server, database, 3)
    apis = [client(s) for s in servers]
    try:
        wait_until(lambda: lead_of(apis)[0] == "lead", what="A to lead")
        project = ok(apis[0].post("/api/projects", json={"name": "Kill"}), 201)
        killed_at = []

        def kill_the_lead() -> None:
            servers[0].proc.kill()
            servers[0].proc.wait()
            killed_at.append(time.monotonic())
            wait_until(lambda: "lead" in lead_of(apis[1:]), timeout=15,
                       what="B or C to take the lead")
            killed_at.append(time.monotonic())
            time.sleep(2.0)

        out = _run_writes(servers, project["id"], kill_the_lead)
        survivors = {servers[1].url, servers[2].url}
        acked = out["acked"]
        # Once a new lead was there (killed_at[1]), the survivors wrote on.
        after = [eid for at, url, eid in acked if at > killed_at[1] and url in survivors]
        assert len(after) > 20, "the survivors stopped writing"
        for url, status, body in out.get("refused", []):
            assert url in survivors
            assert (status, body["code"]) == (503, "INTERNAL_ERROR"), body
            assert "stopped answering" in body["message"]
        assert len(out.get("refused", [])) <= 60  # at most what was in flight
        print(f"\nlead killed: a new lead after {killed_at[1] - killed_at[0]:.2f} s; "
              f"{len(acked)} acknowledged, {len(after)} by the survivors after that, "
              f"{len(out.get('refused', []))} refused as in flight")
        roles = lead_of(apis[1:])
        assert sorted(roles) == ["forwarding", "lead"]
        held = stored(database)["task"]
        assert {eid for _, _, eid in acked} <= set(held)
        assert_converged(servers[1:], database)
    finally:
        for api in apis:
            api.close()


def test_a_lead_stopped_with_sigterm_hands_over_without_refusing_a_write(make_server,
                                                                         database):
    """A lead shut down cleanly tells the replicas to send nothing more, answers what they
    had sent, and gives its lock back: writes through B and C go on without one refusal,
    and one of them leads next."""
    servers = replicas(make_server, database, 3)
    apis = [client(s) for s in servers]
    try:
        wait_until(lambda: lead_of(apis)[0] == "lead", what="A to lead")
        project = ok(apis[1].post("/api/projects", json={"name": "Term"}), 201)

        def stop_the_lead() -> None:
            assert servers[0].stop() == 0
            wait_until(lambda: "lead" in lead_of(apis[1:]), timeout=15,
                       what="B or C to take the lead")

        out = _run_writes(servers[1:], project["id"], stop_the_lead)
        assert out.get("refused", []) == [] and out.get("unreachable", []) == []
        assert len(out["acked"]) > 100
        assert sorted(lead_of(apis[1:])) == ["forwarding", "lead"]
        assert {eid for _, _, eid in out["acked"]} <= set(stored(database)["task"])
        assert_converged(servers[1:], database)
    finally:
        for api in apis:
            api.close()


def test_a_stopped_lead_is_given_up_and_the_others_write_themselves(make_server, database):
    """A lead that stops answering (SIGSTOP) while it still holds its lock: a change waiting
    for it fails after HUNG_SECONDS with a 503 instead of hanging; the next ones are written
    by the replica itself. Once the lead runs again, changes are forwarded to it again."""
    with lead_and_forwarder(make_server, database) as (lead, other, a, b):
        project = ok(b.post("/api/projects", json={"name": "Stop"}), 201)
        os.kill(lead.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            stuck = b.post("/api/tasks", json={"projectId": project["id"], "title": "stuck"})
            waited = time.monotonic() - started
            assert stuck.status_code == 503, stuck.text
            assert "stopped answering" in stuck.json()["message"]
            assert HUNG_SECONDS <= waited < HUNG_SECONDS + 3
            mine = ok(b.post("/api/tasks", json={"projectId": project["id"], "title": "mine"}),
                      201)
            assert health(b)["writeLead"]["role"] == "writing"
        finally:
            os.kill(lead.proc.pid, signal.SIGCONT)
        wait_until(lambda: health(b)["writeLead"]["role"] == "forwarding",
                   what="B to forward again")
        before = health(b)["writeLead"]["forwarded"]
        ok(b.post("/api/tasks", json={"projectId": project["id"], "title": "again"}), 201)
        assert health(b)["writeLead"]["forwarded"] == before + 1
        assert mine["id"] in stored(database)["task"]
        assert_converged([lead, other], database)


def test_a_lead_that_loses_its_database_connection_steps_down(make_server, database):
    """The lead lock lives on the lead's own connection: terminated, the lead stops leading
    (another replica may have taken the lock at once) and some replica leads again, while
    writes through the other replica keep succeeding."""
    with lead_and_forwarder(make_server, database) as (lead, other, a, b):
        project = ok(b.post("/api/projects", json={"name": "Term"}), 201)

        def terminate() -> None:
            with psycopg.connect(database, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s", (f"maestro write lead pid {lead.proc.pid} "
                                                     f"on {socket.gethostname()}",)).fetchall()
            assert ended == [(True,)]
            wait_until(lambda: sorted(lead_of([a, b])) == ["forwarding", "lead"]
                       and health(a)["writeLead"]["lead"] is not None, timeout=15,
                       what="a lead again")

        out = _run_writes([other], project["id"], terminate)
        assert out.get("refused", []) == []
        assert len(out["acked"]) > 50
        # A led, then stepped down; the lead was taken again (by A or by B).
        assert sum(health(api)["writeLead"]["leads"] for api in (a, b)) >= 2
        assert_converged([lead, other], database)


def _frame(message) -> bytes:
    body = jsonio.dumps(message)
    return struct.pack(">I", len(body)) + body


def _read(sock: socket.socket):
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    size = struct.unpack(">I", exactly(4))[0]
    return jsonio.loads(exactly(size))


def test_only_who_knows_the_secret_may_forward_changes(make_server, database):
    """The lead's port runs changes only for a peer that proves it read the secret from the
    database: a wrong proof is dropped before anything runs; the right one runs a change."""
    lead, = replicas(make_server, database, 1)
    with client(lead) as a:
        wait_until(lambda: lead_of([a]) == ["lead"], what="A to lead")
        project = ok(a.post("/api/projects", json={"name": "Sec"}), 201)
        with psycopg.connect(database) as conn:
            address, secret = conn.execute(
                "SELECT address, secret FROM maestro_write_lead").fetchone()
        host, _, port = address.rpartition(":")
        call = [1, "create_task", [{"projectId": project["id"], "title": "forged"}], {}]
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            hello = _read(sock)
            assert hello[0] == "hello"
            sock.sendall(_frame(["auth", "0" * 64, "intruder"]))
            sock.sendall(_frame(call))
            try:
                answer = _read(sock)
            except (ConnectionError, OSError):
                answer = None
            assert answer is None
        assert len(ok(a.get("/api/tasks", params={"projectId": project["id"]}))) == 0
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            hello = _read(sock)  # a replica that asks the lead to prove itself in turn
            sock.sendall(_frame(["auth", proof(secret, hello[1]), "peer", "ab" * 16]))
            assert _read(sock) == ["ok", proof(secret, "ab" * 16, LEAD)]
            assert proof(secret, "ab" * 16, LEAD) != proof(secret, "ab" * 16)
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            hello = _read(sock)  # the lead signs no challenge shaped like its own message
            sock.sendall(_frame(["auth", proof(secret, hello[1]), "peer", LEAD + "ab" * 16]))
            try:
                answer = _read(sock)
            except (ConnectionError, OSError):
                answer = None
            assert answer is None
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            hello = _read(sock)  # a replica of an earlier version asks for no proof
            sock.sendall(_frame(["auth", proof(secret, hello[1]), "peer"]))
            assert _read(sock) == ["ok"]
            sock.sendall(_frame(call))
            cid, kind, task, head = _read(sock)
            assert (cid, kind, task["title"]) == (1, 0, "forged")
            assert head >= 1
            sock.sendall(_frame([2, "sweep_expired_claims", [], {}]))
            assert _read(sock)[:2] == [2, 2]  # not forwardable: not run
            # Not a call at all: the connection is dropped, nothing runs.
            sock.sendall(_frame({"create_task": [{"projectId": project["id"]}]}))
            try:
                dropped = sock.recv(1) == b""
            except ConnectionResetError:
                dropped = True
            assert dropped
        assert [t["title"] for t in ok(a.get("/api/tasks",
                                             params={"projectId": project["id"]}))] == ["forged"]


def test_with_forwarding_off_every_replica_writes_itself(make_server, database):
    servers = replicas(make_server, database, 2, MAESTRO_FORWARD_WRITES="0")
    with client(servers[0]) as a, client(servers[1]) as b:
        assert "writeLead" not in health(a) and "writeLead" not in health(b)
        project = ok(b.post("/api/projects", json={"name": "Off"}), 201)
        ok(b.post("/api/tasks", json={"projectId": project["id"], "title": "t"}), 201)
        with psycopg.connect(database) as conn:
            assert conn.execute("SELECT count(*) FROM maestro_write_lead").fetchone()[0] == 0
        assert_converged(servers, database)


def test_by_default_a_replica_forwards_only_to_a_lead_on_its_own_machine(make_server,
                                                                          database):
    """MAESTRO_FORWARD_WRITES=auto (the default): replicas on machines of their own write
    themselves (taking turns), which writes more there than one lead; `1` forwards wherever
    the lead runs. The lead's machine is the `host` it recorded: here made another one."""
    lead, auto = replicas(make_server, database, 2)
    with client(lead) as a, client(auto) as b:
        wait_until(lambda: lead_of([a, b]) == ["lead", "forwarding"], what="B to forward")
        assert health(b)["writeLead"]["mode"] == "auto"
        project = ok(b.post("/api/projects", json={"name": "Hosts"}), 201)
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("UPDATE maestro_write_lead SET host = 'another-machine'")
        wait_until(lambda: health(b)["writeLead"]["role"] == "writing", what="B to stop")
        assert health(b)["writeLead"]["lead"] == health(a)["replica"]["id"]
        before = health(b)["writeLead"]["forwarded"]
        ok(b.post("/api/tasks", json={"projectId": project["id"], "title": "mine"}), 201)
        assert health(b)["writeLead"]["forwarded"] == before
        always = make_server(env={**pg_env(database), "MAESTRO_FORWARD_WRITES": "1"})
        with client(always) as c:
            wait_until(lambda: health(c)["writeLead"]["role"] == "forwarding",
                       what="C to forward to the lead on 'another machine'")
            assert health(c)["writeLead"]["mode"] == "on"
            ok(c.post("/api/tasks", json={"projectId": project["id"], "title": "sent"}), 201)
            assert health(c)["writeLead"]["forwarded"] == 1
        assert_converged([lead, auto, always], database)


def test_the_forwarding_setting_is_checked_at_start():
    import pytest
    from maestro.config import ConfigError, Settings

    assert Settings.from_env({}).forward_writes == "auto"
    for raw, mode in (("1", "on"), ("true", "on"), ("0", "off"), ("off", "off"),
                      ("AUTO", "auto")):
        assert Settings.from_env({"MAESTRO_FORWARD_WRITES": raw}).forward_writes == mode
    with pytest.raises(ConfigError, match="MAESTRO_FORWARD_WRITES must be auto, 1 or 0"):
        Settings.from_env({"MAESTRO_FORWARD_WRITES": "sometimes"})
    with pytest.raises(ConfigError, match="MAESTRO_WRITE_LEAD_PORT must be at most 65535"):
        Settings.from_env({"MAESTRO_WRITE_LEAD_PORT": "70000"})


def test_big_sessions_and_tasks_come_back_whole_from_forwarded_appends(make_server, database):
    """An append to a session or task with many entries is answered by reference (the lead
    does not send the whole entity, the forwarding replica reads it from its memory once it
    has applied the lead's record): the answers are the whole entity, exactly as the lead
    serves it."""
    from maestro.write_lead import REF_MIN_ENTRIES

    with lead_and_forwarder(make_server, database) as (lead, other, a, b):
        project = ok(b.post("/api/projects", json={"name": "Big"}), 201)
        task = ok(b.post("/api/tasks", json={"projectId": project["id"], "title": "t"}), 201)
        session = ok(b.post("/api/sessions", json={"projectId": project["id"],
                                                   "taskIds": [task["id"]]}), 201)
        n = REF_MIN_ENTRIES + 40
        for i in range(n):
            after = ok(b.post(f"/api/sessions/{session['id']}/events",
                              json={"type": "progress", "data": {"i": i}}))
            assert len(after["events"]) == i + 1 and after["events"][-1]["data"] == {"i": i}
            noted = ok(b.post(f"/api/tasks/{task['id']}/timeline",
                              json={"message": f"step {i}"}))
            assert noted["timeline"][-1]["message"] == f"step {i}"
        assert after == ok(a.get(f"/api/sessions/{session['id']}"))
        assert noted == ok(a.get(f"/api/tasks/{task['id']}"))
        state = health(b)["writeLead"]
        assert state["referenced"] >= 2 * (n - REF_MIN_ENTRIES)
        assert state["lost"] == 0 and state["fallbacks"] == 0


def test_a_replica_that_cannot_listen_gives_the_lead_lock_back(make_server, database):
    """A replica that takes the lead lock but cannot listen (its MAESTRO_WRITE_LEAD_PORT is
    taken) gives the lock back at once: the other replica leads, and the first forwards to
    it."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        stuck = make_server(env={**pg_env(database), "MAESTRO_WRITE_LEAD_PORT": str(port)})
        other = make_server(env=pg_env(database))
        with client(stuck) as a, client(other) as b:
            wait_until(lambda: lead_of([a, b]) == ["forwarding", "lead"], timeout=15,
                       what="B to lead and A to forward to it")
            project = ok(a.post("/api/projects", json={"name": "Port"}), 201)
            ok(a.post("/api/tasks", json={"projectId": project["id"], "title": "t"}), 201)
            assert health(a)["writeLead"]["forwarded"] == 2
            assert health(b)["writeLead"]["served"] == 2


def test_a_link_quiet_for_longer_than_the_hung_limit_still_waits_for_a_slow_answer():
    """The lead is given up only when it has said nothing for HUNG_SECONDS while a change
    waits: not because the link was quiet before the change was sent. A lead (here a minimal
    one speaking the protocol) that answers after 1.5 s, following a quiet spell longer than
    HUNG_SECONDS, is waited for."""
    from maestro.write_lead import LEAD, OK, LeadLink, frame, read_frame

    secret = "s" * 64

    async def main() -> None:
        async def serve(reader, writer) -> None:
            writer.write(frame(["hello", "c" * 32, "lead"]))
            auth = await read_frame(reader)
            assert auth[1] == proof(secret, "c" * 32)
            writer.write(frame(["ok", proof(secret, auth[3], LEAD)]))
            while True:
                try:
                    call = await read_frame(reader)
                except asyncio.IncompleteReadError:
                    return
                if call == ["ping"]:
                    continue  # (a lead busy with the change: no answer to pings either)
                await asyncio.sleep(1.5)
                writer.write(frame([call[0], OK, {"done": call[1]}, 7]))

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        link = LeadLink("me", "lead", f"127.0.0.1:{port}", secret)
        await link.open()
        try:
            await asyncio.sleep(HUNG_SECONDS + 1.0)  # quiet: nothing to send
            answer = await link.call("create_task", ({"title": "t"},), {})
            assert answer[1:] == [OK, {"done": "create_task"}, 7]
            assert not link.broken
        finally:
            link.close()
            server.close()

    asyncio.run(main())


@pytest.mark.parametrize("answer", ["none", "wrong", "replayed", "lead-shaped challenge"])
def test_a_replica_forwards_nothing_to_a_peer_that_cannot_prove_it_leads(answer):
    """A process listening where the lead was (it stopped, and another took its port) greets
    like a lead and accepts the replica's proof, but cannot prove it knows the secret: the
    replica gives it up before sending a change. Nor can it pass off the replica's own proof
    for a challenge as the lead's, nor have the replica sign what a lead would."""
    from maestro.write_lead import LeadLink, frame, read_frame

    secret = "s" * 64
    received: list = []

    async def main() -> None:
        async def serve(reader, writer) -> None:
            challenge = LEAD + "ab" * 16 if answer == "lead-shaped challenge" else "c" * 32
            writer.write(frame(["hello", challenge, "lead"]))
            try:
                auth = await read_frame(reader)
            except asyncio.IncompleteReadError:
                return  # the replica hung up without signing
            received.append(auth)
            if answer == "none":
                writer.write(frame(["ok"]))
            elif answer == "wrong":
                writer.write(frame(["ok", "0" * 64]))
            else:  # what a replica would answer to that challenge
                writer.write(frame(["ok", proof(secret, auth[3])]))
            try:
                while True:
                    received.append(await read_frame(reader))
            except (asyncio.IncompleteReadError, ConnectionError):
                return

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        link = LeadLink("me", "lead", f"127.0.0.1:{port}", secret)
        try:
            with pytest.raises(ConnectionError, match="greet" if answer.startswith("lead")
                               else "prove"):
                await link.open()
            await asyncio.sleep(0.2)
        finally:
            server.close()

    asyncio.run(main())
    # Nothing but the proof (and none at all to a challenge shaped like a lead's message).
    assert [m[0] for m in received] == ([] if answer.startswith("lead") else ["auth"])


def test_the_lead_reads_no_big_frame_before_the_proof(make_server, database):
    """Before a peer has proved it knows the secret, the lead reads at most a few kB from it:
    a peer announcing a huge frame is dropped, and the lead goes on serving."""
    lead, = replicas(make_server, database, 1)
    with client(lead) as a:
        wait_until(lambda: lead_of([a]) == ["lead"], what="A to lead")
        with psycopg.connect(database) as conn:
            address = conn.execute("SELECT address FROM maestro_write_lead").fetchone()[0]
        host, _, port = address.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            assert _read(sock)[0] == "hello"
            # (100 MB is within what a proven peer may send: only the proof's limit drops it,
            # at once rather than at the handshake's deadline)
            sock.sendall(struct.pack(">I", 100 * 1024 * 1024) + b"x" * 65536)
            sock.settimeout(HUNG_SECONDS / 2)
            try:
                dropped = sock.recv(1) == b""
            except ConnectionResetError:
                dropped = True
            assert dropped
        ok(a.post("/api/projects", json={"name": "Still"}), 201)
