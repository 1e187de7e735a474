// Loading whole lists a page at a time: `GET …?limit=N`, then the page after each answer's
// X-Next-Cursor until there is none. A big board then never arrives as one huge answer, and a
// server without pages (no cursor header) answers the whole list in the first page.

import { getPage } from "./api.js";

export const PAGE_SIZE = 1000;

/** Every item of the list at `path` (a path with or without a query). */
export async function loadAll(path, pageSize = PAGE_SIZE) {
  const sep = path.includes("?") ? "&" : "?";
  const items = [];
  let cursor = null;
  for (;;) {
    const query = `limit=${pageSize}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
    const page = await getPage(`${path}${sep}${query}`);
    items.push(...page.items);
    if (!page.next || page.next === cursor) return items;
    cursor = page.next;
  }
}
