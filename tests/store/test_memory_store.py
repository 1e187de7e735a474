"""The service over the in-memory store: no server process, no data directory. What the store
holds is what was committed, as copies; a batch the store refuses (whole, or from one record
on) is undone in the service and never shows in the store; a reopened store loads back what
was committed."""

from __future__ import annotations

import asyncio

import pytest

from maestro.errors import StorageError
from maestro.events import EventBus
from maestro.service import Service
from maestro.store.base import LoadResult
from maestro.store.memory import MemoryData, MemoryStore


def run(coro):
    return asyncio.run(coro)


async def started(store: MemoryStore) -> Service:
    service = Service(store, EventBus())
    await service.start()
    return service


def test_a_service_over_the_memory_store_commits_copies():
    async def main():
        store = MemoryStore()
        service = await started(store)
        try:
            project = await service.create_project({"name": "P"})
            task = await service.create_task({"projectId": project["id"], "title": "T"})
            await service.update_task(task["id"], {"status": "in_progress"})
            held = store.entity("task", task["id"])
            assert held["status"] == "in_progress"
            assert held is not service.state.tasks.get(task["id"])
            held["status"] = "changed by the test"  # a copy: the store is not affected
            assert store.entity("task", task["id"])["status"] == "in_progress"
            assert store.ids("project") == [project["id"]]
        finally:
            await service.stop()

    run(main())


def test_a_refused_batch_is_undone_and_never_reaches_the_store():
    async def main():
        store = MemoryStore()
        service = await started(store)
        try:
            project = await service.create_project({"name": "P"})
            store.fail_next(message="disk full")
            with pytest.raises(StorageError, match="disk full"):
                await service.create_task({"projectId": project["id"], "title": "lost"})
            assert store.ids("task") == []
            assert list(service.state.tasks.rows) == []
            store.fail_next(whole=True, message="write failed")
            with pytest.raises(StorageError, match="write failed"):
                await service.update_project(project["id"], {"name": "renamed"})
            assert store.entity("project", project["id"])["name"] == "P"
            assert service.state.projects.get(project["id"])["name"] == "P"
            # The store goes on once the failure is past.
            task = await service.create_task({"projectId": project["id"], "title": "kept"})
            assert store.ids("task") == [task["id"]]
        finally:
            await service.stop()

    run(main())


def test_records_before_a_refused_one_are_committed():
    async def main():
        store = MemoryStore()
        service = await started(store)
        try:
            project = await service.create_project({"name": "P"})
            store.fail_next(ready=1, message="no room")
            # Three requests queued together form one batch: the first is committed, the
            # second is refused, the third was built on it and is undone too.
            results = await asyncio.gather(
                *(service.create_task({"projectId": project["id"], "title": f"t{i}"})
                  for i in range(3)), return_exceptions=True)
            assert isinstance(results[0], dict)
            assert [type(r) for r in results[1:]] == [StorageError, StorageError]
            assert store.ids("task") == [results[0]["id"]]
            assert list(service.state.tasks.rows) == [results[0]["id"]]
        finally:
            await service.stop()

    run(main())


def test_a_reopened_store_loads_what_was_committed_and_a_seed_is_loaded():
    async def main():
        data = MemoryData()
        service = await started(MemoryStore(data=data))
        project = await service.create_project({"name": "kept"})
        await service.stop()
        again = await started(MemoryStore(data=data))
        try:
            assert again.state.projects.get(project["id"])["name"] == "kept"
        finally:
            await again.stop()
        seeded = await started(MemoryStore(LoadResult(projects=[{"id": "proj_s", "name": "S"}])))
        try:
            assert seeded.state.projects.get("proj_s")["name"] == "S"
        finally:
            await seeded.stop()

    run(main())
