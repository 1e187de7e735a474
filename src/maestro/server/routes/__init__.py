"""The REST API of SPEC §7 and extensions E1, E2, E4, E7, one module per group of routes. Each
handler sits under its declaration (`@route(method, path, Op(...))`: summary, action and rights
rule, body, query, answer, errors, events), parses the request, calls one service operation and
renders the answer; the rules live in the service. Spawning and workspaces add their own routes
(spawn/routes.py, workspace/routes.py)."""

from __future__ import annotations

from ...service import Service
from ...skills import SkillCatalogue
from ..router import Router
from ..websocket import Hub
from . import coordination, projects, sessions, system, tasks


def install(router: Router, service: Service, hub: Hub, skills: SkillCatalogue) -> None:
    """Add every route of the REST API to `router`, in the order /openapi.json lists them."""
    system.install(router, service, hub, skills)
    projects.install(router, service)
    tasks.install(router, service)
    coordination.install(router, service)
    sessions.install(router, service)
