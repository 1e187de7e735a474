"""Spawning agent sessions for tasks (SPEC §9) and following the launched agents to the end."""
