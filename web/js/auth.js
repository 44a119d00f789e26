/**
 * The token (`docs/security.md`): a `?token=` link is moved into the `pipewatch_token` cookie and
 * out of the address bar; a 401 opens the login form, which checks the token it is given and
 * then announces `pipewatch:signed-in` on `document` (the page boots again on it).
 */

import { state } from './state.js';
import { $ } from './dom.js';
import { setConn } from './conn.js';

const TOKEN_COOKIE = 'pipewatch_token';
/** What a cookie value can hold unquoted (RFC 6265 cookie-octet). */
const COOKIE_SAFE = /^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]+$/;

function setTokenCookie(t) {
  const secure = location.protocol === 'https:' ? '; Secure' : '';
  document.cookie = `${TOKEN_COOKIE}=${t}; Path=/; SameSite=Strict; Max-Age=2592000${secure}`;
}

/** Moves a `?token=` from the address into the cookie. */
export function takeTokenFromUrl() {
  const url = new URL(location.href);
  if (!url.searchParams.has('token')) return;
  const t = url.searchParams.get('token').trim();
  if (t && COOKIE_SAFE.test(t)) setTokenCookie(t);
  url.searchParams.delete('token');
  history.replaceState(history.state, '', url.pathname + url.search + url.hash);
}

export function showLogin() {
  state.authNeeded = true;
  setConn('global', 'offline');
  const dlg = $('#login');
  if (!dlg.open) { dlg.showModal(); $('#login-token').focus(); }
}

export function initLogin() {
  $('#login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = $('#login-token').value.trim();
    const msg = $('#login-msg');
    if (!COOKIE_SAFE.test(t)) { msg.textContent = 'That token has characters a cookie cannot hold (spaces, quotes, commas, semicolons or backslashes).'; return; }
    setTokenCookie(t);
    try {
      const res = await fetch('/api/runs?limit=1', { credentials: 'same-origin', cache: 'no-store' });
      if (res.status === 401) { msg.textContent = 'The server refused this token.'; return; }
    } catch { msg.textContent = 'Cannot reach the dashboard server.'; return; }
    msg.textContent = '';
    $('#login-token').value = '';
    $('#login').close();
    state.authNeeded = false;
    document.dispatchEvent(new Event('pipewatch:signed-in'));
  });
  $('#login').addEventListener('cancel', (ev) => ev.preventDefault());
}
