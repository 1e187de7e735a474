"""The helper-process channel (store/worker.py) on a real subprocess: a round trip with a
deadline gives up on a helper that never answers, kills it and reports it dead with its
remedy, and tells whoever asked to hear of the death."""

from __future__ import annotations

import pytest
from maestro.store.worker import StoreWorker


def test_a_helper_that_never_answers_is_killed_at_the_deadline(tmp_path, monkeypatch):
    (tmp_path / "silent_helper.py").write_text(
        "import time\n\ndef main():\n    time.sleep(60)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the helper's PYTHONPATH is this sys.path
    helper = StoreWorker(None, "silent_helper")
    helper.remedy = "a new one is being started"
    told: list[str] = []
    helper.on_dead = lambda: told.append("dead")
    helper.spawn()
    proc = helper._proc
    try:
        with pytest.raises(OSError, match="no answer within 0.5 s"):
            helper.request(b'{"op":"init"}', timeout=0.5)
        assert proc.wait(5) is not None  # killed, not left running
        assert helper.dead == ("the store process stopped (no answer within 0.5 s); "
                               "a new one is being started")
        assert told == ["dead"]
        with pytest.raises(OSError, match="a new one is being started"):
            helper.request(b'{"op":"ping"}')
    finally:
        helper.close()
