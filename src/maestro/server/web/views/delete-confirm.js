// An inline delete confirmation for the detail pane: a Delete button that opens a box saying
// what will go, its confirm and cancel buttons, and the server's refusal shown in the pane.
// Nothing is deleted without the second click; Escape or Cancel close the box and focus
// returns to the Delete button.

import { h, setText } from "../dom.js";

let boxes = 0;

/**
 * `describe()` returns {question, confirm}: the box's text and its confirm button's label. It is
 * read when the box opens and again on every update while it is open, so counts follow live
 * changes. `perform()` deletes (rejecting with the server's error); `done()` moves the page on
 * afterwards. Returns {trigger, box, error, update(), working()}.
 */
export function deleteConfirm(app, { label, describe, perform, done }) {
  boxes += 1;
  const boxId = `delete-confirm-${boxes}`;
  const trigger = h("button", {
    type: "button",
    class: "danger",
    "aria-expanded": "false",
    "aria-controls": boxId,
    dataset: { focus: "delete" },
  }, label);
  const question = h("span", { class: "confirm-question" });
  const yes = h("button", { type: "button", class: "danger confirm-yes" });
  const no = h("button", { type: "button" }, "Cancel");
  const box = h("div", {
    id: boxId, class: "confirm", role: "group", "aria-label": label, hidden: true,
  }, question, yes, no);
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  let busy = false;

  function showError(message) {
    error.textContent = message || "";
    error.hidden = !message;
  }

  function refresh() {
    const text = describe();
    setText(question, text.question);
    setText(yes, text.confirm);
  }

  function close(focusTrigger) {
    box.hidden = true;
    trigger.setAttribute("aria-expanded", "false");
    if (focusTrigger) trigger.focus();
  }

  trigger.addEventListener("click", () => {
    showError("");
    refresh();
    box.hidden = false;
    trigger.setAttribute("aria-expanded", "true");
    no.focus(); // the safe choice has the focus
  });
  no.addEventListener("click", () => {
    if (!busy) close(true);
  });
  box.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.stopPropagation(); // Escape closes this box, not the whole detail pane
    if (!busy) close(true);
  });
  yes.addEventListener("click", async () => {
    if (busy) return;
    busy = true;
    for (const button of [yes, no]) button.setAttribute("aria-disabled", "true");
    box.setAttribute("aria-busy", "true");
    try {
      await perform();
      done();
    } catch (err) {
      close(true);
      showError(app.describe(err));
    } finally {
      busy = false;
      for (const button of [yes, no]) button.removeAttribute("aria-disabled");
      box.removeAttribute("aria-busy");
    }
  });

  return {
    trigger,
    box,
    error,
    update() {
      if (!box.hidden && !busy) refresh();
    },
    working: () => busy,
  };
}

/** `n thing(s)` with the plural spelled out. */
export function plural(n, noun) {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

/** The element to focus after something left the page: the first of `candidates` shown. */
export function firstShown(...candidates) {
  for (const el of candidates.flat()) {
    if (el && el.isConnected && el.offsetParent !== null) return el;
  }
  return null;
}

/**
 * Call before deleting the item `id` of a list of rows (keyed by reconcile): returns a function
 * that, once the list has been rendered without it, gives the link of the nearest row still
 * shown (the following rows first, then the preceding ones), else `fallback()`.
 */
export function focusAfterRemoving(rowSelector, id, linkOf, fallback) {
  const ids = [...document.querySelectorAll(rowSelector)].map((row) => row.dataset.key);
  const at = ids.indexOf(id);
  const order = at < 0 ? ids : [...ids.slice(at + 1), ...ids.slice(0, at).reverse()];
  return () => firstShown(order.map(linkOf), fallback());
}
