// Queue: the ready missions in the order workers will pop them, per kind or all merged, with
// each one's score (lower pops first) and age, and a warning for a kind whose missions wait
// with no active agent to run them. Redrawn after each burst of mission events.

import { h, fill, api, query, follow, section, table, errorBox, link, fmtMs, fmtNum, loadUnserved,
  unservedNote } from './lib.js';

const LIMIT = 100;

export async function render(main, _params, shell) {
  const info = await api('GET', '/api/agents/info').catch(() => ({ kinds: [] }));
  let agent = new URLSearchParams(location.search).get('agent') || '';
  const box = h('div', { id: 'queue' });
  const kind = h('select', { name: 'agent', onchange: () => {
    agent = kind.value;
    shell.setPath('/queue' + query({ agent }));
    load();
  } }, h('option', { value: '' }, 'all kinds, merged'),
  info.kinds.map((k) => h('option', { value: k, selected: k === agent }, k)));

  fill(main, h('h1', {}, 'Queue'),
    section('Next to run', h('div', { class: 'row' }, h('label', {}, 'Agent kind', kind)), box));

  async function load() {
    try {
      const [page, unserved] = await Promise.all([
        api('GET', '/api/missions/queue' + query({ agent, limit: LIMIT })),
        // A warning, not the page: a failure to read it leaves the queue shown.
        loadUnserved().catch(() => []),
      ]);
      fill(box,
        unservedNote(agent ? unserved.filter((k) => k === agent) : unserved),
        h('p', { class: 'muted' }, `In pop order, as of log position ${fmtNum(page.position)}. Score: when it became ready, less its priority's bonus; lower pops first.`),
        table([
          { label: '#', class: 'num', cell: (m) => page.missions.indexOf(m) + 1 },
          { label: 'name', cell: (m) => link(`/missions/${m.mission_id}`, m.name || m.mission_id) },
          { label: 'agent', cell: (m) => m.agent },
          { label: 'priority', secondary: true, cell: (m) => m.priority || '–' },
          { label: 'score', class: 'num mono', secondary: true, cell: (m) => m.score },
          { label: 'bonus', class: 'num', secondary: true, cell: (m) => fmtMs(m.bonus_ms) },
          { label: 'age', class: 'num', cell: (m) => fmtMs(m.age_ms) },
        ], page.missions, 'Nothing is waiting.'));
      return page.position;
    } catch (error) {
      fill(box, errorBox(error));
      return undefined;
    }
  }

  const stop = await follow({ stream_type: 'mission' }, load, shell.setLive);
  // Ages grow without events.
  const timer = setInterval(load, 5000);
  return () => { stop(); clearInterval(timer); };
}
