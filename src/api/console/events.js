// Event feed: the live log, filtered by stream type and mission, paused and resumed from a
// position. Built to stay smooth at thousands of events a second, it is a virtual list:
// - messages go into an array of the newest ROWS_MAX events (trimmed in steps, not one by
//   one) and nothing else happens per message;
// - once per animation frame at most, the rows in view are drawn into a small pool of row
//   elements that is reused (a row's cells only get new text). The page holds ~40 rows
//   however many are kept, so a frame costs the same at ten events a second or ten
//   thousand. A list of real rows, even with `content-visibility`, cost the browser a walk
//   over every row on every frame (about 0.8 s of main thread a second at 1,000 events/s);
// - rows have one fixed height (ROW_PX, and `.feed-row` in app.css), which is what lets a
//   scroll position name a row without measuring anything;
// - scrolled down to read, the view stays on the rows being read while new ones arrive
//   (Newest goes back to the top, which at a high rate no wheel can reach);
// - the counters above are rewritten a few times a second, not on every frame.
// Pausing closes the socket and remembers the last position received, so resuming asks the
// server for exactly what followed. Each row names its stream by the end of its id (a
// UUIDv7's start is its minute) and links to its mission, agent or conversation. A filter the
// server refuses ends the feed with the server's message (`Feed` reads it); the counters
// count from zero with each filter.

import { h, fill, query, Feed, throttle, section, errorBox, fmtNum, fmtClock, shortId, streamHref } from './lib.js';

/// Events kept to scroll through (up to a quarter more between trims); older ones are
/// dropped as new ones arrive.
const ROWS_MAX = 2000;
/// A row's height in CSS pixels: `.feed-row` in app.css says the same.
const ROW_PX = 21;
/// Rows drawn beyond the edges of the view, so a quick scroll does not show blanks.
const ROWS_SPARE = 8;
/// How often the counters above the log are rewritten.
const COUNT_EVERY_MS = 250;
const COLUMNS = ['position', 'time', 'event', 'stream', 'summary'];
const STREAM_TYPES = ['mission', 'agent', 'agent_heartbeat', 'llm_config', 'llm_call', 'conversation'];

export async function render(main, _params, shell) {
  const params = new URLSearchParams(location.search);
  const types = h('input', { name: 'stream_type', value: params.get('stream_type') || '', placeholder: 'all', list: 'stream-types', size: 18 });
  const mission = h('input', { name: 'mission_id', value: params.get('mission_id') || '', placeholder: 'any', size: 36 });
  const from = h('input', { name: 'from', type: 'number', min: 0, value: params.get('from') || '', placeholder: 'now', size: 10 });
  const pause = h('button', { type: 'button', id: 'pause', onclick: toggle }, 'Pause');
  const newest = h('button', { type: 'button', id: 'newest', onclick: () => { box.scrollTop = 0; schedule(); } }, 'Newest');
  const counters = h('span', { class: 'muted', id: 'feed-stats', 'aria-live': 'off' });
  const error = h('div', { 'aria-live': 'polite' });
  const rows = h('div', { id: 'feed-rows', class: 'feed-window', role: 'rowgroup' });
  const space = h('div', { class: 'feed-space' }, rows);
  const box = h('div', { class: 'feed-box', tabindex: 0, role: 'table', 'aria-label': 'Events, newest first', onscroll: schedule },
    h('div', { class: 'feed-row feed-head', role: 'row' },
      COLUMNS.map((c) => h('span', { role: 'columnheader', class: `c-${c}` }, c))),
    space);
  const form = h('form', { class: 'row', onsubmit: (e) => { e.preventDefault(); restart(); } },
    h('label', {}, 'Stream types (comma-separated)', types,
      h('datalist', { id: 'stream-types' }, STREAM_TYPES.map((t) => h('option', { value: t })))),
    h('label', {}, 'Mission', mission),
    h('label', {}, 'From position', from),
    h('button', { type: 'submit', class: 'primary' }, 'Apply'), pause, newest);
  fill(main, h('h1', {}, 'Event feed', counters), section('Live log', form, error, box));

  let feed = null;
  /// The newest events, oldest first; the view shows them newest first.
  let kept = [];
  /// Events received since the last draw.
  let fresh = 0;
  let frame = 0;
  let paused = false;
  let last;
  const stats = { received: 0, drawn: 0, skipped: 0 };
  window.__feedStats = stats;

  function filters() {
    return { stream_type: types.value.trim().replace(/\s+/g, ''), mission_id: mission.value.trim() };
  }

  const count = throttle(() => {
    counters.textContent = `${fmtNum(stats.received)} received · ${fmtNum(stats.skipped)} not drawn (kept to scroll to) · last ${fmtNum(last ?? 0)}`;
  }, COUNT_EVERY_MS);

  function schedule() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function start(position) {
    count();
    feed = new Feed(filters(), position, (message) => {
      if (message.global_position === undefined) return;
      stats.received++;
      fresh++;
      last = message.global_position;
      kept.push(message);
      // Trimmed in steps of a quarter, so dropping the oldest is not a copy per message.
      if (kept.length > ROWS_MAX * 1.25) kept = kept.slice(-ROWS_MAX);
      schedule();
    }, (state, refusal) => {
      shell.setLive(state);
      if (state === 'refused') {
        // The server will not serve this filter: its own words, and nothing more is asked.
        feed = null;
        fill(error, errorBox(refusal));
      } else if (state === 'waiting') fill(error, h('p', { class: 'muted' }, 'Reconnecting…'));
      else fill(error);
    });
  }

  function draw() {
    frame = 0;
    const added = Math.min(fresh, kept.length);
    fresh = 0;
    space.style.height = `${kept.length * ROW_PX}px`;
    // Reading below the top row, the view follows the rows it shows down as new ones arrive.
    if (added && box.scrollTop >= ROW_PX) box.scrollTop += added * ROW_PX;
    const first = Math.max(0, Math.floor(box.scrollTop / ROW_PX) - ROWS_SPARE);
    // None when the view is below the end (the kept rows were cleared or trimmed under it).
    const shown = Math.max(0, Math.min(kept.length - first, Math.ceil(box.clientHeight / ROW_PX) + 2 * ROWS_SPARE));
    // The new events are the first `added` rows: those in the drawn window were drawn, the
    // others (a reader below, or more than a frame can show) are kept to scroll to.
    const inView = Math.max(0, Math.min(added, first + shown) - first);
    stats.drawn += inView;
    stats.skipped += added - inView;
    rows.style.transform = `translateY(${first * ROW_PX}px)`;
    while (rows.childElementCount < shown) rows.append(ROW.cloneNode(true));
    while (rows.childElementCount > shown) rows.lastElementChild.remove();
    for (let i = 0; i < shown; i++) fillRow(rows.children[i], kept[kept.length - 1 - first - i]);
    count();
  }

  function stop() {
    if (feed) { feed.stop(); feed = null; }
    cancelAnimationFrame(frame);
    frame = 0;
    draw();
  }

  function restart() {
    stop();
    kept = [];
    fresh = 0;
    // The counters count what this filter received, from zero.
    stats.received = 0;
    stats.drawn = 0;
    stats.skipped = 0;
    fill(error);
    box.scrollTop = 0;
    draw(); // the old filter's rows go at once, whether or not anything new arrives
    const position = from.value === '' ? undefined : Number(from.value);
    shell.setPath('/events' + query({ ...filters(), from: from.value }));
    paused = false;
    pause.textContent = 'Pause';
    last = position;
    start(position);
  }

  function toggle() {
    if (!paused) {
      stop();
      paused = true;
      pause.textContent = `Resume from ${fmtNum(last ?? 0)}`;
      from.value = last ?? '';
      shell.setLive('paused');
    } else {
      paused = false;
      pause.textContent = 'Pause';
      start(last);
    }
  }

  const position = from.value === '' ? undefined : Number(from.value);
  last = position;
  start(position);
  return () => { stop(); count.cancel(); delete window.__feedStats; };
}

const ROW = h('div', { class: 'feed-row', role: 'row' },
  COLUMNS.map((c) => h('span', { role: 'cell', class: `c-${c}` }, c === 'stream' ? h('a') : null)));

/// Writes one event into a pooled row; a row already showing it is left alone.
function fillRow(row, event) {
  if (row.__position === event.global_position) return;
  row.__position = event.global_position;
  const [position, time, type, stream, summary] = row.children;
  position.textContent = event.global_position;
  time.textContent = fmtClock(event.recorded_at);
  type.textContent = event.event_type;
  // The end of the id, which tells UUIDv7s apart (their start is the time they were made),
  // linking to the mission, agent or conversation the event belongs to.
  const a = stream.firstChild;
  a.textContent = `${event.stream_type} ${shortId(event.stream_id)}`;
  a.title = `${event.stream_type}/${event.stream_id}`;
  const href = streamHref(event.stream_type, event.stream_id);
  if (href) a.href = href;
  else a.removeAttribute('href');
  summary.textContent = summarise(event);
  summary.title = summary.textContent;
}

function summarise(event) {
  const text = JSON.stringify(event.payload);
  return text.length > 240 ? text.slice(0, 240) + '…' : text;
}
