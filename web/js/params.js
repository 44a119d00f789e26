/**
 * The parameters form "Run now" opens when the open pipeline declares parameters
 * (`[pipeline.params]`, listed by `/api/pipelines/NAME`): a field per parameter — a choice
 * list where the values are fixed, a text field otherwise — filled with its default. The
 * server checks the values again and says what is wrong; the form shows that and stays open.
 */

import { state } from './state.js';
import { $, h } from './dom.js';
import { api } from './api.js';
import { seg } from './scope.js';

/** The declared parameters of each pipeline read so far, by name. */
const declared = new Map();

/** The pipeline "Run now" starts: the open one, or the only one. */
const pipelineName = () => state.scope.pipeline || state.scope.names[0] || '';

/** The open pipeline's declared parameters (none when they cannot be read: "Run now" then
 * starts a run with the defaults, as it always did). */
export async function paramsOfPipeline() {
  const name = pipelineName();
  if (!name) return [];
  if (!declared.has(name)) {
    try {
      const p = await api(`/api/pipelines/${seg(name)}`);
      declared.set(name, Array.isArray(p.params) ? p.params : []);
    } catch {
      return [];
    }
  }
  return declared.get(name);
}

/** Shows the form for `params`; `start(values)` is called on submit with `{name: value}`. */
export function openParamsForm(params, start) {
  const form = $('#params-form');
  const fields = params.map((p) => {
    const id = `param-${p.name}`;
    const input = Array.isArray(p.choices) && p.choices.length
      ? h('select', { id, name: p.name }, ...p.choices.map((c) => h('option', { value: c, selected: c === p.default ? '' : null }, c)))
      : h('input', { id, name: p.name, type: 'text', value: p.default, autocomplete: 'off' });
    return h('div', { class: 'param' },
      h('label', { for: id, class: 'mono' }, p.name),
      input,
      p.description ? h('span', { class: 'desc muted' }, p.description) : null);
  });
  $('#params-fields').replaceChildren(...fields);
  form.hidden = false;
  form.onsubmit = (ev) => {
    ev.preventDefault();
    const values = {};
    for (const p of params) {
      const el = form.elements.namedItem(p.name);
      if (el) values[p.name] = el.value;
    }
    start(values);
  };
  const first = form.querySelector('select, input');
  if (first) first.focus();
}

export function closeParamsForm() {
  $('#params-form').hidden = true;
}

export function initParams() {
  $('#params-cancel').addEventListener('click', closeParamsForm);
}
