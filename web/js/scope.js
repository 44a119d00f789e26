/**
 * Which pipeline the home view is about. With one pipeline it is that one, and every path is
 * the one-pipeline path of old (`/api/scheduler/...`, `/api/pipeline/run`), so the page is
 * what it always was. With several, `#/` is the overview (every pipeline, and all their runs)
 * and `#/pipelines/NAME` is one pipeline's page: its runs, schedule and trend, read with
 * `?pipeline=NAME` and through `/api/pipelines/NAME/...`.
 */

import { state } from './state.js';

/** A pipeline name as the configuration allows it (it is also a URL segment). */
export const PIPELINE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Whether the server serves several pipelines. */
export const multi = () => state.scope.names.length > 1;

/** The overview is shown: several pipelines, none open. */
export const onOverview = () => multi() && !state.scope.pipeline;

/** The pipeline the runs list and the trend are narrowed to ('' for none). */
export const runsPipeline = () => state.scope.pipeline || (multi() ? state.runs.pipeline : '');

/** `name` made safe for a path segment (names are already safe; this keeps it so). */
export const seg = (name) => encodeURIComponent(name);

/** The schedule route `action` (`status`, `enable`, `disable`) of the open pipeline. */
export const schedPath = (action) => (state.scope.pipeline
  ? `/api/pipelines/${seg(state.scope.pipeline)}/scheduler/${action}`
  : `/api/scheduler/${action}`);

/** The route that starts a run of the open pipeline. */
export const runPath = () => (state.scope.pipeline ? `/api/pipelines/${seg(state.scope.pipeline)}/run` : '/api/pipeline/run');

/** `params` (a URLSearchParams) narrowed to the open pipeline, or to the list's filter. */
export function withPipeline(params) {
  const p = runsPipeline();
  if (p) params.set('pipeline', p);
  return params;
}
