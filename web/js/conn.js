/**
 * The connection indicator in the header. Two streams report to it (`setConn`): the
 * all-runs stream (`global`) and, on a run's page, that run's stream (`run`). It shows the
 * worse of the two: offline, then reconnecting, then connecting, else live — "live (SSE)" or
 * "live (polling)" when a fallback carries the events (either stream may be on Server-Sent
 * Events; only the list polls).
 */

import { state } from './state.js';
import { $ } from './dom.js';

/** `channel`: `global` or `run`; `st`: connecting, live, reconnecting, offline, sse, polling (or null: no such stream). */
export function setConn(channel, st) {
  const conn = state.conn;
  conn[channel] = st;
  const states = [conn.global, conn.run].filter(Boolean);
  let overall = 'live';
  if (states.includes('offline')) overall = 'offline';
  else if (states.includes('reconnecting')) overall = 'reconnecting';
  else if (states.includes('connecting')) overall = 'connecting';
  let label = overall;
  if (overall === 'live') {
    if (conn.run === 'sse' || conn.global === 'sse') label = 'live (SSE)';
    else if (conn.global === 'polling') label = 'live (polling)';
  }
  const el = $('#conn');
  if (el.dataset.state !== overall || el.querySelector('.label').textContent !== label) {
    el.dataset.state = overall;
    el.querySelector('.label').textContent = label;
    state.connHistory.push(label);
  }
}
