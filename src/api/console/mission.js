// A mission's page: its status and spec, attempts and their errors, the answer (streaming
// while the model writes it), its run as a trace (trace.js), the tree of sub-missions, forks
// and copies, and the whole history as a timeline, which can be stepped through to see the
// mission as it stood after each event (stepper.js). Finished, it can be replayed, forked at a
// step, re-enqueued as a copy, and (failed) retried. One feed follows the mission's events
// and answer pieces; each event is added to the trace and the timeline as it comes, and the
// view is read again after a burst of them.

import { h, fill, api, Feed, throttle, section, table, badge, errorBox, link, pretty,
  fmtTime, fmtNum, fmtUsd, askReason, loadUnserved, unservedNote } from './lib.js';
import { trace, payload } from './trace.js';
import { stepper } from './stepper.js';

export async function render(main, [missionId], shell) {
  const head = h('div');
  const answer = h('div', { id: 'answer', class: 'answer', 'aria-live': 'polite' });
  const streaming = h('span', { class: 'muted', id: 'streaming' });
  const summary = h('div', { class: 'grid' });
  const calls = h('div', { id: 'run-trace' });
  const timeline = h('ol', { class: 'timeline', id: 'timeline' });
  const notice = h('div', { 'aria-live': 'polite' });
  const unserved = h('div', { 'aria-live': 'polite' });
  let view = null;
  let events = [];
  let pieces = { attempt: null, text: '' };
  const redrawTrace = throttle(() => drawCalls(), 250);

  fill(main, head, unserved, notice,
    section('Answer', streaming, answer),
    summary, calls,
    section('History', h('p', { class: 'muted' }, 'Every event of the mission, oldest first.'),
      stepper(missionId, () => events, timeline), timeline));

  // Reads of the view may answer out of order (a slow one after a later one): the newest
  // version read is the one drawn, never an older one after it.
  async function loadView() {
    let read;
    try {
      read = await api('GET', `/api/missions/${encodeURIComponent(missionId)}`);
    } catch (error) {
      fill(head, h('h1', {}, 'Mission'), errorBox(error));
      return false;
    }
    if (view && read.version < view.version) return true;
    view = read;
    drawView();
    return true;
  }

  function drawView() {
    const v = view;
    const finished = ['completed', 'failed', 'cancelled'].includes(v.status);
    fill(head,
      h('h1', {}, v.name, h('span', { id: 'status' }, badge(v.status))),
      h('div', { class: 'row actions' },
        h('button', { type: 'button', class: 'danger', id: 'cancel', disabled: finished, onclick: cancel }, 'Cancel'),
        h('button', { type: 'button', id: 'retry', disabled: v.status !== 'failed', title: 'Only a failed mission runs again', onclick: retry }, 'Retry'),
        h('button', { type: 'button', id: 'reenqueue', disabled: !finished, title: 'A copy of a finished mission, run from the start', onclick: reenqueue }, 'Re-enqueue'),
        h('button', { type: 'button', id: 'replay', disabled: !finished, title: 'Play the run back against its record: no model call, no tool run', onclick: replay }, 'Replay'),
        h('span', { class: 'muted mono' }, v.mission_id)));
    fill(summary,
      section('Spec', h('dl', { class: 'kv' },
        kv('agent', v.agent), kv('priority', v.priority),
        kv('attempt', `${v.attempt} of ${v.max_attempts}`), kv('timeout', `${v.timeout_s} s`),
        v.budget ? kv('budget', pretty(v.budget)) : null,
        kv('worker', v.worker_id || '–'), kv('lease until', fmtTime(v.lease_expires_at)),
        v.due_at ? kv('due at', fmtTime(v.due_at)) : null,
        kv('enqueued', `${fmtTime(v.enqueued_at)} by ${v.enqueued_by}`), kv('updated', fmtTime(v.updated_at))),
      v.description ? h('p', {}, v.description) : null,
      h('details', {}, h('summary', {}, 'Payload'), h('pre', {}, pretty(v.payload)))),
      section('Attempts', v.errors.length
        ? table([
          { label: 'attempt', class: 'num', cell: (e) => (e.run > 1 ? `run ${e.run} · ${e.attempt}` : e.attempt) },
          { label: 'error', cell: (e) => e.error },
          { label: 'at', cell: (e) => fmtTime(e.at) },
        ], v.errors)
        : h('p', { class: 'muted' }, 'No attempt has failed.')),
      section('Tree', tree(v)));
    if (v.result !== null && v.result !== undefined) {
      const text = typeof v.result.answer === 'string' ? v.result.answer : null;
      fill(streaming, '');
      fill(answer, text !== null ? text : h('pre', {}, pretty(v.result)));
      if (text !== null) answer.append(h('details', {}, h('summary', {}, 'Result'), h('pre', {}, pretty(v.result))));
    } else if (!pieces.text) {
      fill(answer, h('span', { class: 'muted' }, finished ? 'No answer.' : 'No answer yet.'));
    }
    redrawTrace();
    drawUnserved(v);
  }

  /// A waiting mission whose kind no active agent serves says so, or it would wait silently.
  async function drawUnserved(v) {
    if (!['queued', 'pending'].includes(v.status)) { fill(unserved); return; }
    try {
      const kinds = await loadUnserved();
      fill(unserved, kinds.includes(v.agent) ? unservedNote([v.agent]) : null);
    } catch {
      fill(unserved); // a look-up that failed leaves the warning out; the page goes on
    }
  }

  function kv(key, value) {
    return [h('dt', {}, key), h('dd', {}, value)];
  }

  /// POSTs `path` of this mission; answers the answer, or null after saying why not.
  async function act(path, body, verb) {
    try {
      const answer = await api('POST', `/api/missions/${encodeURIComponent(missionId)}/${path}`, body);
      fill(notice);
      await loadView();
      return answer;
    } catch (error) {
      fill(notice, h('p', {}, `Could not ${verb}:`), errorBox(error));
      return null;
    }
  }

  async function cancel() {
    const reason = await askReason('Cancel this mission?', 'Cancel mission');
    if (reason !== null) await act('cancel', { reason }, 'cancel');
  }

  async function retry() {
    const reason = await askReason('Run this failed mission again?', 'Retry mission');
    if (reason !== null) await act('retry', { reason }, 'retry');
  }

  async function reenqueue() {
    const reason = await askReason('Enqueue a copy of this mission?', 'Re-enqueue');
    if (reason === null) return;
    const copy = await act('reenqueue', { reason }, 're-enqueue');
    if (copy) fill(notice, h('p', { id: 'action-result' }, 'Copy enqueued: ', link(`/missions/${copy.mission_id}`, copy.mission_id), '.'));
  }

  async function fork(attempt, atStep) {
    const forked = await act('fork', { at_step: atStep, attempt }, 'fork');
    if (forked) fill(notice, h('p', { id: 'action-result' }, `Fork from step ${atStep} enqueued: `, link(`/missions/${forked.mission_id}`, forked.mission_id), '.'));
  }

  async function replay() {
    fill(notice, h('p', { class: 'muted' }, 'Replaying…'));
    try {
      const r = await api('GET', `/api/missions/${encodeURIComponent(missionId)}/replay`);
      const d = r.divergence;
      fill(notice, h('div', { id: 'action-result', class: r.verdict === 'identical' ? 'ok-box' : 'error' },
        h('p', {}, badge(r.verdict), ` attempt ${r.attempt}: ${r.steps} steps and ${r.tool_calls} tool calls played back through ${r.implementation}`,
          d ? ` — step ${d.step} differs in ${d.what}` : ', each decided as recorded.'),
        d ? h('details', {}, h('summary', {}, 'Recorded and now'), h('pre', {}, pretty({ recorded: d.recorded, now: d.now }))) : null));
    } catch (error) {
      fill(notice, h('p', {}, 'Could not replay:'), errorBox(error));
    }
  }

  function addEvent(event) {
    events.push(event);
    timeline.append(timelineItem(event));
    redrawTrace();
  }

  function drawCalls() {
    const llm = events.filter((e) => e.event_type === 'MissionLlmCalled').map((e) => payload(e).call);
    const tools = events.filter((e) => e.event_type === 'MissionToolCalled').length;
    const tokens = llm.reduce((a, c) => a + c.input_tokens + c.output_tokens, 0);
    const cost = llm.reduce((a, c) => a + (c.replayed ? 0 : c.cost_usd), 0);
    const finished = view && ['completed', 'failed', 'cancelled'].includes(view.status);
    const title = llm.length
      ? `Trace (${llm.length} model calls, ${fmtNum(tokens)} tokens, ${fmtUsd(cost)}; ${tools} tool calls)`
      : 'Trace';
    // Rows a reader opened stay open when the trace is drawn again for a new event.
    const opened = [...calls.querySelectorAll('.trace-rows > li')].map((li) => li.querySelector(':scope > details')?.open);
    fill(calls, section(title, trace(events, { finished, onFork: fork, children: view ? view.children : [] })));
    calls.querySelectorAll('.trace-rows > li').forEach((li, i) => {
      const details = li.querySelector(':scope > details');
      if (details && opened[i]) details.open = true;
    });
  }

  function onToken(token) {
    if (token.attempt !== pieces.attempt || token.seq === 0) pieces = { attempt: token.attempt, text: '' };
    if (token.text) {
      if (!pieces.text) fill(answer);
      pieces.text += token.text;
      answer.append(token.text);
      fill(streaming, h('span', { class: 'badge s-running' }, 'streaming'), ' ');
    }
    if (token.done) fill(streaming, '');
  }

  if (!(await loadView())) return undefined;
  let last;
  const reload = throttle(loadView, 300);
  try {
    const history = await api('GET', `/api/missions/${missionId}/events`);
    for (const event of history) addEvent(event);
    last = history.length ? history[history.length - 1].global_position : undefined;
    // Events recorded between the view's read and the history's are in the history, and the
    // feed starts after them: the view is read again, or its status would stay behind.
    if (history.length && history[history.length - 1].version > view.version) reload();
  } catch (error) {
    timeline.append(h('li', {}, errorBox(error)));
  }
  drawCalls();
  const feed = new Feed({ mission_id: missionId, tokens: true }, last, (message) => {
    if (message.token) { onToken(message.token); return; }
    addEvent(message);
    reload();
  }, shell.setLive);
  return () => { feed.stop(); reload.cancel(); redrawTrace.cancel(); };
}

function timelineItem(event) {
  const p = payload(event);
  return h('li', { dataset: { type: event.event_type } },
    h('details', {},
      h('summary', {},
        h('strong', {}, event.event_type.replace(/^Mission/, '')), ' ',
        h('span', { class: 'muted' }, `#${event.global_position} · ${fmtTime(event.recorded_at)}`), ' ',
        describe(event.event_type, p)),
      h('pre', {}, pretty({ payload: event.payload, metadata: event.metadata }))));
}

function describe(type, p) {
  switch (type) {
    case 'MissionAttemptFailed': return `attempt ${p.attempt}: ${p.error}`;
    case 'MissionLlmCalled': return `${p.call.model}: ${p.call.input_tokens}+${p.call.output_tokens} tokens, ${p.call.outcome}`;
    case 'MissionToolCalled': return `${p.call.tool}${p.call.refused ? ' (refused)' : p.call.error ? ' (error)' : ''}`;
    case 'MissionCancelled': return p.reason ? `reason: ${p.reason}` : '';
    case 'MissionRetried': return `by ${p.by}${p.reason ? `, reason: ${p.reason}` : ''}`;
    case 'MissionCopied': return `copy ${p.copy_id}${p.reason ? `, reason: ${p.reason}` : ''}`;
    case 'MissionSuspended': return `waiting for ${(p.children || []).length} sub-missions`;
    default: return p.attempt ? `attempt ${p.attempt}` : '';
  }
}

function tree(v) {
  const parts = [];
  if (v.parent_id) parts.push(h('p', {}, 'Spawned by ', link(`/missions/${v.parent_id}`, v.parent_id)));
  if (v.forked_from) parts.push(h('p', {}, 'Fork of ', link(`/missions/${v.forked_from.mission_id}`, v.forked_from.mission_id), ` at step ${v.forked_from.steps}`));
  for (const fork of v.forks) parts.push(h('p', {}, 'Forked into ', link(`/missions/${fork.mission_id}`, fork.mission_id), ` at step ${fork.steps}`));
  if (v.copied_from) parts.push(h('p', {}, 'Copy of ', link(`/missions/${v.copied_from}`, v.copied_from)));
  for (const copy of v.copies) parts.push(h('p', {}, 'Copied into ', link(`/missions/${copy.mission_id}`, copy.mission_id), ` by ${copy.by}${copy.reason ? ` (${copy.reason})` : ''}, ${fmtTime(copy.at)}`));
  if (v.waiting_for.length) parts.push(h('p', {}, `Waiting for ${v.waiting_for.length} sub-missions.`));
  if (v.children.length) parts.push(nodes(v.children));
  return parts.length ? parts : h('p', { class: 'muted' }, 'No parent, fork, copy or sub-mission.');
}

function nodes(children) {
  return h('ul', { class: 'tree' }, children.map((c) => h('li', {},
    link(`/missions/${c.mission_id}`, c.name || c.mission_id), ' ', c.status ? badge(c.status) : '', ' ',
    h('span', { class: 'muted' }, c.agent || ''),
    c.children && c.children.length ? nodes(c.children) : null)));
}
