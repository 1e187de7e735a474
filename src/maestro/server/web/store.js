// The page's copy of the server state: projects, tasks and sessions by id, kept current by the
// WebSocket events of SPEC §10.3 and replaced wholesale by a full refresh after a reconnect.

export const state = {
  projects: new Map(),
  tasks: new Map(),
  sessions: new Map(),
  loaded: false,
  version: 0,
};

const listeners = new Set();

/** Call `fn` after every change. */
export function subscribe(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function changed() {
  state.version += 1;
  for (const fn of listeners) fn();
}

function byId(list) {
  const map = new Map();
  for (const item of Array.isArray(list) ? list : []) {
    if (item && typeof item.id === "string") map.set(item.id, item);
  }
  return map;
}

// Ids deleted since the last full load, by kind: a REST answer that was in flight when its
// entity was deleted (a status change racing a delete) must not bring it back.
const deleted = { projects: new Set(), tasks: new Set(), sessions: new Set() };

/** Replace everything with a fresh snapshot from the REST API. */
export function replaceAll({ projects, tasks, sessions }) {
  state.projects = byId(projects);
  state.tasks = byId(tasks);
  state.sessions = byId(sessions);
  state.loaded = true;
  for (const ids of Object.values(deleted)) ids.clear();
  changed();
}

/**
 * Put one entity returned by a REST call into the state right away, unless an event already
 * brought a newer version of it.
 */
export function upsert(kind, entity) {
  if (!entity || typeof entity.id !== "string") return;
  if (deleted[kind].has(entity.id)) return;
  const old = state[kind].get(entity.id);
  if (old && stamp(old) > stamp(entity)) return;
  state[kind].set(entity.id, entity);
  changed();
}

function stamp(entity) {
  return entity.updatedAt ?? entity.lastActivity ?? 0;
}

/** Forget entities the server has deleted (one id or a list of ids). */
export function remove(kind, ids) {
  let any = false;
  for (const id of Array.isArray(ids) ? ids : [ids]) {
    deleted[kind].add(id);
    if (state[kind].delete(id)) any = true;
  }
  if (any) changed();
}

function forget(kind, id) {
  if (typeof id !== "string") return;
  deleted[kind].add(id);
  state[kind].delete(id);
}

const HANDLERS = {
  "project:created": (d) => upsertQuiet("projects", d),
  "project:updated": (d) => upsertQuiet("projects", d),
  "project:deleted": (d) => forget("projects", d?.id),
  "task:created": (d) => upsertQuiet("tasks", d),
  "task:updated": (d) => upsertQuiet("tasks", d),
  "task:deleted": (d) => forget("tasks", d?.id),
  "session:created": (d) => upsertQuiet("sessions", d),
  "session:updated": (d) => upsertQuiet("sessions", d),
  "session:deleted": (d) => forget("sessions", d?.id),
  "session:spawn_request": (d) => upsertQuiet("sessions", d?.session),
  "session:spawn": (d) => upsertQuiet("sessions", d?.session),
  // Claim events (SPEC §15.3) are each followed by a task:updated with the whole task; they only
  // ask for a render, so readiness and lease times shown elsewhere follow at once.
  "task:claimed": () => true,
  "task:claim_released": () => true,
  "task:claim_expired": () => true,
};

function upsertQuiet(kind, entity) {
  if (!entity || typeof entity.id !== "string") return false;
  deleted[kind].delete(entity.id); // events come in order: a later one is the truth
  state[kind].set(entity.id, entity);
  return true;
}

/**
 * Apply one event envelope {type, event, data}. Link events (task:session_added, ...) need no
 * handling: the full task:updated / session:updated that follow them carry the new state.
 */
export function applyEvent(message) {
  const name = message?.type || message?.event;
  const handler = HANDLERS[name];
  if (!handler) return false;
  handler(message.data);
  changed();
  return true;
}

/** Tasks of a project, in creation order. */
export function tasksOf(projectId) {
  const out = [];
  for (const t of state.tasks.values()) if (t.projectId === projectId) out.push(t);
  return out.sort(byCreation);
}

/** Sessions of a project, newest activity first. */
export function sessionsOf(projectId) {
  const out = [];
  for (const s of state.sessions.values()) if (s.projectId === projectId) out.push(s);
  const recent = (s) => s.lastActivity ?? s.startedAt ?? 0;
  return out.sort((a, b) => recent(b) - recent(a) || String(a.id).localeCompare(String(b.id)));
}

export function projectsSorted() {
  return [...state.projects.values()].sort(byCreation);
}

function byCreation(a, b) {
  return (a.createdAt ?? 0) - (b.createdAt ?? 0) || String(a.id).localeCompare(String(b.id));
}

/** Count of a project's tasks by status. */
export function countsByStatus(projectId) {
  const counts = {};
  for (const t of state.tasks.values()) {
    if (t.projectId !== projectId) continue;
    counts[t.status] = (counts[t.status] || 0) + 1;
  }
  return counts;
}

/** `taskId`'s descendants by parentId (any project, as the server's cascade), nearest first. */
export function descendantsOf(taskId) {
  const children = new Map();
  for (const t of state.tasks.values()) {
    if (!t.parentId) continue;
    if (!children.has(t.parentId)) children.set(t.parentId, []);
    children.get(t.parentId).push(t);
  }
  const out = [];
  const seen = new Set([taskId]);
  const queue = [taskId];
  while (queue.length) {
    for (const child of children.get(queue.shift()) || []) {
      if (seen.has(child.id)) continue;
      seen.add(child.id);
      out.push(child);
      queue.push(child.id);
    }
  }
  return out;
}

/** Sessions started through spawn carry a manifest path: only those have an agent Maestro runs. */
export function isLaunched(session) {
  return Boolean(session?.env?.MAESTRO_MANIFEST_PATH || session?.metadata?.launcher);
}
