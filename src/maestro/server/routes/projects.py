"""Routes of projects (SPEC §7.1)."""

from __future__ import annotations

from ... import models as m
from ...paging import CREATION
from ...service import Service
from ..openapi import Act, Op
from ..router import ApiRequest, Reply, Router
from .common import page_of, paged

P404 = {404: ("PROJECT_NOT_FOUND",)}


def install(router: Router, service: Service) -> None:
    route = router.route
    projects = service.state.projects

    @route("GET", "/api/projects", Op(
        "List projects",
        acts=Act("project", "list", id=None), query=m.PageQuery, ok=list[m.Project], paged=True,
        description="In creation order."))
    async def list_projects(r: ApiRequest):
        page = page_of(r)
        if page is not None:
            found, after = service.page_projects(page, r.restrict_project)
            return paged(r, projects.encode_list(found), after, CREATION)
        if r.restrict_project is None:
            return projects.encode_all()
        return projects.encode_list([p for p in service.list_projects()
                                     if p["id"] == r.restrict_project])

    @route("POST", "/api/projects", Op(
        "Create a project",
        acts=Act("project", "create", id=None), body=m.CreateProject, ok=m.Project, status=201,
        events=("project:created",)))
    async def create_project(r: ApiRequest):
        return Reply(projects.encode(await service.create_project(await r.json())), 201)

    @route("GET", "/api/projects/{id}", Op(
        "Get a project", acts=Act("project", "read"), ok=m.Project, errors=P404))
    async def get_project(r: ApiRequest):
        return projects.encode(service.get_project(r.param()))

    @route("PUT", "/api/projects/{id}", Op(
        "Update a project (partial)",
        acts=Act("project", "update"), body=m.UpdateProject, ok=m.Project, errors=P404,
        events=("project:updated",)))
    async def update_project(r: ApiRequest):
        body = await r.json()
        return projects.encode(await service.update_project(r.param(), body))

    @route("DELETE", "/api/projects/{id}", Op(
        "Delete a project without tasks or sessions (with cascade=true: with them)",
        acts=Act("project", "delete"), query=m.DeleteProjectQuery, ok=m.ProjectDeleted,
        description="With `cascade=true` the project's sessions (their agents are stopped "
                    "and their tokens die with them) and tasks go with it, in one change; "
                    "`deleted` lists them.",
        errors={400: ("PROJECT_HAS_DEPENDENCIES",), **P404},
        events=("project:deleted", "session:deleted", "task:session_removed",
                "task:deleted", "task:updated")))
    async def delete_project(r: ApiRequest):
        await r.json()
        return await service.delete_project(r.param(), cascade=r.query("cascade") == "true")
