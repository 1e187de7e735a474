// DOM helpers. Every piece of data reaches the page as a text node or a property value, never as
// markup: there is deliberately no way to pass HTML through these functions.

const PROPERTIES = new Set(["value", "checked", "disabled", "selected", "hidden", "open"]);

/** Create an element: h("a", {href, class, onclick}, "text", child, [more children]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "dataset") Object.assign(el.dataset, value);
      else if (name === "style" && typeof value === "object") {
        for (const [prop, v] of Object.entries(value)) el.style.setProperty(prop, v);
      } else if (name.startsWith("on") && typeof value === "function") {
        el.addEventListener(name.slice(2), value);
      } else if (PROPERTIES.has(name)) el[name] = value;
      else el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/** Replace all children of `el` with `children` (text or nodes). */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Like fill(), but an element focused inside keeps focus in its rebuilt twin (same data-focus). */
export function refill(el, ...children) {
  const active = document.activeElement;
  const key = active && el.contains(active) ? active.dataset.focus : undefined;
  fill(el, ...children);
  if (key) {
    const twin = el.querySelector(`[data-focus="${CSS.escape(key)}"]`);
    if (twin) twin.focus();
  }
  return el;
}

/** Set text only when it differs, so unchanged nodes are left alone. */
export function setText(el, text) {
  const value = String(text ?? "");
  if (el.textContent !== value) el.textContent = value;
}

/**
 * Keyed update of a list: rows whose signature is unchanged keep their element (and the focus
 * and open pickers inside it); changed rows are rebuilt; order follows `items`.
 */
export function reconcile(container, items, { key, signature, build }) {
  const previous = new Map();
  for (const child of container.children) {
    if (child.dataset.key !== undefined) previous.set(child.dataset.key, child);
  }
  const active = document.activeElement;
  const wanted = [];
  for (const item of items) {
    const k = key(item);
    const sig = signature(item);
    const old = previous.get(k);
    if (old && old._signature === sig) {
      wanted.push(old);
      continue;
    }
    const el = build(item);
    el.dataset.key = k;
    el._signature = sig;
    if (old && active && old.contains(active) && active.dataset.focus) {
      el._restoreFocus = active.dataset.focus;
    }
    wanted.push(el);
  }
  let cursor = container.firstChild;
  for (const el of wanted) {
    if (el === cursor) {
      cursor = cursor.nextSibling;
      continue;
    }
    container.insertBefore(el, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    container.removeChild(cursor);
    cursor = next;
  }
  for (const el of wanted) {
    if (el._restoreFocus) {
      const target = el.querySelector(`[data-focus="${CSS.escape(el._restoreFocus)}"]`);
      delete el._restoreFocus;
      if (target) target.focus();
    }
  }
}

/** Rebuild the options of a <select>, keeping its current value when it still exists. */
export function setOptions(select, options, fallback = "") {
  const current = select.value;
  const sig = JSON.stringify(options);
  if (select._optionsSignature !== sig) {
    select.replaceChildren(...options.map(([value, label]) => h("option", { value }, label)));
    select._optionsSignature = sig;
  }
  const values = options.map(([value]) => value);
  select.value = values.includes(current) ? current : fallback;
}

/** "12s", "5m", "3h", "2d" since `ms`. */
export function age(ms, now = Date.now()) {
  if (!Number.isFinite(ms)) return "";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 5) return "just now";
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs}h`;
  return `${Math.floor(hrs / 24)}d`;
}

/** "just now" or "5m ago". */
export function ago(ms, now = Date.now()) {
  const text = age(ms, now);
  return text === "just now" || !text ? text : `${text} ago`;
}

/** Local date and time of a millisecond timestamp. */
export function when(ms) {
  if (!Number.isFinite(ms)) return "";
  return new Date(ms).toLocaleString();
}

/** Local time of day of a millisecond timestamp ("14:05"), with the date when not today. */
export function clock(ms, now = Date.now()) {
  if (!Number.isFinite(ms)) return "";
  const at = new Date(ms);
  const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return at.toDateString() === new Date(now).toDateString()
    ? time : `${at.toLocaleDateString()} ${time}`;
}

/** A <time> element showing `when(ms)` with the ISO value for machines. */
export function timeEl(ms, text) {
  if (!Number.isFinite(ms)) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: new Date(ms).toISOString(), title: when(ms) }, text ?? when(ms));
}

export const TASK_STATUSES = ["pending", "in_progress", "completed", "blocked"];
export const TASK_PRIORITIES = ["low", "medium", "high"];
export const ACTIVE_SESSION = new Set(["spawning", "running"]);

/** Human label of an enum value: "in_progress" -> "in progress". */
export function label(value) {
  return String(value ?? "").replaceAll("_", " ");
}

/** A status badge; the class carries the colour, the text carries the meaning. */
export function badge(value, kind = "status") {
  const safe = String(value ?? "unknown").replace(/[^a-z_]/gi, "");
  return h("span", { class: `badge ${kind}-${safe}` }, label(value));
}
