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

/** Replace everything with a fresh snapshot from the REST API. */
export function replaceAll({ projects, tasks, sessions }) {
  state.projects = byId(projects);
  state.tasks = byId(tasks);
  state.sessions = byId(sessions);
  state.loaded = true;
  changed();
}

/**
 * Put one entity returned by a REST call into the state right away, unless an event already
 * brought a newer version of it.
 */
export function upsert(kind, entity) {
  if (!entity || typeof entity.id !== "string") return;
  const old = state[kind].get(entity.id);
  if (old && stamp(old) > stamp(entity)) return;
  state[kind].set(entity.id, entity);
  changed();
}

function stamp(entity) {
  return entity.updatedAt ?? entity.lastActivity ?? 0;
}

export function remove(kind, id) {
  if (state[kind].delete(id)) changed();
}

const HANDLERS = {
  "project:created": (d) => upsertQuiet("projects", d),
  "project:updated": (d) => upsertQuiet("projects", d),
  "project:deleted": (d) => state.projects.delete(d?.id),
  "task:created": (d) => upsertQuiet("tasks", d),
  "task:updated": (d) => upsertQuiet("tasks", d),
  "task:deleted": (d) => state.tasks.delete(d?.id),
  "session:created": (d) => upsertQuiet("sessions", d),
  "session:updated": (d) => upsertQuiet("sessions", d),
  "session:deleted": (d) => state.sessions.delete(d?.id),
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
