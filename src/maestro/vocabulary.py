"""The words of Maestro's data model, each written once: the enums of SPEC §4 and the groups of
them the server, the CLI, the launcher and the MCP tools reason with. Imports nothing, so the
CLI may import it at start-up for free."""

from __future__ import annotations

# ------------------------------------------------------------------ tasks (SPEC §4.2, §4.3)
TASK_STATUSES = ("pending", "in_progress", "completed", "blocked")
TASK_PRIORITIES = ("low", "medium", "high")
PRIORITY_ORDER = ("high", "medium", "low")  # how lists show them: most urgent first
# the columns of a board, in the order work moves through them
BOARD_ORDER = ("pending", "in_progress", "blocked", "completed")
DEFAULT_PRIORITY = "medium"
TIMELINE_TYPES = ("created", "session_started", "session_ended", "update", "milestone", "blocker")
DEFAULT_TIMELINE_TYPE = "update"
# A task status that ends a live claim when written (completing or reopening the task).
CLAIM_ENDING_STATUSES = ("pending", "completed")

# ------------------------------------------------------------------ sessions (SPEC §4.4, §4.5)
SESSION_STATUSES = ("spawning", "running", "completed", "failed")
ACTIVE_SESSION_STATUSES = ("spawning", "running")
# an ended session (its agent token is dead)
FINAL_SESSION_STATUSES = ("completed", "failed")
DEFAULT_SESSION_STATUS = "running"
STRATEGIES = ("simple", "queue", "tree")
SPAWN_STRATEGIES = ("simple", "queue")  # what a spawn request and a manifest may ask for
# The session events that say how its agent ended (the CLI shows their data).
END_EVENT_TYPES = ("process_exit", "launch_failed", "agent_launch_failed")
DEFAULT_SESSION_TIMELINE_TYPE = "progress"

# ------------------------------------------------------------------ agent status of a task (E3)
SESSION_TASK_STATUSES = ("queued", "working", "needs_input", "blocked", "completed", "failed",
                         "skipped")
AGENT_AT_WORK = ("queued", "working", "needs_input")  # an agent still on the task
AGENT_GAVE_UP = ("failed", "skipped")

# ------------------------------------------------------------------ reports (SPEC §12.4)
# report kind -> (the task's sessionStatus, the session timeline entry type)
REPORT_KINDS = {
    "progress": ("working", "progress"),
    "completed": ("completed", "task_completed"),
    "blocked": ("blocked", "task_blocked"),
    "failed": ("failed", "error"),
    "needs_input": ("needs_input", "needs_input"),
}

# ------------------------------------------------------------------ workspaces and agents
ISOLATIONS = ("worktree", "none")
AGENT_ROLES = ("worker", "orchestrator")
AGENT_PROFILES = ("claude", "codex")
AGENT_MODELS = ("sonnet", "opus", "haiku")
PERMISSION_MODES = ("acceptEdits", "interactive", "readOnly")
THINKING_MODES = ("auto", "interleaved", "disabled")
# who asked for a spawn (SPEC §9.2)
SPAWN_SOURCES = ("manual", "orchestrator", "ui", "cli", "api", "session")
# A manifest (the original format) also knows a priority above high.
MANIFEST_PRIORITIES = TASK_PRIORITIES + ("critical",)
