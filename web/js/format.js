/**
 * Time and text for display: the server-corrected clock (`now`), timestamps (`ts`),
 * durations, countdowns, dates, how a run was triggered and why a run ended as it did.
 * Pure functions of their arguments and the clock; nothing here touches the page.
 */

import { state } from './state.js';

/** The time now on the server's clock (ms since the epoch). */
export const now = () => Date.now() + state.clockSkew;

/** A timestamp as ms since the epoch, or NaN. */
export const ts = (v) => { if (!v) return NaN; return Date.parse(v); };

// Formatters are made once: `toLocaleTimeString(…, options)` makes one per call, which costs
// far more than the formatting (at 70 log rows a frame, most of the frame).
const CLOCK = new Intl.DateTimeFormat(undefined, { hourCycle: 'h23', hour: '2-digit', minute: '2-digit', second: '2-digit' });
const TIME = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const DAY = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
const DAY_YEAR = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', year: 'numeric' });
const COUNT = new Intl.NumberFormat();

/** A count with the reader's digit grouping: `12,345`. */
export const fmtCount = (n) => COUNT.format(n);

/** A time (ms since the epoch) as the time of day to the millisecond, `14:05:09.123`; '' for NaN. */
export function fmtClock(t) {
  if (Number.isNaN(t)) return '';
  const d = new Date(t);
  return `${CLOCK.format(d)}.${String(d.getMilliseconds()).padStart(3, '0')}`;
}

export function fmtDur(ms) {
  if (ms == null || !Number.isFinite(ms)) return '—';
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)}s`;
  if (s < 60) return `${Math.floor(s)}s`;
  const m = Math.floor(s / 60), rs = Math.floor(s % 60);
  if (m < 60) return `${m}m ${String(rs).padStart(2, '0')}s`;
  const hh = Math.floor(m / 60), rm = m % 60;
  if (hh < 48) return `${hh}h ${String(rm).padStart(2, '0')}m`;
  return `${Math.floor(hh / 24)}d ${hh % 24}h`;
}

export function fmtCountdown(ms) {
  if (ms <= 0) return 'due now';
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `in ${s}s`;
  const m = Math.floor(s / 60), rs = s % 60;
  if (m < 60) return `in ${m}m ${String(rs).padStart(2, '0')}s`;
  const hh = Math.floor(m / 60);
  if (hh < 48) return `in ${hh}h ${String(m % 60).padStart(2, '0')}m`;
  return `in ${Math.floor(hh / 24)}d ${hh % 24}h`;
}

export function fmtWhen(v) {
  const t = ts(v);
  if (Number.isNaN(t)) return v ? String(v) : '—';
  const d = new Date(t), today = new Date(now());
  const time = TIME.format(d);
  if (d.toDateString() === today.toDateString()) return time;
  const day = d.getFullYear() !== today.getFullYear() ? DAY_YEAR : DAY;
  return `${day.format(d)} ${time.slice(0, 5)}`;
}

export function fmtAgo(v) {
  const t = ts(v);
  if (Number.isNaN(t)) return '';
  const d = now() - t;
  if (d < 0) return fmtCountdown(-d);
  // "just now" only while it is true; then seconds ("56s ago"), minutes, hours, days.
  if (d < 10e3) return 'just now';
  return `${fmtDur(d).split(' ')[0]} ago`;
}

export function fullTime(v) { const t = ts(v); return Number.isNaN(t) ? '' : new Date(t).toString(); }

/** How a run was started, from its `source`. */
export function trigger(source) {
  const src = (source || '').toLowerCase();
  if (!src) return '—';
  if (src.includes('catch')) return 'catch-up';
  if (src === 'scheduler' || src === 'windows_scheduler' || src.includes('schedul') || src.includes('timer') || src === 'cron') return 'scheduled';
  if (src === 'manual') return 'manual';
  if (src === 'cli') return 'cli';
  return source;
}

const REASONS = {
  overlap: 'another run was still going (overlap policy)',
  needs_failed: 'a stage it needs did not succeed',
  stage_failed: 'a stage failed',
  replaced: 'a newer run replaced it (overlap policy)',
  user: 'by a user', interrupted: 'the runner was interrupted (a signal or Ctrl-C)',
  journal: 'its run file could not be written',
  engine_unreachable: 'the cluster engine could not be reached',
  timeout: 'timed out', exit: 'non-zero exit', signal: 'killed by a signal', spawn: 'could not start',
};

/**
 * How a stage ended, in words, where that says more than its status: its exit code, a
 * timeout, the signal, why it was skipped or cancelled ('' for a success or a stage going on).
 */
export function stageOutcome(s) {
  if (!s || s.status === 'success' || s.status === 'running' || s.status === 'pending') return '';
  switch (s.reason) {
    case 'timeout': return 'timed out';
    case 'signal': return s.signal != null ? `killed by signal ${s.signal}` : 'killed by a signal';
    case 'spawn': return 'could not start';
    case 'needs_failed': return s.needs ? `${s.needs} did not succeed` : 'a stage it needs did not succeed';
    case 'run_stopped': return 'the run stopped first';
    case 'reused': return 'reused from an earlier run';
    case 'not_selected': return 'not selected';
    case 'user': return 'cancelled by a user';
    case 'interrupted': return 'the runner was interrupted';
    case 'replaced': return 'replaced by a newer run';
    default:
      if (s.exit_code != null) return `exit code ${s.exit_code}`;
      return s.reason ? (REASONS[s.reason] || s.reason) : '';
  }
}

/** The stages a failed run names: its `failed_stages`, with how each failed where known. */
function failedStages(r) {
  const stages = Array.isArray(r.stages) ? r.stages : [];
  const names = Array.isArray(r.failed_stages) && r.failed_stages.length ? r.failed_stages : stages.filter((s) => s.status === 'failure').map((s) => s.name);
  return names.map((n) => {
    const how = stageOutcome(stages.find((s) => s.name === n));
    return how ? `${n} (${how})` : n;
  }).join(', ');
}

/** Why a run is in its status, in words, where that needs saying ('' otherwise). */
export function explain(r) {
  const reason = r.reason ? (REASONS[r.reason] || r.reason) : '';
  const failed = r.status === 'failure' && r.reason !== 'timeout' ? failedStages(r) : '';
  switch (r.status) {
    case 'missed': return `No run happened for the occurrence scheduled for ${r.scheduled_for ? fmtWhen(r.scheduled_for) : 'this time'}${reason ? ` — ${reason}` : ' (the machine was off or the task did not start)'}`;
    case 'skipped': return `Not started: ${reason || 'skipped'}${r.scheduled_for ? ` · scheduled for ${fmtWhen(r.scheduled_for)}` : ''}`;
    case 'abandoned': return `The runner stopped without a final event${reason ? ` (${reason})` : ' (killed, crashed or the machine went down)'}`;
    case 'failure': return failed ? `Failed: ${failed}` : (reason ? `Failed: ${reason}` : '');
    // A cancel request's own text may repeat the status ("cancelled by …"): said once.
    case 'cancelled': return reason ? `Cancelled: ${reason.replace(/^cancelled\s+/i, '')}` : '';
    default: return r.scheduled_for ? `scheduled for ${fmtWhen(r.scheduled_for)}` : '';
  }
}
