// A session in the detail pane: its facts, a stop button while it is active, deleting it (its
// agent stopped first), the tail of its output log (followed live while it runs) and its events,
// newest first.

import { h, fill, setText, ago, timeEl, badge, ACTIVE_SESSION } from "../dom.js";
import { state, isLaunched } from "../store.js";
import { taskLink, sessionLink, fact, none } from "./links.js";
import { eventEntry, endNote } from "./session-events.js";
import { workspaceSection } from "./workspace.js";
import { deleteConfirm, focusAfterRemoving, plural } from "./delete-confirm.js";

const LOG_TAIL_LINES = 200;
const LOG_POLL_MS = 1000;
const READS_AFTER_END = 2;

/** Build the session skeleton in `pane`; returns {signatureOf, update, stop}. */
export function sessionDetail(app, pane, session, closeButton) {
  const title = h("h2", { id: "detail-title", tabindex: "-1" });
  const facts = h("dl", { class: "facts session-facts" });
  const stopError = h("p", { class: "form-error", role: "alert", hidden: true });
  const stopButton = h("button", { type: "button", class: "danger" }, "Stop session");
  const followState = h("span", { class: "muted follow-state", role: "status" });
  const output = h("pre", { class: "log", tabindex: "0", "aria-label": "Output log" });
  const events = h("ol", { class: "events", "aria-label": "Events, newest first" });
  const workspace = workspaceSection(app, session);
  const removal = sessionRemoval(app, session, () => log.stop());

  stopButton.addEventListener("click", async () => {
    if (stopButton.getAttribute("aria-disabled") === "true") return;
    stopButton.setAttribute("aria-disabled", "true");
    setText(stopButton, "Stopping…");
    try {
      await app.actions.stop(session.id);
      stopError.hidden = true;
    } catch (err) {
      stopError.textContent = app.describe(err);
      stopError.hidden = false;
    } finally {
      stopButton.removeAttribute("aria-disabled");
      setText(stopButton, "Stop session");
    }
  });

  fill(pane,
    h("article", {
      class: "session-detail",
      "aria-labelledby": "detail-title",
      dataset: { sessionId: session.id },
    },
    h("div", { class: "detail-head" }, title, closeButton()),
    facts,
    h("div", { class: "row detail-actions" }, stopButton, removal.trigger),
    stopError,
    removal.box,
    removal.error,
    workspace.el,
    h("div", { class: "section-head" }, h("h3", null, "Output"), followState),
    output,
    h("h3", null, "Events"),
    events));

  const log = logFollower(app, session.id, output, followState);

  function update(s) {
    setText(title, s.name || s.id);
    fill(facts, ...sessionFacts(app, s));
    stopButton.hidden = !ACTIVE_SESSION.has(s.status);
    workspace.update(s);
    const list = [...(s.events || [])].sort((a, b) => (b.timestamp ?? 0) - (a.timestamp ?? 0));
    fill(events, list.length ? list.map(eventEntry) : h("li", { class: "muted" },
      "No events yet."));
    log.update(s);
    removal.update();
  }

  return { signatureOf: signature, update, stop: () => log.stop(), deleting: removal.working };
}

/**
 * Deleting the session: an agent Maestro launched and that still runs is stopped first; its
 * tasks stay and no longer list it (SPEC §7.4.5). Afterwards the pane closes and the focus goes
 * to the next session in the list.
 */
function sessionRemoval(app, session, beforeDelete) {
  let focusNext = null;
  return deleteConfirm(app, {
    label: "Delete session",
    describe() {
      const s = state.sessions.get(session.id) ?? session;
      const tasks = (s.taskIds || []).length;
      const stops = ACTIVE_SESSION.has(s.status) && isLaunched(s);
      const parts = [`Delete the session “${s.name || s.id}”?`];
      if (stops) parts.push("Its agent is stopped first.");
      if (tasks === 1) parts.push("Its 1 task stays but no longer lists it.");
      else if (tasks) parts.push(`Its ${plural(tasks, "task")} stay but no longer list it.`);
      return { question: parts.join(" "), confirm: stops ? "Stop and delete" : "Delete session" };
    },
    async perform() {
      focusNext = focusAfterRemoving("#sessions-active > li, #sessions-recent > li", session.id,
        (id) => document.querySelector(
          `.session-list > li[data-key="${CSS.escape(id)}"] .session-name`),
        () => document.getElementById("sessions-heading"));
      // No more reads of an output log that is about to go away (a 404 in the console).
      beforeDelete();
      await app.actions.deleteSession(session.id);
    },
    done() {
      app.navigate({ projectId: app.ui.projectId, open: null }, { focus: focusNext });
    },
  });
}

function signature(s) {
  const titles = (s.taskIds || []).map((id) => state.tasks.get(id)?.title ?? null);
  return JSON.stringify([s.lastActivity, s.status, s.name, (s.events || []).length, titles,
    ago(s.startedAt), s.workspace ?? null]);
}

function sessionFacts(app, s) {
  const meta = s.metadata && typeof s.metadata === "object" ? s.metadata : {};
  const tasks = (s.taskIds || []).map((id) => state.tasks.get(id) || { id, missing: true });
  const agent = meta.agent || s.agentId;
  const taskList = h("ul", { class: "plain" }, tasks.map((t) => h("li", null,
    t.missing ? h("code", null, t.id) : [taskLink(app, t), " ", badge(t.status)])));
  const parent = meta.spawnedBy
    ? state.sessions.get(meta.spawnedBy) || { id: meta.spawnedBy, missing: true } : null;
  return [
    fact("Status", [badge(s.status), endNote(s)]),
    fact("Tasks", tasks.length ? taskList : none()),
    fact("Spawn source", meta.spawnSource ? String(meta.spawnSource) : none("—")),
    meta.role ? fact("Role", String(meta.role)) : null,
    agent ? fact("Agent", String(agent)) : null,
    fact("Started", [timeEl(s.startedAt), ` (${ago(s.startedAt)})`]),
    Number.isFinite(s.completedAt) ? fact("Ended", timeEl(s.completedAt)) : null,
    parent ? fact("Spawned by", sessionLink(app, parent, s.projectId)) : null,
    s.hostname ? fact("Host", `${s.hostname}${s.platform ? ` (${s.platform})` : ""}`) : null,
    fact("Id", h("code", null, s.id)),
  ];
}

/**
 * Polls the session's output tail while it is active; after it ends, reads it a couple more
 * times so output flushed at exit is not missed, then stops.
 */
function logFollower(app, sessionId, output, followState) {
  let timer = null;
  let inFlight = false;
  let stopped = false;
  let active = true;
  let unavailable = false;
  let readsAfterEnd = 0;

  async function fetchOnce() {
    clearTimeout(timer);
    if (inFlight || stopped) return;
    inFlight = true;
    const startedAfterEnd = !active;
    try {
      const body = await app.actions.sessionLog(sessionId, LOG_TAIL_LINES);
      if (stopped) return;
      const text = logText(body) || "(no output yet)";
      const atBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 24;
      if (output.textContent !== text) {
        output.textContent = text;
        if (atBottom) output.scrollTop = output.scrollHeight;
      }
    } catch (err) {
      if (stopped) return;
      if (err.status === 404) {
        unavailable = true;
        setText(followState, "");
        output.textContent = `No output log: ${app.describe(err)}`;
      } else if (err.status) {
        output.textContent = `Could not read the output log: ${app.describe(err)}`;
      }
    } finally {
      inFlight = false;
    }
    if (startedAfterEnd) readsAfterEnd += 1;
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    if (stopped || unavailable) return;
    if (!active && readsAfterEnd >= READS_AFTER_END) {
      setText(followState, "finished");
      return;
    }
    timer = setTimeout(fetchOnce, active ? LOG_POLL_MS : LOG_POLL_MS / 2);
  }

  return {
    update(s) {
      if (stopped) return;
      const wasActive = active;
      active = ACTIVE_SESSION.has(s.status);
      if (!isLaunched(s)) { // only launched agents have an output log
        unavailable = true;
        setText(followState, "");
        output.textContent = "No output log: this session was not started by Maestro's launcher.";
        return;
      }
      if (unavailable) return;
      if (active) setText(followState, "following live");
      if (!output.textContent || (wasActive && !active)) {
        readsAfterEnd = 0;
        if (!active) setText(followState, "");
        fetchOnce();
      }
    },
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** The log endpoint's body as text, whether it answers plain text or JSON. */
export function logText(body) {
  if (typeof body === "string") return body;
  if (Array.isArray(body)) return body.join("\n");
  if (body && typeof body === "object") {
    for (const key of ["lines", "log", "text", "content", "output", "tail"]) {
      const value = body[key];
      if (Array.isArray(value)) return value.join("\n");
      if (typeof value === "string") return value;
    }
    return JSON.stringify(body, null, 2);
  }
  return "";
}
