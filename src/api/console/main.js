// The console's shell: it maps the path to a page, loads that page's module on first use,
// and follows links without reloading. A page module exports `render(main, params, shell)`
// and may return a function that stops what it started (feeds, timers) when the page is left.

import { h, fill, errorBox, ApiError, TIME_MODES, THEMES, getTimeMode, setTimeMode, getTheme,
  setTheme, applyTheme, reloadPrefs } from './lib.js';
import * as signIn from './signin.js';

const ROUTES = [
  { pattern: /^\/$/, module: './overview.js', title: 'Overview' },
  { pattern: /^\/missions$/, module: './missions.js', title: 'Missions' },
  { pattern: /^\/missions\/([^/]+)$/, module: './mission.js', title: 'Mission' },
  { pattern: /^\/queue$/, module: './queue.js', title: 'Queue' },
  { pattern: /^\/agents$/, module: './agents.js', title: 'Agents' },
  { pattern: /^\/agents\/([^/]+)$/, module: './agents.js', title: 'Agent' },
  { pattern: /^\/events$/, module: './events.js', title: 'Events' },
  { pattern: /^\/llm$/, module: './llm.js', title: 'LLM' },
  { pattern: /^\/chat$/, module: './chat.js', title: 'Chat' },
  { pattern: /^\/chat\/([^/]+)$/, module: './chat.js', title: 'Chat' },
];

const main = document.getElementById('main');
const live = document.getElementById('live');
const who = document.getElementById('who');
let leave = null;
let generation = 0;
/// The signed-in key, once known; null asks for a sign-in before any page is drawn.
let session = null;

/// What pages may ask of the shell.
const shell = {
  /// Shows the state of the page's live feed in the header.
  setLive(state) {
    live.textContent = state;
    live.className = `feed-state ${state}`;
  },
  /// Goes to a console path, as a followed link would.
  go(path, { replace = false } = {}) {
    if (replace) history.replaceState(null, '', path);
    else history.pushState(null, '', path);
    route();
  },
  /// Changes the address without drawing again (a page that already shows what it names).
  setPath(path) {
    history.replaceState(null, '', path);
    markNav();
  },
};

function markNav() {
  const section = '/' + (location.pathname.split('/')[1] || '');
  for (const a of document.querySelectorAll('header nav a')) {
    if (a.getAttribute('href') === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

/// Shows who is signed in, with the way out.
function showWho() {
  if (!session) { fill(who); return; }
  const out = async () => {
    try { await signIn.signOut(); } catch (e) { console.warn(e); }
    session = null;
    route();
  };
  fill(who, h('span', { class: 'muted' }, session.key.name),
    h('button', { type: 'button', onclick: out }, 'Sign out'));
}

/// Asks for a key (or takes a sign-in link's code) until a session is held.
async function ensureSession(mine) {
  if (session) return true;
  const redeemed = await signIn.redeemLink();
  if (redeemed && !(redeemed instanceof ApiError)) session = redeemed;
  if (!session) session = await signIn.whoami();
  if (mine !== generation) return false;
  showWho();
  if (session) return true;
  document.title = 'Sign in · BRAiN';
  signIn.render(main, () => { session = null; route(); }, redeemed instanceof ApiError ? redeemed : null);
  return false;
}

window.addEventListener('brain:signed-out', () => {
  if (!session) return;
  session = null;
  route();
});

async function route() {
  const mine = ++generation;
  if (leave) { try { leave(); } catch (e) { console.warn(e); } leave = null; }
  // Empty (hidden) until the page starts a feed of its own.
  shell.setLive('');
  markNav();
  try {
    if (!(await ensureSession(mine))) return;
  } catch (error) {
    if (mine === generation) fill(main, h('h1', {}, 'BRAiN'), errorBox(error));
    return;
  }
  const path = location.pathname.replace(/\/+$/, '') || '/';
  const found = ROUTES.map((r) => ({ r, m: r.pattern.exec(path) })).find((x) => x.m);
  if (!found) {
    fill(main, h('h1', {}, 'Not found'), h('p', {}, `The console has no page at ${path}.`));
    return;
  }
  document.title = `${found.r.title} · BRAiN`;
  try {
    const page = await import(found.r.module);
    if (mine !== generation) return;
    fill(main);
    const params = found.m.slice(1).map(decodeURIComponent);
    const stop = await page.render(main, params, shell);
    if (mine !== generation) { if (stop) stop(); return; }
    leave = stop || null;
  } catch (error) {
    if (mine !== generation) return;
    fill(main, h('h1', {}, found.r.title), errorBox(error));
  }
}

document.addEventListener('click', (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const a = event.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  const first = url.pathname.split('/')[1];
  if (!['', 'missions', 'queue', 'agents', 'events', 'llm', 'chat'].includes(first)) return;
  event.preventDefault();
  if (url.pathname === location.pathname && url.search === location.search) {
    // A link within the page (the skip link): the focus goes to its target. Left to the
    // browser, the new fragment would count as a navigation and draw the page again.
    const target = url.hash && document.getElementById(decodeURIComponent(url.hash.slice(1)));
    if (target) target.focus();
    return;
  }
  history.pushState(null, '', url.pathname + url.search);
  route();
  main.focus({ preventScroll: true });
  window.scrollTo(0, 0);
});

/// The header's two preferences, kept in the browser: how times read (a change draws the
/// page again, so every time on it follows) and the theme.
function showPrefs() {
  const labels = { local: 'Local time', utc: 'UTC', relative: 'Relative', auto: 'Theme: system', light: 'Light', dark: 'Dark' };
  const choice = (name, values, current, onchange) => h('select', { name, 'aria-label': name, onchange },
    values.map((v) => h('option', { value: v, selected: v === current }, labels[v])));
  const time = choice('times', TIME_MODES, getTimeMode(), () => { setTimeMode(time.value); route(); });
  const theme = choice('theme', THEMES, getTheme(), () => setTheme(theme.value));
  fill(document.getElementById('prefs'), time, theme);
}

applyTheme();
showPrefs();
// Chosen in another tab: this one follows.
window.addEventListener('storage', () => {
  const redraw = reloadPrefs();
  showPrefs();
  if (redraw) route();
});
window.addEventListener('popstate', route);
route();
