// api.js: the admin JSON API (docs/admin-api.md). Every answer is the
// envelope {ec, em, result}; errors become ApiError with the server's em.

const CSRF_KEY = "sorakaq.csrf";
let csrf = sessionStorage.getItem(CSRF_KEY) || "";

export class ApiError extends Error {
  constructor(status, message, result) {
    super(message);
    this.status = status;
    this.result = result;
  }
}

export function setCsrf(token) {
  csrf = token || "";
  if (csrf) sessionStorage.setItem(CSRF_KEY, csrf);
  else sessionStorage.removeItem(CSRF_KEY);
}

// The page to go to when a call answers 401 (set by app.js).
let onLoginRequired = () => {};
export function setLoginRequiredHandler(fn) { onLoginRequired = fn; }

async function call(method, path, query, body) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
  }
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method === "POST") {
    init.headers["Content-Type"] = "application/json";
    init.headers["X-CSRF-Token"] = csrf;
    init.body = JSON.stringify(body ?? {});
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, `cannot reach the admin service: ${e.message}`, null);
  }
  let env = null;
  try {
    env = await resp.json();
  } catch {
    // not JSON (a proxy's error page, say)
  }
  const em = env && typeof env.em === "string" ? env.em : `HTTP ${resp.status} ${resp.statusText}`;
  if (!resp.ok || !env || env.ec !== 200) {
    throw new ApiError(resp.status, em, env ? env.result : null);
  }
  return env.result;
}

async function request(method, path, query, body) {
  try {
    return await call(method, path, query, body);
  } catch (e) {
    if (e instanceof ApiError && path !== "/sorakaq/auth/login") {
      if (e.status === 401) {
        onLoginRequired();
      } else if (e.status === 403 && method === "POST") {
        // The token kept in this tab may be stale (another login): fetch
        // the session's token once and try again.
        const me = await call("GET", "/sorakaq/auth/me");
        setCsrf(me.csrf_token);
        return call(method, path, query, body);
      }
    }
    throw e;
  }
}

export const get = (path, query) => request("GET", path, query);
export const post = (path, body) => request("POST", path, undefined, body);

export async function me() {
  const r = await call("GET", "/sorakaq/auth/me");
  setCsrf(r.csrf_token);
  return r;
}

export async function login(username, password) {
  const r = await call("POST", "/sorakaq/auth/login", undefined, { username, password });
  setCsrf(r.csrf_token);
  return r;
}

export async function logout() {
  try {
    await call("POST", "/sorakaq/auth/logout", undefined, {});
  } finally {
    setCsrf("");
  }
}
