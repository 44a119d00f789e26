/**
 * The schedule panel: the scheduler's status (`/api/scheduler/status`: backend, task, next
 * and last scheduled run, the newest run of any kind, cadence, what the installed task runs,
 * and any field a backend adds), the enabled switch, and the panel's message line (which
 * "Run now" also writes to).
 *
 * Rows that do not apply to the backend are left out: the built-in scheduler has no OS task,
 * and cron keeps no record of its runs. On a pipeline's page (`#/pipelines/NAME`) the panel
 * is that pipeline's (`/api/pipelines/NAME/scheduler/...`).
 */

import { state } from './state.js';
import { $, h, badge } from './dom.js';
import { now, ts, fmtDur, fmtCountdown, fmtWhen, fullTime, trigger } from './format.js';
import { api, errText } from './api.js';
import { RUN_STATUSES } from './statuses.js';
import { onOverview, schedPath } from './scope.js';

/** Fields shown in their own rows; any other plain field of the status gets a row as it is. */
const KNOWN = ['backend', 'task_name', 'exists', 'enabled', 'state', 'schedule', 'next_run', 'last_run', 'last_result', 'latest_run', 'cadence', 'mismatch', 'warning', 'config', 'installed_for', 'installed_schedule'];

/** A task of this name that runs another configuration: its switch is that project's. */
const NOT_OURS = ['other_config', 'unknown_config'];

/** Sources of runs a scheduler started (`last_run` is the newest of these). */
const SCHEDULED = ['scheduler', 'catchup'];

/** A window start this close to 24 h ago is the whole day (ms). */
const WHOLE_DAY_SLACK = 60e3;

/** Reads the status again soon (requests within 1.5 s make one read). */
export function scheduleSched() {
  clearTimeout(state.sched.timer);
  state.sched.timer = setTimeout(refreshSched, 1500);
}

export async function refreshSched() {
  const sched = state.sched;
  // The overview of several pipelines has no schedule panel; each pipeline's page has its own.
  if (onOverview()) return;
  const path = schedPath('status');
  try {
    const st = await api(path);
    if (path !== schedPath('status')) return;
    sched.status = st;
    sched.error = null;
  } catch (e) {
    if (path !== schedPath('status')) return;
    const pipeline = state.scope.pipeline;
    // A pipeline's page answers 404 for a pipeline that left the configuration (its history stays).
    sched.error = e.status === 404
      ? (pipeline ? `${pipeline} is not in the configuration: it has no schedule, only its history.` : 'The scheduler status is not available from this server (404).')
      : `Scheduler status: ${errText(e)}`;
  }
  renderSched();
}

const every = (sec) => {
  if (sec == null) return '—';
  const n = Math.round(sec);
  if (n % 86400 === 0) return n === 86400 ? 'daily' : `every ${n / 86400} days`;
  if (n % 3600 === 0) return n === 3600 ? 'hourly' : `every ${n / 3600} h`;
  if (n % 60 === 0) return `every ${n / 60} min`;
  return `every ${fmtDur(n * 1000)}`;
};

/**
 * How many of the runs expected since the schedule came on (`cadence.since`, at most a day
 * back) started; highlighted only when some that were due did not.
 */
function expectedLine(cad, enabled) {
  if (cad.expected_last_day == null) return null;
  const line = (text, cls) => h('span', { class: `block ${cls}`, id: 'sched-expected' }, text);
  if (cad.since == null) return enabled === false ? line('No runs are expected while the schedule is off', 'muted') : null;
  const sinceT = ts(cad.since);
  const span = Number.isNaN(sinceT) || now() - sinceT >= 86400e3 - WHOLE_DAY_SLACK ? 'in the last 24h' : `since ${fmtWhen(cad.since)}`;
  const expected = cad.expected_last_day, started = cad.started_last_day ?? 0;
  if (expected === 0) return line(`No run was due yet ${span}`, 'muted');
  const short = started < expected;
  return line(`${started} of ${expected} expected runs started ${span}`, short ? 'sched-short' : 'muted');
}

export function renderSched() {
  const sched = state.sched;
  const st = sched.status;
  const dl = $('#sched-facts');
  const sw = $('#sched-switch');
  const msg = $('#sched-msg');
  const rows = [];
  const add = (k, v) => rows.push(h('dt', {}, k), h('dd', {}, v));
  if (st) {
    const builtin = st.backend === 'builtin';
    add('Backend', h('span', {}, st.backend ?? '—', !builtin && st.exists === false ? h('span', { class: 'muted' }, ' (task not installed)') : null));
    // The built-in scheduler runs inside this server: there is no OS task to name.
    if (!builtin) add('Task', h('span', { class: 'mono' }, st.task_name ?? '—'));
    add('Schedule', h('span', { class: 'mono' }, st.schedule ?? '—'));
    // What an installed OS task really runs, where that is not simply this configuration.
    if (!builtin && st.exists !== false) {
      if (st.installed_for !== st.config) add('Task runs', h('span', { class: 'mono' }, st.installed_for ?? 'no pipewatch configuration'));
      if (st.installed_schedule != null && st.installed_schedule !== st.schedule) add('Installed schedule', h('span', { class: 'mono' }, st.installed_schedule));
    }
    if (st.state != null) add('State', String(st.state));
    const nextT = ts(st.next_run);
    add('Next run', st.next_run
      ? h('span', { title: fullTime(st.next_run) }, fmtWhen(st.next_run), ' · ', h('span', { 'data-until': Number.isNaN(nextT) ? '' : st.next_run, id: 'sched-countdown' }, Number.isNaN(nextT) ? '' : fmtCountdown(nextT - now())))
      : h('span', { class: 'muted' }, st.enabled === false ? 'none (disabled)' : '—'));
    // `last_run` is the newest run the scheduler started; cron keeps no record of it.
    if (st.backend !== 'cron') {
      const lr = st.last_result;
      const lrText = lr == null ? null : (typeof lr === 'object' ? JSON.stringify(lr) : String(lr));
      const lrStatus = lrText && RUN_STATUSES.includes(lrText) ? lrText : null;
      add('Last scheduled run', h('span', { id: 'sched-last' }, st.last_run ? h('span', { title: fullTime(st.last_run) }, fmtWhen(st.last_run)) : h('span', { class: 'muted' }, 'none yet'),
        lrText ? ' · ' : '', lrText ? (lrStatus ? badge(lrStatus) : h('span', { class: 'mono' }, lrText)) : null));
    }
    // A run started by hand is never the scheduler's last run: it gets a row of its own.
    const latest = st.latest_run;
    if (latest && typeof latest === 'object' && !SCHEDULED.includes(latest.source)) {
      add('Last run', h('span', { id: 'sched-latest' },
        h('a', { href: `#/runs/${encodeURIComponent(latest.run_id)}`, title: fullTime(latest.started_at) }, fmtWhen(latest.started_at)),
        ` · ${trigger(latest.source)}`,
        RUN_STATUSES.includes(latest.status) ? h('span', {}, ' · ', badge(latest.status)) : null));
    }
    const cad = st.cadence;
    if (cad && typeof cad === 'object') {
      const started = cad.started_last_day ?? 0;
      // An interval "in practice" needs two runs to measure it.
      const practice = cad.effective_interval_s != null && started >= 2;
      add('Cadence', h('span', { id: 'sched-cadence' },
        `${every(cad.configured_interval_s)} configured`,
        practice ? ` · ${every(cad.effective_interval_s)} in practice` : '',
        expectedLine(cad, st.enabled)));
    }
    if (st.warning) add('Warning', h('span', { class: 'msg error' }, String(st.warning)));
    for (const [k, v] of Object.entries(st)) {
      if (KNOWN.includes(k) || v == null || typeof v === 'object') continue;
      add(k.replace(/_/g, ' ').replace(/^./, (c) => c.toUpperCase()), h('span', {}, String(v)));
    }
    sw.setAttribute('aria-checked', String(!!st.enabled));
    sw.disabled = sched.busy || st.exists === false || NOT_OURS.includes(st.mismatch);
    $('#sched-switch-label').textContent = st.enabled ? 'Schedule enabled' : 'Schedule disabled';
  } else {
    add('Status', h('span', { class: 'muted' }, sched.error ? 'unavailable' : 'loading…'));
    sw.disabled = true;
  }
  dl.replaceChildren(...rows);
  if (sched.error && !msg.dataset.sticky) { msg.className = 'msg error'; msg.textContent = sched.error; }
  else if (!sched.error && msg.dataset.fromStatus) { msg.textContent = ''; }
  msg.dataset.fromStatus = sched.error ? '1' : '';
}

/** Writes the panel's message line; a sticky message outlives the next status read. */
export function panelMsg(text, kind, sticky) {
  const msg = $('#sched-msg');
  msg.className = `msg ${kind || ''}`;
  msg.replaceChildren(...(Array.isArray(text) ? text : [text]));
  msg.dataset.sticky = sticky ? '1' : '';
  msg.dataset.fromStatus = '';
}

async function toggle() {
  const sched = state.sched;
  const sw = $('#sched-switch');
  const want = sw.getAttribute('aria-checked') !== 'true';
  sched.busy = true; sw.disabled = true;
  try {
    const st = await api(schedPath(want ? 'enable' : 'disable'), { method: 'POST', body: {} });
    if (st && typeof st === 'object' && 'enabled' in st) sched.status = st; else await refreshSched();
    sched.error = null;
    panelMsg(want ? 'Schedule enabled.' : 'Schedule disabled.', 'ok');
  } catch (e) {
    panelMsg(`Could not ${want ? 'enable' : 'disable'} the schedule: ${errText(e)}`, 'error', true);
  }
  sched.busy = false;
  renderSched();
}

export function initSchedule() {
  $('#sched-switch').addEventListener('click', toggle);
  $('#sched-refresh').addEventListener('click', () => { panelMsg('', ''); refreshSched(); });
}
