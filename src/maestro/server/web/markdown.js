// A small Markdown renderer for task descriptions. It builds DOM nodes directly and puts every
// piece of source text into text nodes, so nothing a task says can become markup, an attribute
// or a script. Supported: headings, paragraphs (single newlines kept), bullet and numbered lists,
// block quotes, fenced code, rules, `code`, **bold**, *italic*, [links](https://...) and bare
// http(s) links. Links are only made for http, https and mailto addresses.

import { h } from "./dom.js";

const FENCE = /^\s*(```|~~~)/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;
const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
const SAFE_URL = /^(https?:\/\/|mailto:)[^\s]+$/i;
const MAX_DEPTH = 8;

/** Render Markdown `source` into a DocumentFragment of safe nodes. */
export function renderMarkdown(source, depth = 0) {
  const out = document.createDocumentFragment();
  const lines = String(source ?? "").replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
      continue;
    }
    const fence = line.match(FENCE);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i += 1;
      out.appendChild(h("pre", null, h("code", null, body.join("\n"))));
      continue;
    }
    const heading = line.match(HEADING);
    if (heading) {
      // Descriptions sit under the task's own heading, so their levels start lower.
      const level = Math.min(6, heading[1].length + 2);
      out.appendChild(h(`h${level}`, null, inline(heading[2])));
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      out.appendChild(h("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) body.push(lines[i++].match(QUOTE)[1]);
      const inner = depth < MAX_DEPTH ? renderMarkdown(body.join("\n"), depth + 1)
        : document.createTextNode(body.join("\n"));
      out.appendChild(h("blockquote", null, inner));
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      const numbered = !BULLET.test(line);
      const pattern = numbered ? NUMBERED : BULLET;
      const items = [];
      while (i < lines.length) {
        const m = lines[i].match(pattern);
        if (m) {
          items.push(numbered ? m[2] : m[1]);
        } else if (lines[i].trim() && /^\s{2,}/.test(lines[i]) && items.length) {
          items[items.length - 1] += " " + lines[i].trim();
        } else {
          break;
        }
        i += 1;
      }
      const start = numbered ? Number(line.match(NUMBERED)[1]) : null;
      const list = h(numbered ? "ol" : "ul", start && start !== 1 ? { start } : null,
        items.map((text) => h("li", null, inline(text))));
      out.appendChild(list);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i])) para.push(lines[i++]);
    const p = h("p");
    para.forEach((text, n) => {
      if (n) p.appendChild(h("br"));
      p.appendChild(inline(text.trim()));
    });
    out.appendChild(p);
  }
  return out;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line)
    || BULLET.test(line) || NUMBERED.test(line);
}

const INLINE = new RegExp([
  "(`+)([^`]|[^`][\\s\\S]*?[^`])\\1(?!`)", // 1,2: code span
  "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 3: strong
  "(?<![^\\s(\\[])__(?=\\S)([\\s\\S]*?\\S)__(?![\\w])", // 4: strong
  "\\*(?=[^\\s*])([\\s\\S]*?[^\\s*])\\*", // 5: emphasis
  "(?<![^\\s(\\[])_(?=[^\\s_])([\\s\\S]*?[^\\s_])_(?![\\w])", // 6: emphasis
  "\\[([^\\]\\n]+)\\]\\(\\s*([^)\\s]+)\\s*\\)", // 7,8: link
  "(https?:\\/\\/[^\\s<>()\"']*[^\\s<>()\"'.,;:!?])", // 9: bare link
].join("|"), "g");

/** Inline Markdown of one line or paragraph as safe nodes. */
export function inline(text, depth = 0) {
  const out = document.createDocumentFragment();
  let last = 0;
  const source = String(text ?? "");
  for (const m of source.matchAll(INLINE)) {
    if (m.index > last) out.appendChild(document.createTextNode(source.slice(last, m.index)));
    out.appendChild(inlineNode(m, depth));
    last = m.index + m[0].length;
  }
  if (last < source.length) out.appendChild(document.createTextNode(source.slice(last)));
  return out;
}

function inlineNode(m, depth) {
  const nested = (value) => (depth < MAX_DEPTH ? inline(value, depth + 1) : value);
  if (m[2] !== undefined) return h("code", null, m[2]);
  if (m[3] !== undefined) return h("strong", null, nested(m[3]));
  if (m[4] !== undefined) return h("strong", null, nested(m[4]));
  if (m[5] !== undefined) return h("em", null, nested(m[5]));
  if (m[6] !== undefined) return h("em", null, nested(m[6]));
  if (m[7] !== undefined) {
    if (!SAFE_URL.test(m[8])) return document.createTextNode(m[0]);
    return link(m[8], nested(m[7]));
  }
  return link(m[9], m[9]);
}

function link(url, content) {
  return h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, content);
}
