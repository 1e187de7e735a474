"""Routes of the coordination of agents (SPEC §15): readiness, dependencies, claims with leases,
heartbeats, and whole plans."""

from __future__ import annotations

from ... import models as m
from ...service import Service
from ..openapi import Act, Op
from ..router import ApiRequest, Reply, Router
from .common import writer
from .tasks import FENCED, T404, TASK_CHANGED

S404 = {404: ("SESSION_NOT_FOUND",)}


def install(router: Router, service: Service) -> None:
    route = router.route
    tasks = service.state.tasks

    @route("GET", "/api/tasks/{id}/readiness", Op(
        "Whether a task is ready, and what holds it back",
        acts=Act("task", "read"), ok=m.Readiness, errors=T404))
    async def task_readiness(r: ApiRequest):
        return service.task_readiness(r.param())

    @route("POST", "/api/tasks/{id}/dependencies/{dependsOnId}", Op(
        "Add one dependency (idempotent; refused if it closes a cycle)",
        acts=Act("task", "add_dependency"), ok=m.Task,
        claim_token=True, errors={400: ("DEPENDENCY_CYCLE",), **FENCED},
        events=TASK_CHANGED))
    async def add_dependency(r: ApiRequest):
        await r.json()
        return tasks.encode(await service.add_dependency(r.param(), r.param("dependsOnId"),
                                                         **writer(r)))

    @route("DELETE", "/api/tasks/{id}/dependencies/{dependsOnId}", Op(
        "Remove one dependency (idempotent)",
        acts=Act("task", "remove_dependency"), ok=m.Task, claim_token=True, errors=FENCED,
        events=TASK_CHANGED))
    async def remove_dependency(r: ApiRequest):
        await r.json()
        return tasks.encode(await service.remove_dependency(r.param(), r.param("dependsOnId"),
                                                            **writer(r)))

    @route("POST", "/api/tasks/{id}/claim", Op(
        "Claim a ready task for a session (a lease with a fencing token)",
        acts=Act("task", "claim"), body=m.ClaimRequest, ok=m.Claimed,
        errors={404: ("TASK_NOT_FOUND", "SESSION_NOT_FOUND"),
                409: ("TASK_ALREADY_CLAIMED", "TASK_NOT_READY", "SESSION_NOT_ACTIVE")},
        events=("task:claimed", "task:updated")))
    async def claim(r: ApiRequest):
        return await service.claim_task(r.param(), await r.json())

    @route("POST", "/api/tasks/{id}/claim/renew", Op(
        "Extend a live lease", acts=Act("task", "renew"), body=m.RenewRequest, ok=m.Renewed,
        errors={404: ("TASK_NOT_FOUND", "SESSION_NOT_FOUND"), 409: ("CLAIM_LOST",)}))
    async def renew_claim(r: ApiRequest):
        return await service.renew_claim(r.param(), await r.json())

    @route("POST", "/api/tasks/{id}/claim/release", Op(
        "Give a claim up; the task goes back to pending",
        acts=Act("task", "release"), body=m.ReleaseRequest,
        ok=m.Released, errors={404: ("TASK_NOT_FOUND", "SESSION_NOT_FOUND"),
                               409: ("CLAIM_LOST",)},
        events=("task:claim_released", "task:updated")))
    async def release_claim(r: ApiRequest):
        return await service.release_claim(r.param(), await r.json())

    @route("POST", "/api/projects/{id}/claim-next", Op(
        "Claim the first ready task of a project (task null when nothing is ready)",
        acts=Act("project", "claim"), body=m.ClaimNextRequest, ok=m.Claimed,
        errors={404: ("PROJECT_NOT_FOUND", "SESSION_NOT_FOUND", "TASK_NOT_FOUND"),
                409: ("SESSION_NOT_ACTIVE",)}, events=("task:claimed", "task:updated")))
    async def claim_next(r: ApiRequest):
        return await service.claim_next(r.param(), await r.json())

    @route("POST", "/api/projects/{id}/plan", Op(
        "Create a whole breakdown at once: tasks named by local refs, their parents and "
        "dependencies",
        acts=Act("project", "plan"), body=m.Plan, ok=m.Planned, status=201, claim_token=True,
        description="`parent` and `dependsOn` name a ref of the plan or an existing task "
                    "of the project; `dependencies` adds dependencies to existing tasks "
                    "(each such write is fenced like a task update). All or nothing: "
                    "refused with `DEPENDENCY_CYCLE` if the result closes a cycle.",
        errors={400: ("DEPENDENCY_CYCLE",), 404: ("PROJECT_NOT_FOUND", "TASK_NOT_FOUND"),
                409: ("CLAIM_LOST",)}, events=("task:created", "task:updated")))
    async def plan(r: ApiRequest):
        body = await r.json()
        return Reply(await service.create_plan(r.param(), body, **writer(r)), 201)

    @route("POST", "/api/sessions/{id}/heartbeat", Op(
        "Renew every live claim of a session",
        acts=Act("session", "heartbeat"), body=m.HeartbeatRequest, ok=m.Heartbeat,
        errors={**S404, 409: ("SESSION_NOT_ACTIVE",)}))
    async def heartbeat(r: ApiRequest):
        return await service.heartbeat_session(r.param(), await r.json())
