// The coordination part of a task's detail (SPEC §15): whether it is ready or what it waits
// for, who holds its claim and until when (with a button to release it), the tasks it depends
// on (each removable), a form to add one, and the tasks that wait for it.

import { h, refill, setOptions, badge, timeEl, label } from "../dom.js";
import { state, tasksOf } from "../store.js";
import { readinessOf, dependencyIds, dependentsOf } from "../readiness.js";
import { formError, busy } from "./forms.js";
import { taskLink, sessionLink, fact, none } from "./links.js";

/** Build the section; returns {element, update(task), signatureOf(task)}. */
export function dependencySection(app, task) {
  const taskId = task.id;
  const list = h("ul", { class: "plain deps-list", "aria-label": "Depends on" });
  const dependents = h("ul", { class: "plain dependents-list", "aria-label": "Needed by" });
  const picker = h("select", { name: "dependsOn", "aria-label": "Task to depend on" });
  const form = h("form", { class: "dep-form", autocomplete: "off" },
    h("label", { class: "grow" }, "Add a dependency", picker),
    h("button", { type: "submit" }, "Add dependency"),
    h("p", { class: "form-error full", role: "alert", hidden: true }));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const dependsOn = picker.value;
    if (!dependsOn) {
      formError(form, "Choose the task this one should wait for.");
      return;
    }
    await busy(form, async () => {
      await app.actions.addDependency(taskId, dependsOn);
      formError(form, "");
      picker.focus();
    }, (err) => formError(form, app.describe(err)));
  });

  async function removeDependency(dependsOn) {
    try {
      await app.actions.removeDependency(taskId, dependsOn);
      formError(form, "");
    } catch (err) {
      formError(form, app.describe(err));
    }
  }

  const element = h("section", { class: "deps", "aria-labelledby": "deps-heading" },
    h("h3", { id: "deps-heading" }, "Depends on"),
    list,
    form,
    h("h3", null, "Needed by"),
    dependents);

  function update(t) {
    const deps = dependencyIds(t);
    refill(list, deps.length ? deps.map((id) => {
      const dep = state.tasks.get(id);
      const name = dep ? dep.title : id;
      return h("li", { dataset: { dependsOn: id } },
        dep ? taskLink(app, dep) : h("code", null, id),
        " ", dep ? badge(dep.status) : h("span", { class: "badge status-failed" }, "missing"),
        " ", h("button", {
          type: "button",
          class: "small",
          "aria-label": `Remove dependency on ${name}`,
          dataset: { focus: `remove-${id}` },
          onclick: () => removeDependency(id),
        }, "Remove"));
    }) : h("li", null, none("nothing")));
    const siblings = tasksOf(t.projectId);
    const candidates = siblings.filter((c) => c.id !== t.id && !deps.includes(c.id));
    setOptions(picker, [["", "(choose a task)"],
      ...candidates.map((c) => [c.id, `${c.title} (${label(c.status)})`])], "");
    const waiting = dependentsOf(t.id, siblings);
    refill(dependents, waiting.length
      ? waiting.map((w) => h("li", null, taskLink(app, w), " ", badge(w.status)))
      : h("li", null, none()));
  }

  function signatureOf(t) {
    const siblings = tasksOf(t.projectId).map((c) => [c.id, c.title, c.status,
      dependencyIds(c).includes(t.id)]);
    return JSON.stringify([dependencyIds(t), siblings]);
  }

  return { element, update, signatureOf };
}

/** Fact rows: readiness and the claim (holder, lease end, release button). */
export function coordinationFacts(app, t) {
  const r = readinessOf(t, state.tasks);
  const title = (id) => state.tasks.get(id)?.title ?? `${id} (missing)`;
  let ready;
  if (r.ready) {
    ready = h("span", { class: "badge readiness-ready" }, "ready");
  } else if (r.waiting) {
    const why = [];
    if (r.blockedBy.length) why.push(`waits for ${r.blockedBy.map(title).join(", ")}`);
    if (r.blockedAncestors.length) {
      why.push(`parent blocked: ${r.blockedAncestors.map(title).join(", ")}`);
    }
    ready = h("span", null, h("span", { class: "badge readiness-blocked" }, "blocked"), " ",
      why.join("; "));
  } else {
    ready = none(t.status === "pending" ? "claimed" : `no (${label(t.status)})`);
  }
  const facts = [fact("Ready", h("span", { class: "readiness-fact" }, ready))];
  const claim = r.claim;
  if (claim) {
    const session = state.sessions.get(claim.sessionId) || { id: claim.sessionId, missing: true };
    const release = h("button", {
      type: "button",
      class: "small",
      dataset: { focus: "release" },
      "aria-label": "Release the claim",
      onclick: async () => {
        try {
          await app.actions.releaseClaim(t);
        } catch (err) {
          app.notice(app.describe(err));
        }
      },
    }, "Release");
    facts.push(fact("Claimed by", h("span", { class: "claim-fact" },
      sessionLink(app, session, t.projectId), " until ", timeEl(claim.leaseExpiresAt), " ",
      release)));
  }
  return facts;
}

/** What the detail signature needs to notice about readiness and claims. */
export function coordinationSignature(t) {
  const r = readinessOf(t, state.tasks);
  return JSON.stringify([r.ready, r.waiting, r.blockedBy, r.blockedAncestors,
    r.claim?.sessionId, r.claim?.leaseExpiresAt, r.claim?.token,
    r.claim ? state.sessions.get(r.claim.sessionId)?.name : null,
    r.blockedBy.map((id) => state.tasks.get(id)?.title)]);
}
