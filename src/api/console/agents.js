// Workers and agents: the workers with what each runs; the agents with state, last heartbeat
// and load, and start/stop/restart through the supervisor, each asking for a reason that goes
// into the agent's history. `/agents/<id>` is one agent with its history, live.

import { h, fill, api, query, Feed, throttle, section, table, badge, errorBox, link, pretty,
  fmtTime, fmtAgo, fmtNum, fmtMs, askReason } from './lib.js';

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
  const details = h('div');
  const history = h('ol', { class: 'timeline', id: 'agent-history' });
  fill(main, head, notice, details, section('History', history));

  async function load() {
    let agent;
    try {
      agent = await api('GET', `/api/agents/${encodeURIComponent(agentId)}`);
    } catch (error) {
      fill(head, h('h1', {}, 'Agent'), errorBox(error));
      return false;
    }
    fill(head, h('h1', {}, agent.name, h('span', { id: 'agent-state' }, badge(agent.state))),
      h('div', { class: 'row' }, actionButtons(agent, notice, load), h('span', { class: 'muted mono' }, agent.agent_id)));
    fill(details, section('Agent', h('pre', {}, pretty(agent))));
    return true;
  }

  if (!(await load())) return undefined;
  const refresh = throttle(load, 300);
  const feed = new Feed({ stream_type: 'agent', stream_id: agentId }, 0, (event) => {
    // The newest HISTORY_MAX events: a long-lived agent has many.
    if (history.childElementCount >= HISTORY_MAX) history.firstElementChild.remove();
    history.append(h('li', {}, h('details', {},
      h('summary', {}, h('strong', {}, event.event_type), ' ',
        h('span', { class: 'muted' }, `#${event.global_position} · ${fmtTime(event.recorded_at)}`), ' ',
        describe(event)),
      h('pre', {}, pretty(event.payload)))));
    refresh();
  }, shell.setLive);
  return () => { feed.stop(); refresh.cancel(); };
}

/// What a summary line says of an agent event: a control's action and reason, a failure's.
function describe(event) {
  const p = event.payload[event.event_type] ?? event.payload;
  return [p.action, p.reason, p.error].filter(Boolean).join(': ');
}
