"""`seq` on the file store: events are numbered without a gap, a client that reconnects with
`?since=` gets exactly what it missed, and after a restart (numbers start higher) a `since`
from before it gets a `resync` first."""

from __future__ import annotations

from helpers import WsClient, http_client, ok


def test_seq_since_and_resync_on_the_file_store(make_server):
    srv = make_server()
    with http_client(srv) as api, WsClient(srv.ws_url) as ws:
        project = ok(api.post("/api/projects", json={"name": "Seq"}), 201)
        for i in range(3):
            ok(api.post("/api/tasks", json={"projectId": project["id"], "title": f"T{i}"}), 201)
        seen = ws.barrier()
        seqs = [m["seq"] for m in seen]
        assert seqs == list(range(seqs[0], seqs[0] + 4))
    since = seqs[1]
    with http_client(srv) as api:
        ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "later"}), 201)
    with WsClient(srv.ws_url + f"?since={since}") as again:
        missed = again.barrier()
        assert [m["seq"] for m in missed] == list(range(since + 1, seqs[-1] + 2))
        assert [m["data"]["title"] for m in missed] == ["T1", "T2", "later"]

    srv.restart()
    with http_client(srv) as api, WsClient(srv.ws_url + f"?since={seqs[-1] + 1}") as after:
        ok(api.post("/api/tasks", json={"projectId": project["id"], "title": "restarted"}), 201)
        got = after.barrier()
        assert got[0]["type"] == "resync"
        assert got[0]["data"]["since"] == seqs[-1] + 1
        assert got[1]["type"] == "task:created"
        assert got[1]["seq"] == got[0]["data"]["seq"] + 1 > seqs[-1] + 1
