"""Pure rules of coordination (dependency graph, readiness, handoff): functions of plain lookups,
with no I/O and no knowledge of the store, the server or the clock."""
