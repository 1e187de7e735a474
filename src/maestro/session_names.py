"""What a session is called when nobody names it: after its role and the titles of its tasks,
the same whether it was spawned through the API, the CLI or the dashboard, so that a person
reading a list of sessions sees what each one works on."""

from __future__ import annotations

TITLE_CHARS = 30


def short_title(title: str) -> str:
    """A task title cut to TITLE_CHARS characters (with "..." when cut)."""
    title = " ".join(str(title).split())
    return title if len(title) <= TITLE_CHARS else title[:TITLE_CHARS] + "..."


def session_name(role: str, titles: list[str]) -> str:
    """`Worker: Add login`, `Orchestrator: Checkout +2 more` (the first task's title and how
    many more tasks the session has)."""
    label = (role or "worker").capitalize()
    if not titles:
        return label
    name = f"{label}: {short_title(titles[0])}"
    if len(titles) > 1:
        name += f" +{len(titles) - 1} more"
    return name
