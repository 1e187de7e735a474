"""Which tools exist and who sees them, without loading the MCP SDK (config.py and the CLI read
this at start-up).

A worker session sees the worker tools; an orchestrator session and a person see all of them.
`--tools` / MAESTRO_MCP_TOOLS narrow that further: tool names and the groups `worker`,
`orchestrator` (the five planning tools) and `all`, comma-separated."""

from __future__ import annotations

SERVER_NAME = "maestro"

WORKER_TOOLS = ("session_context", "task_ready", "task_claim", "task_get", "task_report",
                "task_release", "task_create")
ORCHESTRATOR_TOOLS = ("task_list", "task_plan", "task_update", "session_spawn", "session_list")
ALL_TOOLS = WORKER_TOOLS + ORCHESTRATOR_TOOLS
GROUPS = {"worker": WORKER_TOOLS, "orchestrator": ORCHESTRATOR_TOOLS, "all": ALL_TOOLS}
ROLES = ("worker", "orchestrator", "person")


def parse_tools(raw: str | None) -> tuple[tuple[str, ...], list[str]]:
    """`worker,task_list` -> the tool names it stands for (in catalogue order) and the entries
    that name nothing. An empty value names nothing (no narrowing)."""
    wanted: set[str] = set()
    problems: list[str] = []
    for part in (raw or "").split(","):
        item = part.strip().lower()
        if not item:
            continue
        if item in GROUPS:
            wanted.update(GROUPS[item])
        elif item in ALL_TOOLS:
            wanted.add(item)
        else:
            problems.append(item)
    return tuple(t for t in ALL_TOOLS if t in wanted), problems


def tools_for(role: str, narrowed: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The tools a caller of `role` sees: the worker tools for a worker session, all of them
    for an orchestrator session or a person; `narrowed` (when not empty) keeps only those."""
    base = WORKER_TOOLS if role == "worker" else ALL_TOOLS
    if not narrowed:
        return base
    return tuple(t for t in base if t in narrowed)


def problem_text(problems: list[str]) -> str:
    return (f"unknown tool(s) {', '.join(problems)}; use tool names or the groups worker, "
            f"orchestrator, all (tools: {', '.join(ALL_TOOLS)})")
