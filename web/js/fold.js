/**
 * The run fold: a run's events → the run and its stages, as `/api/runs/{run_id}` shows them.
 *
 * This is the server's index fold (`src/index/fold.rs`: `RunFold::apply`,
 * `RunRow::apply_run_event`, `Stages::apply`), written once for the page, so a run's page moves with each live event
 * between two reads of the run. The statuses and the events that end a run or a stage come
 * from the server (`statuses.js`, generated from the Rust constants), and the browser test
 * `the_page_fold_agrees_with_the_index` folds runs of every shape here and compares the result
 * with the API: if one side changes, that test says so.
 *
 * Only what the server alone knows is missing: `abandoned` (the runner's lock is gone) and
 * the start time a notification announced. Callers drop events they have already folded
 * (by `seq`), as the index does.
 */

import { PIPELINE_STAGE, RUNNING, RUN_FINAL_EVENTS, STAGE_FINAL_EVENTS } from './statuses.js';

/** A run no event has been folded into. */
export function emptyRun(runId) {
  return { run_id: runId, pipeline: null, status: null, source: null, started_at: null, finished_at: null, duration_ms: null, events: 0, stages: [] };
}

/** The run `events` (in `seq` order) make. */
export function foldEvents(runId, events) {
  const run = emptyRun(runId);
  for (const e of events) foldEvent(run, e);
  return run;
}

/** Folds one event into `run` (an `emptyRun` or a run read from the API). */
export function foldEvent(run, e) {
  const data = e.data && typeof e.data === 'object' && !Array.isArray(e.data) ? e.data : {};
  // The run's first event: the index counts events; every event sets a missing start.
  const first = run.started_at == null;
  if (first) run.started_at = e.timestamp;
  if (run.status == null) run.status = RUNNING;
  if (run.pipeline == null && e.pipeline != null) run.pipeline = e.pipeline;
  if (run.source == null && e.source != null) run.source = e.source;
  run.events = (run.events || 0) + 1;
  // An error: level `error`, or a `failure` of a writer that gives no level.
  const error = e.level == null ? e.event === 'failure' : e.level === 'error';
  if (run.first_error_seq == null && error && isInt(e.seq)) run.first_error_seq = e.seq;
  if (e.stage === PIPELINE_STAGE) foldRunEvent(run, e, data, first);
  else foldStageEvent(run, e, data);
}

function foldRunEvent(run, e, data, first) {
  if (e.event === 'start') {
    // A start never undoes a final status; as the file's first line it is the real start.
    if (e.seq === 0) run.started_at = e.timestamp;
  } else if (e.event === 'missed') {
    run.status = e.event;
    run.finished_at = e.timestamp;
    run.reason = str(data.reason);
    run.duration_ms = isInt(data.duration_ms) ? unsigned(data.duration_ms) : null;
    run.scheduled_for = str(data.scheduled_for);
    // Nothing else happened in this run: it belongs where it was due.
    if (first && run.scheduled_for != null) run.started_at = run.scheduled_for;
  } else if (RUN_FINAL_EVENTS.includes(e.event)) {
    run.status = e.event;
    run.finished_at = e.timestamp;
    run.reason = str(data.reason);
    run.duration_ms = isInt(data.duration_ms) ? unsigned(data.duration_ms) : elapsedMs(run.started_at, e.timestamp);
    const failed = Array.isArray(data.failed_stages) ? data.failed_stages.filter((x) => typeof x === 'string') : [];
    if (failed.length) run.failed_stages = failed; else delete run.failed_stages;
  }
}

function foldStageEvent(run, e, data) {
  let st = run.stages.find((x) => x.name === e.stage);
  if (!st) {
    // Any event names a stage into being, in the order stages are first seen.
    st = { name: e.stage, status: RUNNING, started_at: null, finished_at: null, duration_ms: null, attempts: 0, exit_code: null, reason: null, signal: null, needs: null };
    run.stages.push(st);
  }
  if (e.event === 'start') {
    st.status = RUNNING;
    st.attempts = Math.max(st.attempts, isInt(data.attempt) ? data.attempt : st.attempts + 1);
    if (st.started_at == null) st.started_at = e.timestamp;
    st.finished_at = null;
    st.duration_ms = null;
    st.exit_code = st.reason = st.signal = st.needs = null;
  } else if (STAGE_FINAL_EVENTS.includes(e.event)) {
    st.status = e.event;
    st.finished_at = e.timestamp;
    // From the first attempt's start to the end, retries included; else as the event says.
    st.duration_ms = elapsedMs(st.started_at, e.timestamp) ?? (isInt(data.duration_ms) ? unsigned(data.duration_ms) : null);
    st.exit_code = isInt(data.exit_code) ? data.exit_code : null;
    st.reason = str(data.reason);
    st.signal = isInt(data.signal) ? data.signal : null;
    st.needs = str(data.needs);
    if (isInt(data.attempt)) st.attempts = Math.max(st.attempts, data.attempt);
  }
  // `log`, `retry` and names other tools use: the stage goes on as it was.
}

const isInt = (v) => Number.isSafeInteger(v);
const str = (v) => (typeof v === 'string' ? v : null);
/** The API's durations are unsigned: a negative one reads as none. */
const unsigned = (v) => (v >= 0 ? v : null);

/** As the index parses timestamps: RFC 3339, or naive date-times taken as UTC. */
function parseTimestamp(v) {
  if (typeof v !== 'string') return NaN;
  const naive = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2}(?:\.\d+)?)$/.exec(v);
  if (naive) return Date.parse(`${naive[1]}T${naive[2]}Z`);
  return /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$/.test(v) ? Date.parse(v.toUpperCase().replace(' ', 'T')) : NaN;
}

/** Milliseconds from `start` to `end`, if both parse and `end` is not earlier. */
function elapsedMs(start, end) {
  const ms = parseTimestamp(end) - parseTimestamp(start);
  return Number.isNaN(ms) || ms < 0 ? null : ms;
}
