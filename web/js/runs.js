/**
 * The runs list, and what can be done to runs from the page: start one ("Run now"), cancel
 * one. The list is read from the API (a page of 50, "Older runs" pages back, a status filter)
 * and kept current by the all-runs stream: a run an event touches is read again, a few at a
 * time, so the list shows what the server's index says rather than a guess. An event costs no
 * DOM work of its own: the runs read together are drawn once.
 *
 * The all-runs stream resumes where it was: every frame carries a `cursor` (increasing along
 * the stream, the same after a server restart), the page keeps the last one, and each
 * reconnect asks for what came after it (`/ws/events?since=`, or `/api/events/stream` where
 * WebSocket does not get through), so no event between the drop and the reconnect is missed.
 * Frames without a cursor (an older server) leave it unset: the stream then starts afresh,
 * and the full re-read on reconnecting is what catches up.
 *
 * With several pipelines the list is narrowed to the open pipeline (`#/pipelines/NAME`: the
 * list, the stream and "Run now" are that pipeline's), or on the overview shows every
 * pipeline's runs with a pipeline column and a pipeline filter; the overview gets every event
 * of the stream too (`notePipelineEvent`).
 *
 * With `[cluster]` the runs come from several hosts: once the runs read name more than one,
 * the list has a Host column (a single machine's list stays as it was).
 */

import { state } from './state.js';
import { $, h, badge } from './dom.js';
import { now, ts, fmtDur, fmtWhen, fullTime, trigger, explain } from './format.js';
import { api, errText } from './api.js';
import { RUN_STATUSES } from './statuses.js';
import { setConn } from './conn.js';
import { openStream } from './stream.js';
import { scheduleTrend } from './trend.js';
import { scheduleSched, panelMsg } from './schedule.js';
import { notePipelineEvent, refreshOverview } from './overview.js';
import { onOverview, runsPipeline, runPath, withPipeline, seg, multi } from './scope.js';
import { paramsOfPipeline, openParamsForm, closeParamsForm } from './params.js';

const PAGE = 50;
const RUN_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** The pipeline filter, on the overview's list of every pipeline's runs only. */
export function renderPipelineFilter() {
  const box = $('#pipeline-filter-box');
  box.hidden = !onOverview();
  if (box.hidden) return;
  const sel = $('#pipeline-filter');
  const names = state.scope.names;
  if (state.runs.pipeline && !names.includes(state.runs.pipeline)) state.runs.pipeline = '';
  const have = [...sel.options].map((o) => o.value).join('\n');
  const want = ['', ...names];
  if (have !== want.join('\n')) sel.replaceChildren(...want.map((n) => h('option', { value: n }, n || 'All pipelines')));
  sel.value = state.runs.pipeline;
}

export function renderFilters() {
  const box = $('#status-filter');
  box.replaceChildren(...['', ...RUN_STATUSES].map((st) => h('button', {
    type: 'button', class: 'chip', 'aria-pressed': String(state.runs.filter === st),
    onclick: () => { if (state.runs.filter !== st) { state.runs.filter = st; renderFilters(); refreshRuns(); } },
  }, st || 'all')));
}

/** Notes the hosts of runs just read (see `state.runs.hosts`). */
function noteHosts(list) {
  for (const r of list) state.runs.hosts.add(typeof r.host === 'string' ? r.host : '');
}

/** Whether the list shows the Host column: its runs come from more than one host. */
function withHosts() {
  return state.runs.hosts.size > 1;
}

function runRow(r) {
  const why = explain(r);
  const running = r.status === 'running';
  const dur = running
    ? h('span', { class: 'num', 'data-since': r.started_at || '' }, fmtDur(now() - ts(r.started_at)))
    : h('span', { class: 'num' }, (r.status === 'missed' || r.status === 'skipped') && !r.duration_ms ? '—' : fmtDur(r.duration_ms));
  return h('li', { class: 'run run-grid', 'data-run-id': r.run_id, 'data-status': r.status, title: why || null },
    h('span', { class: 'st' }, badge(r.status)),
    h('span', { class: 'id' },
      h('a', { href: `#/runs/${r.run_id}` }, r.run_id),
      why ? h('span', { class: 'why' }, why) : null),
    h('span', { class: 'meta' },
      onOverview() ? h('span', { class: 'pipe-name' }, r.pipeline ? h('a', { href: `#/pipelines/${seg(r.pipeline)}`, class: 'pipe-link' }, r.pipeline) : '—') : null,
      withHosts() ? h('span', { class: 'host-name', title: r.host ? `host: ${r.host}` : null }, r.host || '—') : null,
      h('span', { class: 'trig trigger', title: r.source ? `source: ${r.source}` : null }, trigger(r.source)),
      h('span', { class: 'start', title: fullTime(r.started_at || r.scheduled_for) }, fmtWhen(r.started_at || r.scheduled_for)),
      h('span', { class: 'dur' }, dur)),
    h('span', { class: 'act' }, running ? h('button', {
      type: 'button', class: 'btn small danger', 'aria-label': `Cancel run ${r.run_id}`,
      onclick: (ev) => { ev.stopPropagation(); cancelRun(r.run_id, $('#runs-msg')); },
    }, 'Cancel') : null));
}

export function renderRuns() {
  const runs = state.runs;
  const ul = $('#runs');
  const hosts = withHosts();
  $('#runs-card').classList.toggle('with-hosts', hosts);
  $('#runs-host-col').hidden = !hosts;
  const keep = new Map();
  const kids = runs.list.map((r) => {
    let li = runs.rows.get(r.run_id);
    const key = JSON.stringify([r, onOverview(), hosts]);
    if (!li || li._key !== key) { li = runRow(r); li._key = key; }
    keep.set(r.run_id, li);
    return li;
  });
  const focused = document.activeElement && ul.contains(document.activeElement) ? document.activeElement.closest('li')?.dataset.runId : null;
  ul.replaceChildren(...kids);
  if (!kids.length) ul.append(h('li', { class: 'empty' }, runs.loading ? 'Loading…' : (runs.filter ? `No ${runs.filter} runs.` : 'No runs yet. Start one with “Run now”.')));
  runs.rows = keep;
  if (focused && !ul.contains(document.activeElement)) keep.get(focused)?.querySelector('a')?.focus();
  $('#older').hidden = runs.exhausted || !runs.list.length;
  $('#runs-count').textContent = runs.list.length ? `${runs.list.length}${runs.exhausted ? '' : '+'} shown` : '';
}

export async function refreshRuns() {
  const runs = state.runs;
  const gen = ++runs.gen;
  runs.loading = true;
  const q = withPipeline(new URLSearchParams({ limit: String(Math.max(PAGE, Math.min(1000, runs.list.length || PAGE))) }));
  if (runs.filter) q.set('status', runs.filter);
  try {
    const list = await api(`/api/runs?${q}`);
    if (gen !== runs.gen) return;
    noteHosts(list);
    runs.list = list;
    runs.exhausted = list.length < Number(q.get('limit'));
    $('#runs-msg').textContent = '';
  } catch (e) {
    if (gen === runs.gen) $('#runs-msg').textContent = `Cannot load runs: ${errText(e)}`;
  } finally {
    if (gen === runs.gen) { runs.loading = false; renderRuns(); }
  }
}

async function loadOlder() {
  const runs = state.runs;
  const last = runs.list[runs.list.length - 1];
  if (!last) return;
  const btn = $('#older');
  btn.disabled = true;
  const q = withPipeline(new URLSearchParams({ limit: String(PAGE), before: last.run_id }));
  if (runs.filter) q.set('status', runs.filter);
  try {
    const more = await api(`/api/runs?${q}`);
    const have = new Set(runs.list.map((r) => r.run_id));
    noteHosts(more);
    runs.list.push(...more.filter((r) => !have.has(r.run_id)));
    runs.exhausted = more.length < PAGE;
    renderRuns();
  } catch (e) { $('#runs-msg').textContent = `Cannot load older runs: ${errText(e)}`; }
  btn.disabled = false;
}

/**
 * Puts a run (a summary from the API) where it belongs in the list, if it fits the filter;
 * the caller draws the list.
 */
function upsertRun(r) {
  const runs = state.runs;
  const list = runs.list;
  const i = list.findIndex((x) => x.run_id === r.run_id);
  const pipeline = runsPipeline();
  const fits = (!runs.filter || runs.filter === r.status) && (!pipeline || r.pipeline === pipeline);
  if (i >= 0) {
    if (fits) list[i] = r; else list.splice(i, 1);
  } else if (fits) {
    const oldest = list[list.length - 1];
    if (!oldest || r.run_id > oldest.run_id || runs.exhausted) {
      let j = list.findIndex((x) => x.run_id < r.run_id);
      if (j < 0) j = list.length;
      list.splice(j, 0, r);
    }
  }
}

/** Reads a run again soon (runs touched within 250 ms are read together). */
export function touchRun(id) {
  const runs = state.runs;
  runs.pending.add(id);
  if (!runs.pendingTimer) runs.pendingTimer = setTimeout(flushRuns, 250);
}

async function flushRuns() {
  const runs = state.runs;
  runs.pendingTimer = null;
  const ids = [...runs.pending];
  runs.pending.clear();
  let changed = false;
  let read = 0;
  await Promise.all(ids.map(async (id) => {
    try {
      const d = await api(`/api/runs/${id}`);
      const { stages, ...summary } = d;
      const old = runs.list.find((x) => x.run_id === id);
      if (!old || old.status !== summary.status) changed = true;
      noteHosts([summary]);
      upsertRun(summary);
      read++;
    } catch { /* the next event or refresh will bring it */ }
  }));
  if (read) renderRuns();
  if (changed) { scheduleTrend(); scheduleSched(); }
}

/** The all-runs stream's position: a frame's `cursor`, or its Server-Sent Event `id:`. */
function noteCursor(e, id) {
  const c = Number.isSafeInteger(e?.cursor) ? e.cursor : (typeof id === 'string' && /^\d{1,15}$/.test(id) ? Number(id) : null);
  if (c != null && c >= 0) state.runs.cursor = c;
}

function onGlobalEvent(e, id) {
  noteCursor(e, id);
  if (!e || typeof e.run_id !== 'string' || !RUN_ID.test(e.run_id)) return;
  notePipelineEvent(e);
  // Already to be read again: nothing more to decide.
  if (state.runs.pending.has(e.run_id)) return;
  const known = state.runs.list.find((x) => x.run_id === e.run_id) || state.trend.list.find((x) => x.run_id === e.run_id);
  // A log line of a run already shown running changes nothing the list shows.
  if (e.event === 'log' && known && known.status === 'running') return;
  touchRun(e.run_id);
}

/**
 * (Re)opens the all-runs stream, from the last cursor the page has; without WebSocket it is
 * Server-Sent Events, and without those (an older server) the list is polled.
 */
export function openGlobalStream() {
  state.globalStream?.close();
  // The open pipeline's events only; the overview (and one pipeline) gets them all.
  const pipeline = state.scope.pipeline;
  const since = () => {
    const q = new URLSearchParams();
    if (pipeline) q.set('pipeline', pipeline);
    if (state.runs.cursor != null) q.set('since', String(state.runs.cursor));
    const qs = q.toString();
    return qs ? `?${qs}` : '';
  };
  state.globalStream = openStream({
    wsPath: () => `/ws/events${since()}`,
    ssePath: () => `/api/events/stream${since()}`,
    poll: () => { refreshRuns(); if (onOverview()) refreshOverview(); },
    onEvent: onGlobalEvent,
    onState: (st) => setConn('global', st),
    // Resuming by cursor misses nothing; reading the list again is a safety net (and all an
    // older server, without cursors, gets).
    onReopen: () => { refreshRuns(); scheduleTrend(); scheduleSched(); if (onOverview()) refreshOverview(); },
  });
}

/** "Run now": with declared parameters it opens their form first; the form starts the run. */
async function runNow() {
  const params = await paramsOfPipeline();
  if (params.length) {
    openParamsForm(params, (values) => startRun({ params: values }));
    return;
  }
  await startRun({});
}

async function startRun(body) {
  const btn = $('#run-now');
  btn.disabled = true;
  try {
    const r = await api(runPath(), { method: 'POST', body });
    closeParamsForm();
    panelMsg(['Started run ', h('a', { href: `#/runs/${r.run_id}`, class: 'mono' }, r.run_id), '.'], 'ok');
    upsertRun({ run_id: r.run_id, pipeline: state.scope.pipeline || undefined, status: 'running', source: 'manual', started_at: new Date(now()).toISOString(), duration_ms: null });
    renderRuns();
    touchRun(r.run_id);
  } catch (e) {
    const what = e.status === 409 ? 'Not started — a run is already going' : e.status === 503 ? 'Not started — the scheduler tool is unavailable' : 'Could not start a run';
    panelMsg(`${what}: ${errText(e)}`, 'error', true);
  }
  btn.disabled = false;
}

/**
 * Opens the page of run `id`, just started, once its file has its first events (a second or
 * so at most: its page reads them from the file); `msgEl` says what is happening meanwhile.
 */
async function openWhenStarted(id, what, msgEl) {
  touchRun(id);
  msgEl.className = 'msg ok';
  msgEl.textContent = `Starting ${what} ${id}…`;
  for (let waited = 0; waited < 3000; waited += 100) {
    try {
      const run = await api(`/api/runs/${id}`);
      if (run && run.events > 0) break;
    } catch { /* not indexed yet */ }
    await new Promise((done) => setTimeout(done, 100));
  }
  location.hash = `#/runs/${id}`;
}

/**
 * Asks the server to retry a run from its failed stages (`force`: even though its pipeline
 * changed since) and opens the new run; the outcome goes to `msgEl`. Returns whether the
 * server refused only because the pipeline changed, which a forced retry would get past.
 */
export async function retryRun(id, force, msgEl) {
  try {
    const r = await api(`/api/runs/${id}/retry`, { method: 'POST', body: force ? { force: true } : {} });
    await openWhenStarted(r.run_id, 'the retry', msgEl);
    return false;
  } catch (e) {
    msgEl.className = 'msg error';
    msgEl.textContent = `Could not retry ${id}: ${errText(e)}`;
    return e.status === 409 && /--force|"force"/.test(e.message || '');
  }
}

/** Starts a run of `pipeline` with only `stage`, and opens it; the outcome goes to `msgEl`. */
export async function runStage(pipeline, stage, msgEl) {
  const path = multi() ? `/api/pipelines/${seg(pipeline)}/run` : '/api/pipeline/run';
  try {
    const r = await api(path, { method: 'POST', body: { stages: [stage] } });
    await openWhenStarted(r.run_id, `a run of ${stage}`, msgEl);
  } catch (e) {
    msgEl.className = 'msg error';
    msgEl.textContent = `Could not run ${stage}: ${errText(e)}`;
  }
}

/** Asks the server to cancel a run; the outcome goes to `msgEl`. */
export async function cancelRun(id, msgEl) {
  try {
    await api(`/api/runs/${id}/cancel`, { method: 'POST', body: {} });
    msgEl.className = 'msg ok';
    msgEl.textContent = `Cancelling run ${id}…`;
    touchRun(id);
  } catch (e) {
    msgEl.className = 'msg error';
    msgEl.textContent = `Could not cancel ${id}: ${errText(e)}`;
  }
}

export function initRuns() {
  $('#older').addEventListener('click', loadOlder);
  $('#pipeline-filter').addEventListener('change', (ev) => {
    if (state.runs.pipeline === ev.target.value) return;
    state.runs.pipeline = ev.target.value;
    state.runs.list = [];
    state.runs.exhausted = false;
    refreshRuns();
  });
  // "Run now" sits in the schedule card; what it does is start a run and list it.
  $('#run-now').addEventListener('click', runNow);
}
