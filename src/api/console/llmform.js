// The LLM page's forms for routes, prices, limits and budgets: each an editable table of
// rows, drawn from the settings and read back into them. Reading gives every input the
// path the API names a field by (`routes.fast[1].model`, `prices.gpt-4o.input_usd_per_mtok`,
// `limits.openai/gpt-4o-mini.rpm`, `daily_budgets.kinds.coder.tokens_max`), so a refusal's
// field finds its input, and its message is shown beside it. Numbers are sent as typed, with
// no browser-side bounds: the API decides, and says why.

import { h } from './lib.js';

const PROVIDERS = ['offline', 'ollama', 'openai', 'anthropic'];

/// A number from its text: none when empty, the text itself when not a number (the API then
/// says what it wanted).
export function number(text) {
  const t = String(text ?? '').trim();
  if (t === '') return null;
  const n = Number(t);
  return Number.isNaN(n) ? t : n;
}

/// An input of a row: `column` {name, label, select?, size?}.
function cell(group, column, value) {
  const name = `${group}.${column.name}`;
  const attrs = { name, 'aria-label': column.label, size: column.size || 10 };
  if (column.select) {
    const options = column.select.includes(value) || value == null ? column.select : column.select.concat([value]);
    return h('select', { name, 'aria-label': column.label },
      options.map((o) => h('option', { value: o, selected: o === value }, o)));
  }
  return h('input', { ...attrs, value: value ?? '', inputmode: column.numeric ? 'decimal' : null });
}

/// An editable table: rows of `columns`, an Add button, a Remove button per row.
function rowsEditor(group, title, hint, columns, rows) {
  const body = h('tbody');
  const changed = (el) => el.dispatchEvent(new Event('change', { bubbles: true }));
  const addRow = (values) => {
    const tr = h('tr', {}, columns.map((c) => h('td', {}, cell(group, c, values[c.name]))),
      h('td', { class: 'actions' }, h('button', { type: 'button', class: 'remove', onclick: () => { changed(tr); tr.remove(); } }, 'Remove')));
    body.append(tr);
    return tr;
  };
  rows.forEach(addRow);
  const add = h('button', { type: 'button', class: 'add', onclick: () => {
    const tr = addRow({});
    changed(tr);
    tr.querySelector('input, select').focus();
  } }, 'Add');
  const el = h('fieldset', { id: `llm-${group}`, class: 'editor' }, h('legend', {}, title),
    h('p', { class: 'muted' }, hint),
    h('div', { class: 'scroll' }, h('table', {},
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c.label)), h('th'))), body)),
    add);
  /// Each row's inputs by column name.
  el.read = () => [...body.rows].map((tr) =>
    Object.fromEntries(columns.map((c) => [c.name, tr.querySelector(`[name="${group}.${c.name}"]`)])));
  return el;
}

/// Sets the path an input stands for, and answers its value.
function at(input, path) {
  input.dataset.field = path;
  return input.value.trim();
}

/// The editors for `settings`: `element`, `read()` (the settings' routes, prices, limits and
/// daily budgets from the inputs), and `showError(error)` (marks the input the refusal's
/// field names, with its message beside it; answers it, or null).
export function settingsEditors(settings) {
  const routes = rowsEditor('routes', 'Routes', 'Named routes: each tries its targets in the order listed (rows of one name, top first).',
    [{ name: 'route', label: 'route' }, { name: 'provider', label: 'provider', select: PROVIDERS },
      { name: 'host', label: 'host (empty: the provider\'s)', size: 22 }, { name: 'model', label: 'model', size: 16 }],
    Object.entries(settings.routes || {}).flatMap(([route, targets]) => targets.map((t) => ({ route, ...t }))));
  const prices = rowsEditor('prices', 'Prices', 'US dollars per million tokens, per model name.',
    [{ name: 'model', label: 'model', size: 16 }, { name: 'input', label: 'input $/Mtok', numeric: true, size: 8 },
      { name: 'output', label: 'output $/Mtok', numeric: true, size: 8 }],
    Object.entries(settings.prices || {}).map(([model, p]) => ({ model, input: p.input_usd_per_mtok, output: p.output_usd_per_mtok })));
  const limits = rowsEditor('limits', 'Limits', 'Shared by every process, per provider/model (openai/gpt-4o-mini); empty: no limit of that kind.',
    [{ name: 'target', label: 'provider/model', size: 20 }, { name: 'concurrency', label: 'in flight', numeric: true, size: 6 },
      { name: 'rpm', label: 'requests/min', numeric: true, size: 8 }, { name: 'tpm', label: 'tokens/min', numeric: true, size: 10 }],
    Object.entries(settings.limits || {}).map(([target, l]) => ({ target, ...l })));
  const budgets = settings.daily_budgets || {};
  const all = budgets.all || {};
  const allTokens = h('input', { name: 'budget_all.tokens_max', inputmode: 'numeric', value: all.tokens_max ?? '', size: 12 });
  const allCost = h('input', { name: 'budget_all.cost_usd_max', inputmode: 'decimal', value: all.cost_usd_max ?? '', size: 8 });
  const kinds = rowsEditor('budgets', 'Daily budgets per agent kind', 'UTC days; empty: no bound of that kind.',
    [{ name: 'kind', label: 'agent kind', size: 12 }, { name: 'tokens_max', label: 'tokens', numeric: true, size: 12 },
      { name: 'cost_usd_max', label: 'cost $', numeric: true, size: 8 }],
    Object.entries(budgets.kinds || {}).map(([kind, b]) => ({ kind, ...b })));
  const element = h('div', { class: 'editors' }, routes, prices, limits,
    h('fieldset', { id: 'llm-budget-all', class: 'editor' }, h('legend', {}, 'Daily budget of every call'),
      h('div', { class: 'row' }, h('label', {}, 'Tokens', allTokens), h('label', {}, 'Cost $', allCost))),
    kinds);

  function read() {
    const out = { routes: {}, prices: {}, limits: {}, daily_budgets: {} };
    for (const row of routes.read()) {
      const name = at(row.route, '');
      const list = out.routes[name] || (out.routes[name] = []);
      at(row.route, `routes.${name}`);
      const path = `routes.${name}[${list.length}].`;
      list.push({ provider: at(row.provider, path + 'provider'), host: at(row.host, path + 'host'), model: at(row.model, path + 'model') });
    }
    for (const row of prices.read()) {
      const model = at(row.model, '');
      at(row.model, `prices.${model}`);
      out.prices[model] = {
        input_usd_per_mtok: number(at(row.input, `prices.${model}.input_usd_per_mtok`)),
        output_usd_per_mtok: number(at(row.output, `prices.${model}.output_usd_per_mtok`)),
      };
    }
    for (const row of limits.read()) {
      const target = at(row.target, '');
      at(row.target, `limits.${target}`);
      out.limits[target] = bounded(row, `limits.${target}.`, ['concurrency', 'rpm', 'tpm']);
    }
    const allBudget = bounded({ tokens_max: allTokens, cost_usd_max: allCost }, 'daily_budgets.all.', ['tokens_max', 'cost_usd_max']);
    if (Object.keys(allBudget).length) out.daily_budgets.all = allBudget;
    const byKind = {};
    for (const row of kinds.read()) {
      const kind = at(row.kind, '');
      at(row.kind, `daily_budgets.kinds.${kind}`);
      byKind[kind] = bounded(row, `daily_budgets.kinds.${kind}.`, ['tokens_max', 'cost_usd_max']);
    }
    if (Object.keys(byKind).length) out.daily_budgets.kinds = byKind;
    return out;
  }

  return { element, read, showError: (error) => showError(element, error) };
}

/// The set numbers of `names` in a row, as an object (empty ones left out).
function bounded(row, path, names) {
  const out = {};
  for (const name of names) {
    const value = number(at(row[name], path + name));
    if (value !== null) out[name] = value;
  }
  return out;
}

/// Marks the input whose path the refusal names (or the nearest one holding it: a route's
/// name for `routes.fast`'s count of targets), its message beside it; answers it or null.
export function showError(scope, error) {
  for (const el of scope.querySelectorAll('.field-error')) el.remove();
  for (const el of scope.querySelectorAll('.invalid')) { el.classList.remove('invalid'); el.removeAttribute('aria-invalid'); }
  if (!error || !error.field) return null;
  let best = null;
  for (const input of scope.querySelectorAll('[data-field]')) {
    const path = input.dataset.field;
    const holds = error.field === path || error.field.startsWith(path + '.') || error.field.startsWith(path + '[');
    if (holds && (!best || path.length > best.dataset.field.length)) best = input;
  }
  if (!best) return null;
  best.classList.add('invalid');
  best.setAttribute('aria-invalid', 'true');
  best.after(h('span', { class: 'field-error', role: 'alert' }, error.message));
  return best;
}
