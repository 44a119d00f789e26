/**
 * The run log: every event of the open run as one row, virtualised (only the rows in view
 * are in the DOM, so a run of 100,000 lines scrolls as one of 100), filtered by stage,
 * stream, level and text without touching the DOM per line, following the end unless the
 * reader scrolled up.
 *
 * Rendering happens once per animation frame, in the open run's frame (`run.js`): the lines
 * that arrived since the last frame are taken in, then the log is drawn once. A frame reads
 * the log's scroll position and height first (`measureLog`) and then only writes, setting
 * `scrollTop` last (the one layout that forces covers every write before it), so a stream of
 * 10,000 lines a second costs one layout a frame, not one per line.
 *
 * A painted line is `#log-rows > .lr[data-seq="N"]`, N the event's `seq`: a stable selector
 * for tests and benchmarks (a `MutationObserver` on `#log-rows`, `childList`, sees each
 * frame's rows go in). A line's row is built once and kept while it stays in view (and the
 * text filter and the revealed line stay the same): a frame that follows the end drops the
 * rows that scrolled out and appends the new ones, and one that jumps (a scroll, a filter)
 * puts all its rows in at once, so a line already shown may be added again later. Only the
 * rows in view (and a few either side) exist: while the log follows the end, the newest line
 * is always among them.
 *
 * The lines themselves live on the open run (`state.run.lines`, and `view`, the indices that
 * pass the filters); `run.js` feeds them in.
 */

import { state } from './state.js';
import { $, h, setText } from './dom.js';
import { fmtClock, fmtCount, ts } from './format.js';

const ROW_H = 20, OVERSCAN = 12;
const EV_ICON = { start: '▶', success: '✔', failure: '✖', cancelled: '■', skipped: '⤼', retry: '↻', missed: '◌' };
const logEl = $('#log'), spacerEl = $('#log-spacer'), rowsEl = $('#log-rows');

/** A line as the log keeps it: small, so a long run stays light. */
function compact(e) {
  const d = e.data && typeof e.data === 'object' ? e.data : {};
  return { seq: e.seq, t: e.timestamp, stage: e.stage, ev: e.event, lvl: e.level || (e.event === 'failure' ? 'error' : 'info'), st: e.event === 'log' ? (d.stream || 'stdout') : '', msg: typeof e.msg === 'string' ? e.msg : String(e.msg ?? '') };
}

function matches(l) {
  const filt = state.filt;
  if (filt.stage && l.stage !== filt.stage) return false;
  if (filt.stream) {
    if (filt.stream === 'events') { if (l.ev === 'log') return false; }
    else if (l.st !== filt.stream) return false;
  }
  if (filt.level === 'error' && l.lvl !== 'error') return false;
  if (filt.level === 'warn' && l.lvl !== 'warn' && l.lvl !== 'error') return false;
  if (filt.text && !l.msg.toLowerCase().includes(filt.text) && !l.stage.toLowerCase().includes(filt.text)) return false;
  return true;
}
const filtering = () => { const f = state.filt; return !!(f.stage || f.stream || f.level || f.text); };

function rebuildView() {
  // "Run this stage" is offered while the log shows one stage.
  $('#run-stage').hidden = !state.filt.stage;
  const run = state.run;
  if (!run) return;
  if (!filtering()) { run.view = null; return; }
  const v = [];
  const L = run.lines;
  for (let i = 0; i < L.length; i++) if (matches(L[i])) v.push(i);
  run.view = v;
}
const viewLen = () => (state.run.view ? state.run.view.length : state.run.lines.length);
const viewLine = (i) => state.run.lines[state.run.view ? state.run.view[i] : i];

/** Adds a stage to the stage filter the first time one of its lines arrives. */
function noteStage(name) {
  const run = state.run;
  if (!name || name === 'pipeline' || run.stages.has(name)) return;
  run.stages.add(name);
  $('#f-stage').append(h('option', { value: name }, name));
}

/** Empties the filters that belong to a run (on opening another). */
export function resetLog() {
  $('#f-stage').replaceChildren(h('option', { value: '' }, 'All stages'));
  state.filt.stage = '';
  rebuildView();
}

/**
 * Shows one stage's lines: the stage filter set to it (the other filters kept), the log
 * following that stage's newest line, and the log brought into view with the focus on it.
 */
export function showStage(name) {
  const run = state.run;
  if (!run) return;
  const sel = $('#f-stage');
  // A stage that has written nothing yet has no option: it gets one now.
  if (![...sel.options].some((o) => o.value === name)) { run.stages.add(name); sel.append(h('option', { value: name }, name)); }
  sel.value = name;
  state.filt.stage = name;
  rebuildView();
  run.follow = true;
  run.unseen = 0;
  queueRender();
  logEl.scrollIntoView({ block: 'start' });
  logEl.focus({ preventScroll: true });
}

/** Appends an event of the open run (the caller has dropped any seq it already has). */
export function appendLine(e) {
  const run = state.run;
  const l = compact(e);
  run.lines.push(l);
  if (run.view && matches(l)) run.view.push(run.lines.length - 1);
  if (!run.follow && (!run.view || matches(l))) run.unseen++;
  noteStage(e.stage);
}

/** Puts earlier events of the open run before its lines, keeping the view where it was. */
export function prependLines(events) {
  const run = state.run;
  const first = run.lines.length ? run.lines[0].seq : Infinity;
  const older = events.filter((e) => typeof e.seq === 'number' && e.seq < first).map(compact);
  if (!older.length) run.noEarlier = true;
  const before = viewLen();
  run.lines = older.concat(run.lines);
  for (const l of older) noteStage(l.stage);
  rebuildView();
  const added = viewLen() - before;
  run.follow = false;
  spacerEl.style.height = `${viewLen() * ROW_H}px`;
  state.log.autoScrolling = true;
  logEl.scrollTop += added * ROW_H;
  renderLog();
}

/** Renders in the open run's next frame (once, however many lines and scrolls ask for it). */
export function queueRender() {
  state.run?.frame.request();
}

/** The log box's scroll position and height: read once a frame, before anything is written. */
export function measureLog() {
  return { top: logEl.scrollTop, height: logEl.clientHeight };
}

/** Draws the log from `geom` (`measureLog`, read before this frame's writes). */
export function renderLog(geom = measureLog()) {
  const run = state.run;
  if (!run) return;
  const n = viewLen();
  const end = Math.max(0, n * ROW_H - geom.height);
  // Following: the end. Else where the reader is, within what the new height lets scroll.
  const scrollTo = run.follow && n && Math.abs(geom.top - end) > 1 ? end : null;
  const top = scrollTo ?? Math.min(geom.top, end);
  const height = geom.height || 400;
  spacerEl.style.height = `${Math.max(n * ROW_H, 1)}px`;
  const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
  const last = Math.min(n, Math.ceil((top + height) / ROW_H) + OVERSCAN);
  rowsEl.style.transform = `translateY(${first * ROW_H}px)`;
  const rows = [], keep = new Map();
  for (let i = first; i < last; i++) rows.push(rowFor(viewLine(i), keep));
  built = keep;
  if (!n) rows.push(h('div', { class: 'log-empty' }, run.lines.length ? 'No line matches the filters.' : (run.loaded ? 'No events yet — waiting for the run to write.' : 'Loading…')));
  showRows(rows);
  const firstSeq = run.lines.length ? run.lines[0].seq : null;
  const more = firstSeq != null && firstSeq > 0 && !run.noEarlier;
  // The run's size as the index last said, or what is loaded if that is more (it streams on).
  const total = Math.max(run.indexedEvents, run.lines.length);
  const loaded = fmtCount(run.lines.length);
  const of = more ? `last ${loaded} of ${fmtCount(total)} lines` : `${loaded} lines`;
  setText($('#log-count'), filtering() ? `${fmtCount(n)} matching · ${of}` : of);
  $('#load-earlier').hidden = !more;
  setText($('#load-earlier'), `Load ${fmtCount(Math.min(1000, firstSeq ?? 0))} earlier lines`);
  setText($('#log-range'), more ? `showing from line ${fmtCount(firstSeq)}` : '');
  const errSeq = run.detail?.first_error_seq;
  const fe = $('#first-error');
  fe.hidden = !Number.isSafeInteger(errSeq);
  if (!fe.hidden) setText(fe, `First error (line ${fmtCount(errSeq)})`);
  const nl = $('#newlines');
  nl.hidden = run.follow || !run.unseen;
  setText(nl, `${fmtCount(run.unseen)} new ↓`);
  const fb = $('#follow');
  fb.setAttribute('aria-pressed', String(run.follow));
  setText(fb, run.follow ? 'Following' : 'Paused');
  if (scrollTo != null) { state.log.autoScrolling = true; logEl.scrollTop = scrollTo; }
}

/**
 * Scrolls the log to the line with `seq` (if it is loaded), a few lines above the bottom so
 * the output before it shows, and stops following the end. Filters that hide it are cleared.
 */
export function revealLine(seq) {
  const run = state.run;
  if (!run) return;
  const at = (v) => (v ? v.findIndex((i) => run.lines[i].seq === seq) : run.lines.findIndex((l) => l.seq === seq));
  let i = at(run.view);
  if (i < 0 && run.view) {
    for (const k of Object.keys(state.filt)) state.filt[k] = '';
    for (const id of ['f-stage', 'f-stream', 'f-level', 'f-text']) $(`#${id}`).value = '';
    rebuildView();
    i = at(run.view);
  }
  if (i < 0) return;
  run.follow = false;
  const height = logEl.clientHeight || 400;
  spacerEl.style.height = `${Math.max(viewLen() * ROW_H, 1)}px`;
  state.log.autoScrolling = true;
  logEl.scrollTop = Math.max(0, (i + 4) * ROW_H - height);
  run.revealed = seq;
  queueRender();
}

/**
 * Makes `rows` the log's rows, touching only what changed: while the log follows the end, a
 * frame drops the rows that scrolled out at the top and appends the new ones, and the rows
 * that stay are left in place (not laid out again).
 */
function showRows(rows) {
  const shown = [...rowsEl.children];
  const at = rows.length ? shown.indexOf(rows[0]) : -1;
  const kept = at < 0 ? 0 : Math.min(shown.length - at, rows.length);
  for (let i = 0; i < kept; i++) {
    if (shown[at + i] !== rows[i]) { rowsEl.replaceChildren(...rows); return; }
  }
  if (!kept) { if (rows.length || shown.length) rowsEl.replaceChildren(...rows); return; }
  for (let i = 0; i < at; i++) shown[i].remove();
  for (let i = at + kept; i < shown.length; i++) shown[i].remove();
  if (kept < rows.length) rowsEl.append(...rows.slice(kept));
}

/**
 * The rows in view, by line, with what they were built for: a row shows the text filter's
 * matches and whether it is the revealed line, and is built again when either changes. Only
 * the last frame's rows are kept, so a long run costs the rows in view, not one per line.
 */
let built = new Map();

/** The row of line `l`, the one built for it if it still holds; kept in `keep`. */
function rowFor(l, keep) {
  const text = state.filt.text, revealed = l.seq === state.run?.revealed;
  let b = built.get(l);
  if (!b || b.text !== text || b.revealed !== revealed) b = { text, revealed, row: logRow(l) };
  keep.set(l, b);
  return b.row;
}

function logRow(l) {
  const text = state.filt.text;
  const cls = ['lr'];
  if (l.ev !== 'log') cls.push('ev');
  if (l.st === 'stderr') cls.push('stderr');
  if (l.lvl === 'error') cls.push('error'); else if (l.lvl === 'warn' && l.st !== 'stderr') cls.push('warn');
  if (l.seq === state.run?.revealed) cls.push('revealed');
  const time = fmtClock(ts(l.t));
  const msgText = l.ev === 'log' ? l.msg
    : `${EV_ICON[l.ev] || '•'} ${l.msg.toLowerCase().startsWith(l.ev) ? l.msg : `${l.ev}${l.msg ? ` — ${l.msg}` : ''}`}`;
  const m = h('span', { class: 'm' });
  if (text) {
    const low = msgText.toLowerCase();
    let at = 0, k;
    while ((k = low.indexOf(text, at)) >= 0) {
      m.append(msgText.slice(at, k), h('mark', {}, msgText.slice(k, k + text.length)));
      at = k + text.length;
    }
    m.append(msgText.slice(at));
  } else m.textContent = msgText;
  return h('div', { class: cls.join(' '), 'data-seq': l.seq, title: `#${l.seq} ${l.t} ${l.stage}${l.st ? ` (${l.st})` : ''}: ${l.msg}` },
    h('span', { class: 'seq' }, l.seq), h('span', { class: 'ts' }, time), h('span', { class: 'stg' }, l.stage), m);
}

export function initLog() {
  logEl.addEventListener('scroll', () => {
    const run = state.run;
    if (!run) return;
    if (state.log.autoScrolling) { state.log.autoScrolling = false; } else {
      const atBottom = logEl.scrollTop + logEl.clientHeight >= logEl.scrollHeight - ROW_H * 1.5;
      if (atBottom && !run.follow) { run.follow = true; run.unseen = 0; }
      else if (!atBottom && run.follow) run.follow = false;
    }
    queueRender();
  }, { passive: true });
  logEl.addEventListener('keydown', (ev) => {
    const run = state.run;
    if (!run) return;
    if (ev.key === 'End') { run.follow = true; run.unseen = 0; queueRender(); }
    if (ev.key === 'Home') { run.follow = false; logEl.scrollTop = 0; }
  });
  $('#follow').addEventListener('click', () => {
    const run = state.run;
    if (!run) return;
    run.follow = !run.follow;
    if (run.follow) run.unseen = 0;
    queueRender();
  });
  $('#newlines').addEventListener('click', () => {
    const run = state.run;
    if (!run) return;
    run.follow = true; run.unseen = 0; queueRender(); logEl.focus();
  });
  for (const id of ['f-stage', 'f-stream', 'f-level']) {
    $(`#${id}`).addEventListener('change', (ev) => {
      state.filt[id.slice(2)] = ev.target.value;
      rebuildView();
      if (state.run) { state.run.follow = true; queueRender(); }
    });
  }
  $('#f-text').addEventListener('input', (ev) => {
    clearTimeout(state.log.searchTimer);
    state.log.searchTimer = setTimeout(() => {
      state.filt.text = ev.target.value.trim().toLowerCase();
      rebuildView();
      if (state.run) queueRender();
    }, 150);
  });
}
