// A task's history in the detail pane: its own timeline merged with what its sessions reported
// about it (progress, completion, status changes), newest first. The merge is the server's
// (`GET /api/tasks/:id/history`, the rule `maestro task show` uses too); the pane asks again
// whenever the task's timeline or the timeline of one of its sessions grows, which the
// WebSocket's task:updated / session:updated events bring.

import { h, fill, timeEl, badge } from "../dom.js";
import { state } from "../store.js";
import { sessionLink } from "./links.js";

/** Sessions whose timeline may hold reports about `task` (those linked to it). */
function sessionsOf(task) {
  const out = [];
  for (const s of state.sessions.values()) {
    if (Array.isArray(s.taskIds) && s.taskIds.includes(task.id)) out.push(s);
  }
  return out;
}

/** What the history depends on: a change here means the server's merge has changed. */
export function historySignature(task) {
  const own = Array.isArray(task.timeline) ? task.timeline.length : 0;
  const sessions = sessionsOf(task).map((s) => [s.id,
    Array.isArray(s.timeline) ? s.timeline.length : 0, s.name]);
  return JSON.stringify([own, sessions]);
}

/**
 * The history list of one task: {element, update(task), stop()}. Answers that arrive after a
 * newer request was sent, or after the pane closed, are dropped.
 */
export function historySection(app, task) {
  const list = h("ol", { class: "timeline", "aria-label": "History, newest first" });
  let asked = 0;
  let stopped = false;
  let shown = null; // the task the list was last drawn for

  async function update(t) {
    shown = t;
    const ticket = ++asked;
    let entries;
    try {
      entries = await app.actions.taskHistory(t.id);
    } catch (err) {
      if (stopped || ticket !== asked) return;
      // An older server has no history endpoint: the task's own timeline is still worth
      // showing.
      entries = ownTimeline(t);
      if (err.status !== 404) app.notice(`Could not load the task's history: ${app.describe(err)}`);
    }
    if (stopped || ticket !== asked) return;
    draw(Array.isArray(entries) ? entries : ownTimeline(t));
  }

  function draw(entries) {
    const newest = [...entries].reverse();
    fill(list, newest.length
      ? newest.map((e) => historyEntry(app, e, shown.projectId))
      : h("li", { class: "muted" }, "Nothing yet."));
  }

  return {
    element: list,
    update,
    stop() {
      stopped = true;
    },
  };
}

function ownTimeline(task) {
  return (Array.isArray(task.timeline) ? task.timeline : [])
    .map((e) => ({ ...e, source: "task" }))
    .sort((a, b) => (a.timestamp ?? 0) - (b.timestamp ?? 0));
}

function historyEntry(app, e, projectId) {
  const type = String(e.type ?? "update").replace(/[^a-z_]/gi, "");
  const reported = e.source === "session";
  const session = e.sessionId
    ? state.sessions.get(e.sessionId) || { id: e.sessionId, missing: true } : null;
  return h("li", {
    class: `timeline-entry type-${type}${reported ? " reported" : ""}`,
    dataset: { source: reported ? "session" : "task" },
  },
  h("div", { class: "timeline-head" }, timeEl(e.timestamp), " ", badge(e.type ?? "update",
    "event"), reported ? [" ", h("span", { class: "reported-by" }, "agent report")] : null),
  e.message ? h("p", { class: "timeline-message" }, e.message) : null,
  session ? h("p", { class: "timeline-session" }, reported ? "Reported by " : "Session ",
    sessionLink(app, session, projectId)) : null);
}
