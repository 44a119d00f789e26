/**
 * Talking to the server's HTTP API: `api()` sends JSON and returns the answer, or throws an
 * `ApiError` with the status and the server's `{"error"}` message. A 401 opens the login form.
 * Every answer's `Date` header keeps the page's clock in step with the server's.
 */

import { state } from './state.js';
import { showLogin } from './auth.js';

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function noteServerDate(res) {
  const d = Date.parse(res.headers.get('date') || '');
  if (!Number.isNaN(d)) { const sk = d - Date.now(); state.clockSkew = Math.abs(sk) > 2000 ? sk : 0; }
}

export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw new ApiError(0, 'cannot reach the dashboard server');
  }
  noteServerDate(res);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (res.status === 401) {
    showLogin();
    throw new ApiError(401, (data && data.error) || 'a token is required');
  }
  if (!res.ok) {
    const msg = (data && typeof data.error === 'string') ? data.error : (text.trim().slice(0, 200) || res.statusText);
    throw new ApiError(res.status, msg);
  }
  return data;
}

/** An error as a line of text for the page. */
export const errText = (e) => e instanceof ApiError && e.status ? `${e.message} (${e.status})` : (e && e.message) || String(e);

/** Whether the server answers at all (health needs no token). */
export async function serverReachable() {
  try { const r = await fetch('/api/health', { cache: 'no-store' }); return r.ok; } catch { return false; }
}

/** Whether the server takes this page's token; a refusal opens the login form. */
export async function authorized() {
  try { await api('/api/runs?limit=1'); return true; } catch (e) { return e.status !== 401; }
}
