// Sessions of the current project, active ones first then recent ones, and the form that spawns a
// session for the tasks selected in the tree.

import { h, reconcile, setText, ago, badge, ACTIVE_SESSION } from "../dom.js";
import { state, sessionsOf } from "../store.js";
import { formError, busy } from "./forms.js";
import { workspaceLine, workspaceSignature, renderOverlapBanner } from "./workspace.js";

const RECENT_LIMIT = 20;

export function sessionsView(app) {
  const view = document.getElementById("sessions-view");
  const activeList = document.getElementById("sessions-active");
  const recentList = document.getElementById("sessions-recent");
  const noActive = document.getElementById("no-active");
  const noRecent = document.getElementById("no-recent");
  const form = document.getElementById("spawn-form");
  const selection = document.getElementById("spawn-selection");
  const clear = document.getElementById("spawn-clear");
  const overlapBanner = document.getElementById("overlap-banner");

  clear.addEventListener("click", () => app.actions.clearSelection());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const taskIds = selectedTasks().map((t) => t.id);
    if (!taskIds.length) {
      formError(form, "Select one or more tasks in the tree first.");
      return;
    }
    const role = form.elements.role.value;
    const body = {
      projectId: app.ui.projectId,
      taskIds,
      role,
      spawnSource: "manual",
      sessionName: sessionName(role, selectedTasks()),
    };
    const agent = form.elements.agent.value.trim();
    if (agent) body.agent = agent;
    await busy(form, async () => {
      const result = await app.actions.spawn(body);
      formError(form, "");
      app.actions.clearSelection();
      const id = result?.sessionId || result?.session?.id;
      if (id) app.navigate({ projectId: body.projectId, open: { kind: "session", id } });
    }, (err) => formError(form, app.describe(err)));
  });

  function selectedTasks() {
    const out = [];
    for (const id of app.ui.selected) {
      const t = state.tasks.get(id);
      if (t && t.projectId === app.ui.projectId) out.push(t);
    }
    return out;
  }

  function render() {
    const project = state.projects.get(app.ui.projectId);
    view.hidden = !project;
    if (!project) return;
    const chosen = selectedTasks();
    const titles = chosen.map((t) => t.title).join(", ");
    setText(selection, chosen.length
      ? `For ${plural(chosen.length, "selected task")}: ${titles}`
      : "Tick tasks in the tree to hand them to a new agent session.");
    clear.hidden = !chosen.length;

    const sessions = sessionsOf(project.id);
    const active = sessions.filter((s) => ACTIVE_SESSION.has(s.status))
      .sort((a, b) => (b.startedAt ?? 0) - (a.startedAt ?? 0));
    const recent = sessions.filter((s) => !ACTIVE_SESSION.has(s.status)).slice(0, RECENT_LIMIT);
    const now = Date.now();
    const opts = {
      key: (s) => s.id,
      signature: (s) => JSON.stringify([s.name, s.status, s.taskIds, taskTitles(s),
        s.metadata?.spawnSource, ago(s.startedAt, now), ago(s.completedAt, now),
        app.isOpen("session", s.id), workspaceSignature(s)]),
      build: (s) => buildRow(s, now),
    };
    reconcile(activeList, active, opts);
    reconcile(recentList, recent, opts);
    noActive.hidden = active.length > 0;
    noRecent.hidden = recent.length > 0;
    renderOverlapBanner(overlapBanner, app, sessions);
  }

  function taskTitles(s) {
    return (s.taskIds || []).map((id) => state.tasks.get(id)?.title ?? id);
  }

  function buildRow(s, now) {
    const open = app.isOpen("session", s.id);
    const source = s.metadata?.spawnSource;
    const ended = !ACTIVE_SESSION.has(s.status) && Number.isFinite(s.completedAt);
    const taskIds = s.taskIds || [];
    return h("li", {
      class: `session-row${open ? " open" : ""}`,
      dataset: { sessionId: s.id, status: s.status },
    },
    h("div", { class: "session-line" },
      h("a", {
        href: app.href({ projectId: s.projectId, open: { kind: "session", id: s.id } }),
        "aria-current": open ? "true" : null,
        class: "session-name",
        dataset: { focus: "link" },
      }, s.name || s.id),
      badge(s.status)),
    h("div", { class: "session-facts muted" },
      h("span", null, plural(taskIds.length, "task")),
      source ? h("span", { class: "source" }, `via ${source}`) : null,
      h("span", null, `started ${ago(s.startedAt, now)}`),
      ended ? h("span", null, `ended ${ago(s.completedAt, now)}`) : null),
    workspaceLine(s),
    taskIds.length ? h("div", { class: "session-tasks" },
      taskTitles(s).map((title) => h("span", { class: "chip task-chip" }, title))) : null);
  }

  return { render };
}

function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/** "Worker: Write the changelog" (+ how many more tasks), as the CLI names its sessions. */
function sessionName(role, tasks) {
  const first = tasks[0]?.title ?? "";
  const title = first.length > 30 ? `${first.slice(0, 30)}...` : first;
  const more = tasks.length > 1 ? ` (+${tasks.length - 1})` : "";
  return `${role.charAt(0).toUpperCase()}${role.slice(1)}: ${title}${more}`;
}
