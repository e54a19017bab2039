// LLM: the gateway's runtime configuration (the default route's fields, and routes, prices,
// limits and budgets as editable tables, llmform.js; the whole as JSON too), saved with
// PUT /api/llm/config so the API validates it and its refusal is shown as it says it, beside
// the field it names; usage and cost by model and by agent kind as bars;
// each target's shared limiter; the last changes.
// The form saves with `If-Match` naming the version it was drawn from. When someone else
// changes the configuration, an untouched form is drawn again; one with edits keeps them and
// says what happened, and saving it is refused by the API (412) until it is loaded again.

import { h, fill, api, query, Feed, throttle, section, table, errorBox, bars, pretty,
  fmtNum, fmtUsd, fmtTime, fmtMs } from './lib.js';
import { settingsEditors, showError, number } from './llmform.js';

const SIMPLE = ['provider', 'host', 'model', 'temperature', 'max_tokens', 'enabled'];
/// The settings the editors below the default route show (llmform.js).
const EDITED = ['routes', 'prices', 'limits', 'daily_budgets'];
const PROVIDERS = ['offline', 'ollama', 'openai', 'anthropic'];

export async function render(main, _params, shell) {
  const configBox = h('div', { id: 'llm-config' });
  // Outside the form, which is drawn again whenever the configuration changes.
  const result = h('div', { id: 'llm-result', 'aria-live': 'polite' });
  const stale = h('div', { id: 'llm-stale', 'aria-live': 'polite' });
  /// The version the form shows, whether it holds edits not saved, and whether a change
  /// sent from it is on its way (its own event is then no news).
  let shown = null;
  const editing = { edited: false, sending: false };
  const usageBox = h('div', { class: 'grid', id: 'llm-usage' });
  const limitsBox = h('div');
  const historyBox = h('div');
  const windowSelect = h('select', { name: 'since', onchange: () => loadUsage() },
    [['1 hour', 1], ['24 hours', 24], ['7 days', 168]].map(([label, hours]) =>
      h('option', { value: hours, selected: hours === 24 }, label)));
  fill(main, h('h1', {}, 'LLM gateway'),
    section('Configuration', stale, configBox, result),
    section('Usage', h('div', { class: 'row' }, h('label', {}, 'Window', windowSelect)), usageBox),
    section('Limits', limitsBox),
    section('Recent changes', historyBox));

  /// The newest version any answer has shown: an older answer arriving late is not drawn.
  let newest = -1;

  /// Draws the configuration (`given`, or read now); with `keepEdits`, a form holding edits
  /// is left as it is and the page says what changed under it.
  async function loadConfig({ keepEdits = false, given } = {}) {
    try {
      const config = given || await api('GET', '/api/llm/config');
      if (config.version < newest) return config;
      newest = config.version;
      if (keepEdits && editing.sending) return config;
      if (keepEdits && editing.edited && config.version !== shown) {
        const last = config.history[config.history.length - 1];
        fill(stale, h('div', { class: 'error' },
          `Changed elsewhere${last ? ` by ${last.by}` : ''}: version ${config.version} is in force, this form shows ${shown}. `,
          'Your edits are kept; saving them is refused until you load the new version. ',
          h('button', { type: 'button', id: 'llm-load', onclick: () => loadConfig() }, `Load version ${config.version}`)));
      } else {
        shown = config.version;
        editing.edited = false;
        fill(stale);
        fill(configBox, configForm(config, loadConfig, result, editing));
      }
      fill(historyBox, table([
        { label: 'position', class: 'num', secondary: true, cell: (c) => c.global_position },
        { label: 'change', cell: (c) => c.event_type },
        { label: 'fields', secondary: true, cell: (c) => c.changed.join(', ') || '–' },
        { label: 'by', cell: (c) => c.by },
        { label: 'at', cell: (c) => fmtTime(c.at_ms) },
      ], [...config.history].reverse(), 'The configuration was never changed.'));
      return config;
    } catch (error) {
      fill(configBox, errorBox(error));
      return null;
    }
  }

  async function loadUsage() {
    const since = new Date(Date.now() - Number(windowSelect.value) * 3600e3).toISOString();
    const [byModel, byKind, limits] = await Promise.allSettled([
      api('GET', '/api/llm/usage' + query({ by: 'model', since })),
      api('GET', '/api/llm/usage' + query({ by: 'kind', since })),
      api('GET', '/api/llm/limits'),
    ]);
    fill(usageBox, usageCards('model', byModel), usageCards('agent kind', byKind));
    fill(limitsBox, limits.status === 'rejected' ? errorBox(limits.reason) : table(
      [{ label: 'target', cell: (t) => t.target || `${t.provider}/${t.model}` },
        { label: 'state', class: 'mono', cell: (t) => JSON.stringify(t) }],
      limits.value.targets, 'No target is configured.'));
  }

  // Usage moves with every call, the form only with a change of the configuration (which
  // redraws it: what is in force is what the form must show). The feed starts before the
  // first reads, so a change made while they are answered is not missed.
  const refreshUsage = throttle(loadUsage, 2000);
  const feed = new Feed({ stream_type: 'llm_config,llm_call,mission' }, undefined, (event) => {
    if (event.stream_type === 'llm_config') loadConfig({ keepEdits: true });
    else if (event.stream_type === 'llm_call' || event.event_type === 'MissionLlmCalled') refreshUsage();
  }, shell.setLive);
  await loadConfig();
  await loadUsage();
  return () => { feed.stop(); refreshUsage.cancel(); };
}

function usageCards(title, result) {
  if (result.status === 'rejected') return section(`By ${title}`, errorBox(result.reason));
  const groups = result.value.groups;
  return [
    section(`Cost by ${title}`, bars(groups.map((g) => ({ label: g.key, value: g.cost_usd })), fmtUsd)),
    section(`Tokens by ${title}`, bars(groups.map((g) => ({ label: g.key, value: g.input_tokens + g.output_tokens })))),
    section(`Calls by ${title}`, table([
      { label: title, cell: (g) => g.key || '(none)' },
      { label: 'calls', class: 'num', cell: (g) => fmtNum(g.calls) },
      { label: 'errors', class: 'num', cell: (g) => fmtNum(g.errors) },
      { label: 'p50', class: 'num', secondary: true, cell: (g) => fmtMs(g.latency_ms.p50) },
      { label: 'p99', class: 'num', cell: (g) => fmtMs(g.latency_ms.p99) },
    ], groups, 'No call in this window.')),
  ];
}

function configForm(config, reload, result, state) {
  const s = config.settings;
  // Fields neither the form nor its editors show (key_hosts) go back as they came.
  const kept = Object.fromEntries(Object.entries(s).filter(([k]) => !SIMPLE.includes(k) && !EDITED.includes(k)));
  // The version this form was drawn from: a change sent from it applies to that one only.
  const ifMatch = { 'if-match': `"${config.version}"` };
  const edit = () => { state.edited = true; };
  const editors = settingsEditors(s);
  const raw = h('textarea', { name: 'raw', rows: 14, value: pretty(s), 'aria-label': 'The settings as JSON' });
  const form = h('form', { class: 'stack', id: 'llm-form', onsubmit: save, oninput: edit, onchange: edit },
    h('fieldset', { class: 'editor', id: 'llm-default' }, h('legend', {}, 'Default route'),
      h('div', { class: 'row' },
        h('label', {}, 'Provider', h('select', { name: 'provider' },
          PROVIDERS.concat(PROVIDERS.includes(s.provider) ? [] : [s.provider]).map((p) => h('option', { value: p, selected: p === s.provider }, p)))),
        h('label', {}, 'Host', h('input', { name: 'host', value: s.host, size: 28 })),
        h('label', {}, 'Model', h('input', { name: 'model', value: s.model, size: 20 })),
        // Plain text, no browser-side bounds: the API decides and says why.
        h('label', {}, 'Temperature', h('input', { name: 'temperature', inputmode: 'decimal', value: s.temperature ?? '', size: 5 })),
        h('label', {}, 'Max tokens', h('input', { name: 'max_tokens', inputmode: 'numeric', value: s.max_tokens ?? '', size: 7 })),
        h('label', {}, 'Enabled', h('input', { name: 'enabled', type: 'checkbox', checked: s.enabled })))),
    editors.element,
    h('p', { class: 'muted' }, `Version ${config.version}; keys set: OpenAI ${config.keys_set.openai ? 'yes' : 'no'}, Anthropic ${config.keys_set.anthropic ? 'yes' : 'no'}.`),
    h('div', { class: 'row' },
      h('button', { type: 'submit', class: 'primary' }, 'Save'),
      h('button', { type: 'button', id: 'llm-reset', onclick: reset }, 'Reset to defaults')),
    h('details', { id: 'llm-raw' }, h('summary', {}, 'Edit as JSON'),
      h('p', { class: 'muted' }, 'The whole settings as the API takes them, saved as they are written here.'),
      raw, h('div', { class: 'row' }, h('button', { type: 'button', id: 'llm-raw-save', onclick: saveRaw }, 'Save JSON'))));

  async function save(event) {
    event.preventDefault();
    const data = new FormData(form);
    const simple = {};
    for (const name of SIMPLE) {
      const input = form.elements.namedItem(name);
      input.dataset.field = name;
      simple[name] = name === 'enabled' ? input.checked : input.value;
    }
    const settings = {
      ...kept, ...editors.read(), provider: data.get('provider'), host: simple.host, model: simple.model,
      temperature: number(simple.temperature), max_tokens: number(simple.max_tokens), enabled: simple.enabled,
    };
    const error = await change('PUT', '/api/llm/config', settings, 'Saved; the next call in every process uses it.');
    const input = showError(form, error && error.code === 'invalid_field' ? error : null);
    if (input) input.focus();
  }

  async function saveRaw() {
    showError(form, null);
    let settings;
    try {
      settings = JSON.parse(raw.value);
    } catch (error) {
      fill(result, errorBox({ code: 'not_json', field: 'settings as JSON', message: error.message }));
      return;
    }
    await change('PUT', '/api/llm/config', settings, 'Saved; the next call in every process uses it.');
  }

  function reset() {
    return change('POST', '/api/llm/config/reset', {}, 'Reset to the defaults.');
  }
  /// Sends a change from this form (at its version) and draws what the answer holds;
  /// answers the refusal, if any, once it is shown.
  async function change(method, path, body, done) {
    state.sending = true;
    try {
      const saved = await api(method, path, body, { headers: ifMatch });
      fill(result, h('p', {}, done));
      state.sending = false;
      reload({ given: saved });
      return null;
    } catch (error) {
      state.sending = false;
      fill(result, errorBox(error));
      // Changed under this form: say so (and offer the new version), the edits kept.
      if (error.code === 'version_mismatch') reload({ keepEdits: true });
      return error;
    }
  }
  return form;
}
