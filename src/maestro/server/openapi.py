"""The OpenAPI 3.1 document of the REST API (/openapi.json) and the API reference page (/docs).

Every route is declared once, where it is added to the router, with an `Op`: its summary, the
action it performs on which entity (`Act`, whose rule in policy.py decides what an agent may
do), the typed dicts of its body, query parameters and answer (models.py; pydantic writes
their JSON schemas) and the error codes it answers with. The document is built from the router's
own table, so a route cannot be missing from it; each operation says who may use it
(`x-maestro-rights`, and a line of its description). The router holds handlers to their
declaration: a route declared without a body gets `{}` from `request.json()`, and a query
parameter it does not declare cannot be read (see router.py).

/docs is Swagger UI, served by Maestro itself from the `swagger-ui-bundle-v2` package (no CDN,
works offline)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .. import __version__
from ..policy import Act, rule_for
from .. import models as m

REF = "#/components/schemas/{model}"
JSON = "application/json"


@dataclass(frozen=True)
class Op:
    """The declaration of one route: what /openapi.json says about it, what the router lets
    its handler read, and the action whose rule (policy.py) decides what agents may do."""

    summary: str
    acts: Act | None = None   # the action it performs on which entity (its rights rule)
    body: Any = None          # a TypedDict: the route reads a JSON body of this shape
    query: Any = None         # a TypedDict of the query parameters it reads
    ok: Any = None            # the answer's type (e.g. m.Task, list[m.Task]); None: object
    status: int = 200
    errors: dict[int, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    events: tuple[str, ...] = ()
    claim_token: bool = False  # reads X-Maestro-Claim-Token (fencing, SPEC §15.3)
    paged: bool = False        # answers X-Next-Cursor / Link with `limit`

    @property
    def query_names(self) -> frozenset[str]:
        if self.query is None:
            return frozenset()
        return frozenset(self.query.__required_keys__ | self.query.__optional_keys__)


# ------------------------------------------------------------------ schemas
def _strip_titles(schema: Any, top: bool = True) -> Any:
    """Drop pydantic's generated titles of properties ("Projectid"); models keep theirs."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "title" and not top and isinstance(value, str):
                continue
            if key in ("properties", "$defs") and isinstance(value, dict):
                out[key] = {k: _strip_titles(v, top=key == "$defs") for k, v in value.items()}
            else:
                out[key] = _strip_titles(value, top=False)
        return out
    if isinstance(schema, list):
        return [_strip_titles(v, top=False) for v in schema]
    return schema


class Schemas:
    """Components collected while the document is written."""

    def __init__(self) -> None:
        self.components: dict[str, dict] = {}

    def of(self, tp: Any) -> dict:
        """The schema of a type; named typed dicts become components, referenced by $ref."""
        raw = TypeAdapter(tp).json_schema(ref_template=REF)
        raw = _strip_titles(raw)
        for name, sub in raw.pop("$defs", {}).items():
            self.components.setdefault(name, sub)
        name = getattr(tp, "__name__", None)
        if isinstance(tp, type) and name and raw.get("type") == "object":
            self.components.setdefault(name, raw)
            return {"$ref": REF.format(model=name)}
        return raw

    def parameters(self, query: Any) -> list[dict]:
        schema = _strip_titles(TypeAdapter(query).json_schema(ref_template=REF))
        out = []
        for name, prop in schema.get("properties", {}).items():
            prop = dict(prop)
            description = prop.pop("description", None)
            param = {"name": name, "in": "query", "required": False, "schema": prop}
            if description:
                param["description"] = description
            out.append(param)
        return out


# ------------------------------------------------------------------ errors
COMMON_ERRORS: dict[int, tuple[str, ...]] = {
    400: ("VALIDATION_ERROR",),
    401: ("UNAUTHORIZED",),
    403: ("FORBIDDEN",),
    421: ("HOST_NOT_ALLOWED",),
    500: ("INTERNAL_ERROR",),
}
BODY_ERRORS: dict[int, tuple[str, ...]] = {413: ("VALIDATION_ERROR",),
                                           415: ("VALIDATION_ERROR",)}
ERROR_TEXT = {
    400: "Invalid input (the message names the field)",
    401: "A token is required (the server has MAESTRO_TOKEN)",
    403: "Not allowed: an agent's token outside its rights, or a browser page of another origin",
    404: "Not found",
    409: "Conflict",
    413: "Request body over 1 MiB",
    415: "Content-Type is not application/json",
    421: "Host not allowed (DNS-rebinding protection)",
    500: "Unexpected failure, or the store refused the change (nothing changed)",
}
MUTATING = {"post", "put", "patch", "delete"}


def _error_responses(method: str, op: Op) -> dict:
    merged: dict[int, list[str]] = {}
    extra = {403: ("FORBIDDEN", "ORIGIN_NOT_ALLOWED")} if method in MUTATING else {}
    for table in (COMMON_ERRORS, BODY_ERRORS if method in MUTATING else {}, extra,
                  op.errors):
        for status, codes in table.items():
            bucket = merged.setdefault(status, [])
            bucket += [c for c in codes if c not in bucket]
    out = {}
    for status in sorted(merged):
        codes = merged[status]
        schema = {"allOf": [{"$ref": REF.format(model="Error")},
                            {"properties": {"code": {"enum": codes}}}]}
        out[str(status)] = {"description": f"{ERROR_TEXT.get(status, 'Error')}: "
                                           + ", ".join(codes),
                            "content": {JSON: {"schema": schema}}}
    return out


# ------------------------------------------------------------------ the document
PATH_PARAMS = {"id": "id of the {what}", "taskId": "id of the task",
               "dependsOnId": "id of the task depended on", "role": "worker or orchestrator"}
_WHAT = re.compile(r"^/api/(projects|tasks|sessions|skills)(?:/|$)")


def _tag(path: str) -> str:
    found = _WHAT.match(path)
    if path == "/api/workspaces" or path.endswith(("/diff", "/merge", "/cleanup")):
        return "workspaces"
    if found is None:
        return "server"
    if path.endswith("/plan"):
        return "tasks"
    if "/claim" in path or "/dependencies/" in path or "/readiness" in path \
            or path.endswith("/heartbeat"):
        return "coordination"
    return found.group(1)


def _rights(op: Op) -> dict | None:
    """Who may use the operation, from the rule of its action (policy.py)."""
    if op.acts is None:
        return None
    rule = rule_for(op.acts)
    return {"action": op.acts.name, "people": True, "agents": rule.text}


def _operation(method: str, path: str, op: Op, schemas: Schemas) -> dict:
    text = op.description
    rights = _rights(op)
    if rights is not None:
        text += ("\n\n" if text else "") + f"Rights (`{rights['action']}`): people always. " \
            + rights["agents"]
    if op.events:
        text += ("\n\n" if text else "") + "WebSocket events: " + \
            ", ".join(f"`{e}`" for e in op.events) + "."
    out: dict[str, Any] = {"summary": op.summary, "tags": [_tag(path)],
                           "operationId": _operation_id(method, path)}
    if text:
        out["description"] = text
    if rights is not None:
        out["x-maestro-rights"] = rights
    params: list[dict] = []
    found = _WHAT.match(path)
    what = found.group(1)[:-1] if found else "item"
    for name in re.findall(r"\{(\w+)\}", path):
        params.append({"name": name, "in": "path", "required": True,
                       "description": PATH_PARAMS.get(name, name).format(what=what),
                       "schema": {"type": "string", "maxLength": 128}})
    if op.query is not None:
        params += schemas.parameters(op.query)
    if op.claim_token:
        params.append({"name": "X-Maestro-Claim-Token", "in": "header", "required": False,
                       "schema": {"type": "integer"},
                       "description": "the fencing token of the writer's claim; refused with "
                                      "409 CLAIM_LOST unless it is the live one"})
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"required": True,
                              "content": {JSON: {"schema": schemas.of(op.body)}}}
    answer: dict[str, Any] = {"description": "OK", "content": {JSON: {
        "schema": schemas.of(op.ok) if op.ok is not None else {"type": "object"}}}}
    if op.paged:
        answer["headers"] = {
            "X-Next-Cursor": {"description": "with `limit`, when more items may follow: the "
                                             "`cursor` of the next page",
                              "schema": {"type": "string"}},
            "Link": {"description": 'with `limit`, when more may follow: `<URL of the next '
                                    'page>; rel="next"`', "schema": {"type": "string"}}}
    out["responses"] = {str(op.status): answer, **_error_responses(method, op)}
    return out


def _operation_id(method: str, path: str) -> str:
    words = [w.strip("{}") for w in path.strip("/").split("/") if w != "api"]
    return method + "".join(w[:1].upper() + re.sub(r"[^0-9A-Za-z]", "", w[1:]) for w in words)


UNDOCUMENTED = Op("(undocumented)")


def build_document(routes: list[tuple[str, str, Op | None]]) -> dict:
    """The OpenAPI document of `(method, template, declaration)` routes, in that order."""
    schemas = Schemas()
    schemas.of(m.Error)
    paths: dict[str, dict] = {}
    for method, path, op in routes:
        method = method.lower()
        op = op or UNDOCUMENTED
        paths.setdefault(path, {})[method] = _operation(method, path, op, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Maestro API", "version": __version__,
                 "description": DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{}, {"bearer": []}],
        "tags": [{"name": name, "description": text} for name, text in TAGS],
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.components.items())),
                       "securitySchemes": {"bearer": {
                           "type": "http", "scheme": "bearer",
                           "description": "MAESTRO_TOKEN, or an agent's MAESTRO_SESSION_TOKEN "
                                          "(only when the server has a token)"}}},
    }


DESCRIPTION = """Projects, hierarchical tasks and agent sessions, and the coordination of a team
of agents (dependencies, ready work, claims with leases).

* Every change is also broadcast on the WebSocket at `/` (or `/ws`) as
  `{"type", "event", "data", "timestamp"}`.
* Errors answer `{"error": true, "code", "message", "details"?}`.
* Every list takes `limit` (1-1000) and `cursor`: the body stays a plain array and, when more
  may follow, the `X-Next-Cursor` and `Link` headers name the next page. Without `limit` a list
  is answered whole.
* With `MAESTRO_TOKEN` set, every request needs `Authorization: Bearer <token>` (*Authorize*).
* The agents' tools are also served over MCP (streamable HTTP, JSON-RPC) at `/mcp`; a tool call
  goes through these same routes, so this document describes what each one does."""

TAGS = [("projects", "Projects"), ("tasks", "Tasks and their timelines"),
        ("coordination", "Dependencies, readiness and claims (SPEC §15)"),
        ("sessions", "Agent sessions, spawning and control"),
        ("workspaces", "Each spawned session's own git worktree: review, merge, clean-up"),
        ("skills", "The skill catalogue (SKILLS_DIR)"), ("server", "Health and diagnostics")]


# ------------------------------------------------------------------ /docs
def swagger_ui_dir() -> Path | None:
    """The folder of Swagger UI's files in the installed `swagger-ui-bundle-v2`, if any."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    folder = Path(str(getattr(swagger_ui_bundle, "swagger_ui_path", "")))
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


@lru_cache(maxsize=1)
def docs_page(available: bool) -> bytes:
    """The /docs page: Swagger UI on /openapi.json, or a pointer to it without the package."""
    if not available:
        return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                "<title>Maestro API</title></head><body><h1>Maestro API</h1><p>The API "
                "reference needs the <code>swagger-ui-bundle-v2</code> package (<code>pip "
                "install swagger-ui-bundle-v2</code>). The machine-readable document is at "
                "<a href='/openapi.json'>/openapi.json</a>.</p></body></html>").encode()
    return b"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Maestro API reference</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
  <link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png">
  <style>body { margin: 0 } .topbar { display: none }</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/ui/docs.js"></script>
</body>
</html>
"""
