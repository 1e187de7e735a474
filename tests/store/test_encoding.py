"""The encoding of big entities by parts (src/maestro/encoding.py) and the transaction's deltas
(src/maestro/commit.py), on real entities in a real State: whatever sequence of appends, field
changes, new keys and undos, the bytes are exactly `jsonio.dumps` of the entity, and a delta
applied to the previous version gives the new one."""

from __future__ import annotations

import copy
import random

from maestro import jsonio
from maestro.commit import Tx
from maestro.encoding import BIG_ENTITY_BYTES, Spliced
from maestro.state import State
from maestro.store.base import apply_delta


def big_session(events: int = 200) -> dict:
    return {"id": "sess_big", "projectId": "proj_1", "taskIds": ["task_1"], "name": "Ünïcode ✓",
            "status": "running", "env": {},
            "events": [{"id": f"evt_{i}", "timestamp": i, "type": "file_modified",
                        "data": {"file": f"src/module_{i}.py", "big": 2**70}}
                       for i in range(events)],
            "startedAt": 1, "lastActivity": 1, "completedAt": None}


def test_every_version_encodes_exactly_and_each_delta_rebuilds_it():
    rng = random.Random(11)
    state = State()
    table = state.sessions
    table.put(big_session())
    assert len(table.encode(table.get("sess_big"))) >= BIG_ENTITY_BYTES
    replayed = copy.deepcopy(table.get("sess_big"))
    for step in range(400):
        tx = Tx(state)
        for _ in range(rng.randint(1, 3)):  # several puts of one entity in one transaction
            old = table.get("sess_big")
            change = rng.choice(["event", "timeline", "status", "new key", "both"])
            new = dict(old)
            if change in ("event", "both"):
                new["events"] = tx.extend(old["events"], [
                    {"id": f"e{step}", "type": "x", "data": {"n": step, "s": "é" * step}}
                    for _ in range(rng.randint(1, 3))])
            if change in ("timeline", "both"):
                new["timeline"] = tx.extend(old.get("timeline"), [{"message": f"m{step}"}])
            if change == "status":
                new["status"] = rng.choice(["running", "completed", "failed"])
            if change == "new key":
                new[f"k{step}"] = {"step": step}
            new["lastActivity"] = step
            tx.put("session", new)
        value = table.get("sess_big")
        if rng.random() < 0.2:  # a refused batch: undone, the previous version comes back
            before = tx._undo[("session", "sess_big")]
            tx.rollback()
            assert table.get("sess_big") is before
            assert table.encode(before) == jsonio.dumps(before)
            continue
        (op,) = tx.ops()
        assert isinstance(table.encoding(value), Spliced)
        assert op.delta is not None and op.encoded is None
        assert op.full_json() == jsonio.dumps(value)
        # The journal line carries the delta; replaying it gives the new version.
        apply_delta(replayed, jsonio.loads(jsonio.dumps(op.delta)))
        assert replayed == value and list(replayed) == list(value)
        if rng.random() < 0.3:
            assert table.encode(value) == jsonio.dumps(value)
    assert table.encode(table.get("sess_big")) == jsonio.dumps(table.get("sess_big"))


def test_a_removed_field_or_a_small_entity_is_recorded_whole():
    state = State()
    state.sessions.put(big_session())
    state.sessions.encode(state.sessions.get("sess_big"))
    tx = Tx(state)
    old = state.sessions.get("sess_big")
    new = {k: v for k, v in old.items() if k != "completedAt"}
    new["events"] = tx.extend(old["events"], [{"id": "e", "type": "x"}])
    tx.put("session", new)
    (op,) = tx.ops()
    assert op.delta is None and op.encoded == jsonio.dumps(new)

    small = {"id": "sess_small", "projectId": "p", "events": [], "lastActivity": 1}
    state.sessions.put(small)
    tx = Tx(state)
    tx.put("session", dict(small, events=tx.extend(small["events"], [{"id": "e"}])))
    (op,) = tx.ops()
    assert op.delta is None and op.encoded == jsonio.dumps(state.sessions.get("sess_small"))


def test_replaced_versions_keep_their_own_bytes():
    """Answers and events of earlier requests in a batch are written after later requests
    replaced their version: each still encodes to its own content."""
    state = State()
    table = state.sessions
    table.put(big_session())
    table.encode(table.get("sess_big"))
    versions = []
    for step in range(5):
        tx = Tx(state)
        old = table.get("sess_big")
        tx.put("session", dict(old, events=tx.extend(old["events"], [{"id": f"e{step}"}]),
                               lastActivity=step))
        versions.append(table.get("sess_big"))
    for version in versions:
        assert table.encode(version) == jsonio.dumps(version)
    assert [len(v["events"]) for v in versions] == [201, 202, 203, 204, 205]
