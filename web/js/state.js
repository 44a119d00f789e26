/**
 * The page's state, all of it, in one place.
 *
 * Every module reads and changes these objects; no module keeps mutable state of its own
 * (constants and element look-ups aside). The views render from here, so what the page shows
 * is always explained by what is in here. Timers live here too: a view that schedules work
 * keeps the timer beside the data it refreshes, so closing a view can cancel it.
 */

export const state = {
  /** Server time minus local time (ms), from the `Date` header when the two are far apart. */
  clockSkew: 0,
  /** A request was refused (401): the login form shows and streams wait for the sign-in. */
  authNeeded: false,
  /** Set once the page has booted (intervals and window listeners are installed once). */
  booted: false,

  /** The connection indicator: the all-runs stream and, on a run's page, that run's stream. */
  conn: { global: 'connecting', run: null },
  /** Every label the indicator showed, in order (the browser tests read it). */
  connHistory: [],
  /** The all-runs stream (`stream.js`) feeding the runs list. */
  globalStream: null,

  /**
   * The pipelines the server serves (`/api/health`'s `pipelines`: with one, the page is the
   * one pipeline's as it always was), whether that answer is in (`ready`: the home view's
   * reads wait for it), and the one the home view is narrowed to (`#/pipelines/NAME`; null on
   * `#/`).
   */
  scope: { names: [], ready: false, pipeline: null },

  /** The overview of several pipelines: their summaries, the rows built, live re-reads. */
  pipes: {
    list: [],
    /** pipeline name → its `<li>`, reused while its summary has not changed. */
    rows: new Map(),
    /** Bumped by each full read, so an older answer arriving late is dropped. */
    gen: 0,
    loaded: false,
    /** Pipelines touched by live events, re-read together (throttled). */
    pending: new Set(),
    pendingTimer: null,
    /** Pipelines whose switch or "Run now" is waiting for the server. */
    busy: new Set(),
  },

  /** The runs list: what is shown, its filters and paging, and the rows already built. */
  runs: {
    list: [],
    filter: '',
    /** The pipeline filter of the list of all pipelines' runs ('' for all). */
    pipeline: '',
    exhausted: false,
    loading: false,
    /** run id → its `<li>`, reused while the run has not changed. */
    rows: new Map(),
    /** Bumped by each refresh, so an older answer arriving late is dropped. */
    gen: 0,
    /** Runs touched by live events, re-read from the API together. */
    pending: new Set(),
    pendingTimer: null,
    /** The `cursor` of the last frame of the all-runs stream: a reconnect resumes after it. */
    cursor: null,
    /**
     * Every host the runs read so far ran on ('' for a run that names none): with more than
     * one, the list has a Host column. It only grows while the page stays on one scope, so
     * a status filter does not make the column come and go.
     */
    hosts: new Set(),
  },

  /** The duration trend: the last 50 runs. */
  trend: { list: [], timer: null },

  /** The schedule panel. */
  sched: { status: null, error: null, busy: false, timer: null },

  /**
   * The Alerts view (`#/alerts`): the destinations and the history as last read, their read
   * errors, the refresh timer while the view is open, and each destination's Test: those
   * waiting for the server, and the last outcome by name.
   */
  alerts: {
    open: false,
    loaded: false,
    destinations: [],
    list: [],
    destError: null,
    listError: null,
    /** Bumped by each read, so an older answer arriving late is dropped. */
    gen: 0,
    timer: null,
    testing: new Set(),
    tests: new Map(),
  },

  /** How a run's page shows its stages: `timeline` or `graph` (the address's `?view=`). */
  runView: 'timeline',
  /** The open run (see `newRun` in `run.js`), or null on the runs list. */
  run: null,
  /** The run log's filters. */
  filt: { stage: '', stream: '', level: '', text: '' },
  /** The run log's scrolling: whether the next scroll event is the page's own. */
  log: { autoScrolling: false, searchTimer: null },

  /** `?transport=sse` forces the Server-Sent Events stream for a run (tests, proxies). */
  forcedTransport: new URLSearchParams(location.search).get('transport'),
};
