/**
 * Building elements: `$` finds one, `h` makes an HTML element, `s` an SVG one, `badge` a
 * status badge; and writing them: `frameQueue` gathers what arrives between two animation
 * frames so that a view writes its DOM once a frame.
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

/**
 * Sets an element's text if it differs: writing the same text again still replaces the text
 * node, which costs the page a style and layout pass in a view drawn every frame.
 */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

export function badge(status, extra) {
  return h('span', { class: 'badge', 'data-status': status || 'pending', ...extra }, status || 'pending');
}

/**
 * Items applied once per animation frame: `push(item)` keeps one, `request()` asks for a frame
 * with or without one, and at the frame `apply(items)` gets everything pushed since the last,
 * in order (possibly none). However fast items come, the DOM is then written once a frame.
 *
 * A hidden tab gets no frames: a timer applies the queue within `wait` ms anyway, and at `max`
 * items it is applied at once, so it never grows without bound (nothing is lost; the writes
 * just go unpainted). The timer is set with each frame asked for, because the tab may hide
 * after the frame was. `cancel()` drops what is queued. The caller keeps the queue in
 * `state.js`, beside the view it feeds.
 */
export function frameQueue(apply, { max = 10000, wait = 1000 } = {}) {
  let items = [];
  let raf = 0;
  let timer = 0;
  const stop = () => { cancelAnimationFrame(raf); clearTimeout(timer); raf = timer = 0; };
  const run = () => {
    stop();
    const batch = items;
    items = [];
    apply(batch);
  };
  const request = () => {
    if (raf) return;
    raf = requestAnimationFrame(run);
    timer = setTimeout(run, wait);
  };
  return {
    push(item) {
      items.push(item);
      if (items.length >= max) run(); else request();
    },
    request,
    cancel() { stop(); items = []; },
  };
}
