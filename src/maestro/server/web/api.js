// REST client. Sends the bearer token kept in sessionStorage; when the server answers 401 it asks
// for the token (one prompt shared by all requests waiting on it) and retries.

const TOKEN_KEY = "maestro.token";

/** An error answer of the server (SPEC §6) or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, body) {
    const info = body && typeof body === "object" ? body : {};
    const text = typeof body === "string" && body ? body : `HTTP ${status}`;
    super(info.message || text);
    this.status = status;
    this.code = info.code || (status ? `HTTP_${status}` : "NETWORK_ERROR");
    this.details = info.details;
  }
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function saveToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lives only as long as this page
  }
  memoryToken = value;
}

let memoryToken = "";
let askForToken = async () => null;
let pendingAsk = null;

/**
 * Install the function that asks the person for a token:
 * (refused: boolean) => Promise<string | null>.
 */
export function setTokenPrompt(fn) {
  askForToken = fn;
}

function currentToken() {
  return token() || memoryToken;
}

let declined = false; // the person cancelled the prompt: do not ask again until a reload

/** Ask once for everyone: concurrent 401s share one prompt. */
function obtainToken(refusedToken) {
  if (declined) return Promise.resolve(null);
  if (!pendingAsk) {
    pendingAsk = (async () => {
      try {
        const value = (await askForToken(Boolean(refusedToken)))?.trim();
        if (value) saveToken(value);
        else declined = true;
        return value || null;
      } finally {
        pendingAsk = null;
      }
    })();
  }
  return pendingAsk;
}

/** Perform a request; resolves with the parsed body or rejects with ApiError. */
export async function request(method, path, body) {
  return (await exchange(method, path, body)).body;
}

/** GET one page of a list: {items, next}, `next` the cursor of the following page or null. */
export async function getPage(path) {
  const { body, headers } = await exchange("GET", path);
  return { items: Array.isArray(body) ? body : [], next: headers.get("X-Next-Cursor") };
}

/** Perform a request; resolves with {body, headers} or rejects with ApiError. */
async function exchange(method, path, body) {
  for (let attempt = 0; attempt < 4; attempt += 1) {
    const headers = { Accept: "application/json" };
    const sent = currentToken();
    if (sent) headers.Authorization = `Bearer ${sent}`;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new ApiError(0, { code: "NETWORK_ERROR", message: "The server cannot be reached" });
    }
    if (res.status === 401) {
      // Another request may already have obtained a newer token while this one was in flight.
      if (currentToken() && currentToken() !== sent) continue;
      const got = await obtainToken(sent);
      if (!got) throw new ApiError(401, await parse(res));
      continue;
    }
    const parsed = await parse(res);
    if (!res.ok) throw new ApiError(res.status, parsed);
    return { body: parsed, headers: res.headers };
  }
  throw new ApiError(401, { code: "UNAUTHORIZED", message: "The token was refused" });
}

async function parse(res) {
  const type = res.headers.get("content-type") || "";
  const text = await res.text();
  if (type.includes("json") && text) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const put = (path, body) => request("PUT", path, body);
export const patch = (path, body) => request("PATCH", path, body);
export const del = (path) => request("DELETE", path);

/** URL of the event stream on this page's own host, with the token when there is one. */
export function streamUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const t = currentToken();
  return `${scheme}//${location.host}/` + (t ? `?token=${encodeURIComponent(t)}` : "");
}

/** Percent-encode one path segment (ids are opaque strings). */
export const seg = (value) => encodeURIComponent(value);
