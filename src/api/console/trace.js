// A mission's run as a trace: one row per span on a shared time axis (the wait in the queue,
// each attempt, each model call with its tokens, cost and latency, each tool call with its
// arguments and result, the sub-missions it waited for), each row opening to the whole of
// what was sent and answered. Built from the mission's own events, so it reads the same
// live and after the fact; a model call can be the point a fork starts from.

import { h, badge, link, fmtMs, fmtNum, fmtUsd, fmtTime } from './lib.js';

/// Events that end an attempt, and the outcome each gives it.
const ENDS = {
  MissionCompleted: 'completed',
  MissionAttemptFailed: 'failed',
  MissionLeaseExpired: 'lease expired',
  MissionReleased: 'released',
  MissionSuspended: 'suspended',
  MissionCancelled: 'cancelled',
};

/// An event's own fields, whether the payload carries the variant's name or not.
export function payload(event) {
  const p = event.payload || {};
  return p[event.event_type] ?? p;
}

/// The spans of a history, in order: [{kind, label, start, end, depth, ...}] with times in ms.
export function spans(events, now = Date.now()) {
  const out = [];
  const at = (event) => new Date(event.recorded_at).getTime();
  if (!events.length) return out;
  const enqueued = at(events[0]);
  let run = 1;
  let open = null; // the attempt being run
  const steps = new Map(); // "run/attempt" -> model calls so far (an attempt resumed goes on)
  const firstStart = events.find((e) => e.event_type === 'MissionStarted');
  out.push({ kind: 'wait', label: 'queue wait', start: enqueued, end: firstStart ? at(firstStart) : now, depth: 0 });
  for (const event of events) {
    const p = payload(event);
    const t = at(event);
    switch (event.event_type) {
      case 'MissionRetried':
        run += 1;
        out.push({ kind: 'mark', label: `retried by ${p.by}${p.reason ? `: ${p.reason}` : ''}`, start: t, end: t, depth: 0 });
        break;
      case 'MissionStarted':
        open = { kind: 'attempt', label: `${run > 1 ? `run ${run} · ` : ''}attempt ${p.attempt}`, attempt: p.attempt, run, start: t, end: null, outcome: 'running', worker: p.worker_id, depth: 0 };
        out.push(open);
        break;
      case 'MissionLlmCalled': {
        const key = `${run}/${p.attempt}`;
        const step = (steps.get(key) || 0) + 1;
        steps.set(key, step);
        const c = p.call;
        out.push({ kind: 'llm', label: `step ${step} · ${c.provider}/${c.model}`, step, attempt: p.attempt, run, call: c,
          start: t - c.latency_ms, end: t, depth: 1 });
        break;
      }
      case 'MissionToolCalled': {
        const c = p.call;
        out.push({ kind: 'tool', label: `${c.tool}`, step: c.step, call: c, start: t - c.duration_ms, end: t, depth: 2 });
        break;
      }
      case 'MissionChildFinished':
        out.push({ kind: 'child', label: 'sub-mission ended', child: p.outcome, start: t, end: t, depth: 1 });
        break;
      default:
        if (ENDS[event.event_type] && open) {
          open.end = t;
          open.outcome = ENDS[event.event_type];
          if (event.event_type === 'MissionSuspended') open.children = p.children || [];
          open = null;
        }
    }
  }
  for (const span of out) if (span.end === null) span.end = now;
  return out;
}

/// The trace of `events` as an element; `onFork(attempt, step)` is offered on each model call
/// of a finished mission.
export function trace(events, { finished, onFork, children = [] } = {}) {
  const all = spans(events);
  if (all.length <= 1 && !all.some((s) => s.kind === 'attempt')) {
    return h('p', { class: 'muted' }, 'Not started yet: the trace begins with its first attempt.');
  }
  const t0 = Math.min(...all.map((s) => s.start));
  const t1 = Math.max(...all.map((s) => s.end), t0 + 1);
  const total = t1 - t0;
  const status = new Map(children.map((c) => [c.mission_id, c]));
  return h('div', { class: 'trace', id: 'trace' },
    h('div', { class: 'trace-axis muted' }, h('span', {}, fmtTime(t0)), h('span', {}, `${fmtMs(total)} in all`)),
    h('ol', { class: 'trace-rows' }, all.map((span) => row(span, t0, total, { finished, onFork, status }))));
}

function row(span, t0, total, { finished, onFork, status }) {
  const bar = h('span', { class: `trace-bar k-${span.kind}` });
  bar.style.left = `${(100 * (span.start - t0) / total).toFixed(2)}%`;
  const instant = span.kind === 'mark' || span.kind === 'child';
  bar.style.width = instant ? '2px' : `${Math.max(0.4, 100 * (span.end - span.start) / total).toFixed(2)}%`;
  const parts = [
    h('span', { class: 'trace-label' }, h('span', { class: `trace-kind k-${span.kind}` }, kindName(span.kind)), ' ', span.label),
    h('span', { class: 'trace-track' }, bar),
    h('span', { class: 'trace-facts' }, facts(span, span.end - span.start)),
  ];
  const body = details(span, { finished, onFork, status });
  return h('li', { class: `depth-${span.depth}`, dataset: { kind: span.kind } },
    body ? h('details', {}, h('summary', {}, parts), body) : h('div', { class: 'trace-flat' }, parts));
}

function kindName(kind) {
  return { wait: 'wait', attempt: 'run', llm: 'model', tool: 'tool', child: 'child', mark: 'retry' }[kind];
}

function facts(span, took) {
  switch (span.kind) {
    case 'llm': {
      const c = span.call;
      return [`${fmtNum(c.input_tokens)}+${fmtNum(c.output_tokens)} tok · ${fmtUsd(c.replayed ? 0 : c.cost_usd)} · ${fmtMs(c.latency_ms)} `,
        c.outcome === 'ok' ? null : badge('failed'), c.replayed ? h('span', { class: 'muted' }, ' replayed') : null];
    }
    case 'tool': {
      const c = span.call;
      const outcome = c.refused ? badge('refused') : c.error ? h('span', { class: 'badge s-failed' }, 'error') : null;
      return [`${fmtMs(c.duration_ms)} `, outcome];
    }
    case 'attempt': return [`${fmtMs(took)} `, badge(span.outcome)];
    case 'wait': return fmtMs(took);
    case 'child': return [badge(span.child.status), ' ', link(`/missions/${span.child.mission_id}`, short(span.child.mission_id))];
    default: return null;
  }
}

function details(span, { finished, onFork, status }) {
  switch (span.kind) {
    case 'llm': {
      const fork = finished && onFork
        ? h('button', { type: 'button', class: 'fork', onclick: () => onFork(span.attempt, span.step) }, `Fork at step ${span.step}`)
        : null;
      return h('div', { class: 'trace-detail' },
        h('p', { class: 'muted' }, `route ${span.call.route} · ${span.call.tries} ${span.call.tries === 1 ? 'try' : 'tries'} · outcome ${span.call.outcome}`, ' ', fork),
        h('h3', {}, 'Request'), jsonView(span.call.request),
        h('h3', {}, 'Answer'), jsonView(span.call.response));
    }
    case 'tool':
      return h('div', { class: 'trace-detail' },
        span.call.error ? h('p', { class: 'error' }, span.call.error) : null,
        h('h3', {}, 'Arguments'), jsonView(span.call.arguments),
        h('h3', {}, 'Result'), jsonView(span.call.result));
    case 'attempt':
      if (!span.children) return h('div', { class: 'trace-detail muted' }, `worker ${span.worker}`);
      return h('div', { class: 'trace-detail' }, h('p', {}, `worker ${span.worker}; waited for ${span.children.length} sub-missions:`),
        h('ul', { class: 'tree' }, span.children.map((id) => {
          const known = status.get(id);
          return h('li', {}, link(`/missions/${id}`, known?.name || id), ' ', known?.status ? badge(known.status) : '');
        })));
    default: return null;
  }
}

/// The distinguishing end of a UUIDv7 (its first characters are the time, shared by all).
function short(id) {
  return id.length > 12 ? '…' + id.slice(-12) : id;
}

/// JSON as a tree that folds open, each object and array a <details>, with a copy button for
/// the whole value.
export function jsonView(value) {
  const copy = h('button', { type: 'button', class: 'copy', onclick: async () => {
    try {
      await navigator.clipboard.writeText(JSON.stringify(value, null, 2));
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Copy failed';
    }
  } }, 'Copy');
  return h('div', { class: 'json' }, copy, node(value, 0));
}

function node(value, depth) {
  if (value === null || typeof value !== 'object') {
    return h('span', { class: `json-${value === null ? 'null' : typeof value}` }, JSON.stringify(value));
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
  if (!entries.length) return h('span', {}, open + close);
  return h('details', { open: depth < 2 },
    h('summary', {}, `${open} ${entries.length} ${Array.isArray(value) ? 'items' : 'keys'} ${close}`),
    h('ul', {}, entries.map(([key, v]) => h('li', {}, h('span', { class: 'json-key' }, `${key}: `), node(v, depth + 1)))));
}
