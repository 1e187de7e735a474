// One project: its header (rename and workspace settings, delete: when the server refuses a
// project that still has tasks or sessions, the confirmation offers to delete everything), the
// status and readiness filter, the create-task form, and its tasks either as a tree (hierarchy by parentId) with
// inline status and priority, readiness, claims, dependencies and the sessions on each task, or
// as a dependency graph.

import {
  h, reconcile, setOptions, setText, TASK_STATUSES, TASK_PRIORITIES, ACTIVE_SESSION, label,
  clock, when,
} from "../dom.js";
import * as api from "../api.js";
import { state, tasksOf, sessionsOf, upsert } from "../store.js";
import { readinessMap, dependencyIds } from "../readiness.js";
import { formError, busy } from "./forms.js";
import { graphView } from "./graph.js";
import { plural, firstShown } from "./delete-confirm.js";

const MAX_CHIPS = 3;

/** Where the project's spawned sessions work, when it is not the default. */
function workspaceNote(project) {
  if (project.isolation === "none") return "sessions work in the directory itself";
  return project.baseRef ? `sessions branch from ${project.baseRef}` : "";
}

export function projectView(app) {
  const view = document.getElementById("project-view");
  const empty = document.getElementById("no-project");
  const nameEl = document.getElementById("project-name");
  const metaEl = document.getElementById("project-meta");
  const renameButton = document.getElementById("project-rename");
  const deleteButton = document.getElementById("project-delete");
  const renameForm = document.getElementById("project-rename-form");
  const confirmBox = document.getElementById("project-delete-confirm");
  const confirmYes = document.getElementById("project-delete-yes");
  const confirmNo = document.getElementById("project-delete-no");
  const confirmQuestion = document.getElementById("project-delete-question");
  const confirmAll = document.getElementById("project-delete-all");
  const projectGone = document.getElementById("project-gone");
  const projectError = document.getElementById("project-error");
  const filter = document.getElementById("status-filter");
  const count = document.getElementById("task-count");
  const createForm = document.getElementById("task-create");
  const tree = document.getElementById("task-tree");
  const noTasks = document.getElementById("no-tasks");
  const topbarProject = document.getElementById("topbar-project");
  const showTree = document.getElementById("show-tree");
  const showGraph = document.getElementById("show-graph");
  const graph = graphView(app, document.getElementById("dep-graph"));

  for (const [button, kind] of [[showTree, "tree"], [showGraph, "graph"]]) {
    button.addEventListener("click", () => {
      app.ui.view = kind;
      app.render();
    });
  }

  const showProjectError = (message) => {
    projectError.textContent = message || "";
    projectError.hidden = !message;
  };

  renameButton.addEventListener("click", () => {
    const project = state.projects.get(app.ui.projectId);
    if (!project) return;
    closeConfirm(false);
    renameForm.hidden = false;
    renameForm.elements.name.value = project.name;
    renameForm.elements.isolation.value = project.isolation === "none" ? "none" : "worktree";
    renameForm.elements.baseRef.value = project.baseRef || "";
    renameForm.elements.name.select();
    renameForm.elements.name.focus();
  });
  renameForm.querySelector("[data-cancel]").addEventListener("click", () => {
    renameForm.hidden = true;
    renameButton.focus();
  });
  renameForm.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      renameForm.hidden = true;
      renameButton.focus();
    }
  });
  renameForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = app.ui.projectId;
    const name = renameForm.elements.name.value.trim();
    if (!name) {
      showProjectError("A project needs a name.");
      return;
    }
    const changes = {
      name,
      isolation: renameForm.elements.isolation.value,
      baseRef: renameForm.elements.baseRef.value.trim(), // empty: the checkout's branch
    };
    await busy(renameForm, async () => {
      upsert("projects", await api.put(`/api/projects/${api.seg(id)}`, changes));
      showProjectError("");
      renameForm.hidden = true;
      renameButton.focus();
    }, (err) => showProjectError(app.describe(err)));
  });

  // The delete confirmation asks first for the project alone; once the server has refused
  // because tasks or sessions remain, it offers to delete everything (`?cascade=true`).
  let offeringCascade = false;
  let deletingProject = null; // id of the project this page is deleting

  function closeConfirm(focusButton) {
    confirmBox.hidden = true;
    offeringCascade = false;
    deleteButton.setAttribute("aria-expanded", "false");
    if (focusButton) deleteButton.focus();
  }

  /** What the cascade would delete, from the page's live copy of the board. */
  function dependents(projectId) {
    const sessions = sessionsOf(projectId);
    return {
      tasks: tasksOf(projectId).length,
      sessions: sessions.length,
      running: sessions.filter((s) => ACTIVE_SESSION.has(s.status)).length,
    };
  }

  /** Show the plain question, or the offer to delete everything while anything remains. */
  function showConfirmText(project) {
    const left = dependents(project.id);
    const cascade = offeringCascade && (left.tasks > 0 || left.sessions > 0);
    const focused = document.activeElement;
    confirmYes.hidden = cascade;
    confirmAll.hidden = !cascade;
    if (focused === confirmYes || focused === confirmAll) {
      (cascade ? confirmAll : confirmYes).focus(); // the button shown in its place
    }
    if (!cascade) {
      setText(confirmQuestion, "Delete this project?");
      return;
    }
    const what = `${plural(left.tasks, "task")}, ${plural(left.sessions, "session")}`;
    setText(confirmQuestion, `“${project.name}” still has ${what}.`);
    setText(confirmAll, `Delete everything (${what}` +
      `${left.running ? ", running agents are stopped" : ""})`);
  }

  deleteButton.addEventListener("click", () => {
    const project = state.projects.get(app.ui.projectId);
    if (!project) return;
    renameForm.hidden = true;
    showProjectError("");
    offeringCascade = false;
    showConfirmText(project);
    confirmBox.hidden = false;
    deleteButton.setAttribute("aria-expanded", "true");
    confirmNo.focus();
  });
  confirmNo.addEventListener("click", () => {
    if (!deletingProject) closeConfirm(true);
  });
  confirmBox.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.stopPropagation(); // closes this box, not the detail pane
    if (!deletingProject) closeConfirm(true);
  });

  async function removeProject(cascade) {
    const id = app.ui.projectId;
    if (deletingProject || !state.projects.has(id)) return;
    deletingProject = id;
    try {
      await app.actions.deleteProject(id, cascade);
      closeConfirm(false);
      showProjectError("");
      // The next project shows; the focus goes to it in the list (or to the create form).
      app.navigate({ projectId: null }, {
        focus: () => firstShown(document.querySelector("#project-list a[aria-current]"),
          document.querySelector("#project-create input[name=name]")),
      });
    } catch (err) {
      // The server's own words: a refusal says how many tasks or sessions remain.
      showProjectError(app.describe(err));
      const project = state.projects.get(id);
      if (!cascade && err.code === "PROJECT_HAS_DEPENDENCIES" && project) {
        offeringCascade = true;
        showConfirmText(project);
        confirmNo.focus();
      } else {
        closeConfirm(true);
      }
    } finally {
      deletingProject = null;
    }
  }

  confirmYes.addEventListener("click", () => removeProject(false));
  confirmAll.addEventListener("click", () => removeProject(true));

  filter.addEventListener("change", () => {
    app.ui.filter = filter.value;
    app.render();
  });

  createForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = createForm.elements;
    const title = f.title.value.trim();
    if (!title) {
      formError(createForm, "A task needs a title.");
      return;
    }
    const body = { projectId: app.ui.projectId, title, priority: f.priority.value };
    if (f.parentId.value) body.parentId = f.parentId.value;
    if (f.description.value.trim()) body.description = f.description.value;
    await busy(createForm, async () => {
      await app.actions.createTask(body);
      f.title.value = "";
      f.description.value = "";
      formError(createForm, "");
      f.title.focus();
    }, (err) => formError(createForm, app.describe(err)));
  });

  /** Start a child task of `task`: preselect it as parent in the form and focus the title. */
  function addChild(task) {
    const parent = createForm.elements.parentId;
    render();
    parent.value = task.id;
    createForm.elements.title.focus();
    createForm.scrollIntoView({ block: "nearest" });
  }

  let shownProject = null;

  function render() {
    const project = state.projects.get(app.ui.projectId);
    view.hidden = !project;
    empty.hidden = Boolean(project) || !state.loaded;
    setText(topbarProject, project ? project.name : "");
    const gone = !project && state.loaded && app.ui.projectId
      && app.ui.projectId !== deletingProject;
    setText(projectGone, gone ? "The project in this link does not exist (any more)." : "");
    projectGone.hidden = !gone;
    if (!project) {
      shownProject = null;
      return;
    }
    if (shownProject !== project.id) {
      // A different project: forget the previous one's half-done actions.
      shownProject = project.id;
      renameForm.hidden = true;
      closeConfirm(false);
      showProjectError("");
      formError(createForm, "");
    }
    if (!confirmBox.hidden) showConfirmText(project);
    setText(nameEl, project.name);
    setText(metaEl, [project.workingDir, project.description, workspaceNote(project)]
      .filter(Boolean).join(" — "));
    if (filter.value !== app.ui.filter) filter.value = app.ui.filter;

    const tasks = tasksOf(project.id);
    setOptions(createForm.elements.parentId,
      [["", "(none: top level)"], ...tasks.map((t) => [t.id, t.title])], "");
    const readiness = readinessMap(tasks);
    const asGraph = app.ui.view === "graph";
    showTree.setAttribute("aria-pressed", String(!asGraph));
    showGraph.setAttribute("aria-pressed", String(asGraph));
    filter.disabled = asGraph;
    tree.hidden = asGraph;
    graph.show(asGraph);
    if (asGraph) {
      setText(count, `${tasks.length} total`);
      noTasks.hidden = true;
      graph.render(tasks, readiness);
      return;
    }
    const rows = treeRows(tasks, app.ui.filter, app.ui.collapsed, readiness);
    const shown = rows.filter((r) => !r.context).length;
    setText(count, app.ui.filter ? `${shown} of ${tasks.length}` : `${tasks.length} total`);
    noTasks.hidden = rows.length > 0;
    noTasks.textContent = !tasks.length ? "No tasks yet."
      : FILTER_EMPTY[app.ui.filter] || "No task has this status.";
    reconcile(tree, rows, {
      key: (r) => r.task.id,
      signature: rowSignature,
      build: buildRow,
    });
  }

  function sessionChips(task) {
    const sessions = (task.sessionIds || [])
      .map((id) => state.sessions.get(id) || { id, missing: true });
    const isActive = (s) => Number(ACTIVE_SESSION.has(s.status));
    sessions.sort((a, b) => isActive(b) - isActive(a)
      || (b.lastActivity ?? 0) - (a.lastActivity ?? 0));
    return sessions;
  }

  function rowSignature(row) {
    const t = row.task;
    const chips = sessionChips(t).slice(0, MAX_CHIPS).map((s) => [s.id, s.status, s.name]);
    const r = row.readiness;
    const claim = r?.claim
      ? [r.claim.sessionId, r.claim.leaseExpiresAt, state.sessions.get(r.claim.sessionId)?.name]
      : null;
    const deps = dependencyIds(t).map((id) => {
      const dep = state.tasks.get(id);
      return [id, dep?.title, dep?.status];
    });
    return JSON.stringify([t.title, t.status, t.priority, row.depth, row.hasChildren,
      row.collapsed, row.context, app.ui.selected.has(t.id), app.isOpen("task", t.id),
      chips, (t.sessionIds || []).length, app.ui.projectId, r?.ready, r?.waiting,
      r?.blockedBy, r?.blockedAncestors, claim, deps]);
  }

  function buildRow(row) {
    const t = row.task;
    const open = app.isOpen("task", t.id);
    const twisty = row.hasChildren
      ? h("button", {
        type: "button",
        class: "twisty",
        "aria-expanded": String(!row.collapsed),
        "aria-label": `${row.collapsed ? "Show" : "Hide"} subtasks of ${t.title}`,
        dataset: { focus: "twisty" },
        onclick: () => app.actions.toggleCollapsed(t.id),
      }, row.collapsed ? "▸" : "▾")
      : h("span", { class: "twisty", "aria-hidden": "true" });
    const statusSelect = enumSelect(TASK_STATUSES, t.status, `Status of ${t.title}`, "status",
      (value, select) => change(t, { status: value }, select, t.status));
    const prioritySelect = enumSelect(TASK_PRIORITIES, t.priority, `Priority of ${t.title}`,
      "priority", (value, select) => change(t, { priority: value }, select, t.priority));
    const sessions = sessionChips(t);
    return h("li", {
      class: `task-row${row.context ? " context" : ""}${open ? " open" : ""}`,
      style: { "--depth": String(row.depth) },
      dataset: { taskId: t.id, status: t.status },
    },
    twisty,
    h("input", {
      type: "checkbox",
      class: "pick",
      checked: app.ui.selected.has(t.id),
      "aria-label": `Select ${t.title} for a new session`,
      dataset: { focus: "pick" },
      onchange: (event) => app.actions.toggleSelected(t.id, event.target.checked),
    }),
    h("span", { class: "task-main" },
      h("a", {
        class: "task-title",
        href: app.href({ projectId: t.projectId, open: { kind: "task", id: t.id } }),
        "aria-current": open ? "true" : null,
        dataset: { focus: "title" },
      }, t.title),
      readinessBadge(t, row.readiness),
      claimChip(row.readiness?.claim, t.projectId),
      dependencyChip(t),
      sessions.length ? h("span", { class: "chips" },
        sessions.slice(0, MAX_CHIPS).map((s) => sessionChip(s, t.projectId)),
        sessions.length > MAX_CHIPS ? h("span", { class: "chip more" },
          `+${sessions.length - MAX_CHIPS} more`) : null) : null),
    h("span", { class: "task-controls" },
      statusSelect,
      prioritySelect,
      h("button", {
        type: "button",
        class: "small",
        "aria-label": `Add a subtask to ${t.title}`,
        title: "Add a subtask",
        dataset: { focus: "child" },
        onclick: () => addChild(t),
      }, "+ Subtask")));
  }

  function sessionChip(s, projectId) {
    if (s.missing) return h("span", { class: "chip missing", title: s.id }, "session gone");
    const name = s.name || s.id;
    return h("a", {
      class: `chip session-${String(s.status).replace(/[^a-z_]/gi, "")}`,
      href: app.href({ projectId, open: { kind: "session", id: s.id } }),
      title: `${name} — ${label(s.status)}`,
    }, h("span", { class: "dot", "aria-hidden": "true" }), `${short(name)} · ${label(s.status)}`);
  }

  /** Names of tasks by id, for tooltips; a task that is gone shows as its id. */
  function names(taskIds) {
    return taskIds.map((id) => state.tasks.get(id)?.title ?? `${id} (missing)`);
  }

  function readinessBadge(t, r) {
    if (!r || (!r.ready && !r.waiting)) return null;
    if (r.ready) {
      return h("span", { class: "badge readiness-ready", title: "Ready: nothing to wait for" },
        "ready");
    }
    const why = [];
    if (r.blockedBy.length) why.push(`waits for ${names(r.blockedBy).join(", ")}`);
    if (r.blockedAncestors.length) {
      why.push(`parent blocked: ${names(r.blockedAncestors).join(", ")}`);
    }
    return h("span", { class: "badge readiness-blocked", title: `Blocked: ${why.join("; ")}` },
      "blocked");
  }

  function claimChip(claim, projectId) {
    if (!claim) return null;
    const session = state.sessions.get(claim.sessionId);
    const name = session?.name || claim.sessionId;
    const text = `claimed by ${short(name)} · until ${clock(claim.leaseExpiresAt)}`;
    const title = `Claimed by ${name} until ${when(claim.leaseExpiresAt)} (token ${claim.token})`;
    if (!session) return h("span", { class: "chip claim-chip", title }, text);
    return h("a", {
      class: "chip claim-chip",
      href: app.href({ projectId, open: { kind: "session", id: session.id } }),
      title,
    }, text);
  }

  function dependencyChip(t) {
    const deps = dependencyIds(t);
    if (!deps.length) return null;
    const parts = deps.map((id) => {
      const dep = state.tasks.get(id);
      return dep ? `${dep.title} (${label(dep.status)})` : `${id} (missing)`;
    });
    return h("span", { class: "chip deps-chip", title: `Waits for: ${parts.join(", ")}` },
      `after ${short(names(deps).join(", "), 40)}`);
  }

  async function change(task, fields, select, previous) {
    try {
      await app.actions.updateTask(task.id, fields);
    } catch (err) {
      select.value = previous;
      app.notice(app.describe(err));
    }
  }

  return { render, addChild };
}

/** A <select> over an enum; a stored value outside the enum is shown verbatim. */
export function enumSelect(values, current, ariaLabel, focusKey, onChange) {
  const options = values.includes(current) || current == null ? values : [...values, current];
  const select = h("select", {
    "aria-label": ariaLabel,
    class: `enum ${focusKey}-select`,
    dataset: { focus: focusKey, value: current ?? "" },
    onchange: (event) => onChange(event.target.value, event.target),
  }, options.map((v) => h("option", { value: v, selected: v === current }, label(v))));
  select.value = current ?? "";
  return select;
}

function short(text, max = 22) {
  const s = String(text);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

const FILTER_EMPTY = {
  ready: "No task is ready to start.",
  waiting: "No task waits for dependencies.",
};

/** Does `task` pass the filter: a status, `ready` or `waiting` (see readiness.js)? */
function passes(task, filter, readiness) {
  if (!filter) return true;
  const r = readiness?.get(task.id);
  if (filter === "ready") return Boolean(r?.ready);
  if (filter === "waiting") return Boolean(r?.waiting);
  return task.status === filter;
}

/**
 * Flatten the hierarchy into rows in depth-first order. With a filter (a status, or `ready` /
 * `waiting`), tasks that match are shown with their ancestors (marked as context). Tasks whose
 * parent is missing, and any tasks caught in a parent cycle written by other software, are shown
 * at the top level.
 */
export function treeRows(tasks, statusFilter, collapsed, readiness = null) {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const children = new Map();
  const roots = [];
  for (const t of tasks) {
    if (t.parentId && t.parentId !== t.id && byId.has(t.parentId)) {
      if (!children.has(t.parentId)) children.set(t.parentId, []);
      children.get(t.parentId).push(t);
    } else {
      roots.push(t);
    }
  }
  const keep = new Map();
  const visiting = new Set();
  function relevant(t) {
    if (keep.has(t.id)) return keep.get(t.id);
    if (visiting.has(t.id)) return false;
    visiting.add(t.id);
    let result = passes(t, statusFilter, readiness);
    for (const c of children.get(t.id) || []) if (relevant(c)) result = true;
    visiting.delete(t.id);
    keep.set(t.id, result);
    return result;
  }
  const rows = [];
  const seen = new Set();
  function walk(t, depth) {
    if (seen.has(t.id)) return;
    seen.add(t.id);
    if (!relevant(t)) return;
    const kids = (children.get(t.id) || []).filter((c) => !seen.has(c.id) && relevant(c));
    const isCollapsed = collapsed.has(t.id);
    rows.push({
      task: t,
      depth,
      hasChildren: kids.length > 0,
      collapsed: isCollapsed,
      context: !passes(t, statusFilter, readiness),
      readiness: readiness?.get(t.id) ?? null,
    });
    if (isCollapsed) {
      // still mark the hidden subtree as seen so a cycle check below does not resurface it
      const stack = [...kids];
      while (stack.length) {
        const c = stack.pop();
        if (seen.has(c.id)) continue;
        seen.add(c.id);
        stack.push(...(children.get(c.id) || []));
      }
      return;
    }
    for (const c of kids) walk(c, depth + 1);
  }
  for (const r of roots) walk(r, 0);
  for (const t of tasks) if (!seen.has(t.id)) walk(t, 0);
  return rows;
}
