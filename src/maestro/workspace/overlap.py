"""Which files two sessions' worktrees both change (pure; the manager feeds it git's answers)."""

from __future__ import annotations

from collections import defaultdict


def overlaps(changed: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """For sessions of one repository and the files each changes: session -> {other session:
    files both change, sorted}. Sessions without a shared file are absent."""
    holders: dict[str, list[str]] = defaultdict(list)
    for sid, files in changed.items():
        for path in set(files):
            holders[path].append(sid)
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path, sids in holders.items():
        if len(sids) < 2:
            continue
        for sid in sids:
            for other in sids:
                if other != sid:
                    out[sid][other].add(path)
    return {sid: {other: sorted(files) for other, files in sorted(others.items())}
            for sid, others in out.items()}


def new_pairs(before: dict[str, list[dict]], after: dict[str, dict[str, list[str]]]) \
        -> list[tuple[str, str, list[str]]]:
    """Pairs (a, b, files) whose shared files grew since `before` (each session's recorded
    `overlaps`), each pair once with a < b."""
    out = []
    for sid, others in after.items():
        known = {o.get("sessionId"): set(o.get("files") or []) for o in before.get(sid) or []
                 if isinstance(o, dict)}
        for other, files in others.items():
            if sid < other and not set(files) <= known.get(other, set()):
                out.append((sid, other, files))
    return sorted(out)
