"""How an agent ended, in words a person reads: the launcher keeps it in the session's metadata
(`endReason`, `endMessage`) so that every client can say "stopped by the user" or "the agent
exited with code 3: …" instead of a bare `failed`."""

from __future__ import annotations

_END_TEXT = {
    "exited": "the agent exited normally (code 0)",
    "agent_launch_failed": "the agent CLI could not be started (exit code 5)",
    "command_not_found": "a command was not found (exit code 127)",
    "process_lost": "the agent's process ended without a record",
    "server_restarted": "the agent was gone when the server restarted",
}


def end_message(data: dict, stopped_by: str | None = None) -> str:
    """How an agent ended, for a person (kept in the session's metadata as `endMessage`)."""
    reason, code, sig = data.get("reason"), data.get("exitCode"), data.get("signal")
    if reason == "stopped":
        text = "stopped by the user" if stopped_by is None else f"stopped by session {stopped_by}"
        return text + (" before the agent started" if data.get("message") ==
                       "stopped before the agent started" else "")
    if reason == "signal":
        text = f"the agent was killed by {sig}"
    elif reason == "exit_code":
        text = f"the agent exited with code {code}"
    else:
        text = _END_TEXT.get(reason, "")
    detail = data.get("message")
    if detail and detail not in text:
        text = f"{text}: {detail}" if text else str(detail)
    return text or str(reason)
