// The detail pane: shows the task or session named in the URL and keeps it current. A new
// skeleton is built only when another item is opened, so forms inside keep what is typed in
// them while live updates refresh the rest.

import { h, fill } from "../dom.js";
import { state } from "../store.js";
import { taskDetail } from "./task-detail.js";
import { sessionDetail } from "./session-detail.js";

export function detailView(app) {
  const pane = document.getElementById("detail");
  let shown = null; // {kind, id, missing?, signature, update(entity), signatureOf(entity), stop()}

  const closeButton = () => h("button", {
    type: "button",
    class: "small close",
    "aria-label": "Close details",
    onclick: () => app.navigate({ projectId: app.ui.projectId, open: null }),
  }, "Close");

  function forget() {
    if (shown && shown.stop) shown.stop();
    shown = null;
  }

  function render() {
    const open = app.ui.open;
    if (!open) {
      forget();
      pane.hidden = true;
      pane.replaceChildren();
      return;
    }
    pane.hidden = false;
    const table = open.kind === "task" ? state.tasks : state.sessions;
    const entity = table.get(open.id);
    // While this page deletes the shown item, its events may arrive before the answer: keep
    // the pane (and the focus in it) until the page moves on.
    if (!entity && shown && !shown.missing && shown.id === open.id && shown.deleting?.()) return;
    if (!entity) {
      forget();
      shown = { kind: open.kind, id: open.id, missing: true };
      const why = state.loaded ? `This ${open.kind} does not exist (any more).` : "Loading…";
      fill(pane,
        h("div", { class: "detail-head" },
          h("h2", { id: "detail-title", tabindex: "-1" },
            open.kind === "task" ? "Task" : "Session"),
          closeButton()),
        h("p", { class: "muted" }, why));
      return;
    }
    if (!shown || shown.missing || shown.kind !== open.kind || shown.id !== open.id) {
      forget();
      const make = open.kind === "task" ? taskDetail : sessionDetail;
      shown = make(app, pane, entity, closeButton);
      shown.kind = open.kind;
      shown.id = open.id;
    }
    const signature = shown.signatureOf(entity);
    if (shown.signature !== signature) {
      shown.signature = signature;
      shown.update(entity);
    }
  }

  return { render };
}
