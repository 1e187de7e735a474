// Links and fact rows shared by the detail views.

import { h } from "../dom.js";

/** A link that opens a task in the detail pane. */
export function taskLink(app, task) {
  const open = { kind: "task", id: task.id };
  return h("a", { href: app.href({ projectId: task.projectId, open }) }, task.title);
}

/** A link that opens a session; a session that no longer exists shows as its id. */
export function sessionLink(app, session, projectId) {
  if (!session || session.missing) {
    return h("code", { title: "This session no longer exists" }, session?.id ?? "");
  }
  const open = { kind: "session", id: session.id };
  return h("a", { href: app.href({ projectId: session.projectId || projectId, open }) },
    session.name || session.id);
}

/** One <dt>/<dd> pair of a facts list. */
export function fact(name, value) {
  return [h("dt", null, name), h("dd", null, value)];
}

export const none = (text = "none") => h("span", { class: "muted" }, text);
