// Time travel on a mission's page: step through its history, event by event, and see the
// mission as the log held it right after each one (`GET /api/missions/{id}?at_position=`,
// folded by the server from the events up to there). The event stepped to is marked in the
// timeline.

import { h, fill, api, badge, errorBox, fmtTime } from './lib.js';

/// A stepper over `events()` (the page's list, which grows live) for mission `missionId`;
/// `timeline` is the page's <ol> of events, one <li> per event in the same order.
export function stepper(missionId, events, timeline) {
  const state = h('div', { id: 'as-of', 'aria-live': 'polite' });
  const range = h('input', { type: 'range', id: 'step', min: 1, max: 1, value: 1, 'aria-label': 'event', oninput: () => show(Number(range.value)) });
  const label = h('span', { class: 'muted', id: 'step-label' });
  const back = h('button', { type: 'button', id: 'step-back', onclick: () => show(Number(range.value) - 1) }, '◀ Earlier');
  const next = h('button', { type: 'button', id: 'step-next', onclick: () => show(Number(range.value) + 1) }, 'Later ▶');
  const box = h('details', { class: 'stepper', id: 'stepper', ontoggle: () => { if (box.open) show(current ?? events().length); else mark(null); } },
    h('summary', {}, 'Step through its states'),
    h('div', { class: 'row' }, back, range, next, label),
    state);
  let pending = null;
  // The event stepped to (1-based); none until the stepper is first opened, at the last.
  let current = null;

  async function show(n) {
    const all = events();
    if (!all.length) return;
    n = Math.min(Math.max(n, 1), all.length);
    current = n;
    range.max = all.length;
    range.value = n;
    back.disabled = n === 1;
    next.disabled = n === all.length;
    const event = all[n - 1];
    fill(label, `event ${n} of ${all.length}: ${event.event_type} · #${event.global_position}`);
    mark(n - 1);
    // Only the last step asked for is drawn: an earlier answer arriving late is dropped.
    if (pending) pending.abort();
    pending = new AbortController();
    try {
      const v = await api('GET', `/api/missions/${encodeURIComponent(missionId)}?at_position=${event.global_position}`,
        undefined, { signal: pending.signal });
      fill(state, asOf(v));
    } catch (error) {
      if (error.name !== 'AbortError') fill(state, errorBox(error));
    }
  }

  function mark(index) {
    [...timeline.children].forEach((li, i) => li.classList.toggle('current', i === index));
  }

  return box;
}

/// The mission's state as of one event, in the words of its page.
function asOf(v) {
  const kv = (key, value) => [h('dt', {}, key), h('dd', {}, value)];
  return h('dl', { class: 'kv' },
    kv('as of', `#${v.as_of.position}, ${fmtTime(v.as_of.recorded_at)}`),
    kv('status', badge(v.status)),
    kv('attempt', `${v.attempt} of ${v.max_attempts}`),
    kv('worker', v.worker_id || '–'),
    kv('lease until', fmtTime(v.lease_expires_at)),
    v.due_at ? kv('due at', fmtTime(v.due_at)) : null,
    kv('errors', v.errors.length ? v.errors.map((e) => h('div', {}, `run ${e.run} · attempt ${e.attempt}: ${e.error}`)) : 'none'),
    v.waiting_for.length ? kv('waiting for', `${v.waiting_for.length} sub-missions`) : null,
    v.result !== null && v.result !== undefined ? kv('result', h('code', {}, JSON.stringify(v.result).slice(0, 200))) : null);
}
