// Injected into every page before its own scripts (DevTools'
// Page.addScriptToEvaluateOnNewDocument, which the page's Content-Security-Policy does not
// govern). It records which operations the page calls and which fields it reads from their
// answers, without changing what the page sees:
// - fetch: each same-origin request is noted (method, path, status, the names of its query
//   parameters); the answer's text is remembered, and the JSON.parse of exactly that text
//   (what the console's api() does) answers a recording Proxy instead of the plain value;
//   `response.json()` does the same, and a text/event-stream body is read alongside the
//   page, each event's data remembered with the event's name;
// - WebSocket: each message's text is remembered before the page's own handler parses it;
// - the Proxy notes every property the page reads: the path of keys from the answer's root
//   (`[]` for an array element), whether the answer had it, and the JavaScript type of what
//   it held. Array lengths and methods, symbols, `then` (a promise resolving to the value)
//   and `toJSON` (JSON.stringify) are the language asking, not the page.
// Reads are noted once each and at most RECORDS_MAX of them, so a busy page costs a set
// lookup per read. window.__contract.take() hands over what was recorded since the last call.
(() => {
  if (window.__contract) return;
  const RECORDS_MAX = 50000;
  const PENDING_MAX = 200;
  const seen = new Set();
  let calls = [];
  let reads = [];
  let dropped = 0;
  const note = (list, record) => {
    const key = JSON.stringify(record);
    if (seen.has(key)) return;
    if (seen.size >= RECORDS_MAX) { dropped++; return; }
    seen.add(key);
    list.push(record);
  };
  const typeOf = (v) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
  const INDEX = /^(0|[1-9][0-9]*)$/;
  // One Proxy per value and path, so that the page comparing two reads of the same element
  // (`missions.indexOf(m)`) still finds them equal.
  const proxies = new WeakMap();

  function wrap(value, context, path) {
    if (value === null || typeof value !== 'object') return value;
    const key = path.join('\u0000');
    let byPath = proxies.get(value);
    if (!byPath) { byPath = new Map(); proxies.set(value, byPath); }
    if (byPath.has(key)) return byPath.get(key);
    const array = Array.isArray(value);
    const proxy = new Proxy(value, {
      get(target, name, receiver) {
        const v = Reflect.get(target, name, receiver);
        if (typeof name !== 'string') return v;
        const own = Object.prototype.hasOwnProperty.call(target, name);
        if (array) return INDEX.test(name) ? wrap(v, context, [...path, '[]']) : v;
        if (!own && (name in Object.prototype || name === 'then' || name === 'toJSON')) return v;
        const field = [...path, name];
        note(reads, { ...context, field, present: own, type: own ? typeOf(v) : 'absent' });
        return wrap(v, context, field);
      },
    });
    byPath.set(key, proxy);
    return proxy;
  }

  const pending = [];
  const expect = (text, context) => {
    pending.push({ text, context });
    if (pending.length > PENDING_MAX) pending.shift();
  };
  const parse = JSON.parse;
  JSON.parse = function (text, reviver) {
    const value = parse.call(this, text, reviver);
    const at = pending.findIndex((p) => p.text === text);
    if (at < 0) return value;
    const [{ context }] = pending.splice(at, 1);
    // A WebSocket's messages are of more than one kind: which keys a message has says
    // which it is.
    const root = context.kind === 'ws' && value && typeof value === 'object' ? Object.keys(value).sort() : null;
    return wrap(value, { ...context, root }, []);
  };

  function eventStream(context) {
    const decoder = new TextDecoder();
    let buffered = '';
    return new TransformStream({
      transform(chunk, controller) {
        buffered += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = buffered.indexOf('\n\n')) >= 0) {
          const block = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          let event = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) event = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (data.length) expect(data.join('\n'), { ...context, kind: 'sse', event });
        }
        controller.enqueue(chunk);
      },
    });
  }

  const names = (url) => [...new Set(url.searchParams.keys())].sort();

  const realFetch = window.fetch;
  window.fetch = async function (input, init) {
    const isRequest = input instanceof Request;
    const url = new URL(isRequest ? input.url : String(input), location.href);
    const method = String((init && init.method) || (isRequest ? input.method : 'GET')).toUpperCase();
    const response = await realFetch.call(this, input, init);
    if (url.origin !== location.origin) return response;
    const context = { kind: 'http', method, path: url.pathname, status: response.status, event: null, root: null };
    note(calls, { kind: 'http', method, path: url.pathname, status: response.status, query: names(url) });
    const text = response.text.bind(response);
    response.text = async () => {
      const body = await text();
      expect(body, context);
      return body;
    };
    response.json = async () => wrap(parse(await text()), context, []);
    const type = response.headers.get('content-type') || '';
    if (type.startsWith('text/event-stream') && response.body) {
      const body = response.body.pipeThrough(eventStream(context));
      Object.defineProperty(response, 'body', { value: body });
    }
    return response;
  };

  const RealWebSocket = window.WebSocket;
  window.WebSocket = class extends RealWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const parsed = new URL(url, location.href);
      const path = parsed.pathname;
      const context = { kind: 'ws', method: 'GET', path, status: 101, event: null, root: null };
      note(calls, { kind: 'ws', method: 'GET', path, status: 101, query: names(parsed) });
      // Added before the page sets onmessage, so it runs first.
      this.addEventListener('message', (message) => {
        if (typeof message.data === 'string') expect(message.data, context);
      });
    }
  };

  window.__contract = {
    take() {
      const taken = { calls, reads, dropped };
      calls = [];
      reads = [];
      dropped = 0;
      return taken;
    },
  };
})();
