// A task in the detail pane: inline status and priority, readiness and claim, parent,
// subtasks, sessions, its dependencies (editable) and the tasks waiting for it, the description
// rendered as safe Markdown, its history newest first (its timeline and its sessions' reports,
// task-history.js) with session links, and deleting it (with its subtasks, after saying how many).

import {
  h, fill, refill, setText, timeEl, badge, TASK_STATUSES, TASK_PRIORITIES,
} from "../dom.js";
import { renderMarkdown } from "../markdown.js";
import { state, descendantsOf } from "../store.js";
import { enumSelect } from "./project.js";
import { formError, busy } from "./forms.js";
import { taskLink, sessionLink, fact, none } from "./links.js";
import { dependencySection, coordinationFacts, coordinationSignature } from "./task-deps.js";
import { historySection, historySignature } from "./task-history.js";
import { deleteConfirm, focusAfterRemoving, plural } from "./delete-confirm.js";

const TIMELINE_TYPES = ["update", "milestone", "blocker"];

/** Build the task skeleton in `pane`; returns {signatureOf, update}. */
export function taskDetail(app, pane, task, closeButton) {
  const title = h("h2", { id: "detail-title", tabindex: "-1" });
  const facts = h("dl", { class: "facts" });
  const description = h("div", { class: "markdown", "aria-label": "Description" });
  const history = historySection(app, task);
  let historyShown = null;
  const noteForm = h("form", { class: "note-form", autocomplete: "off" },
    h("label", { class: "grow" }, "Add to timeline",
      h("input", { name: "message", required: true, maxlength: "10000" })),
    h("label", null, "Type",
      h("select", { name: "type" }, TIMELINE_TYPES.map((v) => h("option", { value: v }, v)))),
    h("button", { type: "submit" }, "Add"),
    h("p", { class: "form-error full", role: "alert", hidden: true }));

  noteForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = noteForm.elements.message.value.trim();
    if (!message) return;
    const type = noteForm.elements.type.value;
    await busy(noteForm, async () => {
      await app.actions.addTimeline(task.id, { message, type });
      noteForm.elements.message.value = "";
      formError(noteForm, "");
    }, (err) => formError(noteForm, app.describe(err)));
  });

  const deps = dependencySection(app, task);
  const removal = taskRemoval(app, task);

  fill(pane,
    h("article", {
      class: "task-detail",
      "aria-labelledby": "detail-title",
      dataset: { taskId: task.id },
    },
    h("div", { class: "detail-head" }, title, closeButton()),
    facts,
    h("div", { class: "row detail-actions" }, removal.trigger),
    removal.box,
    removal.error,
    deps.element,
    h("h3", null, "Description"),
    description,
    h("h3", null, "History"),
    noteForm,
    history.element));

  function update(t) {
    setText(title, t.title);
    refill(facts, ...taskFacts(app, t));
    deps.update(t);
    const text = typeof t.description === "string" ? t.description : "";
    fill(description, text.trim() ? renderMarkdown(text) : h("p", { class: "muted" },
      "No description."));
    const wanted = historySignature(t);
    if (wanted !== historyShown) {
      historyShown = wanted;
      history.update(t);
    }
    removal.update();
  }

  const signatureOf = (t) => JSON.stringify([signature(t), deps.signatureOf(t),
    coordinationSignature(t), historySignature(t), descendantsOf(t.id).length]);
  return { signatureOf, update, stop: () => history.stop(), deleting: removal.working };
}

/**
 * Deleting the task: a leaf alone, a parent with its whole subtree (`?cascade=true`) once the
 * confirmation has said how many subtasks go with it. Afterwards its parent opens; a top-level
 * task closes the pane and the focus goes to the next task in the tree.
 */
function taskRemoval(app, task) {
  let subtasks = 0; // as the confirmation last said
  let parentId = null;
  let focusNext = null;
  return deleteConfirm(app, {
    label: "Delete task",
    describe() {
      const title = state.tasks.get(task.id)?.title ?? task.title;
      subtasks = descendantsOf(task.id).length;
      if (!subtasks) return { question: `Delete the task “${title}”?`, confirm: "Delete task" };
      const count = plural(subtasks, "subtask");
      return {
        question: `Delete the task “${title}” and its ${count} (all levels below it)?`,
        confirm: `Delete task and ${count}`,
      };
    },
    async perform() {
      parentId = state.tasks.get(task.id)?.parentId ?? null;
      focusNext = focusAfterRemoving("#task-tree > li", task.id,
        (id) => document.querySelector(`#task-tree > li[data-key="${CSS.escape(id)}"] .task-title`),
        () => document.getElementById("tasks-heading"));
      await app.actions.deleteTask(task.id, subtasks > 0);
    },
    done() {
      const parent = parentId ? state.tasks.get(parentId) : null;
      if (parent && parent.projectId === app.ui.projectId) {
        app.navigate({ projectId: app.ui.projectId, open: { kind: "task", id: parent.id } });
      } else {
        app.navigate({ projectId: app.ui.projectId, open: null }, { focus: focusNext });
      }
    },
  });
}

function signature(t) {
  const sessions = (t.sessionIds || []).map((id) => {
    const s = state.sessions.get(id);
    return [id, s?.status, s?.name];
  });
  const parent = t.parentId ? state.tasks.get(t.parentId)?.title ?? null : null;
  const kids = [];
  for (const c of state.tasks.values()) {
    if (c.parentId === t.id) kids.push([c.id, c.title, c.status]);
  }
  return JSON.stringify([t.updatedAt, t.title, t.status, t.priority, t.description,
    (t.timeline || []).length, sessions, parent, kids]);
}

function taskFacts(app, t) {
  const parent = t.parentId ? state.tasks.get(t.parentId) : null;
  const kids = [...state.tasks.values()].filter((c) => c.parentId === t.id)
    .sort((a, b) => (a.createdAt ?? 0) - (b.createdAt ?? 0));
  const sessions = (t.sessionIds || [])
    .map((id) => state.sessions.get(id) || { id, missing: true });
  const change = (field, previous) => async (value, select) => {
    try {
      await app.actions.updateTask(t.id, { [field]: value });
    } catch (err) {
      select.value = previous;
      app.notice(app.describe(err));
    }
  };
  const status = enumSelect(TASK_STATUSES, t.status, "Status", "status",
    change("status", t.status));
  const priority = enumSelect(TASK_PRIORITIES, t.priority, "Priority", "priority",
    change("priority", t.priority));
  const parentValue = parent ? taskLink(app, parent) : none(`${t.parentId} (deleted)`);
  const kidList = h("ul", { class: "plain" },
    kids.map((c) => h("li", null, taskLink(app, c), " ", badge(c.status))));
  const sessionList = h("ul", { class: "plain" }, sessions.map((s) => h("li", null,
    sessionLink(app, s, t.projectId), s.missing ? null : [" ", badge(s.status)])));
  return [
    fact("Status", status),
    fact("Priority", priority),
    ...coordinationFacts(app, t),
    t.parentId ? fact("Parent", parentValue) : null,
    kids.length ? fact("Subtasks", kidList) : null,
    fact("Sessions", sessions.length ? sessionList : none()),
    fact("Created", timeEl(t.createdAt)),
    t.startedAt ? fact("Started", timeEl(t.startedAt)) : null,
    t.completedAt ? fact("Completed", timeEl(t.completedAt)) : null,
    fact("Id", h("code", null, t.id)),
  ];
}
