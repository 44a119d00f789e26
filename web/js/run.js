/**
 * A run's page: its header (status, trigger, times, duration, cancel), its stages (as a
 * timeline, or as their dependency graph: `graph.js`; the view is `?view=graph` in the
 * page's address, so it survives a reload and a bookmark) and its live log.
 *
 * Opening a run reads its last 1000 events, then streams the rest (`/ws/events/{run_id}`
 * with `?since=`, or Server-Sent Events where WebSocket does not get through), dropping any
 * `seq` it already has. Each event is folded into the run (`fold.js`), so the header and the
 * timeline move at once; the run is read again from the API shortly after, and that answer
 * is what stays.
 *
 * Streamed events are not applied as they arrive: they wait in the run's frame queue and are
 * taken in together once per animation frame (`paintFrame`), which then draws the header,
 * the timeline and the log once. An event is painted in the frame after it arrives, and a
 * fast stream costs one DOM update a frame, not one per event.
 */

import { state } from './state.js';
import { $, h, badge, frameQueue } from './dom.js';
import { now, ts, fmtDur, fmtWhen, fmtAgo, fullTime, trigger, explain, stageOutcome } from './format.js';
import { api, errText } from './api.js';
import { setConn } from './conn.js';
import { openStream } from './stream.js';
import { emptyRun, foldEvent } from './fold.js';
import { RUN_FINAL_EVENTS, PIPELINE_STAGE } from './statuses.js';
import { appendLine, measureLog, prependLines, queueRender, renderLog, resetLog, revealLine } from './log.js';
import { cancelRun, retryRun, runStage } from './runs.js';
import { initGraph, parseNeeds, renderGraph } from './graph.js';

const RUN_ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Events read when a run opens, and per "Load earlier lines". */
const TAIL = 1000;
/** The most events one read of the API gives. */
const MAX_PAGE = 10000;
/** Lines shown before a run's first error when the log opens there. */
const ERROR_CONTEXT = 40;
const isFinal = (status) => RUN_FINAL_EVENTS.includes(status);

function newRun(id) {
  const run = {
    id,
    /** The run as the API said, with the live events folded in since. */
    detail: null,
    /** The log (see log.js). */
    lines: [], view: null, follow: true, unseen: 0, loaded: false, noEarlier: false, indexedEvents: 0,
    /** The last `seq` taken in: anything at or below it is a duplicate (counted for tests). */
    lastSeq: null, dupes: 0,
    /** The stream (stream.js), once the tail is read. */
    stream: null,
    closed: false,
    /** Stage names seen (for the stage filter), retries per stage, stages the start planned. */
    stages: new Set(), retries: {}, planned: null,
    /**
     * The graph from the start event (`data.stage_needs`; null when it has none), whether the
     * start event is known (a run whose file has no graph then says so), whether the first
     * read looked for it (the graph waits for that), and the shape the graph view last drew
     * (graph.js).
     */
    needs: null, startKnown: false, startRead: false, graphKey: null,
    detailTimer: null,
    /** Streamed events not yet taken in, and the frame that takes them in and paints. */
    frame: null,
  };
  run.frame = frameQueue((events) => { if (state.run === run) paintFrame(events); });
  return run;
}

/**
 * One frame of the open run: the log's scroll position is read first, then the events that
 * arrived since the last frame are taken in and everything is drawn, with no read between
 * the writes.
 */
function paintFrame(events) {
  const geom = measureLog();
  ingest(events);
  renderLog(geom);
}

/**
 * Takes in events of the open run (the first read, or a frame's worth of the stream), then
 * redraws the header and the timeline once if any of them moved the run.
 */
function ingest(events) {
  const run = state.run;
  if (!run) return;
  let detailIn = null;
  for (const e of events) {
    if (!e || e.run_id !== run.id || typeof e.seq !== 'number') continue;
    if (run.lastSeq != null && e.seq <= run.lastSeq) { run.dupes++; continue; }
    run.lastSeq = e.seq;
    appendLine(e);
    if (e.event !== 'log') detailIn = applyEvent(e);
  }
  if (detailIn == null) return;
  renderHead(); renderStages();
  scheduleDetail(detailIn);
}

/**
 * Folds an event into the header and the timeline, until the next read of the run; returns
 * how soon to read the run again (at once after its end).
 */
function applyEvent(e) {
  const run = state.run;
  const d = run.detail || (run.detail = emptyRun(run.id));
  foldEvent(d, e);
  const data = e.data && typeof e.data === 'object' ? e.data : {};
  if (e.stage === PIPELINE_STAGE && e.event === 'start') takeStart(run, data);
  if (e.event === 'retry') (run.retries[e.stage] ||= []).push(e.timestamp);
  return e.stage === PIPELINE_STAGE && isFinal(e.event) ? 50 : 400;
}

/** What a run's `start` says about its stages: their file order and their graph. */
function takeStart(run, data) {
  if (Array.isArray(data.stages)) run.planned = data.stages.map(String);
  if (typeof data.retry_of === 'string') run.retryOf = data.retry_of;
  if (data.params && typeof data.params === 'object') run.params = Object.entries(data.params).map(([k, v]) => `${k}=${v}`);
  run.needs = parseNeeds(data.stage_needs);
  run.startKnown = true;
}

/**
 * The run's start event when the first read did not reach it (a run of more lines than the
 * tail read): its stages and graph are there only. Then the graph view may draw: before, it
 * would draw the stages without their edges and redraw them a moment later.
 */
async function loadStart(r) {
  let known = true;
  if (r.lines.length && !r.startKnown && r.lines[0].seq > 0) {
    try {
      const [first] = await api(`/api/runs/${r.id}/events?limit=1`);
      if (state.run !== r) return;
      if (first && first.stage === PIPELINE_STAGE && first.event === 'start') takeStart(r, first.data && typeof first.data === 'object' ? first.data : {});
    } catch {
      if (state.run !== r) return;
      // Not known after all: the stages still show, from the run's events, without edges
      // and without a claim that the file has no graph.
      known = false;
    }
  }
  // A file with lines and no start has no graph (one with no lines yet may still start).
  if (known && r.lines.length) r.startKnown = true;
  r.startRead = true;
  renderStages();
}

function scheduleDetail(ms) {
  const run = state.run;
  clearTimeout(run.detailTimer);
  run.detailTimer = setTimeout(loadDetail, ms);
}

async function loadDetail() {
  const r = state.run;
  if (!r) return;
  try {
    const d = await api(`/api/runs/${r.id}`);
    if (state.run !== r) return;
    r.detail = d;
    // The run's size as the index says it (live events folded in later do not change it).
    r.indexedEvents = Number.isSafeInteger(d.events) ? d.events : 0;
    $('#rv-msg').textContent = r.cancelMsg || '';
  } catch (e) {
    if (state.run !== r) return;
    if (e.status === 404 && !r.detail) $('#rv-msg').textContent = `No run ${r.id} in the index yet — waiting for its events.`;
    else if (e.status !== 404) $('#rv-msg').textContent = `Cannot load the run: ${errText(e)}`;
  }
  renderHead(); renderStages();
}

function renderHead() {
  const run = state.run;
  if (!run) return;
  const d = run.detail || {};
  const st = d.status || 'pending';
  const b = $('#rv-status');
  b.dataset.status = st; b.textContent = st;
  const running = st === 'running';
  const facts = [];
  const add = (k, v) => facts.push(h('dt', {}, k), h('dd', {}, v));
  add('Trigger', h('span', { title: d.source ? `source: ${d.source}` : null }, trigger(d.source)));
  add('Pipeline', d.pipeline || '—');
  if (typeof d.host === 'string' && d.host) add('Host', h('span', { id: 'rv-host', class: 'mono' }, d.host));
  add('Started', h('span', { title: fullTime(d.started_at) }, d.started_at ? `${fmtWhen(d.started_at)} (${fmtAgo(d.started_at)})` : '—'));
  add('Finished', h('span', { title: fullTime(d.finished_at) }, d.finished_at ? fmtWhen(d.finished_at) : (running ? 'still running' : '—')));
  const retryOf = run.retryOf || d.retry_of;
  if (typeof retryOf === 'string' && RUN_ID.test(retryOf)) add('Retry of', h('a', { href: `#/runs/${retryOf}`, class: 'mono' }, retryOf));
  const retries = Array.isArray(d.retried_by) ? d.retried_by.filter((x) => typeof x === 'string' && RUN_ID.test(x)) : [];
  if (retries.length) add('Retried by', h('span', { id: 'rv-retried-by' }, ...retries.flatMap((x, i) => [i ? ', ' : null, h('a', { href: `#/runs/${x}`, class: 'mono' }, x)])));
  if (run.params && run.params.length) add('Parameters', h('span', { class: 'mono', id: 'rv-params' }, run.params.join(' ')));
  const why = explain(d);
  if (why) add('Why', why);
  $('#rv-facts').replaceChildren(...facts);
  const dur = $('#rv-dur');
  if (running && d.started_at) { dur.dataset.since = d.started_at; dur.textContent = fmtDur(now() - ts(d.started_at)); }
  else { delete dur.dataset.since; dur.textContent = fmtDur(d.duration_ms ?? (d.finished_at && d.started_at ? ts(d.finished_at) - ts(d.started_at) : null)); }
  $('#rv-cancel').hidden = !running;
  const retryable = st === 'failure' || st === 'cancelled' || st === 'abandoned';
  $('#rv-retry').hidden = !retryable;
  if (!retryable) $('#rv-retry-force').hidden = true;
  document.title = `${st} · ${run.id} · pipewatch`;
}

/**
 * Shows the stages as the view asks (`state.runView`): the switch's state, the view's box,
 * and the view drawn. Called where the run moves, once a frame at most, and once a second.
 */
export function renderStages() {
  const graph = state.runView === 'graph';
  $('#view-timeline').setAttribute('aria-pressed', String(!graph));
  $('#view-graph').setAttribute('aria-pressed', String(graph));
  $('#timeline').hidden = graph;
  $('#graph-view').hidden = !graph;
  if (graph) renderGraph(); else renderTimeline();
}

/** The stages view the address asks for (`route` in main.js): `graph` or the timeline. */
export function setRunView(view) {
  const v = view === 'graph' ? 'graph' : 'timeline';
  if (state.runView === v) return;
  state.runView = v;
  if (state.run) renderStages();
}

/** The switch: the view changes, and the address says so without a new history entry. */
function pickView(view) {
  const r = state.run;
  if (!r) return;
  history.replaceState(history.state, '', `#/runs/${r.id}${view === 'graph' ? '?view=graph' : ''}`);
  setRunView(view);
}

function renderTimeline() {
  const run = state.run;
  if (!run) return;
  const box = $('#timeline');
  const d = run.detail;
  const stages = d ? [...d.stages] : [];
  for (const p of run.planned || []) if (!stages.some((x) => x.name === p)) stages.push({ name: p, status: 'pending' });
  if (!stages.length) { box.replaceChildren(h('p', { class: 'muted flush' }, d && isFinal(d.status) ? 'No stage ran.' : 'No stage has started yet.')); return; }
  const starts = stages.map((x) => ts(x.started_at)).filter((x) => !Number.isNaN(x));
  const t0 = !Number.isNaN(ts(d.started_at)) ? ts(d.started_at) : Math.min(...starts, now());
  const running = d.status === 'running';
  const ends = stages.map((x) => ts(x.finished_at)).filter((x) => !Number.isNaN(x));
  const t1 = running ? now() : (!Number.isNaN(ts(d.finished_at)) ? ts(d.finished_at) : Math.max(t0, ...ends));
  const span = Math.max(t1 - t0, 1);
  const pct = (t) => Math.min(100, Math.max(0, ((t - t0) / span) * 100));
  const rows = stages.map((x) => {
    const st = x.status || 'pending';
    const track = h('div', { class: 'tl-track' });
    const a = ts(x.started_at);
    if (!Number.isNaN(a)) {
      const endT = !Number.isNaN(ts(x.finished_at)) ? ts(x.finished_at) : (st === 'running' || running ? now() : a);
      const left = pct(a), width = Math.max(0.4, pct(endT) - left);
      // The stage's duration is what its bar spans: first attempt's start to its end.
      const dms = x.duration_ms ?? (endT - a);
      const how = stageOutcome(x);
      const place = width > 40 ? ' in-label' : (left + width > 70 ? ' end-label' : '');
      const bar = h('div', { class: `tl-bar${place}`, 'data-stage': x.name, 'data-status': st, style: `left:${left}%;width:${width}%`, title: `${x.name}: ${st}${how ? ` (${how})` : ''}, ${fmtDur(dms)}${x.attempts > 1 ? `, ${x.attempts} attempts` : ''}` },
        h('span', { class: 'lbl' }, fmtDur(dms),
          x.attempts > 1 ? h('span', { class: 'att' }, ` · ↻ ${x.attempts} attempts`) : null,
          how ? h('span', { class: 'how' }, ` · ${how}`) : null));
      track.append(bar);
      for (const rt of run.retries[x.name] || []) {
        const rtT = ts(rt);
        if (!Number.isNaN(rtT)) track.append(h('div', { class: 'tl-retry', style: `left:${pct(rtT)}%`, title: `retry at ${fmtWhen(rt)}` }));
      }
    } else if (st === 'skipped' || st === 'cancelled') {
      const at = !Number.isNaN(ts(x.finished_at)) ? pct(ts(x.finished_at)) : 100;
      const how = stageOutcome(x);
      const what = st === 'skipped' ? 'skipped' : 'cancelled before start';
      track.append(h('div', { class: 'tl-skip', 'data-stage': x.name, 'data-status': st, style: `left:${Math.max(at, 12)}%` }, how ? `${what}: ${how}` : what));
    }
    return h('div', { class: 'tl-row' },
      h('div', { class: 'tl-label' }, badge(st), h('span', { class: 'name', title: x.name }, x.name)),
      track);
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => h('span', { style: `left:${f * 100}%` }, f === 0 ? '0' : `+${fmtDur(span * f)}`));
  rows.push(h('div', { class: 'tl-axis', 'aria-hidden': 'true' }, h('span', {}), h('div', { class: 'ticks' }, ticks)));
  box.replaceChildren(...rows);
}

/** Streams the run from the last event it has. */
function openRunStream(r) {
  const since = () => (r.lastSeq != null ? `?since=${r.lastSeq}` : '');
  r.stream = openStream({
    wsPath: () => `/ws/events/${r.id}${since()}`,
    ssePath: () => `/api/runs/${r.id}/events/stream${since()}`,
    sse: state.forcedTransport === 'sse',
    onEvent: (e) => r.frame.push(e),
    onState: (st) => { if (state.run === r) setConn('run', st); },
  });
}

export function closeRun() {
  const run = state.run;
  if (!run) return;
  run.closed = true;
  clearTimeout(run.detailTimer);
  run.stream?.close();
  run.frame.cancel();
  state.run = null;
  state.conn.run = null;
  setConn('global', state.conn.global);
}

export async function openRun(id) {
  if (state.run && state.run.id === id) return;
  closeRun();
  const r = state.run = newRun(id);
  $('#rv-id').textContent = id;
  // The whole log as a text file, streamed by the server (however long the run).
  const dl = $('#log-download');
  dl.href = `/api/runs/${encodeURIComponent(id)}/log`;
  dl.setAttribute('download', `${id}.log`);
  $('#rv-msg').textContent = '';
  resetLog();
  setConn('run', 'connecting');
  renderHead(); renderStages(); renderLog();
  // The run first: a finished run with an error opens its log there, if one read reaches it.
  await loadDetail();
  if (state.run !== r) return;
  const errSeq = firstError(r);
  const total = r.indexedEvents;
  const reach = errSeq != null && isFinal(r.detail.status) ? total - errSeq + ERROR_CONTEXT : 0;
  const tail = reach > TAIL && reach <= MAX_PAGE ? reach : TAIL;
  try {
    const evs = await api(`/api/runs/${id}/events?tail=${tail}`);
    if (state.run !== r) return;
    ingest(evs);
  } catch (e) {
    if (state.run !== r) return;
    if (e.status && e.status !== 404) $('#rv-msg').textContent = `Cannot read the run's events: ${errText(e)}`;
  }
  r.loaded = true;
  await loadStart(r);
  if (state.run !== r) return;
  if (errSeq != null && isFinal(r.detail.status) && r.lines.length && r.lines[0].seq <= errSeq) revealLine(errSeq);
  queueRender();
  openRunStream(r);
}

/** The `seq` of the open run's first error, if it has one. */
function firstError(r) {
  const seq = r.detail?.first_error_seq;
  return Number.isSafeInteger(seq) ? seq : null;
}

/** Shows the run's first error in the log, reading the lines before the loaded ones if needed. */
async function jumpToFirstError() {
  const r = state.run;
  const seq = r && firstError(r);
  if (seq == null) return;
  const btn = $('#first-error');
  btn.disabled = true;
  try {
    // Earlier pages until the error and a little before it are in.
    while (state.run === r && r.lines.length && r.lines[0].seq > Math.max(0, seq - ERROR_CONTEXT) && !r.noEarlier) {
      const first = r.lines[0].seq;
      const from = Math.max(0, seq - ERROR_CONTEXT, first - MAX_PAGE);
      const evs = await api(from > 0 ? `/api/runs/${r.id}/events?since=${from - 1}&limit=${first - from}` : `/api/runs/${r.id}/events?limit=${first}`);
      if (state.run !== r) return;
      prependLines(evs);
    }
    if (state.run === r) revealLine(seq);
  } catch (e) { $('#rv-msg').textContent = `Cannot load the lines before the first error: ${errText(e)}`; }
  btn.disabled = false;
}

async function loadEarlier() {
  const r = state.run;
  if (!r || !r.lines.length) return;
  const btn = $('#load-earlier');
  const first = r.lines[0].seq;
  if (first <= 0) return;
  btn.disabled = true;
  const since = first - TAIL - 1;
  const url = since >= 0 ? `/api/runs/${r.id}/events?since=${since}&limit=${TAIL}` : `/api/runs/${r.id}/events?limit=${first}`;
  try {
    const evs = await api(url);
    if (state.run === r) prependLines(evs);
  } catch (e) { $('#rv-msg').textContent = `Cannot load earlier lines: ${errText(e)}`; }
  btn.disabled = false;
}

export function initRun() {
  $('#load-earlier').addEventListener('click', loadEarlier);
  $('#first-error').addEventListener('click', jumpToFirstError);
  $('#rv-cancel').addEventListener('click', () => { if (state.run) cancelRun(state.run.id, $('#rv-msg')); });
  const retry = async (force) => {
    if (!state.run) return;
    $('#rv-retry-force').hidden = !(await retryRun(state.run.id, force, $('#rv-msg')));
  };
  $('#rv-retry').addEventListener('click', () => retry(false));
  $('#rv-retry-force').addEventListener('click', () => retry(true));
  $('#run-stage').addEventListener('click', () => {
    const run = state.run;
    if (run && run.detail && run.detail.pipeline && state.filt.stage) runStage(run.detail.pipeline, state.filt.stage, $('#rv-msg'));
  });
  $('#view-timeline').addEventListener('click', () => pickView('timeline'));
  $('#view-graph').addEventListener('click', () => pickView('graph'));
  initGraph();
}
