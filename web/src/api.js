// The JSON API under /api/v1, with the session's API key. Errors arrive as RFC 9457
// problem+json; they are thrown as ApiError so views can switch on `status` and `type`.

const KEY_STORAGE = "patchbay.apiKey";

/** The API's origin-absolute base URL; the worker gets it too, so both agree. */
export const API_BASE = new URL("/api/v1", location.origin).href;

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.type = problem?.type ?? null;
    this.problem = problem ?? {};
  }
}

// sessionStorage, not localStorage: the key is gone when the tab closes.
export const session = {
  get key() {
    return sessionStorage.getItem(KEY_STORAGE);
  },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  },
};

/** Calls the API; resolves to the parsed JSON body (or null for an empty one). */
export async function api(method, path, { json, body, key = session.key, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const res = await fetch(API_BASE + path, { method, headers, body, signal });
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text.slice(0, 200) };
    }
  }
  if (res.status === 401 && key && key === session.key) dispatchEvent(new Event("patchbay:unauthorized"));
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** A short sentence for an error, for status lines. */
export function describe(err) {
  if (err instanceof ApiError) {
    const title = err.problem.title || `HTTP ${err.status}`;
    return err.problem.detail && err.problem.detail !== title ? `${title}: ${err.problem.detail}` : title;
  }
  return err?.message || String(err);
}
