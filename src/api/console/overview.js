// Overview: the services' health, queue depth per kind, missions per status, the last hour's
// throughput and failure rate, the last day per kind (finished, success rate, queue wait and
// run time, LLM tokens and cost, and a stacked chart per hour), relay and projector lag. Redrawn when the live feed reports
// events (at most once a second) and every few seconds regardless, since lag and health move
// without events.

import { h, fill, api, Feed, throttle, section, table, badge, errorBox, fmtNum, fmtMs, fmtClock, fmtUsd, link,
  unservedKinds, unservedNote } from './lib.js';

const REFRESH_MS = 5000;
const DAY_MS = 24 * 3600 * 1000;

export async function render(main, _params, shell) {
  const body = h('div', { class: 'grid' });
  const stamp = h('span', { class: 'muted', id: 'updated' });
  fill(main, h('h1', {}, 'Overview', stamp), body);
  let feed = null;
  let timer = null;
  let stopped = false;

  async function draw() {
    const since = new Date(Date.now() - DAY_MS).toISOString();
    const day = `/api/analytics/missions?bucket=day&since=${encodeURIComponent(since)}`;
    const hours = `/api/analytics/missions?by=all&bucket=hour&since=${encodeURIComponent(since)}`;
    const [ready, health, throughput, workers, kinds, hourly, agents] = await Promise.allSettled([
      api('GET', '/ready', undefined, { accept: [503] }),
      api('GET', '/api/missions/health'),
      api('GET', '/api/missions/throughput'),
      api('GET', '/api/missions/worker/status'),
      api('GET', day),
      api('GET', hours),
      api('GET', '/api/agents?state=active&limit=500'),
    ]);
    if (stopped) return null;
    fill(body,
      services(ready),
      statuses(health),
      hour(throughput),
      lastDay(kinds, hourly),
      queues(health, agents),
      workersCard(workers),
      lag(health));
    stamp.textContent = `at ${fmtClock(Date.now())}`;
    return health.status === 'fulfilled' ? health.value.head : null;
  }

  const redraw = throttle(async () => {
    await draw();
    // When the first live event was drawn, for `brain bench console`.
    if (!document.body.dataset.firstLiveMs) {
      document.body.dataset.firstLiveMs = String(Math.round(performance.now()));
    }
  }, 1000);
  const head = await draw();
  // When the page first showed everything, for `brain bench console`.
  document.body.dataset.drawnMs = String(Math.round(performance.now()));
  feed = new Feed({}, head ?? undefined, () => redraw(), shell.setLive);
  timer = setInterval(() => draw(), REFRESH_MS);
  return () => { stopped = true; feed.stop(); clearInterval(timer); redraw.cancel(); };
}

function failed(result, title) {
  return result.status === 'rejected' ? section(title, errorBox(result.reason)) : null;
}

function services(ready) {
  if (ready.status === 'rejected') return failed(ready, 'Services');
  const checks = ready.value.checks;
  return section('Services',
    h('dl', { class: 'kv', id: 'services' }, Object.entries(checks).map(([name, check]) => [
      h('dt', {}, name),
      h('dd', {}, check === 'ok' ? badge('ok') : h('span', { class: 'badge s-down', title: check }, check)),
    ])));
}

function statuses(health) {
  if (health.status === 'rejected') return failed(health, 'Missions');
  const { statuses: counts, running } = health.value;
  const order = ['pending', 'queued', 'running', 'suspended', 'completed', 'failed', 'cancelled'];
  return section('Missions',
    h('dl', { class: 'kv', id: 'statuses' },
      order.map((status) => [
        h('dt', {}, link(`/missions?status=${status}`, status)),
        h('dd', { class: 'num', dataset: { status } }, fmtNum(counts[status] || 0)),
      ]),
      h('dt', {}, 'leases held'), h('dd', {}, fmtNum(running))));
}

function hour(result) {
  if (result.status === 'rejected') return failed(result, 'Last hour');
  const t = result.value;
  // The headline is the last whole minute (the newest bucket is still filling), not the
  // hour's average, which hides a burst.
  const last = t.buckets.length > 1 ? t.buckets[t.buckets.length - 2] : { completed: 0, failed: 0, cancelled: 0 };
  const lastMinute = last.completed + last.failed + last.cancelled;
  const slots = t.buckets.map((b) => ({ at: b.at_ms, completed: b.completed, failed: b.failed, cancelled: b.cancelled }));
  return section('Last hour',
    h('div', { class: 'row' },
      h('div', {}, h('div', { class: 'stat', id: 'per-minute' }, fmtNum(lastMinute)), h('span', { class: 'muted' }, 'finished in the last minute')),
      h('div', {}, h('div', { class: 'stat', id: 'failure-rate' }, `${(100 * t.failure_rate).toFixed(1)} %`), h('span', { class: 'muted' }, 'failure rate')),
      h('div', {}, h('div', { class: 'stat' }, fmtNum(t.completed)), h('span', { class: 'muted' }, 'completed')),
      h('div', {}, h('div', { class: 'stat' }, fmtNum(t.failed)), h('span', { class: 'muted' }, 'failed'))),
    stackedChart(slots, 'minute', 'minute-bars'));
}

// The last 24 hours per kind, and every kind's finished missions per hour, completed and
// failed stacked, so a bad hour shows how bad rather than only that something failed.
function lastDay(kinds, hourly) {
  if (kinds.status === 'rejected') return failed(kinds, 'Last 24 hours');
  const rows = kinds.value.series.map((s) => ({ kind: s.kind, ...s.buckets[0] }));
  const pct = (p) => (p == null ? '–' : fmtMs(Math.round(p)));
  const tableEl = table([
    { label: 'kind', cell: (r) => link(`/missions?agent=${encodeURIComponent(r.kind)}`, r.kind) },
    { label: 'completed', class: 'num', secondary: true, cell: (r) => fmtNum(r.completed) },
    { label: 'failed', class: 'num', cell: (r) => fmtNum(r.failed) },
    { label: 'success', class: 'num', cell: (r) => (r.success_rate == null ? '–' : `${(100 * r.success_rate).toFixed(1)} %`) },
    { label: 'queue wait p50 / p95', class: 'num', secondary: true, cell: (r) => `${pct(r.queue_wait.p50_ms)} / ${pct(r.queue_wait.p95_ms)}` },
    { label: 'run time p50 / p95', class: 'num', cell: (r) => `${pct(r.run_time.p50_ms)} / ${pct(r.run_time.p95_ms)}` },
    { label: 'LLM tokens', class: 'num', secondary: true, cell: (r) => fmtNum(r.input_tokens + r.output_tokens) },
    { label: 'cost', class: 'num', secondary: true, cell: (r) => fmtUsd(r.cost_usd) },
  ], rows, 'Nothing finished in the last 24 hours.');
  return section('Last 24 hours', h('div', { id: 'by-kind' }, tableEl), stacked(hourly));
}

function stacked(hourly) {
  if (hourly.status === 'rejected') return errorBox(hourly.reason);
  const since = Date.parse(hourly.value.since);
  const slots = Array.from({ length: 24 }, (_, i) => ({ at: since + i * 3600 * 1000, completed: 0, failed: 0, cancelled: 0 }));
  for (const b of (hourly.value.series[0] || { buckets: [] }).buckets) {
    const i = Math.floor((Date.parse(b.at) - since) / (3600 * 1000));
    if (i >= 0 && i < slots.length) Object.assign(slots[i], { completed: b.completed, failed: b.failed, cancelled: b.cancelled });
  }
  return stackedChart(slots, 'hour', 'hourly');
}

// Bars of missions finished per `unit`, each split into completed, failed and cancelled, with
// the unit and the scale said in words.
function stackedChart(slots, unit, id) {
  const max = Math.max(1, ...slots.map((s) => s.completed + s.failed + s.cancelled));
  const bars = slots.map((s) => {
    const part = (n, cls) => {
      const el = h('i', { class: cls });
      el.style.height = `${(100 * n / max).toFixed(1)}%`;
      return el;
    };
    return h('span', { class: 'stack',
      title: `${fmtClock(s.at)}: ${s.completed} completed, ${s.failed} failed, ${s.cancelled} cancelled` },
    part(s.cancelled, 'cancelled'), part(s.failed, 'failed'), part(s.completed, 'completed'));
  });
  return h('figure', { class: 'chart' },
    h('div', { class: 'spark stacked', id, role: 'img',
      'aria-label': `missions finished per ${unit}, completed, failed and cancelled stacked; the tallest ${unit} ${max}` }, bars),
    h('figcaption', { class: 'muted' }, `missions finished per ${unit} (tallest: ${fmtNum(max)}); green completed, red failed, grey cancelled`));
}

function queues(health, agents) {
  if (health.status === 'rejected') return null;
  const rows = Object.entries(health.value.queues).map(([kind, q]) => ({ kind, ...q }));
  // A kind with missions waiting and no active agent to run them waits silently otherwise.
  const unserved = agents.status === 'fulfilled' ? unservedKinds(health.value.queues, agents.value.agents) : [];
  return section('Queues',
    unservedNote(unserved),
    table([
      { label: 'kind', cell: (r) => link(`/queue?agent=${encodeURIComponent(r.kind)}`, r.kind) },
      { label: 'ready', class: 'num', cell: (r) => fmtNum(r.ready) },
      { label: 'delayed', class: 'num', secondary: true, cell: (r) => fmtNum(r.delayed) },
      { label: 'oldest waiting', class: 'num', cell: (r) => fmtMs(r.oldest_waiting_ms) },
      { label: 'served', cell: (r) => (unserved.includes(r.kind) ? h('span', { class: 'badge s-down' }, 'no agent') : '') },
    ], rows, 'No queue holds a mission.'));
}

function workersCard(result) {
  if (result.status === 'rejected') return failed(result, 'Workers');
  const alive = result.value.workers.filter((w) => w.alive);
  return section('Workers',
    h('p', {}, link('/agents', `${alive.length} alive`), ` of ${result.value.workers.length} heard from in the last hour`));
}

function lag(health) {
  if (health.status === 'rejected') return null;
  const { lag: l, head } = health.value;
  const rows = [{ name: 'relay (to JetStream)', lag: l.relay },
    ...Object.entries(l.projectors).map(([name, behind]) => ({ name, lag: behind }))];
  return section('Lag',
    h('p', { class: 'muted' }, `log head at position ${fmtNum(head)}; events behind:`),
    table([
      { label: 'reader', cell: (r) => r.name },
      { label: 'behind', class: 'num', cell: (r) => fmtNum(r.lag) },
    ], rows));
}
