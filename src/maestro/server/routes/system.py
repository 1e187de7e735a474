"""Routes of the skill catalogue (extension E4), server health and WebSocket diagnostics (E7)."""

from __future__ import annotations

from ... import models as m
from ...service import Service
from ...skills import SkillCatalogue
from ..openapi import Act, Op
from ..router import ApiRequest, Router
from ..websocket import Hub


def install(router: Router, service: Service, hub: Hub, skills: SkillCatalogue) -> None:
    route = router.route

    @route("GET", "/api/skills", Op(
        "The skill catalogue of SKILLS_DIR", acts=Act("skill", "list", id=None),
        ok=list[m.Skill]))
    async def list_skills(r: ApiRequest):
        return skills.list()

    @route("GET", "/api/skills/role/{role}", Op(
        "The skills of a role (worker, orchestrator)",
        acts=Act("skill", "list", id=None), ok=list[m.Skill]))
    async def role_skills(r: ApiRequest):
        return skills.for_role(r.param("role"))

    @route("GET", "/api/skills/{id}", Op(
        "A skill with its instructions", acts=Act("skill", "read"), ok=m.Skill,
        errors={404: ("NOT_FOUND",)}))
    async def get_skill(r: ApiRequest):
        return skills.get(r.param())

    @route("POST", "/api/skills/{id}/reload", Op(
        "Read a skill again from disk",
        acts=Act("skill", "reload"), ok=m.Skill, errors={404: ("NOT_FOUND",)}))
    async def reload_skill(r: ApiRequest):
        await r.json()
        return skills.reload(r.param())

    @route("GET", "/health", Op(
        "Server health", acts=Act("server", "read", id=None), ok=m.Health,
        description="When the server requires a token, a request without any "
                    "`Authorization` header gets only `{\"status\":\"ok\"}` (liveness "
                    "for load balancers); the full report needs the token."))
    async def health(r: ApiRequest):
        body = service.health()
        body["websocket"] = hub.stats()
        return body

    @route("GET", "/ws-status", Op(
        "Connected WebSocket clients", acts=Act("server", "read", id=None), ok=m.WsStatus))
    async def ws_status(r: ApiRequest):
        return hub.status()
