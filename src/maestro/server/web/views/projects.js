// The project list (with task counts by status and active sessions) and the create form (name,
// working directory, and where spawned sessions work: isolation and base ref).

import { h, reconcile, TASK_STATUSES, label, ACTIVE_SESSION } from "../dom.js";
import { state, projectsSorted, countsByStatus } from "../store.js";
import { formError, busy } from "./forms.js";

export function projectsView(app) {
  const list = document.getElementById("project-list");
  const empty = document.getElementById("no-projects");
  const form = document.getElementById("project-create");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    const workingDir = form.elements.workingDir.value.trim();
    const isolation = form.elements.isolation.value;
    const baseRef = form.elements.baseRef.value.trim();
    if (!name) {
      formError(form, "A project needs a name.");
      return;
    }
    await busy(form, async () => {
      const body = { name, workingDir, isolation };
      if (baseRef) body.baseRef = baseRef;
      const project = await app.actions.createProject(body);
      form.reset();
      formError(form, "");
      app.navigate({ projectId: project.id });
    }, (err) => formError(form, app.describe(err)));
  });

  function activeSessions(projectId) {
    let n = 0;
    for (const s of state.sessions.values()) {
      if (s.projectId === projectId && ACTIVE_SESSION.has(s.status)) n += 1;
    }
    return n;
  }

  function render() {
    const projects = projectsSorted();
    empty.hidden = projects.length > 0 || !state.loaded;
    const rows = projects.map((p) => ({
      project: p,
      counts: countsByStatus(p.id),
      active: activeSessions(p.id),
      current: p.id === app.ui.projectId,
    }));
    reconcile(list, rows, {
      key: (r) => r.project.id,
      signature: (r) => JSON.stringify([r.project.name, r.counts, r.active, r.current]),
      build: buildRow,
    });
  }

  function buildRow({ project, counts, active, current }) {
    const statuses = [
      ...TASK_STATUSES.filter((st) => counts[st]),
      ...Object.keys(counts).filter((st) => !TASK_STATUSES.includes(st)),
    ];
    const countBadge = (st) => h("span", {
      class: `count status-${st.replace(/[^a-z_]/gi, "")}`,
      dataset: { status: st },
    }, `${counts[st]} ${label(st)}`);
    const running = active
      ? h("span", { class: "count active-sessions" }, `${active} running`) : null;
    return h("li", {
      class: current ? "project current" : "project",
      dataset: { projectId: project.id },
    },
    h("a", {
      href: app.href({ projectId: project.id }),
      "aria-current": current ? "page" : null,
      dataset: { focus: "link" },
    }, project.name),
    h("span", { class: "counts" },
      statuses.length ? statuses.map(countBadge) : h("span", { class: "count muted" }, "no tasks"),
      running));
  }

  return { render };
}
