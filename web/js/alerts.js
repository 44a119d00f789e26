/**
 * The Alerts view (`#/alerts`): the alert destinations (`/api/alerts/destinations`: name, how
 * each is reached — its `type` as the server says it, so a kind this page has not heard of
 * shows as it is — what it is told about, which pipelines, its alerts counted by status), each
 * with a Test button (`POST /api/alerts/{name}/test`, its outcome shown beside it), and the
 * history of alerts (`/api/alerts`), newest first.
 *
 * Read when the view opens and every `REFRESH` ms while it is open and the tab visible; an
 * answer that arrives after a newer read began is dropped. Closing the view stops the timer.
 */

import { state } from './state.js';
import { $, h, badge } from './dom.js';
import { fmtWhen, fullTime } from './format.js';
import { api, errText } from './api.js';
import { seg } from './scope.js';

/** How often the open view reads the alerts again (ms). */
const REFRESH = 3000;

/** How many alerts of the history are shown. */
const LIMIT = 200;

const RUN_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Opens the view: reads at once, then every few seconds while it stays open. */
export function openAlerts() {
  const al = state.alerts;
  if (al.open) return;
  al.open = true;
  refreshAlerts();
  al.timer = setInterval(() => { if (!document.hidden) refreshAlerts(); }, REFRESH);
}

export function closeAlerts() {
  const al = state.alerts;
  al.open = false;
  clearInterval(al.timer);
  al.timer = null;
}

export async function refreshAlerts() {
  const al = state.alerts;
  const gen = ++al.gen;
  const [dests, list] = await Promise.allSettled([api('/api/alerts/destinations'), api(`/api/alerts?limit=${LIMIT}`)]);
  if (gen !== al.gen) return;
  if (dests.status === 'fulfilled') { al.destinations = Array.isArray(dests.value) ? dests.value : []; al.destError = null; }
  else al.destError = errText(dests.reason);
  if (list.status === 'fulfilled') { al.list = Array.isArray(list.value) ? list.value : []; al.listError = null; }
  else al.listError = errText(list.reason);
  al.loaded = true;
  renderAlerts();
}

/** `n label`, for the counts that are not zero. */
function counts(c) {
  const parts = Object.entries(c || {}).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`);
  return parts.length ? parts.join(' · ') : 'no alerts yet';
}

async function test(name) {
  const al = state.alerts;
  al.testing.add(name);
  al.tests.set(name, { ok: null, text: 'Sending a test alert…' });
  renderAlerts();
  try {
    const r = await api(`/api/alerts/${seg(name)}/test`, { method: 'POST' });
    al.tests.set(name, { ok: true, text: `Test alert delivered (id ${r && r.id})` });
  } catch (e) {
    al.tests.set(name, { ok: false, text: `Test: ${errText(e)}` });
  }
  al.testing.delete(name);
  renderAlerts();
}

function destRow(d) {
  const al = state.alerts;
  const outcome = al.tests.get(d.name);
  const on = Array.isArray(d.on) ? d.on : [];
  const pipes = Array.isArray(d.pipelines) ? d.pipelines : [];
  return h('li', { class: 'dest', 'data-destination': d.name },
    h('div', { class: 'dest-head' },
      h('strong', { class: 'mono' }, d.name),
      h('span', { class: 'badge kind', 'data-type': d.type }, d.type || '?'),
      h('span', { class: 'mono muted target', title: d.target }, d.type === 'webhook' && d.format === 'slack' ? `${d.target} (Slack text)` : d.target),
      h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'btn small test', disabled: al.testing.has(d.name), onclick: () => test(d.name) }, 'Test')),
    h('div', { class: 'dest-facts muted' },
      h('span', null, 'on: ', on.length ? on.join(', ') : '—'),
      h('span', null, 'pipelines: ', pipes.length ? pipes.join(', ') : '—'),
      h('span', { class: 'counts' }, counts(d.counts))),
    outcome ? h('p', { class: `msg test-outcome ${outcome.ok === true ? 'ok' : outcome.ok === false ? 'error' : ''}`, role: 'status' }, outcome.text) : null);
}

function alertRow(a) {
  const run = RUN_ID.test(a.run_id || '') ? h('a', { class: 'mono', href: `#/runs/${a.run_id}` }, a.run_id) : h('span', { class: 'muted' }, '—');
  return h('tr', { 'data-alert-id': a.id, 'data-status': a.status },
    h('td', { class: 'num', title: fullTime(a.at) }, fmtWhen(a.at)),
    h('td', null, a.kind),
    h('td', null, a.pipeline || h('span', { class: 'muted' }, '—')),
    h('td', null, run),
    h('td', { class: 'mono' }, a.destination),
    h('td', null, badge(a.status)),
    h('td', { class: 'num' }, String(a.attempts ?? 0)),
    h('td', { class: 'err' }, a.last_error || ''));
}

export function renderAlerts() {
  const al = state.alerts;
  const dests = al.destinations;
  $('#al-dest-count').textContent = al.loaded ? `${dests.length}` : '';
  $('#al-dests').replaceChildren(...(dests.length
    ? dests.map(destRow)
    : [h('li', { class: 'muted empty' }, al.loaded ? 'No alert destinations are configured ([[alerts]] in pipewatch.toml).' : 'Loading…')]));
  $('#al-dest-msg').textContent = al.destError ? `Cannot load the destinations: ${al.destError}` : '';
  const list = al.list;
  $('#al-hist-count').textContent = al.loaded ? `${list.length}${list.length >= LIMIT ? '+' : ''}` : '';
  $('#al-rows').replaceChildren(...list.map(alertRow));
  $('#al-empty').hidden = !al.loaded || list.length > 0;
  $('#al-hist-msg').textContent = al.listError ? `Cannot load the alerts: ${al.listError}` : '';
}
