/**
 * Building elements: `$` finds one, `h` makes an HTML element, `s` an SVG one, `badge` a
 * status badge.
 *
 * Attributes are set as given; `style` goes through the CSSOM (`el.style.cssText`) because
 * the page's Content-Security-Policy refuses style attributes; `on…` keys add listeners;
 * children that are null or false are left out and strings become text (never HTML).
 */

export const $ = (sel) => document.querySelector(sel);

export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  for (const k of kids.flat()) if (k != null && k !== false) el.append(k instanceof Node ? k : String(k));
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
export function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  for (const k of kids.flat()) if (k != null && k !== false) el.append(k instanceof Node ? k : String(k));
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'class') el.setAttribute('class', v);
    else if (k === 'text') el.textContent = v;
    else if (k === 'style') el.style.cssText = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
}

export function badge(status, extra) {
  return h('span', { class: 'badge', 'data-status': status || 'pending', ...extra }, status || 'pending');
}
