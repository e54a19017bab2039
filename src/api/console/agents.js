// Workers and agents: the workers with what each runs; the agents with state, last heartbeat
// and load, and start/stop/restart through the supervisor, each asking for a reason that goes
// into the agent's history. `/agents/<id>` is one agent, live: its state, kinds, load (a
// built-in agent's worker slots in use of their capacity), the missions it runs now, its
// restarts and failures, and its control history with who acted and why.

import { h, fill, api, query, Feed, throttle, section, table, badge, errorBox, link, pretty,
  fmtAgo, fmtNum, fmtMs, fmtDuration, when, askReason } from './lib.js';

/// Events of one agent kept on its page.
const HISTORY_MAX = 500;
const ACTIONS = { active: ['stop', 'restart'], unresponsive: ['stop', 'restart'], stopped: ['start'], failed: ['start'] };

export async function render(main, params, shell) {
  return params.length ? agentPage(main, params[0], shell) : listPage(main, shell);
}

async function control(agentId, action, name) {
  const reason = await askReason(`${action[0].toUpperCase()}${action.slice(1)} ${name}?`, action);
  if (reason === null) return null;
  await api('POST', '/api/supervisor/control', { agent_id: agentId, action, reason });
  return action;
}

function actionButtons(agent, notice, after) {
  return (ACTIONS[agent.state] || []).map((action) => h('button', {
    type: 'button', dataset: { action, agent: agent.agent_id }, class: action === 'stop' ? 'danger' : '',
    onclick: async () => {
      try {
        if (await control(agent.agent_id, action, agent.name)) { fill(notice); after(); }
      } catch (error) {
        fill(notice, errorBox(error));
      }
    },
  }, action));
}

async function listPage(main, shell) {
  const workersBox = h('div', { id: 'workers' });
  const agentsBox = h('div', { id: 'agents' });
  const builtinBox = h('div');
  const notice = h('div', { 'aria-live': 'polite' });
  fill(main, h('h1', {}, 'Workers and agents'), notice,
    section('Agents', agentsBox), section('Workers', workersBox), section('Built-in agents', builtinBox));

  async function load() {
    const [workers, watched] = await Promise.allSettled([
      api('GET', '/api/missions/worker/status'),
      api('GET', '/api/supervisor/agents' + query({ limit: 500 })),
    ]);
    fill(workersBox, workers.status === 'rejected' ? errorBox(workers.reason) : table([
      { label: 'worker', class: 'mono', cell: (w) => w.worker_id },
      { label: 'alive', cell: (w) => badge(String(w.alive)) },
      { label: 'kinds', secondary: true, cell: (w) => w.agents.join(', ') },
      { label: 'running', cell: (w) => w.running.length
        ? w.running.map((r) => [link(`/missions/${r.mission_id}`, r.agent), ' ']) : `0 of ${w.concurrency}` },
      { label: 'done / failed', class: 'num', secondary: true, cell: (w) => `${fmtNum(w.completed)} / ${fmtNum(w.failed)}` },
      { label: 'per s', class: 'num', secondary: true, cell: (w) => w.throughput_per_s.toFixed(2) },
      { label: 'last seen', secondary: true, cell: (w) => fmtAgo(w.last_seen_ms) },
    ], workers.value.workers, 'No worker has reported in the last hour.'));
    if (watched.status === 'rejected') { fill(agentsBox, errorBox(watched.reason)); return; }
    fill(agentsBox, table([
      { label: 'name', cell: (a) => link(`/agents/${a.agent_id}`, a.name) },
      { label: 'kind', cell: (a) => a.kind },
      { label: 'state', cell: (a) => [badge(a.state), a.restart_requested ? ' restarting' : ''] },
      { label: 'status', secondary: true, cell: (a) => a.status },
      { label: 'load', class: 'num', secondary: true, cell: (a) => a.load.toFixed(2) },
      { label: 'last heartbeat', secondary: true, cell: (a) => `${fmtMs(a.silent_for_ms)} ago` },
      { label: 'restarts', class: 'num', secondary: true, cell: (a) => a.restarts },
      { label: 'actions', actions: true, cell: (a) => h('span', { class: 'row' }, actionButtons(a, notice, load)) },
    ], watched.value.agents, 'No agent is registered.'));
  }

  api('GET', '/api/agents/info').then((info) => fill(builtinBox, info.builtin.map((b) =>
    h('details', {}, h('summary', {}, h('strong', {}, b.name), ' ', b.description),
      h('p', {}, 'Tools: ', b.tools.length ? b.tools.join(', ') : 'none'),
      b.system_prompt ? h('pre', {}, b.system_prompt) : null)))).catch((error) => fill(builtinBox, errorBox(error)));
  await load();
  const refresh = throttle(load, 500);
  const feed = new Feed({ stream_type: 'agent' }, undefined, () => refresh(), shell.setLive);
  // Silence grows without events, and workers report outside the log.
  const timer = setInterval(load, 3000);
  return () => { feed.stop(); refresh.cancel(); clearInterval(timer); };
}

async function agentPage(main, agentId, shell) {
  const head = h('div');
  const notice = h('div', { 'aria-live': 'polite' });
  const about = h('div', { id: 'agent-about' });
  const load = h('div', { id: 'agent-load' });
  const running = h('div', { id: 'agent-running' });
  const restarts = h('div', { id: 'agent-restarts' });
  const controls = h('div', { id: 'agent-controls' });
  const history = h('ol', { class: 'timeline', id: 'agent-history' });
  const raw = h('pre');
  fill(main, head, notice,
    h('div', { class: 'grid' }, section('Agent', about), section('Load', load, running)),
    h('div', { class: 'grid' }, section('Control history', controls), section('Restarts and failures', restarts)),
    section('History', history),
    h('details', {}, h('summary', {}, 'As the API answers it'), raw));
  /// Every event of the agent seen so far, oldest first (the newest HISTORY_MAX).
  let events = [];

  async function draw() {
    let agent;
    let workers = null;
    try {
      agent = await api('GET', `/api/agents/${encodeURIComponent(agentId)}`);
    } catch (error) {
      fill(head, h('h1', {}, 'Agent'), errorBox(error));
      return false;
    }
    // A built-in agent runs in a worker's slots, which its other kinds share.
    const worker = agent.owner.startsWith('worker:') ? agent.owner.slice('worker:'.length) : null;
    if (worker) {
      workers = await api('GET', '/api/missions/worker/status').catch(() => null);
    }
    const live = agent.live;
    fill(head, h('h1', {}, agent.name, h('span', { id: 'agent-state' }, badge(agent.state)),
      agent.restart_requested ? h('span', { class: 'badge s-retrying' }, 'restart requested') : null),
    h('div', { class: 'row' }, actionButtons(agent, notice, draw), h('span', { class: 'muted mono' }, agent.agent_id)));
    const kv = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    const registered = events.find((e) => e.event_type === 'AgentRegistered');
    fill(about, h('dl', { class: 'kv' },
      kv('kind', link(`/missions?agent=${encodeURIComponent(agent.kind)}`, agent.kind)),
      kv('state', badge(agent.state)),
      kv('status', live ? live.status || '–' : '–'),
      kv('last heartbeat', live ? [when(live.last_seen_ms), ` (${fmtDuration(live.silent_for_ms)} ago)`] : '–'),
      kv('owner', agent.owner || '–'), kv('version', agent.version || '–'),
      kv('capabilities', agent.capabilities.join(', ') || '–'),
      kv('labels', Object.entries(agent.labels).map(([k, v]) => `${k}=${v}`).join(', ') || '–'),
      kv('registered', registered ? when(registered.recorded_at) : '–'),
      kv('restarts', fmtNum(agent.restarts))));
    fill(load, loadOf(agent, worker, workers));
    const ids = live ? live.running : [];
    const here = workers && worker ? (workers.workers.find((w) => w.worker_id === worker) || { running: [] }).running
      .filter((r) => r.agent === agent.kind) : [];
    const runs = here.length ? here : ids.map((id) => ({ mission_id: id }));
    fill(running, h('h3', {}, 'Running now'), runs.length ? h('ul', {}, runs.map((r) => h('li', {},
      link(`/missions/${r.mission_id}`, r.mission_id),
      r.since_ms ? h('span', { class: 'muted' }, ` attempt ${r.attempt}, for ${fmtDuration(Date.now() - r.since_ms)}`) : null)))
      : h('p', { class: 'muted' }, 'Nothing.'));
    raw.textContent = pretty(agent);
    return true;
  }

  function drawEvents() {
    fill(controls, table([
      { label: 'at', cell: (e) => when(e.recorded_at) },
      { label: 'what', cell: (e) => actionOf(e) },
      { label: 'by', cell: (e) => h('span', { title: (e.metadata || {}).actor }, who(e)) },
      { label: 'why', cell: (e) => payloadOf(e).reason || '–' },
    ], events.filter((e) => CONTROL_EVENTS.includes(e.event_type)).reverse(), 'Never controlled.'));
    fill(restarts, table([
      { label: 'at', cell: (e) => when(e.recorded_at) },
      { label: 'what', cell: (e) => e.event_type.replace(/^Agent/, '').toLowerCase() },
      { label: 'why', cell: (e) => payloadOf(e).reason || payloadOf(e).error || '–' },
    ], events.filter((e) => ['AgentRestarted', 'AgentFailed', 'AgentUnresponsive', 'AgentRecovered'].includes(e.event_type)).reverse(),
    'Never restarted, never failed.'));
  }

  if (!(await draw())) return undefined;
  const refresh = throttle(async () => { await draw(); drawEvents(); }, 300);
  drawEvents();
  const feed = new Feed({ stream_type: 'agent', stream_id: agentId }, 0, (event) => {
    // The newest HISTORY_MAX events: a long-lived agent has many.
    events.push(event);
    if (events.length > HISTORY_MAX) events = events.slice(-HISTORY_MAX);
    if (history.childElementCount >= HISTORY_MAX) history.firstElementChild.remove();
    history.append(h('li', {}, h('details', {},
      h('summary', {}, h('strong', {}, event.event_type), ' ',
        h('span', { class: 'muted' }, `#${event.global_position} · `, when(event.recorded_at), ` · ${who(event)}`), ' ',
        describe(event)),
      h('pre', {}, pretty(event.payload)))));
    refresh();
  }, shell.setLive);
  // Silence grows without events, and the worker's slots change outside the agent's log.
  const timer = setInterval(refresh, 3000);
  return () => { feed.stop(); refresh.cancel(); clearInterval(timer); };
}

/// Events that record someone acting on the agent.
const CONTROL_EVENTS = ['AgentControlRequested', 'AgentStopped', 'AgentStarted', 'AgentDeregistered'];

/// The load as slots: a built-in agent's worker's slots in use of its capacity (shared by
/// the worker's kinds); an external agent's own figure (1.0 = fully busy).
function loadOf(agent, worker, workers) {
  const live = agent.live;
  const found = workers && workers.workers.find((w) => w.worker_id === worker);
  if (found) {
    const mine = found.running.filter((r) => r.agent === agent.kind).length;
    return h('p', {}, h('span', { class: 'stat' }, `${found.running.length} / ${found.concurrency}`),
      h('span', { class: 'muted' }, ` slots in use on worker ${worker} (${mine} by ${agent.kind}; the worker's kinds share them)`));
  }
  if (!live) return h('p', { class: 'muted' }, 'No report from it yet.');
  return h('p', {}, h('span', { class: 'stat' }, live.load.toFixed(2)),
    h('span', { class: 'muted' }, ` load as it reports it (1.00 = fully busy), ${live.running.length} running`));
}

function payloadOf(event) {
  return event.payload[event.event_type] ?? event.payload;
}

/// What a control event says was done.
function actionOf(event) {
  const p = payloadOf(event);
  if (event.event_type === 'AgentControlRequested') return `${p.action} requested`;
  return event.event_type.replace(/^Agent/, '').toLowerCase();
}

/// Who acted: the key's name when the log kept it, and whom it acted for.
function who(event) {
  const m = event.metadata || {};
  const by = m.actor_name || payloadOf(event).by || m.actor || '–';
  return `${by}${m.on_behalf_of ? ` for ${m.on_behalf_of}` : ''}`;
}

/// What a summary line says of an agent event: a control's action and reason, a failure's.
function describe(event) {
  const p = payloadOf(event);
  return [p.action, p.reason, p.error].filter(Boolean).join(': ');
}
