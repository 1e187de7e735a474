// The dependency graph of a project: which tasks wait for which. Tasks that take part in a
// dependency are laid out in layers, left to right (a task sits one layer right of the last
// task it waits for), as positioned boxes over an SVG of arrows from each task to the tasks
// that wait for it. Drawn with plain DOM and SVG; all text goes in as text nodes.

import { h, fill, label, clock } from "../dom.js";
import { state } from "../store.js";
import { dependencyIds } from "../readiness.js";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 200;
const NODE_H = 80;
const GAP_X = 72;
const GAP_Y = 16;

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  for (const child of children) {
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/**
 * Nodes with layer and row, and edges {from, to} meaning "`to` waits for `from`", for the tasks
 * of one project. A dependency on a task that no longer exists becomes a `missing` node.
 */
export function layoutGraph(tasks) {
  const byId = new Map(tasks.map((t) => [t.id, t]));
  const edges = [];
  const involved = new Set();
  const missing = new Set();
  for (const t of tasks) {
    for (const dep of dependencyIds(t)) {
      if (dep === t.id) continue;
      edges.push({ from: dep, to: t.id });
      involved.add(dep);
      involved.add(t.id);
      if (!byId.has(dep)) missing.add(dep);
    }
  }
  const order = new Map(tasks.map((t, i) => [t.id, i]));
  for (const id of missing) order.set(id, -1);
  const waitsFor = new Map();
  for (const e of edges) {
    if (!waitsFor.has(e.to)) waitsFor.set(e.to, []);
    waitsFor.get(e.to).push(e.from);
  }
  // Layer = length of the longest chain of dependencies below a task. Old data may hold a
  // cycle; an edge back into the chain being measured counts as nothing.
  const layer = new Map();
  const measuring = new Set();
  function layerOf(id) {
    if (layer.has(id)) return layer.get(id);
    if (measuring.has(id)) return -1;
    measuring.add(id);
    let value = 0;
    for (const dep of waitsFor.get(id) || []) value = Math.max(value, layerOf(dep) + 1);
    measuring.delete(id);
    layer.set(id, value);
    return value;
  }
  const ids = [...involved].sort((a, b) => order.get(a) - order.get(b));
  for (const id of ids) layerOf(id);
  const columns = [];
  for (const id of ids) {
    const n = layer.get(id);
    (columns[n] ||= []).push(id);
  }
  // Within a layer, place each task near the tasks it waits for (their mean row), so that
  // arrows cross less; ties keep creation order.
  const row = new Map();
  columns.forEach((column, n) => {
    if (n > 0) {
      const weight = (id) => {
        const rows = (waitsFor.get(id) || []).map((d) => row.get(d)).filter(Number.isFinite);
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Infinity;
      };
      const keyed = new Map(column.map((id) => [id, weight(id)]));
      column.sort((a, b) => keyed.get(a) - keyed.get(b) || order.get(a) - order.get(b));
    }
    column.forEach((id, i) => row.set(id, i));
  });
  const nodes = ids.map((id) => ({
    id, task: byId.get(id) || null, layer: layer.get(id), row: row.get(id),
  }));
  const rows = Math.max(0, ...columns.map((c) => (c ? c.length : 0)));
  const isolated = tasks.length - (involved.size - missing.size);
  return { nodes, edges, layers: columns.length, rows, isolated };
}

export function graphView(app, container) {
  let signature = null;

  function show(visible) {
    container.hidden = !visible;
    if (!visible) signature = null;
  }

  function render(tasks, readiness) {
    const model = layoutGraph(tasks);
    const sig = JSON.stringify([app.ui.projectId, model.nodes.map((n) => [n.id, n.layer, n.row,
      n.task?.title, n.task?.status, readiness.get(n.id)?.ready, readiness.get(n.id)?.waiting,
      readiness.get(n.id)?.claim?.sessionId, readiness.get(n.id)?.claim?.leaseExpiresAt,
      app.isOpen("task", n.id)]), model.edges, model.isolated]);
    if (sig === signature) return;
    signature = sig;
    if (!model.edges.length) {
      fill(container, h("p", { class: "muted graph-empty" },
        "No dependencies yet. Open a task and add one under “Depends on”."));
      return;
    }
    const at = new Map(model.nodes.map((n) => [n.id, {
      x: n.layer * (NODE_W + GAP_X), y: n.row * (NODE_H + GAP_Y),
    }]));
    const width = model.layers * (NODE_W + GAP_X) - GAP_X;
    const height = model.rows * (NODE_H + GAP_Y) - GAP_Y;
    const titleOf = (id) => state.tasks.get(id)?.title ?? `${id} (missing)`;
    const arrows = svg("svg", {
      class: "graph-edges", width, height, viewBox: `0 0 ${width} ${height}`,
      "aria-hidden": "true",
    }, svg("defs", {}, svg("marker", {
      id: "graph-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse",
    }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "graph-arrow" }))));
    for (const e of model.edges) {
      const a = at.get(e.from);
      const b = at.get(e.to);
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      const bend = Math.max(24, (x2 - x1) / 2);
      const met = state.tasks.get(e.from)?.status === "completed";
      arrows.appendChild(svg("path", {
        class: `graph-edge ${met ? "met" : "unmet"}`,
        d: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
        "data-from": e.from, "data-to": e.to, "marker-end": "url(#graph-arrow)",
      }, svg("title", {}, `${titleOf(e.to)} waits for ${titleOf(e.from)}`)));
    }
    const boxes = model.nodes.map((n) => node(n, at.get(n.id), readiness.get(n.id)));
    const facts = model.edges.map((e) => h("li", { dataset: { from: e.from, to: e.to } },
      `${titleOf(e.to)} waits for ${titleOf(e.from)}`));
    fill(container,
      h("p", { class: "muted graph-legend" },
        "Arrows lead from a task to the tasks that wait for it; solid once it is completed.",
        model.isolated > 0 ? ` ${model.isolated} task(s) without dependencies are not shown.`
          : ""),
      h("div", { class: "graph-scroll" },
        h("div", {
          class: "graph-canvas",
          style: { width: `${width}px`, height: `${height}px` },
        }, arrows, boxes)),
      h("ul", { class: "visually-hidden", "aria-label": "Dependencies" }, facts));
  }

  function node(n, pos, r) {
    const style = { left: `${pos.x}px`, top: `${pos.y}px`, width: `${NODE_W}px`,
      height: `${NODE_H}px` };
    if (!n.task) {
      return h("div", { class: "graph-node missing", style, dataset: { taskId: n.id } },
        h("span", { class: "graph-title" }, n.id), h("span", { class: "muted" }, "missing task"));
    }
    const t = n.task;
    const badges = [h("span", { class: `badge status-${safe(t.status)}` }, label(t.status))];
    if (r?.ready) badges.push(h("span", { class: "badge readiness-ready" }, "ready"));
    if (r?.waiting) badges.push(h("span", { class: "badge readiness-blocked" }, "blocked"));
    if (r?.claim) {
      const holder = state.sessions.get(r.claim.sessionId)?.name || r.claim.sessionId;
      badges.push(h("span", { class: "graph-claim", title: `Claimed by ${holder}` },
        `${holder} · ${clock(r.claim.leaseExpiresAt)}`));
    }
    const open = app.isOpen("task", t.id);
    return h("a", {
      class: `graph-node${open ? " open" : ""}`,
      style,
      href: app.href({ projectId: t.projectId, open: { kind: "task", id: t.id } }),
      title: t.title,
      dataset: { taskId: t.id, status: t.status },
    }, h("span", { class: "graph-title" }, t.title), h("span", { class: "graph-badges" }, badges));
  }

  return { render, show };
}

function safe(value) {
  return String(value ?? "unknown").replace(/[^a-z_]/gi, "");
}
