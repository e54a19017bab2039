// What every page of the console shares: building DOM, calling the API, following the live
// feed, and formatting. Pages build elements with h() and text nodes only, never innerHTML,
// so nothing a mission or an agent carries is ever read as markup.

import { fmtNum } from './format.js';

/// Longest wait for one API answer before the page says it failed.
const REQUEST_TIMEOUT_MS = 15000;

/// An element: h('a', {href, class, onclick}, child, ...). Children are nodes, strings, numbers,
/// arrays of them, or null/false (skipped).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key === 'value') el.value = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/// Replaces everything inside `el`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/// A refusal or failure of the API, carrying the error body's code, message and field.
export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/// Calls the API: JSON in, JSON out; a non-2xx answer throws an ApiError with the server's
/// own message, so the page shows what a script would read. `accept`: other statuses whose
/// body is the answer (`/ready`'s 503); `headers`: more request headers (`If-Match`).
export async function api(method, path, body, { signal, accept = [], headers = {} } = {}) {
  const init = { method, headers: { ...headers, accept: 'application/json' } };
  // A change is sent as JSON even without a body: the server takes no other kind, so that a
  // page elsewhere cannot send one unasked.
  if (body !== undefined || method !== 'GET') init.headers['content-type'] = 'application/json';
  if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
  const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
  init.signal = signal ? AbortSignal.any([signal, timeout]) : timeout;
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (signal && signal.aborted) throw error;
    throw new ApiError(0, 'unreachable', `${method} ${path}: ${error.message}`);
  }
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON: reported below */ }
  if (!response.ok && !accept.includes(response.status)) {
    const e = (json && json.error) || {};
    // The session ended (expired, signed out elsewhere, key revoked): the shell asks again
    // (while no one is signed in, it is already asking, and pays this no heed).
    if (response.status === 401) {
      window.dispatchEvent(new CustomEvent('brain:signed-out', { detail: e.message }));
    }
    throw new ApiError(response.status, e.code || 'http_' + response.status,
      e.message || text || response.statusText, e.field);
  }
  return json;
}

/// The query string of the set entries of `params`.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

/// Runs `fn` at most once per `ms`, and once more after the last call: a burst of events
/// becomes one refresh now and one at its end, never one per event.
export function throttle(fn, ms) {
  let last = -Infinity, timer = null;
  const run = () => { timer = null; last = performance.now(); fn(); };
  const call = () => {
    if (timer) return;
    const wait = Math.max(0, last + ms - performance.now());
    timer = setTimeout(run, wait);
  };
  call.cancel = () => { clearTimeout(timer); timer = null; };
  return call;
}

/// Keeps a page drawn from a read model current. `load()` draws it and answers the log
/// position its read model reflected (or undefined). A burst of `filters`' events draws it
/// again, and again until that position has caught up with the feed: a read model may trail
/// the log, and a list drawn once from a trailing one would stay behind. Answers the stop.
/// `onEvent(message)`, if given, sees every message as well.
export async function follow(filters, load, setLive, { ms = 500, onEvent } = {}) {
  const position = await load();
  let feed = null;
  const refresh = throttle(async () => {
    const at = await load();
    if (at !== undefined && feed.last !== undefined && at < feed.last) refresh();
  }, ms);
  feed = new Feed(filters, position, (message) => { refresh(); if (onEvent) onEvent(message); }, setLive);
  return () => { feed.stop(); refresh.cancel(); };
}

/// Reconnect delays: doubling from the first to the last, then staying there.
const BACKOFF_MS = [250, 500, 1000, 2000, 5000, 10000];

/// The live event feed (`/ws/events`), resumed from the last position seen after every
/// disconnect: a dropped network, a server restart, a slow-consumer close or a laptop waking
/// from sleep all end in the same catch-up, so the page shows every event once, in order.
export class Feed {
  /// `params`: the feed's filters (stream_type, mission_id, stream_id, tokens). `from`: the
  /// last position already shown (undefined: live from now). `onEvent(message)` gets every
  /// parsed message; `onState(state, refusal)` 'connecting' | 'live' | 'waiting', or
  /// 'refused' with the server's ApiError when it will not serve this filter (the feed ends).
  constructor(params, from, onEvent, onState = () => {}) {
    this.params = params;
    this.last = from;
    this.onEvent = onEvent;
    this.onState = onState;
    this.failures = 0;
    this.stopped = false;
    this.socket = null;
    this.timer = null;
    this.wake = () => { if (!this.stopped && !this.socket) this.connect(); };
    this.visible = () => { if (document.visibilityState === 'visible') this.wake(); };
    window.addEventListener('online', this.wake);
    document.addEventListener('visibilitychange', this.visible);
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${location.host}/ws/events${query({ ...this.params, from: this.last })}`;
    this.onState('connecting');
    const socket = new WebSocket(url);
    this.socket = socket;
    let opened = false;
    socket.onopen = () => { opened = true; this.failures = 0; this.onState('live'); };
    socket.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.global_position !== undefined) {
        if (this.last !== undefined && event.global_position <= this.last) return;
        this.last = event.global_position;
      }
      this.onEvent(event);
    };
    socket.onclose = async (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      // The reason names the position every event up to which was dealt with.
      const resume = /from=(\d+)/.exec(close.reason || '');
      if (resume) this.last = Math.max(this.last || 0, Number(resume[1]));
      if (this.stopped) return;
      if (!opened) {
        const refusal = await this.refusal();
        if (this.stopped || this.socket || this.timer) return;
        if (refusal) {
          // Asking again would be refused again: the page shows why, and the feed ends.
          this.stop();
          this.onState('refused', refusal);
          return;
        }
      }
      this.onState('waiting');
      const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
      this.failures += 1;
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  /// Why the server refused the upgrade, if it refuses it for good (a bad filter, a position
  /// beyond the log): the browser hides a refused upgrade's answer from the page, so the
  /// same request is made over HTTP, which the server checks the same way before it would
  /// upgrade. A good request is answered `not_websocket` there; anything but a client error
  /// (the network, the server away) is worth a reconnect.
  async refusal() {
    try {
      await api('GET', `/ws/events${query({ ...this.params, from: this.last })}`);
    } catch (error) {
      if (!(error instanceof ApiError)) return null;
      const lasting = error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429;
      return lasting && error.code !== 'not_websocket' ? error : null;
    }
    return null;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener('online', this.wake);
    document.removeEventListener('visibilitychange', this.visible);
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000);
    }
  }
}

// Formatting (times with their zone, durations, numbers) and the display preferences live
// in format.js; pages import them from here.
export * from './format.js';

// Small pieces of page.

/// A link the console's router follows without a reload.
export function link(href, ...children) {
  return h('a', { href }, ...children);
}

/// The part of an id that tells it from its neighbours: a UUID's last 12 digits (a UUIDv7
/// starts with the time it was made, the same for everything made that minute), other ids
/// whole up to 24 characters.
export function shortId(id) {
  const text = String(id ?? '');
  if (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text)) return '…' + text.slice(-12);
  return text.length > 24 ? '…' + text.slice(-20) : text;
}

/// The console's page for a stream, if it has one.
export function streamHref(streamType, streamId) {
  const id = encodeURIComponent(streamId);
  switch (streamType) {
    case 'mission': return `/missions/${id}`;
    case 'agent': case 'agent_heartbeat': return `/agents/${id}`;
    case 'conversation': return `/chat/${id}`;
    default: return null;
  }
}

export function badge(text) {
  return h('span', { class: `badge s-${text}` }, text);
}

/// The kinds with missions waiting (ready or delayed) that no active agent serves, which
/// would otherwise wait in silence. `queues`: `GET /api/missions/health`'s `queues` (kind ->
/// {ready, delayed}); `agents`: the active agents (`GET /api/agents?state=active`).
export function unservedKinds(queues, agents) {
  const served = new Set(agents.map((a) => a.kind));
  return Object.entries(queues || {})
    .filter(([kind, q]) => (q.ready || 0) + (q.delayed || 0) > 0 && !served.has(kind))
    .map(([kind]) => kind)
    .sort();
}

/// Reads what unservedKinds needs and answers the kinds (empty when nothing is unserved).
export async function loadUnserved() {
  const [health, agents] = await Promise.all([
    api('GET', '/api/missions/health'),
    api('GET', '/api/agents' + query({ state: 'active', limit: 500 })),
  ]);
  return unservedKinds(health.queues, agents.agents);
}

/// The warning for unserved kinds ("no active agent serves `echo`"), or null for none.
export function unservedNote(kinds, id = 'unserved') {
  if (!kinds || !kinds.length) return null;
  return h('p', { class: 'error', id, role: 'status' },
    kinds.map((kind) => `no active agent serves \`${kind}\``).join('; '));
}

/// The message of a failed call, as the API gave it.
export function errorBox(error) {
  if (!error) return null;
  const where = error.field ? ` (${error.field})` : '';
  return h('p', { class: 'error', role: 'alert' },
    h('strong', {}, error.code || 'error'), where + ': ' + error.message);
}

/// A table: columns [{label, cell(row) -> node|string, class?, secondary?, actions?}], rows,
/// and what to say when there are none. On a narrow screen (a phone) the table keeps what
/// matters first: `secondary` columns are hidden there (app.css `.hide-narrow`), and an
/// `actions` column (the row's buttons) wraps its buttons rather than pushing them out of
/// view.
export function table(columns, rows, empty = 'Nothing here yet.') {
  if (!rows.length) return h('p', { class: 'muted' }, empty);
  const classOf = (c) => [c.class, c.secondary && 'hide-narrow', c.actions && 'actions'].filter(Boolean).join(' ') || null;
  return h('div', { class: 'scroll' }, h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: classOf(c) }, c.label)))),
    h('tbody', {}, rows.map((row) => h('tr', {},
      columns.map((c) => h('td', { class: classOf(c) }, c.cell(row))))))));
}

export function section(title, ...children) {
  return h('section', { class: 'card' }, h('h2', {}, title), ...children);
}

/// JSON, pretty-printed, for a <pre>.
export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/// Horizontal bars: [{label, value, text}], scaled to the largest.
export function bars(items, fmt = fmtNum) {
  if (!items.length) return h('p', { class: 'muted' }, 'No data in this window.');
  const max = Math.max(...items.map((i) => i.value), 1e-12);
  return h('div', { class: 'bars' }, items.map((item) => {
    const bar = h('span', { class: 'bar' });
    bar.style.width = `${(100 * item.value / max).toFixed(1)}%`;
    return h('div', { class: 'bar-row' },
      h('span', { class: 'bar-label', title: item.label }, item.label || '(none)'),
      h('span', { class: 'bar-track' }, bar),
      h('span', { class: 'bar-value' }, fmt(item.value)));
  }));
}

/// Asks for a reason in a modal dialog; resolves to the text, or null when cancelled.
export function askReason(title, confirmLabel) {
  return new Promise((resolve) => {
    const input = h('textarea', { name: 'reason', required: true, maxlength: 2000, rows: 3,
      placeholder: 'Why? (recorded in the history)' });
    const dialog = h('dialog', { class: 'reason' },
      h('form', { method: 'dialog' },
        h('h2', {}, title),
        h('label', {}, 'Reason', input),
        h('div', { class: 'row' },
          h('button', { type: 'submit', value: 'ok', class: 'primary' }, confirmLabel),
          h('button', { type: 'button', value: 'cancel', onclick: () => dialog.close('cancel') },
            'Cancel'))));
    dialog.addEventListener('close', () => {
      const text = input.value.trim();
      dialog.remove();
      resolve(dialog.returnValue === 'ok' && text ? text : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}
