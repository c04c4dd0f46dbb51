// The browser session and every call to the API.
//
// The refresh token lives in an HttpOnly cookie that only /api/auth receives; this module
// keeps the access token in memory (never in storage) and refreshes it before it expires, or
// when a call answers 401. Refreshes are serialised across tabs with the Web Locks API: two
// tabs refreshing at once would otherwise present the same refresh token twice, which the
// server reads as theft and answers by ending the session. A tab that refreshed tells the
// others over a BroadcastChannel, so they usually need no refresh of their own.

const CSRF = { "x-hearth-csrf": "1" };
// Set while this browser has a session cookie (which scripts cannot see), so that a first
// visit does not ask for a refresh it cannot get.
const HINT = "hearth.session";
const LOCK = "hearth-session-refresh";
const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("hearth-session") : null;

let access = null;      // the access token
let expiresAt = 0;      // ms since the epoch
let refreshTimer = 0;
const listeners = new Set();
const tokenListeners = new Set();

/** Called with each new access token (this tab's refresh or another tab's). */
export function onTokenChange(fn) {
  tokenListeners.add(fn);
  return () => tokenListeners.delete(fn);
}

/** Called with `true` when signed in, `false` when the session ended. */
export function onSessionChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function notify(signedIn) {
  for (const fn of listeners) fn(signedIn);
}

function setAccess(token, expiresIn, broadcast) {
  localStorage.setItem(HINT, "1");
  access = token;
  expiresAt = Date.now() + expiresIn * 1000;
  clearTimeout(refreshTimer);
  // Refresh a minute before expiry (at least 5 s from now).
  const wait = Math.max(5000, expiresIn * 1000 - 60000);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), wait);
  if (broadcast && channel) channel.postMessage({ access: token, expiresAt });
  for (const fn of tokenListeners) fn(token);
}

function clearAccess() {
  localStorage.removeItem(HINT);
  access = null;
  expiresAt = 0;
  clearTimeout(refreshTimer);
}

if (channel) {
  channel.onmessage = (e) => {
    const m = e.data || {};
    if (m.access && m.expiresAt > expiresAt) {
      const had = !!access;
      setAccess(m.access, (m.expiresAt - Date.now()) / 1000, false);
      if (!had) notify(true);
    } else if (m.signedOut) {
      clearAccess();
      notify(false);
    }
  };
}

/** The access token now (null when signed out). */
export function accessToken() {
  return access;
}

/** An error from the API: `status`, `message`, `code`, `param`, `retryAfter`. */
export class ApiError extends Error {
  constructor(status, body, headers) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || e.type || null;
    this.param = e.param || null;
    this.retryAfter = headers ? Number(headers.get("retry-after")) || null : null;
  }
}

async function authCall(path, body) {
  const r = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", ...CSRF },
    body: JSON.stringify(body || {}),
  });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (!r.ok) throw new ApiError(r.status, data, r.headers);
  return data;
}

/** Log in; the refresh token arrives as a cookie. */
export async function login(username, password) {
  const t = await authCall("/api/auth/login", { username, password });
  setAccess(t.access_token, t.expires_in, true);
  notify(true);
}

/** Register (the first account becomes admin), then log in. */
export async function register(username, password) {
  await authCall("/api/auth/register", { username, password });
  await login(username, password);
}

/**
 * A new access token from the cookie, one tab at a time. Resolves to true when signed in.
 * `stale`: the token the caller found wanting; if another tab already replaced it, no
 * refresh is made.
 */
export async function refresh(stale = access) {
  const run = async () => {
    if (access && access !== stale && expiresAt - Date.now() > 30000) return true;
    if (!access && !localStorage.getItem(HINT)) return false;
    try {
      const t = await authCall("/api/auth/refresh", {});
      const had = !!access;
      setAccess(t.access_token, t.expires_in, true);
      if (!had) notify(true);
      return true;
    } catch (e) {
      if (e.status === 400 || e.status === 401) {
        const had = !!access;
        clearAccess();
        if (had) notify(false);
        return false;
      }
      throw e;
    }
  };
  if (navigator.locks && navigator.locks.request) {
    return navigator.locks.request(LOCK, run);
  }
  return run();
}

/** End this session (`everywhere`: every session of the account). */
export async function logout(everywhere = false) {
  try {
    if (everywhere) await api("POST", "/api/auth/logout-all");
    else await authCall("/api/auth/logout", {});
  } finally {
    clearAccess();
    if (channel) channel.postMessage({ signedOut: true });
    notify(false);
  }
}

/**
 * Call the API with the access token: JSON in, JSON out (`raw`: the Response). A 401 refreshes
 * the token once and retries. Throws ApiError.
 */
export async function api(method, path, body, { raw = false, signal } = {}) {
  for (let attempt = 0; ; attempt++) {
    const token = access;
    const headers = { ...CSRF };
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const r = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal,
    });
    if (r.status === 401 && attempt === 0 && (await refresh(token))) continue;
    if (raw && r.ok) return r;
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) throw new ApiError(r.status, data, r.headers);
    return data;
  }
}
