// Readiness of tasks (SPEC §15.2), worked out from the tasks the page holds, so that the tree and
// the dependency graph follow every live event at once. A task is ready when it is pending,
// every dependency exists and is completed, no ancestor is blocked or waits for an unmet
// dependency, and nobody holds a live claim on it.

/** The task's claim while its lease runs (by this browser's clock), else null. */
export function liveClaim(task, now = Date.now()) {
  const claim = task && task.claim;
  if (!claim || typeof claim !== "object" || !claim.sessionId) return null;
  const until = Number(claim.leaseExpiresAt);
  return Number.isFinite(until) && until > now ? claim : null;
}

/** Dependency ids of a task (a malformed field reads as none). */
export function dependencyIds(task) {
  return Array.isArray(task?.dependencies)
    ? task.dependencies.filter((id) => typeof id === "string") : [];
}

/**
 * {ready, waiting, blockedBy, missing, blockedAncestors, claim} for one task, where `waiting`
 * means a pending task held back by dependencies or ancestors, and `blockedBy` lists the unmet
 * dependencies, its own and inherited, in the order met.
 */
export function readinessOf(task, tasksById, now = Date.now()) {
  const blockedBy = [];
  const missing = [];
  const blockedAncestors = [];
  const note = (list, id) => {
    if (!list.includes(id)) list.push(id);
  };
  const unmet = (t) => {
    for (const id of dependencyIds(t)) {
      const dep = tasksById.get(id);
      if (!dep) {
        note(missing, id);
        note(blockedBy, id);
      } else if (dep.status !== "completed") {
        note(blockedBy, id);
      }
    }
  };
  unmet(task);
  const seen = new Set([task.id]);
  let parent = task.parentId ? tasksById.get(task.parentId) : null;
  while (parent && !seen.has(parent.id)) {
    seen.add(parent.id);
    if (parent.status === "blocked") note(blockedAncestors, parent.id);
    unmet(parent);
    parent = parent.parentId ? tasksById.get(parent.parentId) : null;
  }
  const claim = liveClaim(task, now);
  const held = blockedBy.length > 0 || blockedAncestors.length > 0;
  const pending = task.status === "pending";
  return {
    ready: pending && !held && !claim,
    waiting: pending && held,
    blockedBy,
    missing,
    blockedAncestors,
    claim,
  };
}

/** Readiness of every task in `tasks` (one project), by id. */
export function readinessMap(tasks, now = Date.now()) {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const out = new Map();
  for (const t of tasks) out.set(t.id, readinessOf(t, byId, now));
  return out;
}

/** Tasks of `tasks` that name `taskId` among their dependencies. */
export function dependentsOf(taskId, tasks) {
  return tasks.filter((t) => dependencyIds(t).includes(taskId));
}
