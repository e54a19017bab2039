// Chat: talk to an agent, its answer streaming in as server-sent events; conversations are
// listed beside it, and `/chat/<id>` opens one to read and go on with. The page follows the
// conversations' events: the list stays current, and turns added elsewhere (another tab,
// a script) appear in the open conversation, after the ones already shown.

import { h, fill, api, query, follow, throttle, errorBox, ApiError, fmtTime } from './lib.js';

/// Longest a streamed answer may take before the page gives up on it.
const ANSWER_TIMEOUT_MS = 300000;

export async function render(main, [conversationId], shell) {
  const info = await api('GET', '/api/agents/info');
  const chatters = info.builtin.filter((b) => b.system_prompt).map((b) => b.name);
  const list = h('ul', { class: 'convs', id: 'conversations' });
  const messages = h('div', { class: 'messages', id: 'messages', 'aria-live': 'polite' });
  const notice = h('div');
  const agent = h('select', { name: 'agent' }, chatters.map((name) => h('option', { value: name }, name)));
  const input = h('textarea', { name: 'message', rows: 3, required: true, placeholder: 'Message (Ctrl+Enter sends)' });
  const send = h('button', { type: 'submit', class: 'primary' }, 'Send');
  const form = h('form', { class: 'stack', id: 'chat-form', onsubmit: submit },
    h('div', { class: 'row' }, h('label', {}, 'Agent', agent), h('a', { href: '/chat' }, 'New conversation')),
    h('label', {}, 'Message', input), h('div', { class: 'row' }, send));
  input.addEventListener('keydown', (e) => { if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
  let current = conversationId || null;
  /// The open conversation's stream version shown, and whether this page is sending a turn
  /// (whose own events are then no news).
  let shownVersion = 0;
  let sending = false;
  const controller = new AbortController();

  fill(main, h('h1', {}, 'Chat'),
    h('div', { class: 'chat' },
      h('aside', { class: 'card' }, h('h2', {}, 'Conversations'), list),
      h('section', { class: 'card' }, messages, notice, form)));

  /// Draws the list; answers the log position its read model reflected.
  async function loadList() {
    try {
      const page = await api('GET', '/api/conversations' + query({ limit: 50 }));
      fill(list, page.conversations.length ? page.conversations.map((c) => h('li', {},
        h('a', { href: `/chat/${c.conversation_id}`, 'aria-current': c.conversation_id === current ? 'page' : null,
          title: `${c.agent} · ${fmtTime(c.updated_at)}` },
        h('strong', {}, c.agent), ' ', c.title || c.conversation_id))) : h('li', { class: 'muted' }, 'None yet.'));
      return page.position;
    } catch (error) {
      fill(list, h('li', {}, errorBox(error)));
      return undefined;
    }
  }

  /// Shows the turns of the open conversation that are not on the page yet.
  async function loadTurns() {
    if (!current || sending) return;
    try {
      const conversation = await api('GET', `/api/conversations/${encodeURIComponent(current)}`);
      // A turn sent from this page meanwhile is drawn by its sender; this read predates it.
      if (sending) return;
      // Turns are only ever added: what is shown must be where the conversation begins, or
      // (turns sent from two places at once) it is drawn again from the start.
      const shown = [...messages.querySelectorAll('.msg')];
      const turns = conversation.messages;
      let from = shown.length;
      if (from > turns.length || shown.some((el, i) => el.textContent !== turns[i].text)) {
        messages.replaceChildren();
        from = 0;
      }
      for (const turn of turns.slice(from)) bubble(turn.speaker === 'user' ? 'user' : 'assistant', turn.text);
      agent.value = conversation.agent;
      agent.disabled = true;
      shownVersion = conversation.version;
    } catch (error) {
      fill(notice, errorBox(error));
    }
  }

  function bubble(role, text) {
    const el = h('div', { class: `msg ${role}`, dataset: { role } }, text);
    messages.append(el);
    messages.scrollTop = messages.scrollHeight;
    return el;
  }

  // The list first, and the feed from the position it reflected; the turns read after it,
  // so a turn is either in that read or after that position, and so delivered by the feed.
  const refreshTurns = throttle(loadTurns, 300);
  const stopFollowing = await follow({ stream_type: 'conversation' }, loadList, shell.setLive, {
    ms: 1000,
    onEvent: (event) => { if (event.stream_id === current && event.version > shownVersion) refreshTurns(); },
  });
  await loadTurns();

  async function submit(event) {
    event.preventDefault();
    const text = input.value;
    if (!text.trim()) return;
    fill(notice);
    sending = true;
    send.disabled = true;
    bubble('user', text);
    input.value = '';
    const answer = bubble('assistant', '');
    answer.classList.add('streaming');
    try {
      const done = await stream({ agent: agent.value, message: text, conversation_id: current ?? undefined, stream: true },
        (piece) => { answer.append(piece); messages.scrollTop = messages.scrollHeight; }, controller.signal);
      answer.classList.remove('streaming');
      answer.dataset.done = 'true';
      if (!current) {
        current = done.conversation_id;
        agent.disabled = true;
        shell.setPath(`/chat/${current}`);
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      answer.remove();
      fill(notice, errorBox(error));
      input.value = text;
    } finally {
      sending = false;
      send.disabled = false;
      input.focus();
    }
    // What this page sent is shown; this only notes the version (or adds what came meanwhile).
    loadTurns();
  }
  return () => { controller.abort(); stopFollowing(); refreshTurns.cancel(); };
}

/// POSTs a chat request and reads its server-sent events: `token` pieces go to `onPiece`;
/// resolves with `done`'s answer, throws on `error` or a refused request.
async function stream(body, onPiece, signal) {
  const response = await fetch('/api/agents/chat', {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify(body),
    signal: AbortSignal.any([signal, AbortSignal.timeout(ANSWER_TIMEOUT_MS)]),
  });
  if (!response.ok) {
    const json = await response.json().catch(() => ({}));
    const e = json.error || {};
    throw new ApiError(response.status, e.code, e.message || response.statusText, e.field);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ApiError(0, 'cut_off', 'the answer stream ended without a result');
    buffered += value;
    let end;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let name = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) name = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (!data.length) continue;
      const json = JSON.parse(data.join('\n'));
      if (name === 'token') onPiece(json.text);
      else if (name === 'done') return json;
      else if (name === 'error') throw new ApiError(0, json.code, json.message);
    }
  }
}


