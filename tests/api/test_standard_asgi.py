"""The server with its uvicorn fast paths off (MAESTRO_FAST_PATHS=0): every answer and every
WebSocket event goes through the standard ASGI messages, and the wire behaves exactly as with
them on. The HTTP/1.1 wire checks and the representative WebSocket checks of
test_http_wire.py and test_websocket.py run here against such a server."""

from __future__ import annotations

from helpers import WsClient, http_client, new_project, ok
from server_fixtures import server_fixture
from test_http_wire import (  # noqa: F401  (collected here, against this module's server)
    test_a_large_answer_arrives_whole_and_the_next_one_follows_it,
    test_head_gets_the_headers_of_get_without_a_body,
    test_http_1_0_and_connection_close_end_the_connection_after_the_answer,
    test_pipelined_keep_alive_requests_are_answered_in_order,
)
from test_websocket import (  # noqa: F401  (collected here, against this module's server)
    test_a_client_that_never_reads_delays_nobody_and_is_dropped,
    test_both_paths_stream_events,
    test_events_of_concurrent_requests_never_interleave,
    test_every_mutating_endpoint_emits_exactly_its_events,
    test_ping_is_answered_with_pong,
    test_two_clients_receive_everything_in_the_same_order,
    ws,
)


# MAESTRO_WS_LAG as in test_websocket.py, whose slow-client check runs here too (with its
# `ws`: a client of its own for each test).
srv = server_fixture(env={"MAESTRO_FAST_PATHS": "0", "MAESTRO_WS_LAG": "1"})


def _frames_written_directly(server) -> int:
    """Events a connected client got as pre-built frames (GET /health while it is connected),
    after one event was sent to it."""
    with http_client(server) as client, WsClient(server.ws_url) as listener:
        new_project(client, name="direct?")
        assert [e["type"] for e in listener.barrier()] == ["project:created"]
        return ok(client.get("/health"))["websocket"]["framesDirect"]


def test_the_setting_turns_the_direct_frames_off(srv, make_server):
    assert _frames_written_directly(srv) == 0
    # The same check against a server with the fast paths on (the default) shows it measures
    # something: there the event was written as a pre-built frame.
    assert _frames_written_directly(make_server()) >= 1
