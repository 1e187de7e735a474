// A session's events for people: when, what kind, and one line saying what happened (a file
// changed: its path; the agent started: its command; it exited: code and reason), with the raw
// JSON one click away. Everything reaches the page as text, never as markup.

import { h, timeEl, badge, label } from "../dom.js";
import { state } from "../store.js";

const RAW_CHARS = 20000;

const EXIT_REASONS = {
  exited: "finished",
  stopped: "stopped by the user",
  signal: "killed by a signal",
  exit_code: "failed",
  command_not_found: "command not found",
  agent_launch_failed: "the agent could not be started",
  launch_failed: "could not be started",
  wrapper_error: "the wrapper failed",
  process_lost: "the process was lost",
  server_restarted: "gone when the server restarted",
  launcher_error: "launcher error",
};

const str = (v) => (typeof v === "string" ? v : v === undefined || v === null ? "" : String(v));
const obj = (v) => (v && typeof v === "object" && !Array.isArray(v) ? v : {});

function taskName(id) {
  const task = typeof id === "string" ? state.tasks.get(id) : null;
  return task ? `“${task.title}”` : str(id);
}

/** How the agent ended, in words: "exit code 1, failed: <message>". */
function exitText(d) {
  const parts = [];
  if (Number.isFinite(d.exitCode)) parts.push(`exit code ${d.exitCode}`);
  if (d.signal) parts.push(`signal ${str(d.signal)}`);
  const reason = d.reason ? EXIT_REASONS[d.reason] || label(d.reason) : "";
  let text = parts.length ? `Exited with ${parts.join(", ")}` : "Exited";
  if (reason) text += ` (${reason})`;
  if (d.message) text += `: ${str(d.message)}`;
  return text;
}

const DESCRIBE = {
  file_modified: (d) => `File changed: ${str(d.file || d.path) || "(no path)"}`,
  process_started: (d) => {
    let text = "Agent started";
    if (d.command) text += `: ${str(d.command)}`;
    const where = [d.pid ? `pid ${d.pid}` : "", d.mode ? `in ${str(d.mode)}` : "",
      d.cwd ? `in ${str(d.cwd)}` : ""].filter(Boolean);
    return where.length ? `${text} (${where.join(", ")})` : text;
  },
  process_exit: exitText,
  launch_failed: (d) => `Could not start the agent${d.message ? `: ${str(d.message)}` : ""}`,
  agent_launch_failed: (d) => `Could not start ${str(d.agent) || "the agent"}`
    + (d.message ? `: ${str(d.message)}` : ""),
  spawn: (d) => {
    let text = "Spawned";
    if (d.agent) text += ` agent ${str(d.agent)}`;
    if (d.role) text += ` as ${str(d.role)}`;
    if (d.trigger) text += ` (${str(d.trigger)})`;
    return text;
  },
  task_start: (d) => `Started task ${taskName(d.taskId)}`,
  task_complete: (d) => `Completed task ${taskName(d.taskId)}`,
  command: (d) => {
    let text = `Ran ${str(d.command) || "a command"}`;
    if (Number.isFinite(d.exitCode)) text += ` (exit code ${d.exitCode}`
      + (Number.isFinite(d.duration) ? `, ${d.duration} ms)` : ")");
    return text;
  },
  log: (d) => (d.level ? `[${str(d.level)}] ` : "") + str(d.message),
  error: (d) => `Error: ${str(d.error || d.message) || "(no message)"}`,
};

/** One line describing an event's data, for any type. */
export function describeEvent(e) {
  const data = e?.data;
  const describe = DESCRIBE[e?.type];
  if (describe) return describe(obj(data));
  if (typeof data === "string") return data;
  const d = obj(data);
  if (typeof d.message === "string") return d.message;
  const simple = Object.entries(d)
    .filter(([, v]) => ["string", "number", "boolean"].includes(typeof v))
    .slice(0, 4)
    .map(([k, v]) => `${k}: ${v}`);
  return simple.join(", ");
}

/** The raw event as indented JSON (cut when huge). */
function rawJson(e) {
  let text;
  try {
    text = JSON.stringify(e, null, 2);
  } catch {
    text = String(e);
  }
  return text.length > RAW_CHARS ? `${text.slice(0, RAW_CHARS)}…` : text;
}

/** An <li> for one session event: time, kind, what happened, and the raw JSON (collapsed). */
export function eventEntry(e) {
  const text = describeEvent(e);
  return h("li", { class: "event-entry", dataset: { type: str(e?.type) } },
    h("div", { class: "event-head" }, timeEl(e?.timestamp), " ", badge(e?.type, "event")),
    text ? h("p", { class: "event-text" }, text) : null,
    h("details", { class: "event-raw" },
      h("summary", null, "Raw JSON"),
      h("pre", { class: "event-data" }, rawJson(e))));
}

/**
 * Why a session ended early, when it was stopped: the reason recorded in its metadata
 * (`stopReason`, `endReason`), or the launcher's `process_exit` with reason `stopped`.
 */
export function stopReason(session) {
  const meta = obj(session?.metadata);
  for (const key of ["stopReason", "endReason", "stoppedReason"]) {
    const value = meta[key];
    if (typeof value === "string" && value.trim()) return value.trim();
    if (value && typeof value === "object" && typeof value.reason === "string") {
      return value.reason;
    }
  }
  const events = Array.isArray(session?.events) ? session.events : [];
  for (let i = events.length - 1; i >= 0; i -= 1) {
    const e = events[i];
    if (e?.type === "process_exit" && obj(e.data).reason === "stopped") return "stopped";
  }
  return null;
}

/** Words after a session's status badge: "stopped by the user" for a stopped session. */
export function endNote(session) {
  const reason = stopReason(session);
  if (!reason || session?.status !== "failed") return null;
  const generic = ["stopped", "user", "stopped_by_user", "stopped by the user"];
  const extra = generic.includes(reason.toLowerCase()) ? "" : ` (${reason})`;
  return h("span", { class: "end-note" }, ` stopped by the user${extra}`);
}
