/**
 * The overview of a workspace of several pipelines (`#/`): one row per pipeline (from
 * `/api/pipelines`) with its last runs as coloured squares (oldest left, newest right, each a
 * link to its run), its success rate and median duration over 24 h, the countdown to its next
 * run, what is running now, its schedule switch and "Run now". A pipeline no longer configured
 * keeps a row marked removed, with its history and neither switch nor button. A row's name
 * opens the pipeline's page (`#/pipelines/NAME`); so does a click anywhere else on the row.
 *
 * Kept live by the all-runs stream (`runs.js` hands every event to `notePipelineEvent`): a
 * pipeline an event touches is read again (`/api/pipelines/NAME`), the touched ones together
 * at most every `THROTTLE` ms, so a run started anywhere shows within a second and a busy log
 * costs no reads. A row is rebuilt only when its summary changed.
 */

import { state } from './state.js';
import { $, h } from './dom.js';
import { now, ts, fmtDur, fmtCountdown, fmtWhen, fullTime } from './format.js';
import { api, errText } from './api.js';
import { RUN_STATUSES } from './statuses.js';
import { onOverview, seg } from './scope.js';

/** Touched pipelines are read again at most this often (ms). */
const THROTTLE = 250;

export async function refreshOverview() {
  const pipes = state.pipes;
  const gen = ++pipes.gen;
  try {
    const list = await api('/api/pipelines');
    if (gen !== pipes.gen) return;
    pipes.list = Array.isArray(list) ? list : [];
    pipes.loaded = true;
    $('#pipes-msg').textContent = '';
  } catch (e) {
    if (gen === pipes.gen) $('#pipes-msg').textContent = `Cannot load the pipelines: ${errText(e)}`;
  }
  if (gen === pipes.gen) renderOverview();
}

/** Success rate over the finished runs of the day, as a whole percentage. */
function rate(st) {
  const done = (st?.success ?? 0) + (st?.failure ?? 0);
  if (!done) return h('span', { class: 'muted', title: 'No run finished in the last 24 h' }, '—');
  const pct = Math.round((100 * st.success) / done);
  return h('span', { class: 'num', title: `${st.success} of ${done} finished runs succeeded in the last 24 h` }, `${pct}%`);
}

function square(r) {
  const status = RUN_STATUSES.includes(r.status) ? r.status : 'pending';
  const label = `Run ${r.run_id}: ${r.status}`;
  return h('a', { class: 'sq', href: `#/runs/${r.run_id}`, 'data-status': status, 'data-run-id': r.run_id, title: label, 'aria-label': label });
}

function nextRun(p) {
  if (p.removed) return h('span', { class: 'muted' }, '—');
  if (!p.next_run) return h('span', { class: 'muted' }, p.enabled ? '—' : 'off');
  const t = ts(p.next_run);
  if (Number.isNaN(t)) return h('span', { class: 'muted' }, '—');
  return h('span', { title: `${fmtWhen(p.next_run)} · ${fullTime(p.next_run)}` }, h('span', { class: 'num', 'data-until': p.next_run }, fmtCountdown(t - now())));
}

function running(p) {
  const ids = Array.isArray(p.running) ? p.running : [];
  if (!ids.length) return h('span', { class: 'muted' }, '—');
  return h('a', { class: 'badge', 'data-status': 'running', href: `#/runs/${ids[0]}`, title: ids.join(', ') }, ids.length > 1 ? `${ids.length} running` : 'running');
}

function pipeRow(p) {
  const name = p.name;
  const recent = Array.isArray(p.recent) ? p.recent : [];
  const busy = state.pipes.busy.has(name);
  return h('li', { class: 'pipe pipe-grid', 'data-pipeline': name, 'data-removed': p.removed ? 'true' : null },
    h('span', { class: 'pname' },
      h('a', { href: `#/pipelines/${seg(name)}` }, name),
      p.removed ? h('span', { class: 'badge removed', title: 'No longer in the configuration: only its history is left' }, 'removed') : null,
      p.scheduler_error ? h('span', { class: 'why', title: p.scheduler_error }, p.scheduler_error) : null),
    h('span', { class: 'strip', role: 'group', 'aria-label': `${name}: last ${recent.length} runs, oldest first` },
      recent.length ? recent.map(square) : h('span', { class: 'muted' }, 'no runs yet')),
    h('span', { class: 'meta' },
      h('span', { class: 'rate' }, h('span', { class: 'lbl' }, 'success '), rate(p.stats_24h)),
      h('span', { class: 'med' }, h('span', { class: 'lbl' }, 'median '), p.stats_24h?.median_duration_ms != null ? h('span', { class: 'num' }, fmtDur(p.stats_24h.median_duration_ms)) : h('span', { class: 'muted' }, '—')),
      h('span', { class: 'next' }, h('span', { class: 'lbl' }, 'next '), nextRun(p)),
      h('span', { class: 'now' }, running(p))),
    h('span', { class: 'en' }, p.removed ? null : h('button', {
      type: 'button', class: 'switch', role: 'switch', 'aria-checked': String(!!p.enabled), disabled: busy || null,
      'aria-label': `Schedule of ${name} enabled`, title: p.enabled ? 'Schedule on' : 'Schedule off',
      onclick: () => toggle(name, !p.enabled),
    })),
    h('span', { class: 'act' }, p.removed ? null : h('button', {
      type: 'button', class: 'btn small', disabled: busy || null, 'aria-label': `Run ${name} now`,
      onclick: () => runNow(name),
    }, 'Run now')));
}

export function renderOverview() {
  const pipes = state.pipes;
  const ul = $('#pipes');
  const keep = new Map();
  const kids = pipes.list.map((p) => {
    let li = pipes.rows.get(p.name);
    const key = JSON.stringify([p, pipes.busy.has(p.name)]);
    if (!li || li._key !== key) { li = pipeRow(p); li._key = key; }
    keep.set(p.name, li);
    return li;
  });
  // A redrawn row keeps the keyboard where it was (the same control of the same pipeline).
  const focus = document.activeElement;
  const focusedRow = focus && ul.contains(focus) ? focus.closest('li')?.dataset.pipeline : null;
  const focusedPart = focusedRow ? ['.pname a', '.switch', '.act button'].find((sel) => focus.matches(sel)) : null;
  ul.replaceChildren(...kids);
  if (!kids.length) ul.append(h('li', { class: 'empty' }, pipes.loaded ? 'No pipelines.' : 'Loading…'));
  pipes.rows = keep;
  if (focusedRow && !ul.contains(document.activeElement)) keep.get(focusedRow)?.querySelector(focusedPart || '.pname a')?.focus();
  const removed = pipes.list.filter((p) => p.removed).length;
  const configured = pipes.list.length - removed;
  $('#pipes-count').textContent = pipes.list.length ? `${configured} pipeline${configured === 1 ? '' : 's'}${removed ? `, ${removed} removed` : ''}` : '';
}

/** An event of the all-runs stream: the pipeline it belongs to is read again soon. */
export function notePipelineEvent(e) {
  if (!onOverview() || typeof e?.pipeline !== 'string') return;
  const p = state.pipes.list.find((x) => x.name === e.pipeline);
  // A log line of a run the row already shows running changes nothing the row shows.
  if (p && e.event === 'log' && Array.isArray(p.running) && p.running.includes(e.run_id)) return;
  touchPipeline(e.pipeline);
}

export function touchPipeline(name) {
  const pipes = state.pipes;
  pipes.pending.add(name);
  if (!pipes.pendingTimer) pipes.pendingTimer = setTimeout(flushPipelines, THROTTLE);
}

async function flushPipelines() {
  const pipes = state.pipes;
  const names = [...pipes.pending];
  pipes.pending.clear();
  const gen = pipes.gen;
  let unknown = false;
  await Promise.all(names.map(async (name) => {
    try {
      const p = await api(`/api/pipelines/${seg(name)}`);
      if (gen !== pipes.gen) return;
      const i = pipes.list.findIndex((x) => x.name === name);
      if (i >= 0) pipes.list[i] = p; else unknown = true;
    } catch { /* the next event or the periodic read will bring it */ }
  }));
  // The timer is cleared only now: reads never overlap, and touches meanwhile wait their turn.
  pipes.pendingTimer = pipes.pending.size ? setTimeout(flushPipelines, THROTTLE) : null;
  if (unknown) refreshOverview(); else renderOverview();
}

function say(text, kind) {
  const msg = $('#pipes-status');
  msg.className = `msg ${kind}`;
  msg.replaceChildren(...(Array.isArray(text) ? text : [text]));
}

async function toggle(name, want) {
  state.pipes.busy.add(name);
  renderOverview();
  try {
    const st = await api(`/api/pipelines/${seg(name)}/scheduler/${want ? 'enable' : 'disable'}`, { method: 'POST', body: {} });
    // The answer is the new status: the row shows it now, the re-read below confirms it.
    const p = state.pipes.list.find((x) => x.name === name);
    if (p && st && typeof st === 'object' && 'enabled' in st) { p.enabled = !!st.enabled; p.next_run = st.next_run ?? null; }
    say(`Schedule of ${name} ${want ? 'enabled' : 'disabled'}.`, 'ok');
  } catch (e) {
    say(`Could not ${want ? 'enable' : 'disable'} the schedule of ${name}: ${errText(e)}`, 'error');
  }
  state.pipes.busy.delete(name);
  touchPipeline(name);
  renderOverview();
}

async function runNow(name) {
  state.pipes.busy.add(name);
  renderOverview();
  try {
    const r = await api(`/api/pipelines/${seg(name)}/run`, { method: 'POST', body: {} });
    say(['Started run ', h('a', { href: `#/runs/${r.run_id}`, class: 'mono' }, r.run_id), ` of ${name}.`], 'ok');
  } catch (e) {
    const what = e.status === 409 ? `Not started — a run of ${name} is already going` : `Could not start a run of ${name}`;
    say(`${what}: ${errText(e)}`, 'error');
  }
  state.pipes.busy.delete(name);
  touchPipeline(name);
  renderOverview();
}

export function initOverview() {
  // A click anywhere on a row (not on its links and buttons) opens the pipeline's page.
  $('#pipes').addEventListener('click', (ev) => {
    if (ev.target.closest('a, button')) return;
    const li = ev.target.closest('li.pipe');
    if (li) location.hash = `#/pipelines/${seg(li.dataset.pipeline)}`;
  });
}
