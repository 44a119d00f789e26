/**
 * The duration trend: the last 50 runs as bars (oldest left), coloured by status, with their
 * median. One hung run must not flatten the rest, so bars beyond four times the median are cut
 * and marked. A bar links to its run. On a pipeline's page (`#/pipelines/NAME`), that
 * pipeline's runs.
 */

import { state } from './state.js';
import { $, h, s } from './dom.js';
import { now, ts, fmtDur, fmtWhen } from './format.js';
import { api } from './api.js';
import { RUN_STATUSES } from './statuses.js';
import { onOverview } from './scope.js';

/** The statuses that have a colour of their own (`--<status>` in style.css). */
const COLOURED = new Set(RUN_STATUSES);
const colour = (status) => `var(--${COLOURED.has(status) ? status : 'pending'})`;

/** Reads the trend again soon (changes within 800 ms make one read). */
export function scheduleTrend() {
  clearTimeout(state.trend.timer);
  state.trend.timer = setTimeout(refreshTrend, 800);
}

export async function refreshTrend() {
  // The overview of several pipelines has no trend; a pipeline's page has its own.
  if (onOverview()) return;
  const q = new URLSearchParams({ limit: '50' });
  if (state.scope.pipeline) q.set('pipeline', state.scope.pipeline);
  const scope = state.scope.pipeline;
  try {
    const list = await api(`/api/runs?${q}`);
    if (scope === state.scope.pipeline) state.trend.list = list;
  } catch { /* keep the last */ }
  renderTrend();
}

function median(xs) {
  if (!xs.length) return null;
  const v = [...xs].sort((a, b) => a - b), m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function renderTrend() {
  const box = $('#trend');
  const runs = [...state.trend.list].reverse(); // oldest left
  if (!runs.length) { box.replaceChildren(h('p', { class: 'empty' }, 'No runs yet.')); return; }
  const W = 360, H = 130, top = 14, bottom = 16, left = 4, right = 4;
  const durOf = (r) => r.duration_ms != null ? r.duration_ms : (r.status === 'running' && r.started_at ? now() - ts(r.started_at) : null);
  const durs = runs.map(durOf).filter((d) => d != null);
  const med = median(runs.filter((r) => r.duration_ms != null && r.status !== 'running').map((r) => r.duration_ms));
  const max = Math.max(1, med != null && durs.some((d) => d > med * 4) ? Math.max(med * 4, ...durs.filter((d) => d <= med * 4)) : Math.max(...durs, 1));
  const slot = (W - left - right) / 50;
  const bw = Math.max(2, slot * 0.72);
  const y = (d) => H - bottom - (d / max) * (H - top - bottom);
  const bars = runs.map((r, i) => {
    const d = durOf(r);
    const x = left + (50 - runs.length + i) * slot + (slot - bw) / 2;
    const cut = d != null && d > max;
    const hgt = d == null ? 3 : Math.max(2, H - bottom - y(Math.min(d, max)));
    const label = `${r.run_id}: ${r.status}, ${d == null ? 'no duration' : fmtDur(d)}${r.started_at ? `, ${fmtWhen(r.started_at)}` : ''}`;
    return s('a', { href: `#/runs/${r.run_id}`, 'aria-label': label, 'data-run-id': r.run_id },
      s('title', {}, label),
      s('rect', { class: 'bar', x: x.toFixed(1), y: (H - bottom - hgt).toFixed(1), width: bw.toFixed(1), height: hgt.toFixed(1), rx: 1.5, fill: colour(r.status), opacity: r.status === 'running' ? 0.6 : 1 }),
      cut ? s('path', { d: `M${x.toFixed(1)} ${(H - bottom - hgt + 5).toFixed(1)} l${bw.toFixed(1)} -3 v2 l-${bw.toFixed(1)} 3 z`, fill: 'var(--card)' }) : null);
  });
  const kids = [
    s('line', { x1: 0, x2: W, y1: H - bottom + 0.5, y2: H - bottom + 0.5, stroke: 'var(--border)' }),
    s('text', { x: left, y: 10 }, `${fmtDur(max)}`),
    ...bars,
  ];
  if (med != null) {
    const my = y(med);
    kids.push(s('line', { x1: 0, x2: W, y1: my, y2: my, stroke: 'var(--fg)', 'stroke-dasharray': '4 3', 'stroke-width': 1, opacity: 0.7, 'pointer-events': 'none' }),
      s('text', { x: W - right, y: Math.max(10, my - 3), 'text-anchor': 'end' }, `median ${fmtDur(med)}`));
  }
  kids.push(s('text', { x: left, y: H - 3 }, 'older'), s('text', { x: W - right, y: H - 3, 'text-anchor': 'end' }, 'newest'));
  const svg = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `Durations of the last ${runs.length} runs; median ${fmtDur(med)}` }, ...kids);
  const seen = [...new Set(runs.map((r) => r.status))];
  box.replaceChildren(svg, h('div', { class: 'legend' }, seen.map((st) => h('span', { style: `--c: ${colour(st)}` }, st)), h('span', { class: 'med' }, 'median')));
}
