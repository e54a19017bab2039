// Missions: the list with the API's search and filters (kept in the address, so a found
// list is a link), kept current by the live feed, with how many match; rows selected (or
// every mission the filters match) are cancelled, retried or re-enqueued at once through
// the bulk route, after a confirmation that states the count; and the enqueue form behind a
// button, whose refusals are the API's own messages next to the field at fault.

import { h, fill, api, query, follow, section, table, badge, errorBox, link, fmtTime, fmtMs, fmtNum,
  askReason } from './lib.js';

const STATUSES = ['pending', 'queued', 'running', 'suspended', 'completed', 'failed', 'cancelled'];
const PRIORITIES = ['critical', 'high', 'normal', 'low'];
const SORTS = ['enqueued', 'updated', 'duration'];
const PAGE = 50;
// The most missions one bulk request may name (the route's bound).
const BULK_MAX = 10000;
// Refusals a bulk answer lists on the page (the rest are counted).
const REFUSALS_SHOWN = 10;
// Characters of a last error the list shows (the mission's page has it whole).
const ERROR_SHOWN = 80;

export async function render(main, _params, shell) {
  const filters = Object.fromEntries(new URLSearchParams(location.search));
  const info = await api('GET', '/api/agents/info').catch(() => ({ kinds: [] }));
  const listBox = h('div', { id: 'mission-list' });
  const totalBox = h('p', { id: 'mission-total', class: 'muted', 'aria-live': 'polite' });
  const more = h('div', { class: 'row' });
  const bulkBar = h('div', { class: 'row bulk-bar', id: 'bulk-bar', 'aria-live': 'polite' });
  const bulkResult = h('div', { id: 'bulk-result', 'aria-live': 'polite' });
  let cursor = null;
  let extended = false;
  let total = { count: 0, exact: true };
  // The rows ticked, by id; or every mission the filters match.
  const selected = new Set();
  let allMatching = false;

  const select = (name, options, label) => h('label', {}, label,
    h('select', { name, onchange: apply },
      h('option', { value: '' }, 'any'),
      options.map((o) => h('option', { value: o, selected: filters[name] === o }, o))));
  const text = (name, label, placeholder) => h('label', {}, label,
    h('input', { type: 'search', name, placeholder, value: filters[name] || '', maxlength: 200, onchange: apply }));
  const filterForm = h('form', { class: 'row', id: 'filters', onsubmit: (e) => { e.preventDefault(); apply(); } },
    text('q', 'Search', 'name, description or id'),
    text('error', 'Error', 'text of the last error'),
    select('status', STATUSES, 'Status'),
    select('priority', PRIORITIES, 'Priority'),
    select('agent', info.kinds, 'Agent'),
    h('label', {}, 'Since', h('input', { type: 'datetime-local', name: 'since', step: 1,
      value: filters.since ? toLocalInput(filters.since) : '', onchange: apply })),
    h('label', {}, 'Sort',
      h('select', { name: 'sort', onchange: apply },
        SORTS.map((o) => h('option', { value: o, selected: (filters.sort || 'enqueued') === o }, o)))));

  function current() {
    const data = new FormData(filterForm);
    const since = data.get('since');
    return {
      q: data.get('q').trim(), error: data.get('error').trim(),
      status: data.get('status'), priority: data.get('priority'), agent: data.get('agent'),
      since: since ? new Date(since).toISOString() : '',
      sort: data.get('sort') === 'enqueued' ? '' : data.get('sort'),
    };
  }

  function apply() {
    shell.setPath('/missions' + query(current()));
    load();
  }

  async function load() {
    try {
      const page = await api('GET', '/api/missions' + query({ ...current(), limit: PAGE }));
      cursor = page.next_cursor ?? null;
      extended = false;
      const count = page.total_exact ? fmtNum(page.total) : `more than ${fmtNum(page.total)}`;
      fill(totalBox, `${count} ${page.total === 1 && page.total_exact ? 'mission' : 'missions'}`);
      total = { count: page.total, exact: page.total_exact };
      fill(listBox, missionTable(page.missions, selection));
      drawMore();
      drawBulk();
      return page.position;
    } catch (error) {
      fill(totalBox, null);
      fill(listBox, errorBox(error));
      return undefined;
    }
  }

  async function older() {
    try {
      const page = await api('GET', '/api/missions' + query({ ...current(), limit: PAGE, cursor }));
      cursor = page.next_cursor ?? null;
      extended = true;
      listBox.querySelector('tbody')?.append(...missionTable(page.missions, selection).querySelectorAll('tbody tr'));
      drawMore();
    } catch (error) {
      fill(more, errorBox(error));
    }
  }

  function drawMore() {
    fill(more, cursor !== null ? h('button', { type: 'button', onclick: older }, 'Older missions') : null);
  }

  // What the ticks of the table read and change.
  const selection = {
    has: (id) => allMatching || selected.has(id),
    set(id, on) {
      allMatching = false;
      if (on) selected.add(id); else selected.delete(id);
      drawBulk();
    },
    page(on) {
      allMatching = false;
      for (const box of listBox.querySelectorAll('tbody input[type=checkbox]')) {
        box.checked = on;
        if (on) selected.add(box.value); else selected.delete(box.value);
      }
      drawBulk();
    },
  };

  function clearSelection() {
    selected.clear();
    allMatching = false;
    for (const box of listBox.querySelectorAll('input[type=checkbox]')) box.checked = false;
    drawBulk();
  }

  function chosen() {
    if (allMatching) return total.exact ? total.count : null;
    return selected.size;
  }

  function drawBulk() {
    const n = chosen();
    if (n === 0) { fill(bulkBar); return; }
    const counted = n === null ? `all ${fmtNum(total.count)}+ matching` : `${fmtNum(n)} selected`;
    const everyMatching = !allMatching && total.count > selected.size
      ? h('button', { type: 'button', id: 'select-all-matching', onclick: () => {
        allMatching = true;
        for (const box of listBox.querySelectorAll('input[type=checkbox]')) box.checked = true;
        drawBulk();
      } }, total.exact ? `Select all ${fmtNum(total.count)} matching` : 'Select all matching')
      : null;
    const action = (verb, label, cls) => h('button', { type: 'button', class: cls, dataset: { action: verb },
      onclick: () => bulk(verb, label) }, label);
    fill(bulkBar,
      h('strong', { id: 'bulk-count' }, counted), everyMatching,
      action('cancel', 'Cancel', 'danger'), action('retry', 'Retry', null), action('reenqueue', 'Re-enqueue', null),
      h('button', { type: 'button', onclick: clearSelection }, 'Clear'));
  }

  /// Sends the selection's bulk `verb` after a confirmation that names how many missions.
  async function bulk(verb, label) {
    const n = chosen();
    if (n !== null && n > BULK_MAX) {
      fill(bulkResult, errorBox({ code: 'too_many', message: `at most ${fmtNum(BULK_MAX)} missions at once: narrow the filters` }));
      return;
    }
    const what = n === null ? `every mission the filters match (more than ${fmtNum(total.count)})` : `${fmtNum(n)} ${n === 1 ? 'mission' : 'missions'}`;
    const reason = await askReason(`${label} ${what}?`, `${label} ${n === null ? 'all' : fmtNum(n)}`);
    if (reason === null) return;
    const body = { action: verb, reason, idempotency_key: crypto.randomUUID() };
    if (allMatching) {
      const { sort: _sort, ...filter } = current();
      body.filter = Object.fromEntries(Object.entries(filter).filter(([, v]) => v !== ''));
    } else {
      body.mission_ids = [...selected];
    }
    fill(bulkResult, h('p', { class: 'muted' }, 'Working…'));
    try {
      const answer = await api('POST', '/api/missions/bulk', body);
      const refused = answer.results.filter((r) => r.outcome === 'refused');
      fill(bulkResult, h('div', { id: 'bulk-summary' },
        h('p', {}, `${label}: ${fmtNum(answer.done)} done, ${fmtNum(answer.refused)} refused of ${fmtNum(answer.matched)}.`),
        refused.length ? h('ul', {}, refused.slice(0, REFUSALS_SHOWN).map((r) => h('li', {},
          link(`/missions/${r.mission_id}`, r.mission_id), `: ${r.error.message}`))) : null,
        refused.length > REFUSALS_SHOWN ? h('p', { class: 'muted' }, `and ${refused.length - REFUSALS_SHOWN} more refused`) : null));
      clearSelection();
      load();
    } catch (error) {
      fill(bulkResult, errorBox(error));
    }
  }

  // The form waits behind a button, so the list starts at the top of the page.
  const enqueueBox = section('Enqueue', enqueueForm(info.kinds));
  enqueueBox.id = 'enqueue-box';
  enqueueBox.hidden = true;
  const opener = h('button', {
    type: 'button', id: 'enqueue-open', 'aria-controls': 'enqueue-box', 'aria-expanded': 'false',
    onclick: () => {
      enqueueBox.hidden = !enqueueBox.hidden;
      opener.setAttribute('aria-expanded', String(!enqueueBox.hidden));
      fill(opener, enqueueBox.hidden ? 'Enqueue a mission' : 'Close the form');
      if (!enqueueBox.hidden) enqueueBox.querySelector('input[name=name]')?.focus();
    },
  }, 'Enqueue a mission');
  fill(main,
    h('div', { class: 'row' }, h('h1', {}, 'Missions'), opener),
    enqueueBox,
    section('List', filterForm, totalBox, bulkBar, bulkResult, listBox, more));

  // A refresh per burst of mission events, not per event; only the first page is redrawn.
  return follow({ stream_type: 'mission' }, () => (extended ? undefined : load()), shell.setLive);
}

function toLocalInput(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return '';
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/// The list's table; with `selection` ({has, set, page}), a tick box per row and one for
/// the page.
export function missionTable(missions, selection) {
  const tick = selection ? [{
    label: h('input', { type: 'checkbox', 'aria-label': 'select this page', id: 'select-page',
      onchange: (e) => selection.page(e.target.checked) }),
    class: 'tick',
    cell: (m) => h('input', { type: 'checkbox', value: m.mission_id, 'aria-label': `select ${m.name || m.mission_id}`,
      checked: selection.has(m.mission_id), onchange: (e) => selection.set(m.mission_id, e.target.checked) }),
  }] : [];
  return table([
    ...tick,
    { label: 'name', cell: (m) => link(`/missions/${m.mission_id}`, m.name || m.mission_id) },
    { label: 'status', cell: (m) => badge(m.status) },
    { label: 'agent', cell: (m) => m.agent || '–' },
    { label: 'priority', class: 'hide-narrow', cell: (m) => m.priority || '–' },
    { label: 'attempts', class: 'num hide-narrow', cell: (m) => m.attempt ?? '–' },
    { label: 'last error', class: 'hide-narrow', cell: lastError },
    { label: 'queue wait', class: 'num hide-narrow', cell: (m) => fmtMs(m.queue_wait_ms) },
    { label: 'run time', class: 'num', cell: (m) => fmtMs(m.run_ms) },
    { label: 'enqueued', class: 'hide-narrow', cell: (m) => fmtTime(m.enqueued_at) },
    { label: 'updated', cell: (m) => fmtTime(m.updated_at) },
  ], missions, 'No mission matches.');
}

function lastError(m) {
  if (!m.error) return '–';
  const shown = m.error.length > ERROR_SHOWN ? m.error.slice(0, ERROR_SHOWN) + '…' : m.error;
  return h('span', { title: m.error }, shown);
}

function enqueueForm(kinds) {
  const result = h('div', { id: 'enqueue-result', 'aria-live': 'polite' });
  const field = (label, input) => h('label', {}, label, input);
  const form = h('form', { class: 'stack', id: 'enqueue', onsubmit: submit },
    h('div', { class: 'row' },
      field('Name', h('input', { name: 'name', required: true, maxlength: 200, size: 30 })),
      field('Agent', h('select', { name: 'agent' },
        h('option', { value: '' }, '(server default)'),
        kinds.map((k) => h('option', { value: k }, k)))),
      field('Priority', h('select', { name: 'priority' },
        PRIORITIES.map((p) => h('option', { value: p, selected: p === 'normal' }, p)))),
      field('Max attempts', h('input', { name: 'max_attempts', inputmode: 'numeric', size: 4 })),
      field('Timeout (s)', h('input', { name: 'timeout_s', inputmode: 'numeric', size: 6 }))),
    field('Description', h('textarea', { name: 'description', rows: 2 })),
    field('Payload (a JSON object)', h('textarea', { name: 'payload', rows: 3, placeholder: '{}' })),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Enqueue')),
    result);

  async function submit(event) {
    event.preventDefault();
    for (const el of form.querySelectorAll('.invalid')) el.classList.remove('invalid');
    const data = new FormData(form);
    // The body is what the form holds, as typed: the API checks it and says what is wrong.
    const body = { name: data.get('name'), description: data.get('description'), priority: data.get('priority') };
    if (data.get('agent')) body.agent = data.get('agent');
    // Numbers as typed (text that is not one goes as text): the API says what is wrong.
    for (const key of ['max_attempts', 'timeout_s']) {
      const text = data.get(key).trim();
      if (text !== '') body[key] = Number.isNaN(Number(text)) ? text : Number(text);
    }
    const payload = data.get('payload').trim();
    let raw;
    if (payload) {
      // Sent as typed so the API, not the page, decides whether it is an object.
      raw = JSON.stringify(body).slice(0, -1) + `,"payload":${payload}}`;
    }
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const mission = await api('POST', '/api/missions/enqueue', raw ?? body);
      fill(result, h('p', {}, 'Enqueued ', link(`/missions/${mission.mission_id}`, mission.name), '.'));
      form.reset();
    } catch (error) {
      fill(result, errorBox(error));
      const name = error.field && error.field.split(/[.[]/)[0];
      const input = name && form.elements.namedItem(name);
      if (input && input.classList) { input.classList.add('invalid'); input.focus(); }
    } finally {
      button.disabled = false;
    }
  }
  return form;
}
