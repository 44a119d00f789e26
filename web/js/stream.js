/**
 * The one reconnect state machine, for every live stream of the page: the all-runs stream
 * (`/ws/events`, for the list) and a run's stream (`/ws/events/{run_id}`, for its page).
 *
 * ```text
 *  connecting ──open──► live ──close──► reconnecting ──(backoff)──► connecting …
 *                         │  1000 / SSE `end` (a run's stream, after its final event) ──► ended
 *                         ▲  4000 (lagged): again at once, from where the caller is
 *                         └── 3 failed opens in a row and the server answers:
 *                               WebSocket does not get through (a proxy) → the fallback:
 *                               Server-Sent Events (`ssePath`) or polling (`poll`); where
 *                               the server answers but refuses the Server-Sent Events path
 *                               (a server without that stream), polling
 *                             … and the server does not answer → offline, retrying
 * ```
 *
 * Each (re)connect asks the caller for its path again, so a stream resumes from where the
 * caller is: a run's stream with `?since=` the last `seq` it has, the all-runs stream with
 * `?since=` the last `cursor` it had. An EventSource that reconnects by itself resumes with
 * `Last-Event-ID`, the last `id:` it read; one opened afresh gets the path with `?since=`.
 * A 401 (the login form is up) stops the retries until the page boots again after the
 * sign-in. The machine's own state is in the object it returns; the caller keeps that object
 * in `state.js`.
 */

import { state } from './state.js';
import { serverReachable, authorized } from './api.js';

/** The close code of a client that stopped reading (`docs/api.md`, WebSocket). */
const LAGGED = 4000;
/** A run's stream after the run's final event: a normal close, and nothing more will come. */
const FINISHED = 1000;
/** Failed opens in a row before the fallback is tried. */
const FALLBACK_AFTER = 3;
/** While polling, how often WebSocket is tried again. */
const WS_RETRY_WHILE_POLLING_MS = 30000;
const POLL_EVERY_MS = 5000;
const LAG_RETRY_MS = 100;

const backoff = (n) => Math.min(10000, 400 * 2 ** Math.max(0, n - 1)) * (0.8 + Math.random() * 0.4);
const wsUrl = (path) => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${path}`;

/**
 * Opens a stream and keeps it open until `close()`.
 *
 * - `wsPath()`: the WebSocket's path, asked at each (re)connect;
 * - `ssePath()` (optional): the fallback is Server-Sent Events from this path; `sse: true`
 *   starts with it;
 * - `poll()` (optional): else the fallback calls this every 5 s while WebSocket is retried;
 * - `onEvent(event, id)` (`id`: the Server-Sent Event's `id:`, undefined over WebSocket),
 *   `onState(st)` (`connecting`, `live`, `reconnecting`, `offline`, `sse`,
 *   `polling`, or null once a run's stream has ended after the run's final event),
 *   `onReopen()` (live again after a drop: read what may have been missed).
 *
 * Returns `{ close(), kick(), transport() }`: `kick` connects now if nothing is open (the
 * browser is back online); `transport` is `ws` or `sse`.
 */
export function openStream(spec) {
  const m = { ws: null, es: null, poll: null, timer: null, attempts: 0, failures: 0, dropped: false, closed: false, mode: spec.sse ? 'sse' : 'ws' };
  const later = (ms) => { clearTimeout(m.timer); m.timer = setTimeout(connect, ms); };
  const deliver = (data, id) => { let e; try { e = JSON.parse(data); } catch { return; } spec.onEvent(e, id); };
  // Closed, or a connection is open or opening: nothing to (re)connect.
  const settled = () => m.closed || m.ws || m.es;

  function connect() {
    clearTimeout(m.timer);
    if (m.closed || state.authNeeded) return;
    if (m.mode === 'sse') { openSse(); return; }
    if (!m.attempts && !m.dropped) spec.onState('connecting');
    let ws;
    try { ws = new WebSocket(wsUrl(spec.wsPath())); } catch { dropped(0, false); return; }
    let opened = false;
    m.ws = ws;
    ws.onopen = () => {
      opened = true;
      m.attempts = 0;
      m.failures = 0;
      clearInterval(m.poll);
      m.poll = null;
      spec.onState('live');
      if (m.dropped) { m.dropped = false; spec.onReopen?.(); }
    };
    ws.onmessage = (msg) => deliver(msg.data);
    ws.onclose = (ev) => {
      if (m.ws !== ws || m.closed) return;
      m.ws = null;
      if (ev.code === FINISHED) { ended(); return; }
      dropped(ev.code, opened);
    };
  }

  /** The stream said all there is (a finished run's): no reconnecting. */
  function ended() {
    m.closed = true;
    clearTimeout(m.timer);
    spec.onState(null);
  }

  async function dropped(code, opened) {
    m.dropped = true;
    m.attempts += 1;
    if (!opened) m.failures += 1;
    if (state.authNeeded) return;
    spec.onState('reconnecting');
    if (code === LAGGED) { m.attempts = 0; later(LAG_RETRY_MS); return; }
    if (m.failures >= FALLBACK_AFTER) {
      const up = await serverReachable();
      if (settled()) return;
      if (up) {
        // The server answers but WebSocket does not get through (a proxy): fall back.
        if (!(await authorized()) || settled()) return;
        if (spec.ssePath) { m.mode = 'sse'; openSse(); return; }
        startPolling();
        return;
      }
      spec.onState('offline');
    }
    later(backoff(m.attempts));
  }

  /** Polls, and tries WebSocket again now and then (its first open stops the polling). */
  function startPolling() {
    m.mode = 'ws';
    if (!m.poll) m.poll = setInterval(spec.poll, POLL_EVERY_MS);
    spec.onState('polling');
    later(WS_RETRY_WHILE_POLLING_MS);
  }

  function openSse() {
    if (m.es) m.es.close();
    const es = new EventSource(spec.ssePath());
    let opened = false;
    m.es = es;
    es.onopen = () => {
      opened = true;
      m.attempts = 0;
      clearInterval(m.poll);
      m.poll = null;
      spec.onState('sse');
    };
    es.onmessage = (msg) => deliver(msg.data, msg.lastEventId);
    // After a run's final event the server sends `end` and closes: an EventSource would
    // reconnect by itself.
    es.addEventListener('end', () => { es.close(); m.es = null; ended(); });
    es.onerror = async () => {
      if (m.es !== es || m.closed) return;
      if (es.readyState !== EventSource.CLOSED) { spec.onState('reconnecting'); return; }
      // The browser gave up (an HTTP error).
      m.es = null;
      m.attempts += 1;
      if (!opened && spec.poll) {
        // Refused at once by a server that answers and takes our token: it has no such
        // stream (a server older than this page). Poll, as where there is none.
        const up = await serverReachable();
        if (settled()) return;
        if (up) {
          if (!(await authorized()) || settled()) return;
          startPolling();
          return;
        }
      }
      // Start again after a pause, from what we have.
      spec.onState(m.attempts > 4 ? 'offline' : 'reconnecting');
      authorized(); // a 401 opens the login form
      later(backoff(m.attempts));
    };
  }

  connect();
  return {
    close() {
      m.closed = true;
      clearTimeout(m.timer);
      clearInterval(m.poll);
      if (m.ws) m.ws.close();
      if (m.es) m.es.close();
      m.ws = m.es = null;
    },
    kick() { if (!settled()) connect(); },
    transport: () => m.mode,
  };
}
