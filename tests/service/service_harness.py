"""The service in-process, on a store in memory: no server, no process, no files.

`service` is a started `Service` behind a synchronous face (each operation runs to its end on
the fixture's event loop), with `events` (what the bus published, in order) and `clock` (the
milliseconds the claim rules read, moved by hand)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest

from maestro import coordination
from maestro.errors import ApiError
from maestro.events import EventBus
from maestro.service import Service
from maestro.store.base import KINDS
from maestro.store.memory import MemoryStore

START_MS = 1_800_000_000_000


class Clock:
    """The time the coordination rules read (`now_ms`), in milliseconds."""

    def __init__(self, now: int = START_MS):
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


class RunningService:
    """A started service: its operations called as plain functions, its events recorded."""

    def __init__(self, service: Service, runner: asyncio.Runner):
        self.service = service
        self.runner = runner
        self.events: list[tuple[str, Any]] = []
        service.bus.subscribe(lambda event: self.events.append((event.type, event.data)))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.service, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            return self.runner.run(result) if inspect.isawaitable(result) else result

        return call

    def take_events(self) -> list[tuple[str, Any]]:
        """The events published since the last call, in order."""
        taken, self.events[:] = list(self.events), []
        return taken

    def event_types(self) -> list[str]:
        return [kind for kind, _ in self.take_events()]

    def refused(self, name: str, *args, **kwargs) -> ApiError:
        """Call an operation that must be refused; returns its error after checking that
        nothing changed: the same entities, no event, nothing sent to the store."""
        before = self.snapshot()
        with pytest.raises(ApiError) as caught:
            getattr(self, name)(*args, **kwargs)
        assert self.snapshot() == before, f"{name} changed something before refusing"
        assert self.take_events() == [], f"{name} published events before refusing"
        return caught.value

    def snapshot(self) -> dict:
        """Every entity of the committed view and of the store."""
        state, store = self.service.state, self.service.store
        return {"view": {kind: dict(getattr(state, f"{kind}s").rows) for kind in KINDS},
                "stored": {kind: {eid: store.entity(kind, eid) for eid in store.ids(kind)}
                           for kind in KINDS}}

    # Shortcuts for setting up what a test is about.
    def project(self, **fields) -> dict:
        return self.create_project({"name": "Project", **fields})

    def task(self, project_id: str, **fields) -> dict:
        return self.create_task({"projectId": project_id, "title": "Task", **fields})

    def session(self, project_id: str, task_ids: list[str] | None = None, **fields) -> dict:
        return self.create_session({"projectId": project_id, "taskIds": task_ids or [],
                                    **fields})


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    # Every lease decision reads `Service.claim_now` (coordination.py), on this clock.
    monkeypatch.setattr(coordination, "now_ms", clock)
    return clock


@pytest.fixture
def service(clock, monkeypatch) -> Iterator[RunningService]:
    # A server settles the whole process's memory when it starts (a full collection, then
    # every object frozen) and tunes the collector for its own heap: in a test process that is
    # ~80 ms of collecting pytest's objects for each test and nothing the rules depend on.
    for step in ("settle_memory", "tune_collector"):
        monkeypatch.setitem(Service.start.__globals__, step, lambda *args, **kwargs: None)
    with asyncio.Runner() as runner:
        service = Service(MemoryStore(), EventBus())
        service.claim_sweep_seconds = 3600  # leases end when a test sweeps, at its clock
        runner.run(service.start())
        try:
            yield RunningService(service, runner)
        finally:
            runner.run(service.stop())
