// The dashboard: wires the REST client, the live event stream, the page's state and the views.
// Routes live in the URL hash: #/p/<projectId>, #/p/<projectId>/task/<taskId>,
// #/p/<projectId>/session/<sessionId>.

import * as api from "./api.js";
import { LiveStream } from "./live.js";
import { loadAll } from "./paging.js";
import {
  state, subscribe, replaceAll, applyEvent, upsert, remove, projectsSorted, isLaunched,
} from "./store.js";
import { ACTIVE_SESSION } from "./dom.js";
import { projectsView } from "./views/projects.js";
import { projectView } from "./views/project.js";
import { sessionsView } from "./views/sessions.js";
import { detailView } from "./views/detail.js";

const AGE_REFRESH_MS = 10000;

const ui = {
  projectId: null,
  open: null, // {kind: "task" | "session", id}
  filter: "",
  view: "tree", // "tree" or "graph": how the project's tasks are shown
  selected: new Set(), // task ids ticked for a new session
  collapsed: new Set(), // task ids whose subtasks are hidden
};

// ------------------------------------------------------------------ routing

function href({ projectId, open }) {
  if (!projectId) return "#/";
  let out = `#/p/${encodeURIComponent(projectId)}`;
  if (open) out += `/${open.kind}/${encodeURIComponent(open.id)}`;
  return out;
}

function parseHash(hash) {
  const m = hash.match(/^#\/p\/([^/]+)(?:\/(task|session)\/([^/]+))?$/);
  if (!m) return { projectId: null, open: null };
  const decode = (v) => {
    try {
      return decodeURIComponent(v);
    } catch {
      return v;
    }
  };
  return { projectId: decode(m[1]), open: m[2] ? { kind: m[2], id: decode(m[3]) } : null };
}

let pendingFocus = null; // () => element: where the focus goes once the route is shown

/**
 * Show `target` ({projectId, open}) now and put it in the URL. `focus` (a function returning an
 * element, evaluated after the render) replaces the usual focus move, e.g. after a delete.
 */
function navigate(target, { focus = null } = {}) {
  const next = href({ projectId: target.projectId, open: target.open ?? null });
  pendingFocus = focus;
  if (location.hash !== next) {
    location.hash = next;
    // Applied at once rather than on the hashchange that follows (which then changes nothing),
    // so the page never shows the route it leaves with data that is already gone.
    applyRoute(true);
  } else {
    applyRoute();
  }
}

let routeHandled = false;

function applyRoute(fromUser = false) {
  // Hashes that are not routes (e.g. the skip link) leave the current view alone.
  if (location.hash && location.hash !== "#/" && !location.hash.startsWith("#/p/")) return;
  const route = parseHash(location.hash);
  const same = (a, b) => Boolean(a && b && a.kind === b.kind && a.id === b.id);
  const opened = route.open && !same(ui.open, route.open);
  const closed = !route.open && ui.open;
  const previousOpen = ui.open;
  ui.projectId = route.projectId;
  ui.open = route.open;
  routeHandled = true;
  chooseDefaultProject();
  renderNow();
  const focusTarget = pendingFocus?.();
  pendingFocus = null;
  if (focusTarget) {
    focusTarget.focus();
    return;
  }
  if (!fromUser) return;
  if (opened) document.getElementById("detail-title")?.focus();
  if (closed && previousOpen) {
    const selector = previousOpen.kind === "task"
      ? `[data-task-id="${CSS.escape(previousOpen.id)}"] .task-title`
      : `[data-session-id="${CSS.escape(previousOpen.id)}"] .session-name`;
    document.querySelector(selector)?.focus();
  }
}

/** With no project in the URL, show the first one (without adding a history entry). */
function chooseDefaultProject() {
  if (ui.projectId || !state.loaded) return;
  const first = projectsSorted()[0];
  if (!first) return;
  ui.projectId = first.id;
  history.replaceState(null, "", href({ projectId: first.id }));
}

window.addEventListener("hashchange", () => applyRoute(true));

// ------------------------------------------------------------------ messages

const noticeBox = document.getElementById("notice");
const noticeText = noticeBox.querySelector(".notice-text");
noticeBox.querySelector(".notice-close").addEventListener("click", () => {
  noticeBox.hidden = true;
});

function notice(message) {
  noticeText.textContent = message;
  noticeBox.hidden = !message;
}

/** One line for a failed request: the server's message, and its code when it adds something. */
function describe(err) {
  if (!(err instanceof api.ApiError)) return String(err?.message || err);
  if (!err.status) return err.message;
  const generic = ["VALIDATION_ERROR", "INTERNAL_ERROR", `HTTP_${err.status}`];
  return generic.includes(err.code) ? err.message : `${err.message} (${err.code})`;
}

// ------------------------------------------------------------------ actions

const seg = api.seg;

const actions = {
  async createProject(body) {
    const project = await api.post("/api/projects", body);
    upsert("projects", project);
    return project;
  },
  async renameProject(id, name) {
    upsert("projects", await api.put(`/api/projects/${seg(id)}`, { name }));
  },
  /** Delete a project; with `cascade` also its sessions (agents stopped) and tasks. */
  async deleteProject(id, cascade = false) {
    const result = await api.del(`/api/projects/${seg(id)}${cascade ? "?cascade=true" : ""}`);
    const gone = result?.deleted && typeof result.deleted === "object" ? result.deleted : {};
    if (Array.isArray(gone.sessions)) remove("sessions", gone.sessions);
    if (Array.isArray(gone.tasks)) forgetTasks(gone.tasks);
    remove("projects", id);
  },
  async createTask(body) {
    const task = await api.post("/api/tasks", body);
    upsert("tasks", task);
    return task;
  },
  /** Delete a task; with `cascade` its whole subtree (a task with children needs it). */
  async deleteTask(id, cascade = false) {
    const result = await api.del(`/api/tasks/${seg(id)}${cascade ? "?cascade=true" : ""}`);
    forgetTasks(Array.isArray(result?.deleted) ? result.deleted : [id]);
  },
  /** Delete a session, stopping first the agent Maestro runs for it. */
  async deleteSession(id) {
    const session = state.sessions.get(id);
    if (session && ACTIVE_SESSION.has(session.status) && isLaunched(session)) {
      try {
        await actions.stop(id);
      } catch (err) {
        // Not launched by this server, or already ending: deleting the session is enough.
        if (err.status !== 409) throw err;
      }
    }
    await api.del(`/api/sessions/${seg(id)}`);
    remove("sessions", id);
  },
  async updateTask(id, fields) {
    upsert("tasks", await api.patch(`/api/tasks/${seg(id)}`, fields));
  },
  async addDependency(id, dependsOn) {
    upsert("tasks", await api.post(`/api/tasks/${seg(id)}/dependencies/${seg(dependsOn)}`));
  },
  async removeDependency(id, dependsOn) {
    upsert("tasks", await api.del(`/api/tasks/${seg(id)}/dependencies/${seg(dependsOn)}`));
  },
  /** A person frees a task held by an agent (e.g. one that died): the holder's own claim. */
  async releaseClaim(task) {
    const claim = task.claim;
    if (!claim) return;
    const result = await api.post(`/api/tasks/${seg(task.id)}/claim/release`, {
      sessionId: claim.sessionId, token: claim.token, reason: "released from the dashboard",
    });
    if (result?.task) upsert("tasks", result.task);
  },
  async addTimeline(id, body) {
    upsert("tasks", await api.post(`/api/tasks/${seg(id)}/timeline`, body));
  },
  async spawn(body) {
    const result = await api.post("/api/sessions/spawn", body);
    if (result?.session) upsert("sessions", result.session);
    return result;
  },
  async stop(id) {
    const result = await api.post(`/api/sessions/${seg(id)}/stop`, {});
    const session = result?.session ?? (result?.id === id && result?.status ? result : null);
    if (session) upsert("sessions", session);
    return result;
  },
  sessionLog(id, tail) {
    return api.get(`/api/sessions/${seg(id)}/log?tail=${tail}`);
  },
  taskHistory(id) {
    return api.get(`/api/tasks/${seg(id)}/history`);
  },
  toggleSelected(id, on) {
    if (on) ui.selected.add(id);
    else ui.selected.delete(id);
    scheduleRender();
  },
  clearSelection() {
    ui.selected.clear();
    scheduleRender();
  },
  toggleCollapsed(id) {
    if (ui.collapsed.has(id)) ui.collapsed.delete(id);
    else ui.collapsed.add(id);
    scheduleRender();
  },
};

/** Deleted tasks leave the store and the page's selections. */
function forgetTasks(ids) {
  for (const id of ids) {
    ui.selected.delete(id);
    ui.collapsed.delete(id);
  }
  remove("tasks", ids);
}

const app = {
  ui,
  actions,
  href,
  navigate,
  notice,
  describe,
  render: () => renderNow(),
  isOpen: (kind, id) => Boolean(ui.open && ui.open.kind === kind && ui.open.id === id),
};

// ------------------------------------------------------------------ rendering

const views = [projectsView(app), projectView(app), sessionsView(app), detailView(app)];
let renderTimer = null;

function renderNow() {
  clearTimeout(renderTimer);
  renderTimer = null;
  if (!routeHandled) return;
  chooseDefaultProject();
  for (const view of views) view.render();
}

function scheduleRender() {
  if (renderTimer === null) renderTimer = setTimeout(renderNow, 0);
}

subscribe(scheduleRender);
setInterval(scheduleRender, AGE_REFRESH_MS);

// The skip link moves focus without touching the URL, which holds the route.
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  const target = document.getElementById("tasks-heading");
  if (target && target.offsetParent !== null) target.focus();
  else document.getElementById("main").focus();
});

document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || !ui.open) return;
  if (event.target.closest?.("input, textarea, select, dialog")) return;
  navigate({ projectId: ui.projectId, open: null });
});

// ------------------------------------------------------------------ token prompt

const tokenDialog = document.getElementById("token-dialog");

api.setTokenPrompt((refused) => new Promise((resolve) => {
  const input = tokenDialog.querySelector("input[name=token]");
  tokenDialog.querySelector("#token-refused").hidden = !refused;
  input.value = "";
  tokenDialog.returnValue = "";
  tokenDialog.addEventListener("close", () => {
    resolve(tokenDialog.returnValue === "ok" && input.value.trim() ? input.value.trim() : null);
    input.value = "";
  }, { once: true });
  tokenDialog.showModal();
  input.focus();
}));

// ------------------------------------------------------------------ live state

const connection = document.getElementById("connection");
const connectionText = connection.querySelector(".connection-text");
const CONNECTION_TEXT = {
  connecting: "Connecting…",
  syncing: "Syncing…",
  live: "Live",
  offline: "Reconnecting…",
};

function showConnection(kind) {
  connection.dataset.state = kind;
  connectionText.textContent = CONNECTION_TEXT[kind] || kind;
  connection.title = kind === "live" ? "Live updates are on"
    : "Live updates are paused; reconnecting";
}

let buffered = null; // events that arrive while a refresh is in flight
let refreshAgain = false;

/** Load everything, then replay the events that arrived meanwhile (they are newer). */
async function refresh() {
  if (buffered) {
    refreshAgain = true;
    return;
  }
  buffered = [];
  let ok = false;
  try {
    const [projects, tasks, sessions] = await Promise.all([
      loadAll("/api/projects"), loadAll("/api/tasks"), loadAll("/api/sessions"),
    ]);
    replaceAll({ projects, tasks, sessions });
    ok = true;
  } catch (err) {
    if (err.status) notice(`Could not load the board: ${describe(err)}`);
  } finally {
    const pending = buffered;
    buffered = null;
    for (const message of pending) applyEvent(message);
  }
  if (refreshAgain) {
    refreshAgain = false;
    return refresh();
  }
  return ok;
}

const live = new LiveStream({
  url: api.streamUrl,
  onState: (kind) => showConnection(kind),
  onMessage: (message) => {
    if (buffered) buffered.push(message);
    else applyEvent(message);
  },
  onOpen: async () => {
    showConnection("syncing");
    const ok = await refresh();
    if (live.socket && live.socket.readyState === WebSocket.OPEN) {
      showConnection("live");
      if (ok && noticeText.textContent.startsWith("Could not load")) notice("");
    }
  },
  onFailure: async (failures) => {
    // The stream cannot say why it was refused; a REST probe reveals a missing or changed token
    // (and asks for it). Only every few attempts, so an outage stays quiet.
    if (failures % 4 !== 0) return;
    try {
      await api.get("/ws-status");
      live.reconnectNow();
    } catch {
      // still unreachable: keep backing off
    }
  },
});

async function start() {
  applyRoute();
  try {
    await api.get("/ws-status");
  } catch (err) {
    if (err.status === 401) {
      notice("This server needs an access token. Reload the page to enter it.");
    }
  }
  live.start();
}

start();
