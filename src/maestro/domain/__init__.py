"""Pure rules of the domain (dependency graph, readiness, handoff, task<->session links, the task
hierarchy, timeline entries, history): functions of plain lookups, with no I/O and no knowledge
of the store, the server or the clock. The Service composes them into transactions."""
