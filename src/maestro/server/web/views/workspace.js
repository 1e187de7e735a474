// Where a spawned session works: its git worktree and branch, the files it changes, overlaps
// with other sessions, its diff (shown as text, never as markup), and the merge and clean-up
// buttons. Used by the sessions list (one line per row, a banner for overlaps) and the session
// detail pane.

import * as api from "../api.js";
import { h, fill, setText, badge, ACTIVE_SESSION } from "../dom.js";
import { state, upsert } from "../store.js";
import { sessionLink, fact, none } from "./links.js";

const FILES_SHOWN = 12;

/** The session's worktree record, or null when it works in the project's folder. */
export function worktreeOf(s) {
  const ws = s?.workspace;
  return ws && typeof ws === "object" && ws.mode === "worktree" ? ws : null;
}

/** What of a session's workspace a list row shows (for its change signature). */
export function workspaceSignature(s) {
  const ws = s?.workspace;
  if (!ws || typeof ws !== "object") return null;
  return [ws.mode, ws.branch, ws.state, ws.changedCount ?? (ws.changedFiles || []).length,
    (ws.overlaps || []).map((o) => [o.sessionId, o.files])];
}

function otherName(id) {
  return state.sessions.get(id)?.name || id;
}

/** One line under a session row: branch, how many files it changes, overlaps. */
export function workspaceLine(s) {
  const ws = worktreeOf(s);
  if (!ws) return null;
  const changed = ws.changedCount ?? (ws.changedFiles || []).length;
  const overlaps = ws.overlaps || [];
  return h("div", { class: "workspace-line" },
    h("code", { class: "branch", title: `Worktree: ${ws.path}` }, ws.branch),
    ws.state && ws.state !== "active" ? badge(ws.state, "ws") : null,
    h("span", { class: "muted changed-count" },
      `${changed} file${changed === 1 ? "" : "s"} changed`),
    overlaps.length ? h("span", {
      class: "overlap-flag",
      title: overlaps.map((o) => `${otherName(o.sessionId)}: ${o.files.join(", ")}`)
        .join("\n"),
    }, `overlaps with ${overlaps.map((o) => otherName(o.sessionId)).join(", ")}`) : null);
}

/** The banner above the session lists: every pair of sessions changing the same files. */
export function renderOverlapBanner(banner, app, sessions) {
  const pairs = [];
  for (const s of sessions) {
    const ws = worktreeOf(s);
    for (const o of ws?.overlaps || []) {
      if (String(s.id) < String(o.sessionId)) pairs.push([s, o]);
    }
  }
  const sig = JSON.stringify(pairs.map(([s, o]) => [s.id, s.name, o.sessionId,
    otherName(o.sessionId), o.files]));
  if (banner._signature === sig) return;
  banner._signature = sig;
  banner.hidden = !pairs.length;
  fill(banner, pairs.length ? [
    h("strong", null, "Overlapping changes"),
    h("ul", { class: "plain" }, pairs.map(([s, o]) => h("li", null,
      sessionLink(app, s, s.projectId), " and ",
      sessionLink(app, state.sessions.get(o.sessionId) || { id: o.sessionId, missing: true },
        s.projectId),
      " both change ", h("code", null, o.files.join(", "))))),
  ] : []);
}

/** The workspace part of the session detail: {el, update(session)}. */
export function workspaceSection(app, session) {
  const sid = session.id;
  const facts = h("dl", { class: "facts workspace-facts" });
  const status = h("p", { class: "muted workspace-status", role: "status" });
  const problem = h("div", { class: "form-error workspace-error", role: "alert", hidden: true });
  const diffButton = h("button", { type: "button" }, "Show diff");
  const commitBox = h("input", { type: "checkbox", name: "commitUncommitted" });
  const mergeButton = h("button", { type: "button" }, "Merge");
  const cleanupButton = h("button", { type: "button", class: "danger" }, "Clean up");
  const forceBox = h("input", { type: "checkbox", name: "force" });
  const discardBox = h("input", { type: "checkbox", name: "discardUnmerged" });
  const confirmRemove = h("button", { type: "button", class: "danger" }, "Remove worktree");
  const confirmCancel = h("button", { type: "button" }, "Cancel");
  const confirm = h("div", { class: "confirm workspace-confirm", hidden: true },
    h("span", null, "Remove this session's worktree and branch?"),
    h("label", null, forceBox, " throw away uncommitted changes"),
    h("label", null, discardBox, " also delete commits not merged"),
    h("div", { class: "row" }, confirmRemove, confirmCancel));
  const mergeRow = h("div", { class: "row workspace-actions" }, diffButton, mergeButton,
    h("label", { class: "muted" }, commitBox, " commit uncommitted changes first"),
    cleanupButton);
  const diffView = h("div", { class: "diff-view", hidden: true });
  const el = h("section", { class: "workspace", "aria-label": "Workspace" },
    h("h3", null, "Workspace"), facts, mergeRow, confirm, status, problem, diffView);
  let current = session;

  function showProblem(err) {
    const details = err?.details && typeof err.details === "object" ? err.details : {};
    const files = details.files || details.uncommitted || [];
    const commits = details.commits || [];
    fill(problem, h("p", null, app.describe(err)),
      files.length ? h("ul", { class: "plain problem-files" },
        files.map((f) => h("li", null, h("code", null, f)))) : null,
      commits.length ? h("ul", { class: "plain problem-commits" },
        commits.map((c) => h("li", null, h("code", null, String(c.sha).slice(0, 10)), " ",
          c.subject))) : null);
    problem.hidden = false;
  }

  function clearProblem() {
    problem.hidden = true;
    problem.replaceChildren();
  }

  async function run(button, label, work) {
    if (button.getAttribute("aria-disabled") === "true") return;
    button.setAttribute("aria-disabled", "true");
    setText(button, `${label}…`);
    clearProblem();
    try {
      await work();
    } catch (err) {
      showProblem(err);
    } finally {
      button.removeAttribute("aria-disabled");
      setText(button, label);
    }
  }

  diffButton.addEventListener("click", () => {
    if (!diffView.hidden && diffButton.textContent === "Hide diff") {
      diffView.hidden = true;
      setText(diffButton, "Show diff");
      return;
    }
    run(diffButton, "Show diff", async () => {
      const diff = await api.get(`/api/sessions/${api.seg(sid)}/diff`);
      renderDiff(diffView, diff);
      diffView.hidden = false;
    }).then(() => {
      if (!diffView.hidden) setText(diffButton, "Hide diff");
    });
  });

  mergeButton.addEventListener("click", () => run(mergeButton, "Merge", async () => {
    const result = await api.post(`/api/sessions/${api.seg(sid)}/merge`,
      { commitUncommitted: commitBox.checked });
    if (result?.session) upsert("sessions", result.session);
    const how = result.alreadyMerged ? "already merged"
      : result.fastForward ? "fast-forward" : "merge commit";
    setText(status, `Merged ${result.branch} into ${result.baseRef} (${how}, `
      + `${String(result.commit).slice(0, 10)})`
      + (result.removed ? "; worktree and branch removed." : "."));
  }));

  cleanupButton.addEventListener("click", () => {
    confirm.hidden = false;
    confirmRemove.focus();
  });
  confirmCancel.addEventListener("click", () => {
    confirm.hidden = true;
    cleanupButton.focus();
  });
  confirmRemove.addEventListener("click", () => run(confirmRemove, "Remove worktree",
    async () => {
      const result = await api.post(`/api/sessions/${api.seg(sid)}/cleanup`,
        { force: forceBox.checked, discardUnmerged: discardBox.checked });
      if (result?.session) upsert("sessions", result.session);
      confirm.hidden = true;
      setText(status, result.alreadyRemoved ? "The worktree was already gone."
        : "Worktree and branch removed.");
    }));

  function update(s) {
    current = s;
    const ws = s.workspace && typeof s.workspace === "object" ? s.workspace : null;
    el.hidden = !ws;
    if (!ws) return;
    const tree = worktreeOf(s);
    mergeRow.hidden = !tree;
    if (!tree) {
      confirm.hidden = true;
      fill(facts, ...fact("Mode", "shared: works in the project's folder"),
        ...fact("Why", ws.reason || none("—")),
        ws.path ? fact("Folder", h("code", null, ws.path)) : null);
      return;
    }
    const live = ACTIVE_SESSION.has(s.status);
    const open = tree.state !== "removed";
    mergeButton.hidden = !open;
    commitBox.parentElement.hidden = !open;
    cleanupButton.hidden = !open || live;
    if (!open || live) confirm.hidden = true;
    const changed = tree.changedFiles || [];
    const count = tree.changedCount ?? changed.length;
    const overlaps = tree.overlaps || [];
    fill(facts,
      ...fact("Branch", [h("code", { class: "branch" }, tree.branch), " ",
        badge(tree.state || "active", "ws")]),
      ...fact("Base", [h("code", null, tree.baseRef), " ",
        h("code", { class: "muted" }, String(tree.baseCommit || "").slice(0, 10))]),
      ...fact("Worktree", h("code", null, tree.path)),
      ...fact("Changed", count ? h("ul", { class: "plain changed-files" },
        changed.slice(0, FILES_SHOWN).map((f) => h("li", null, h("code", null, f))),
        count > FILES_SHOWN ? h("li", { class: "muted" }, `+${count - FILES_SHOWN} more`)
          : null) : none("no changes yet")),
      overlaps.length ? fact("Overlaps", h("ul", { class: "plain overlaps" },
        overlaps.map((o) => h("li", { class: "overlap-flag" },
          sessionLink(app, state.sessions.get(o.sessionId)
            || { id: o.sessionId, missing: true }, s.projectId),
          ` (${o.branch}) also changes `, h("code", null, o.files.join(", ")))))) : null,
      tree.merge ? fact("Merged", `${String(tree.merge.commit).slice(0, 10)} `
        + `(${tree.merge.fastForward ? "fast-forward" : "merge commit"})`) : null);
  }

  return {
    el,
    update,
    signatureOf: (s) => JSON.stringify([s.workspace ?? null, s.status]),
    get session() {
      return current;
    },
  };
}

/** The diff: its files with their counts, then the patch line by line, as text. */
function renderDiff(view, diff) {
  const files = diff.files || [];
  const where = diff.includesUncommitted
    ? "committed and uncommitted changes in the worktree" : "committed changes";
  const lines = String(diff.patch || "").split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  fill(view,
    h("p", { class: "muted" }, `${files.length} file${files.length === 1 ? "" : "s"} against `,
      h("code", null, `${diff.baseRef} ${String(diff.baseCommit || "").slice(0, 10)}`),
      ` (${where}; ${diff.commitCount ?? 0} commit${diff.commitCount === 1 ? "" : "s"})`),
    files.length ? h("ul", { class: "plain diff-files" }, files.map((f) => h("li", null,
      h("code", { class: `diff-status status-${f.status}` }, f.status), " ",
      h("code", null, f.path), " ",
      h("span", { class: "muted" }, f.added === null ? "binary"
        : `+${f.added} −${f.deleted}`),
      f.uncommitted ? h("span", { class: "uncommitted" }, " uncommitted") : null)))
      : h("p", { class: "muted" }, "No changes."),
    lines.length ? h("pre", { class: "diff", tabindex: "0", "aria-label": "Patch" },
      lines.map((line) => h("span", { class: lineClass(line) }, `${line}\n`))) : null,
    diff.truncated ? h("p", { class: "muted" }, "The patch was cut short.") : null);
}

function lineClass(line) {
  if (line.startsWith("diff --git")) return "diff-file";
  if (line.startsWith("@@")) return "diff-hunk";
  if (line.startsWith("+++") || line.startsWith("---")) return "diff-meta";
  if (line.startsWith("+")) return "diff-add";
  if (line.startsWith("-")) return "diff-del";
  return "diff-ctx";
}
