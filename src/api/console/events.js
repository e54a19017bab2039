// Event feed: the live log, filtered by stream type and mission, paused and resumed from a
// position. Built to stay responsive at thousands of events a second: messages only go into
// a buffer; one animation frame at a time drains it, drawing at most ROWS_PER_FRAME rows and
// keeping at most ROWS_MAX in the page. Pausing closes the socket and remembers the last
// position drawn, so resuming asks the server for exactly what followed.

import { h, fill, query, Feed, section, fmtNum } from './lib.js';

/// Rows kept in the page; older ones are removed as new ones arrive.
const ROWS_MAX = 500;
/// Rows drawn per frame; a larger backlog is skipped over to the newest (and counted).
const ROWS_PER_FRAME = 200;
/// Messages held between frames before the oldest are skipped.
const BUFFER_MAX = 5000;
const STREAM_TYPES = ['mission', 'agent', 'agent_heartbeat', 'llm_config', 'llm_call', 'conversation'];

export async function render(main, _params, shell) {
  const params = new URLSearchParams(location.search);
  const types = h('input', { name: 'stream_type', value: params.get('stream_type') || '', placeholder: 'all', list: 'stream-types', size: 18 });
  const mission = h('input', { name: 'mission_id', value: params.get('mission_id') || '', placeholder: 'any', size: 36 });
  const from = h('input', { name: 'from', type: 'number', min: 0, value: params.get('from') || '', placeholder: 'now', size: 10 });
  const pause = h('button', { type: 'button', id: 'pause', onclick: toggle }, 'Pause');
  const counters = h('span', { class: 'muted', id: 'feed-stats', 'aria-live': 'off' });
  const error = h('div', { 'aria-live': 'polite' });
  const body = h('tbody', { id: 'feed-rows' });
  const form = h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); restart(); } },
    h('label', {}, 'Stream types (comma-separated)', types,
      h('datalist', { id: 'stream-types' }, STREAM_TYPES.map((t) => h('option', { value: t })))),
    h('label', {}, 'Mission', mission),
    h('label', {}, 'From position', from),
    h('button', { type: 'submit', class: 'primary' }, 'Apply'), pause);
  fill(main, h('h1', {}, 'Event feed', counters),
    section('Live log', form, error,
      h('div', { class: 'scroll' }, h('table', { class: 'feed' },
        h('thead', {}, h('tr', {}, ['position', 'time', 'stream', 'event', 'summary'].map((c) => h('th', {}, c)))),
        body))));

  let feed = null;
  let buffer = [];
  let frame = 0;
  let paused = false;
  let shownLast;
  const stats = { received: 0, drawn: 0, skipped: 0 };
  window.__feedStats = stats;

  function filters() {
    return { stream_type: types.value.trim().replace(/\s+/g, ''), mission_id: mission.value.trim() };
  }

  function count() {
    counters.textContent = `${fmtNum(stats.received)} received · ${fmtNum(stats.skipped)} skipped in the view · last ${fmtNum(shownLast ?? 0)}`;
  }

  function start(position) {
    count();
    const f = filters();
    feed = new Feed(f, position, (message) => {
      if (message.global_position === undefined) return;
      stats.received++;
      buffer.push(message);
      if (buffer.length > BUFFER_MAX) { stats.skipped += buffer.length - BUFFER_MAX; buffer = buffer.slice(-BUFFER_MAX); }
      if (!frame) frame = requestAnimationFrame(draw);
    }, (state) => { shell.setLive(state); if (state === 'waiting') fill(error, h('p', { class: 'muted' }, 'Reconnecting…')); else fill(error); });
  }

  function draw() {
    frame = 0;
    let batch = buffer;
    buffer = [];
    if (batch.length > ROWS_PER_FRAME) { stats.skipped += batch.length - ROWS_PER_FRAME; batch = batch.slice(-ROWS_PER_FRAME); }
    const rows = document.createDocumentFragment();
    for (const event of batch) rows.prepend(row(event));
    body.prepend(rows);
    while (body.childElementCount > ROWS_MAX) body.lastElementChild.remove();
    stats.drawn += batch.length;
    if (batch.length) shownLast = batch[batch.length - 1].global_position;
    count();
  }

  function stop() {
    if (feed) { feed.stop(); feed = null; }
    cancelAnimationFrame(frame);
    frame = 0;
    if (buffer.length) draw();
  }

  function restart() {
    stop();
    body.replaceChildren();
    const position = from.value === '' ? undefined : Number(from.value);
    shell.setPath('/events' + query({ ...filters(), from: from.value }));
    paused = false;
    pause.textContent = 'Pause';
    start(position);
  }

  function toggle() {
    if (!paused) {
      // Everything received is drawn first, so the position resumed from is the one shown.
      const last = feed ? feed.last : shownLast;
      stop();
      paused = true;
      shownLast = last;
      pause.textContent = `Resume from ${fmtNum(last ?? 0)}`;
      from.value = last ?? '';
      shell.setLive('paused');
    } else {
      paused = false;
      pause.textContent = 'Pause';
      start(shownLast);
    }
  }

  start(from.value === '' ? undefined : Number(from.value));
  return () => { stop(); delete window.__feedStats; };
}

function row(event) {
  return h('tr', {},
    h('td', { class: 'num' }, event.global_position),
    h('td', {}, new Date(event.recorded_at).toLocaleTimeString('en-GB')),
    h('td', {}, `${event.stream_type}/${event.stream_id.slice(0, 8)}`),
    h('td', {}, event.event_type),
    h('td', { class: 'summary' }, summarise(event)));
}

function summarise(event) {
  const text = JSON.stringify(event.payload);
  return text.length > 160 ? text.slice(0, 160) + '…' : text;
}
