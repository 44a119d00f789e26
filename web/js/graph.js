/**
 * A run's stages as their dependency graph: the "Graph" view of the run page's Stages card,
 * beside the timeline. Drawn here as SVG, left to right.
 *
 * The graph is the run's own, from its `start` event (`data.stage_needs`: each stage's
 * `needs`), so a run drawn later shows the pipeline as it was when it ran. A run file written
 * before pipewatch recorded it (no `stage_needs`) is drawn as one column in file order with
 * no edges, and says so.
 *
 * Layout (`layout`, pure): a stage's layer is the longest path to it from a stage that needs
 * nothing; within a layer stages start in file order and a few barycenter sweeps (each stage
 * moved toward the mean place of its neighbours in the layer before, then after) reorder them,
 * keeping the order with the fewest crossings between adjacent layers. Each layer's column is
 * as wide as its longest name (within bounds; longer names are cut with an ellipsis and keep
 * their full name in a `<title>`), so no text overlaps. Several edges into or out of one node
 * meet it at points spread down its side. An edge that skips layers is one curve drawn
 * behind the nodes of the layers it crosses (no bends are routed around them).
 *
 * Live: the SVG is built again only when the graph's shape changes (a stage appears); each
 * render otherwise rewrites the nodes' status, text and the failed path in place, so a running
 * run's nodes tick without flicker. `run.js` calls `renderGraph` where it draws the timeline:
 * once an animation frame at most, and once a second while the run runs.
 *
 * The DOM, for tests and styles: `#graph svg`, one `g.gnode[data-stage][data-status]
 * [data-layer]` per stage (`data-failed-path` on a failed stage and on those skipped because
 * of it), one `path.gedge[data-from][data-to]` per need (`data-failed-path` on the edges the
 * failure travelled along).
 */

import { state } from './state.js';
import { $, h, s } from './dom.js';
import { now, ts, fmtDur, stageOutcome } from './format.js';
import { showStage } from './log.js';

const NODE_H = 46, ROW_GAP = 14, COL_GAP = 48, PAD = 12;
/** A column's width: its longest name plus room for the dot and padding, within bounds. */
const MAX_W = 260, NAME_X = 26, NAME_RIGHT = 12;
/** The fonts of `.gname` and `.gmeta` in style.css: names are measured in them to fit. */
const NAME_FONT = '600 12.5px ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace';
const META_FONT = '11.5px system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif';
/** The longest line under a name, so a column is wide enough for it before it happens. */
const META_WIDEST = 'cancelled · 59m 59s · ↻ 10';
/** Barycenter sweeps (each one down and one up): enough for the graphs pipelines have. */
const SWEEPS = 4;

/** Text widths, measured with the font the nodes draw the text in. */
const measureCtx = document.createElement('canvas').getContext('2d');
function textWidth(text, font = NAME_FONT) {
  if (!measureCtx) return text.length * 7.6;
  measureCtx.font = font;
  return measureCtx.measureText(text).width;
}

/**
 * `stage_needs` as the start event gave it, or null when it is not a graph (an older file).
 * Only names are kept; a stage's needs that are not strings are dropped.
 */
export function parseNeeds(v) {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const out = {};
  for (const [k, list] of Object.entries(v)) out[k] = Array.isArray(list) ? list.filter((x) => typeof x === 'string') : [];
  return out;
}

/**
 * Places `names` (in file order) by `needs` (name → names it needs; null: no graph known).
 * Returns `{ layers: [[name, ...], ...], layerOf: Map, edges: [[from, to], ...] }`, the
 * layers left to right and each layer top to bottom.
 */
export function layout(names, needs) {
  const known = new Set(names);
  const edges = [];
  if (needs) for (const to of names) for (const from of needs[to] || []) if (known.has(from) && from !== to) edges.push([from, to]);
  const preds = new Map(names.map((n) => [n, []]));
  const succs = new Map(names.map((n) => [n, []]));
  for (const [from, to] of edges) { preds.get(to).push(from); succs.get(from).push(to); }
  // Longest path from a root; a cycle (never written by pipewatch) is cut where it closes.
  const layerOf = new Map();
  const visiting = new Set();
  const depth = (n) => {
    if (layerOf.has(n)) return layerOf.get(n);
    if (visiting.has(n)) return 0;
    visiting.add(n);
    let d = 0;
    for (const p of preds.get(n)) d = Math.max(d, depth(p) + 1);
    visiting.delete(n);
    layerOf.set(n, d);
    return d;
  };
  for (const n of names) depth(n);
  const layers = [];
  for (const n of names) (layers[layerOf.get(n)] ||= []).push(n);
  for (let i = 0; i < layers.length; i++) layers[i] ||= [];
  if (edges.length) order(layers, preds, succs);
  return { layers, layerOf, edges };
}

/** Reorders `layers` in place: barycenter sweeps, keeping the order with fewest crossings. */
function order(layers, preds, succs) {
  const pos = new Map();
  const place = () => { for (const l of layers) l.forEach((n, i) => pos.set(n, (i + 0.5) / l.length)); };
  place();
  let best = layers.map((l) => [...l]);
  let bestCross = crossings(layers, succs, pos);
  const sweep = (from, to, step, nbrs) => {
    for (let i = from; i !== to; i += step) {
      const l = layers[i];
      const key = new Map(l.map((n) => {
        const ns = nbrs.get(n);
        // A stage with no neighbour on that side keeps its place.
        return [n, ns.length ? ns.reduce((a, m) => a + pos.get(m), 0) / ns.length : pos.get(n)];
      }));
      l.sort((a, b) => key.get(a) - key.get(b));
      l.forEach((n, k) => pos.set(n, (k + 0.5) / l.length));
    }
  };
  for (let k = 0; k < SWEEPS; k++) {
    sweep(1, layers.length, 1, preds);
    sweep(layers.length - 2, -1, -1, succs);
    const c = crossings(layers, succs, pos);
    if (c < bestCross) { bestCross = c; best = layers.map((l) => [...l]); }
  }
  best.forEach((l, i) => { layers[i] = l; });
}

/** Edge crossings, counting every edge by the places of its two ends. */
function crossings(layers, succs, pos) {
  const layerIx = new Map();
  layers.forEach((l, i) => l.forEach((n) => layerIx.set(n, i)));
  const es = [];
  for (const [from, tos] of succs) for (const to of tos) es.push([layerIx.get(from), pos.get(from), layerIx.get(to), pos.get(to)]);
  let c = 0;
  for (let i = 0; i < es.length; i++) {
    for (let j = i + 1; j < es.length; j++) {
      const [a0, a1, a2, a3] = es[i], [b0, b1, b2, b3] = es[j];
      // Two edges over the same layers cross when their ends swap order.
      if (a0 === b0 && a2 === b2 && (a1 - b1) * (a3 - b3) < 0) c++;
    }
  }
  return c;
}

/**
 * The failed path: stages that failed, and stages skipped (`needs_failed`) because a stage
 * they need is on the path; with the edges between them. Walks `layers` left to right, so a
 * skip is marked after what caused it.
 */
function failedPath(layers, byName, needs) {
  const nodes = new Set();
  const edges = new Set();
  for (const l of layers) {
    for (const n of l) {
      const st = byName.get(n);
      if (!st) continue;
      if (st.status === 'failure') { nodes.add(n); continue; }
      if (st.status !== 'skipped' || st.reason !== 'needs_failed') continue;
      const from = (needs?.[n] || []).filter((m) => nodes.has(m));
      // Without a graph, the skip still names the stage that did not succeed.
      if (!from.length && st.needs && nodes.has(st.needs)) from.push(st.needs);
      if (from.length) { nodes.add(n); for (const m of from) edges.add(`${m}\n${n}`); }
    }
  }
  return { nodes, edges };
}

/** The stages to draw: the run's, then any the start planned that have not appeared. */
function stagesOf(run) {
  const stages = run.detail ? [...run.detail.stages] : [];
  const planned = [...(run.planned || []), ...Object.keys(run.needs || {})];
  for (const p of planned) if (!stages.some((x) => x.name === p)) stages.push({ name: p, status: 'pending' });
  // File order where the start gave it; a stage only the events named goes after.
  const rank = new Map((run.planned || []).map((n, i) => [n, i]));
  return stages.map((x, i) => [x, rank.has(x.name) ? rank.get(x.name) : 1e6 + i]).sort((a, b) => a[1] - b[1]).map(([x]) => x);
}

/** What a node says under its name: status, duration (live while running), attempts, why. */
function nodeMeta(x, runRunning) {
  const st = x.status || 'pending';
  const a = ts(x.started_at);
  let dur = '';
  if (x.duration_ms != null) dur = fmtDur(x.duration_ms);
  else if (!Number.isNaN(a) && (st === 'running' || runRunning)) dur = fmtDur(now() - a);
  const parts = [st];
  if (dur) parts.push(dur);
  if (x.attempts > 1) parts.push(`↻ ${x.attempts}`);
  return { text: parts.join(' · '), how: stageOutcome(x), attempts: x.attempts > 1 ? `${x.attempts} attempts` : '' };
}

/** `text` cut to fit `room` pixels in `font`, with an ellipsis. */
function fit(text, room, font = NAME_FONT) {
  if (textWidth(text, font) <= room) return text;
  let lo = 0, hi = text.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (textWidth(`${text.slice(0, mid)}…`, font) <= room) lo = mid; else hi = mid - 1;
  }
  return `${text.slice(0, lo)}…`;
}

/** Draws the open run's graph into `#graph` (see the module's doc for what stays). */
export function renderGraph() {
  const run = state.run;
  if (!run) return;
  const box = $('#graph');
  const note = $('#graph-note');
  const d = run.detail;
  // Until the run's first read has looked for its start event, the graph is not known: the
  // stages would show without their edges and jump into place a moment later.
  if (!run.startKnown && !run.startRead) {
    run.graphKey = null;
    note.textContent = '';
    box.replaceChildren(h('p', { class: 'muted flush' }, 'Loading…'));
    return;
  }
  const stages = stagesOf(run);
  if (!stages.length) {
    run.graphKey = null;
    note.textContent = '';
    box.replaceChildren(h('p', { class: 'muted flush' }, d && d.status && d.status !== 'running' ? 'No stage ran.' : 'No stage has started yet.'));
    return;
  }
  const needs = run.needs;
  note.textContent = needs || !run.startKnown ? '' : 'The dependency graph is not recorded for this run (its file was written before pipewatch recorded it): its stages are shown in file order.';
  const names = stages.map((x) => x.name);
  const key = JSON.stringify([names, needs ? names.map((n) => needs[n] || []) : null]);
  if (key !== run.graphKey || !box.querySelector('svg')) {
    run.graphKey = key;
    box.replaceChildren(build(names, needs));
  }
  update(box, stages, needs, d && d.status === 'running');
}

/** The SVG of the graph's shape: nodes placed, edges drawn; statuses come in `update`. */
function build(names, needs) {
  const { layers, layerOf, edges } = layout(names, needs);
  const minW = Math.ceil(textWidth(META_WIDEST, META_FONT)) + NAME_X + NAME_RIGHT;
  const widths = layers.map((l) => Math.min(MAX_W, Math.max(minW, ...l.map((n) => Math.ceil(textWidth(n)) + NAME_X + NAME_RIGHT))));
  const xs = [];
  let x = PAD;
  for (const w of widths) { xs.push(x); x += w + COL_GAP; }
  const width = x - COL_GAP + PAD;
  const tallest = Math.max(...layers.map((l) => l.length));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP;
  const at = new Map();
  layers.forEach((l, i) => {
    // Each column centred on the tallest.
    const top = PAD + ((tallest - l.length) * (NODE_H + ROW_GAP)) / 2;
    l.forEach((n, k) => at.set(n, { x: xs[i], y: top + k * (NODE_H + ROW_GAP), w: widths[i] }));
  });
  const arrow = (id) => s('marker', { id, viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '8', markerHeight: '8', markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' },
    s('path', { d: 'M0,0 L10,5 L0,10 z' }));
  // Several edges into (or out of) one node meet it at points spread down its side, in the
  // order of their other ends, so they do not arrive as one line.
  const port = (side, n, other) => {
    const list = edges.filter((e) => e[side] === n).map((e) => e[1 - side]).sort((p, q) => at.get(p).y - at.get(q).y);
    return at.get(n).y + (NODE_H * (list.indexOf(other) + 1)) / (list.length + 1);
  };
  const edgeEls = edges.map(([from, to]) => {
    const a = at.get(from), b = at.get(to);
    const x1 = a.x + a.w, y1 = port(0, from, to), x2 = b.x - 2, y2 = port(1, to, from);
    const dx = Math.max(24, (x2 - x1) / 2);
    return s('path', { class: 'gedge', 'data-from': from, 'data-to': to, d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`, 'marker-end': 'url(#g-arrow)' });
  });
  const nodeEls = names.map((n) => {
    const p = at.get(n);
    const shown = fit(n, p.w - NAME_X - NAME_RIGHT);
    return s('g', { class: 'gnode', 'data-stage': n, 'data-layer': layerOf.get(n), transform: `translate(${p.x},${p.y})`, tabindex: '0', role: 'button' },
      s('title', {}, n),
      s('rect', { class: 'gbox', width: p.w, height: NODE_H, rx: '6' }),
      s('circle', { class: 'gdot', cx: '14', cy: '16', r: '5' }),
      s('text', { class: 'gname', x: NAME_X, y: '20' }, shown),
      s('text', { class: 'gmeta', x: NAME_X, y: '36', 'data-room': p.w - NAME_X - NAME_RIGHT }));
  });
  return s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': 'Stage dependency graph' },
    s('defs', {}, arrow('g-arrow'), arrow('g-arrow-bad')),
    s('g', { class: 'gedges' }, edgeEls),
    s('g', { class: 'gnodes' }, nodeEls));
}

/** Writes each node's status and text and the failed path into the drawn graph. */
function update(box, stages, needs, runRunning) {
  const byName = new Map(stages.map((x) => [x.name, x]));
  const nodes = [...box.querySelectorAll('g.gnode')];
  const layers = [];
  for (const g of nodes) (layers[Number(g.dataset.layer)] ||= []).push(g.dataset.stage);
  const path = failedPath(layers.filter(Boolean), byName, needs);
  for (const g of nodes) {
    const x = byName.get(g.dataset.stage);
    if (!x) continue;
    const st = x.status || 'pending';
    const { text, how, attempts } = nodeMeta(x, runRunning);
    if (g.dataset.status !== st) g.dataset.status = st;
    const meta = g.querySelector('.gmeta');
    // Cut only past what the column was made wide enough for (an hour-long stage, say).
    const shown = fit(text, Number(meta.dataset.room), META_FONT);
    if (meta.textContent !== shown) meta.textContent = shown;
    const said = [text, how, attempts].filter(Boolean).join(', ');
    const label = `${x.name}: ${said}. Show its log.`;
    if (g.getAttribute('aria-label') !== label) {
      g.setAttribute('aria-label', label);
      g.querySelector('title').textContent = `${x.name}\n${said}`;
    }
    g.toggleAttribute('data-failed-path', path.nodes.has(x.name));
  }
  for (const e of box.querySelectorAll('path.gedge')) {
    const bad = path.edges.has(`${e.dataset.from}\n${e.dataset.to}`);
    if (e.hasAttribute('data-failed-path') !== bad) {
      e.toggleAttribute('data-failed-path', bad);
      e.setAttribute('marker-end', bad ? 'url(#g-arrow-bad)' : 'url(#g-arrow)');
    }
  }
}

/** A node opens its stage's log: by click, or by Enter or Space on a focused node. */
export function initGraph() {
  const box = $('#graph');
  const pick = (ev) => {
    const g = ev.target.closest?.('g.gnode');
    if (g && g.dataset.stage) { ev.preventDefault(); showStage(g.dataset.stage); }
  };
  box.addEventListener('click', pick);
  box.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') pick(ev); });
}
