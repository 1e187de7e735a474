// The detail pane: a task (description rendered as safe Markdown, timeline newest first with
// session links, a note form) or a session (facts, stop button, output log followed live while it
// runs, events newest first).

import {
  h, fill, refill, setText, age, timeEl, badge, ACTIVE_SESSION, TASK_STATUSES, TASK_PRIORITIES,
} from "../dom.js";
import { renderMarkdown } from "../markdown.js";
import { state } from "../store.js";
import { enumSelect } from "./project.js";
import { formError, busy } from "./forms.js";

const LOG_TAIL_LINES = 200;
const LOG_POLL_MS = 1000;
const TIMELINE_TYPES = ["update", "milestone", "blocker"];

export function detailView(app) {
  const pane = document.getElementById("detail");
  let shown = null; // {kind, id, signature, parts}
  let log = null; // follower of the open session's output

  function close() {
    app.navigate({ projectId: app.ui.projectId, open: null });
  }

  function render() {
    const open = app.ui.open;
    const entity = open && (open.kind === "task" ? state.tasks.get(open.id) : state.sessions.get(open.id));
    if (!open) {
      stopLog();
      shown = null;
      pane.hidden = true;
      pane.replaceChildren();
      return;
    }
    pane.hidden = false;
    if (!entity) {
      stopLog();
      shown = { kind: open.kind, id: open.id, missing: true };
      fill(pane, h("div", { class: "detail-head" },
        h("h2", null, open.kind === "task" ? "Task" : "Session"),
        closeButton()),
      h("p", { class: "muted" }, state.loaded ? `This ${open.kind} does not exist (any more).` : "Loading…"));
      return;
    }
    if (!shown || shown.kind !== open.kind || shown.id !== open.id || shown.missing) {
      stopLog();
      shown = open.kind === "task" ? taskSkeleton(entity) : sessionSkeleton(entity);
      shown.kind = open.kind;
      shown.id = open.id;
    }
    const signature = open.kind === "task" ? taskSignature(entity) : sessionSignature(entity);
    if (shown.signature !== signature) {
      shown.signature = signature;
      shown.update(entity);
    }
  }

  function closeButton() {
    return h("button", { type: "button", class: "small close", onclick: close, "aria-label": "Close details" }, "Close");
  }

  // ---------------------------------------------------------------- task

  function taskSignature(t) {
    const sessions = (t.sessionIds || []).map((id) => [id, state.sessions.get(id)?.status, state.sessions.get(id)?.name]);
    const parent = t.parentId ? state.tasks.get(t.parentId)?.title ?? null : null;
    const kids = [];
    for (const c of state.tasks.values()) if (c.parentId === t.id) kids.push([c.id, c.title, c.status]);
    return JSON.stringify([t.updatedAt, t.title, t.status, t.priority, t.description,
      (t.timeline || []).length, sessions, parent, kids]);
  }

  function taskSkeleton(task) {
    const title = h("h2", { id: "detail-title", tabindex: "-1" });
    const facts = h("dl", { class: "facts" });
    const description = h("div", { class: "markdown", "aria-label": "Description" });
    const timeline = h("ol", { class: "timeline", "aria-label": "Timeline, newest first" });
    const noteForm = h("form", { class: "note-form", autocomplete: "off" },
      h("label", { class: "grow" }, "Add to timeline ", h("input", { name: "message", required: true, maxlength: "10000" })),
      h("label", null, "Type ", h("select", { name: "type" },
        TIMELINE_TYPES.map((v) => h("option", { value: v }, v)))),
      h("button", { type: "submit" }, "Add"),
      h("p", { class: "form-error full", role: "alert", hidden: true }));
    noteForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const message = noteForm.elements.message.value.trim();
      if (!message) return;
      await busy(noteForm, async () => {
        await app.actions.addTimeline(task.id, { message, type: noteForm.elements.type.value });
        noteForm.elements.message.value = "";
        formError(noteForm, "");
      }, (err) => formError(noteForm, app.describe(err)));
    });
    fill(pane,
      h("article", { class: "task-detail", "aria-labelledby": "detail-title", dataset: { taskId: task.id } },
        h("div", { class: "detail-head" }, title, closeButton()),
        facts,
        h("h3", null, "Description"),
        description,
        h("h3", null, "Timeline"),
        noteForm,
        timeline));
    return {
      update(t) {
        setText(title, t.title);
        refill(facts, ...taskFacts(t));
        fill(description, t.description && t.description.trim()
          ? renderMarkdown(t.description) : h("p", { class: "muted" }, "No description."));
        const entries = [...(t.timeline || [])].sort((a, b) => (b.timestamp ?? 0) - (a.timestamp ?? 0));
        fill(timeline, entries.map((e) => timelineEntry(e, t.projectId)));
      },
    };
  }

  function taskFacts(t) {
    const parent = t.parentId ? state.tasks.get(t.parentId) : null;
    const kids = [...state.tasks.values()].filter((c) => c.parentId === t.id)
      .sort((a, b) => (a.createdAt ?? 0) - (b.createdAt ?? 0));
    const sessions = (t.sessionIds || []).map((id) => state.sessions.get(id) || { id, missing: true });
    const change = (field, previous) => async (value, select) => {
      try {
        await app.actions.updateTask(t.id, { [field]: value });
      } catch (err) {
        select.value = previous;
        app.notice(app.describe(err));
      }
    };
    return [
      fact("Status", enumSelect(TASK_STATUSES, t.status, "Status", "status", change("status", t.status))),
      fact("Priority", enumSelect(TASK_PRIORITIES, t.priority, "Priority", "priority", change("priority", t.priority))),
      t.parentId ? fact("Parent", parent ? taskLink(parent) : h("span", { class: "muted" }, `${t.parentId} (deleted)`)) : null,
      kids.length ? fact("Subtasks", h("ul", { class: "plain" }, kids.map((c) => h("li", null, taskLink(c), " ", badge(c.status))))) : null,
      fact("Sessions", sessions.length
        ? h("ul", { class: "plain" }, sessions.map((s) => h("li", null, sessionLink(s, t.projectId), s.missing ? null : [" ", badge(s.status)])))
        : h("span", { class: "muted" }, "none")),
      fact("Created", timeEl(t.createdAt)),
      t.startedAt ? fact("Started", timeEl(t.startedAt)) : null,
      t.completedAt ? fact("Completed", timeEl(t.completedAt)) : null,
      fact("Id", h("code", null, t.id)),
    ];
  }

  function timelineEntry(e, projectId) {
    return h("li", { class: `timeline-entry type-${String(e.type).replace(/[^a-z_]/gi, "")}` },
      h("div", { class: "timeline-head" }, timeEl(e.timestamp), " ", badge(e.type, "event")),
      e.message ? h("p", { class: "timeline-message" }, e.message) : null,
      e.sessionId ? h("p", { class: "timeline-session" }, "Session ",
        sessionLink(state.sessions.get(e.sessionId) || { id: e.sessionId, missing: true }, projectId)) : null);
  }

  function taskLink(t) {
    return h("a", { href: app.href({ projectId: t.projectId, open: { kind: "task", id: t.id } }) }, t.title);
  }

  function sessionLink(s, projectId) {
    if (s.missing) return h("code", { title: "This session no longer exists" }, s.id);
    return h("a", { href: app.href({ projectId: s.projectId || projectId, open: { kind: "session", id: s.id } }) }, s.name || s.id);
  }

  function fact(name, value) {
    return [h("dt", null, name), h("dd", null, value)];
  }

  // ---------------------------------------------------------------- session

  function sessionSignature(s) {
    const titles = (s.taskIds || []).map((id) => state.tasks.get(id)?.title ?? null);
    return JSON.stringify([s.lastActivity, s.status, s.name, (s.events || []).length, titles,
      age(s.startedAt), age(s.completedAt)]);
  }

  function sessionSkeleton(session) {
    const title = h("h2", { id: "detail-title", tabindex: "-1" });
    const facts = h("dl", { class: "facts" });
    const stopError = h("p", { class: "form-error", role: "alert", hidden: true });
    const stopButton = h("button", { type: "button", class: "danger", id: "session-stop" }, "Stop session");
    const followState = h("span", { class: "muted follow-state", role: "status" });
    const output = h("pre", { class: "log", tabindex: "0", "aria-label": "Output log" });
    const events = h("ol", { class: "events", "aria-label": "Events, newest first" });
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
      h("article", { class: "session-detail", "aria-labelledby": "detail-title", dataset: { sessionId: session.id } },
        h("div", { class: "detail-head" }, title, closeButton()),
        facts,
        h("div", { class: "row" }, stopButton),
        stopError,
        h("div", { class: "section-head" }, h("h3", null, "Output"), followState),
        output,
        h("h3", null, "Events"),
        events));
    log = logFollower(session.id, output, followState);
    return {
      update(s) {
        setText(title, s.name || s.id);
        fill(facts, ...sessionFacts(s));
        stopButton.hidden = !ACTIVE_SESSION.has(s.status);
        const list = [...(s.events || [])].sort((a, b) => (b.timestamp ?? 0) - (a.timestamp ?? 0));
        fill(events, list.length ? list.map(eventEntry) : h("li", { class: "muted" }, "No events yet."));
        log.update(s);
      },
    };
  }

  function sessionFacts(s) {
    const meta = s.metadata && typeof s.metadata === "object" ? s.metadata : {};
    const tasks = (s.taskIds || []).map((id) => state.tasks.get(id) || { id, missing: true });
    const agent = meta.agent || s.agentId;
    return [
      fact("Status", badge(s.status)),
      fact("Tasks", tasks.length ? h("ul", { class: "plain" }, tasks.map((t) => h("li", null,
        t.missing ? h("code", null, t.id) : [taskLink(t), " ", badge(t.status)])))
        : h("span", { class: "muted" }, "none")),
      fact("Spawn source", meta.spawnSource ? String(meta.spawnSource) : h("span", { class: "muted" }, "—")),
      meta.role ? fact("Role", String(meta.role)) : null,
      agent ? fact("Agent", String(agent)) : null,
      fact("Started", [timeEl(s.startedAt), ` (${age(s.startedAt)}${age(s.startedAt) === "just now" ? "" : " ago"})`]),
      Number.isFinite(s.completedAt) ? fact("Ended", timeEl(s.completedAt)) : null,
      meta.spawnedBy ? fact("Spawned by", sessionLink(state.sessions.get(meta.spawnedBy) || { id: meta.spawnedBy, missing: true }, s.projectId)) : null,
      s.hostname ? fact("Host", `${s.hostname}${s.platform ? ` (${s.platform})` : ""}`) : null,
      fact("Id", h("code", null, s.id)),
    ];
  }

  function eventEntry(e) {
    let data = "";
    if (e.data !== undefined && e.data !== null) {
      data = typeof e.data === "string" ? e.data : JSON.stringify(e.data);
      if (data.length > 600) data = `${data.slice(0, 600)}…`;
    }
    return h("li", { class: "event-entry" },
      h("div", null, timeEl(e.timestamp), " ", badge(e.type, "event")),
      data ? h("code", { class: "event-data" }, data) : null);
  }

  // ---------------------------------------------------------------- output log

  /**
   * Polls the session's output tail while it is active; after it ends, reads it a couple more
   * times so output flushed at exit is not missed, then stops.
   */
  function logFollower(sessionId, output, followState) {
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
      if (!active && readsAfterEnd >= 2) {
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
        if (!launched(s)) {
          unavailable = true;
          setText(followState, "");
          output.textContent = "No output log: this session was not started by Maestro's launcher.";
          return;
        }
        if (unavailable) return;
        setText(followState, active ? "following live" : "");
        if (!output.textContent || (wasActive && !active)) {
          readsAfterEnd = 0;
          fetchOnce();
        }
      },
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  function stopLog() {
    if (log) log.stop();
    log = null;
  }

  return { render };
}

/** Sessions started through spawn carry a manifest path; only those can have an output log. */
function launched(session) {
  return Boolean(session.env?.MAESTRO_MANIFEST_PATH || session.metadata?.launcher);
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

