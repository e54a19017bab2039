// Formatting, and the reader's two display preferences (how times read, light or dark),
// kept in localStorage. lib.js re-exports all of it: pages import from lib.js.
//
// Every time says its zone: `2026-12-07 20:36:38 +01:00` (local, the default), `2026-12-07
// 19:36:38 UTC`, or `4 min ago` (relative, with the exact moment in its title where the page
// draws a <time> with `when()`). Dates are ISO-ordered, so 06/12 cannot be read as June.
// Times are written from the Date's own fields, not through Intl: the event feed formats a
// thousand a second.

const NUMBER = new Intl.NumberFormat('en');

/// localStorage keys of the preferences.
const TIME_KEY = 'brain.time';
const THEME_KEY = 'brain.theme';
export const TIME_MODES = ['local', 'utc', 'relative'];
export const THEMES = ['auto', 'light', 'dark'];

function stored(key, allowed) {
  let value = null;
  try { value = localStorage.getItem(key); } catch { /* storage refused: the default */ }
  return allowed.includes(value) ? value : allowed[0];
}

function store(key, value) {
  try { localStorage.setItem(key, value); } catch { /* storage refused: this page only */ }
}

let timeMode = stored(TIME_KEY, TIME_MODES);

/// Reads the preferences again (another tab changed them); answers whether the time mode
/// changed.
export function reloadPrefs() {
  const before = timeMode;
  timeMode = stored(TIME_KEY, TIME_MODES);
  applyTheme();
  return timeMode !== before;
}

/// How times read: 'local', 'utc' or 'relative'.
export function getTimeMode() {
  return timeMode;
}

export function setTimeMode(mode) {
  if (!TIME_MODES.includes(mode)) return;
  timeMode = mode;
  store(TIME_KEY, mode);
}

export function getTheme() {
  return stored(THEME_KEY, THEMES);
}

/// 'auto' follows the system; 'light' and 'dark' override it (app.css reads `data-theme`).
export function setTheme(theme) {
  if (!THEMES.includes(theme)) return;
  store(THEME_KEY, theme);
  applyTheme();
}

export function applyTheme() {
  const theme = getTheme();
  if (theme === 'auto') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
}

export function fmtNum(n) {
  return n === null || n === undefined ? '–' : NUMBER.format(Number(n));
}

export function fmtUsd(n) {
  if (n === null || n === undefined) return '–';
  return '$' + (n < 0.01 && n > 0 ? n.toFixed(5) : n.toFixed(2));
}

/// A duration in milliseconds, in the two largest units that matter: `850 ms`, `12.4 s`,
/// `4 min 12 s`, `3 h 05 min`, `2 d 4 h`.
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return '–';
  ms = Number(ms);
  if (ms < 0) return '-' + fmtDuration(-ms);
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  const m = Math.floor(s / 60);
  if (m < 24 * 60) return `${Math.floor(m / 60)} h ${pad(m % 60)} min`;
  const hours = Math.floor(m / 60);
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/// The older name of fmtDuration, which pages still use.
export const fmtMs = fmtDuration;

function pad(n) {
  return n < 10 ? '0' + n : String(n);
}

function toDate(at) {
  if (at === null || at === undefined || at === '') return null;
  const date = new Date(at);
  return isNaN(date) ? null : date;
}

/// The zone of a local time: `+01:00`, `-05:30`.
function offset(date) {
  const minutes = -date.getTimezoneOffset();
  const abs = Math.abs(minutes);
  return `${minutes < 0 ? '-' : '+'}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

function isoDate(date, utc) {
  return utc
    ? `${date.getUTCFullYear()}-${pad(date.getUTCMonth() + 1)}-${pad(date.getUTCDate())}`
    : `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function isoClock(date, utc) {
  return utc
    ? `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}`
    : `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/// The zone times are shown in now: `UTC`, or the local offset (`+01:00`).
export function zoneLabel() {
  return timeMode === 'utc' ? 'UTC' : offset(new Date());
}

/// A moment with its date and zone, in the mode asked (the reader's by default), from an
/// RFC 3339 string or milliseconds.
export function fmtTime(at, mode = timeMode) {
  const date = toDate(at);
  if (!date) return at === null || at === undefined || at === '' ? '–' : String(at);
  if (mode === 'relative') return fmtAgo(date);
  if (mode === 'utc') return `${isoDate(date, true)} ${isoClock(date, true)} UTC`;
  return `${isoDate(date, false)} ${isoClock(date, false)} ${offset(date)}`;
}

/// The time of day of a moment with its zone (`14:03:27 +01:00`, `13:03:27 UTC`), or how
/// long ago it was in relative mode.
export function fmtClock(at, mode = timeMode) {
  const date = toDate(at);
  if (!date) return '–';
  if (mode === 'relative') return fmtAgo(date);
  if (mode === 'utc') return `${isoClock(date, true)} UTC`;
  return `${isoClock(date, false)} ${offset(date)}`;
}

/// How long ago a moment was, e.g. "4.0 s ago"; "in 3 s" for one ahead of this clock.
export function fmtAgo(at) {
  const date = toDate(at);
  if (!date) return '–';
  const ms = Date.now() - date.getTime();
  if (ms < 0) return ms > -1000 ? 'now' : `in ${fmtDuration(-ms)}`;
  return `${fmtDuration(ms)} ago`;
}

/// A <time> element for a moment: the reader's mode as text, the exact moment (in the
/// other absolute form) as its title.
export function when(at, clock = false) {
  const date = toDate(at);
  const el = document.createElement('time');
  if (!date) { el.textContent = '–'; return el; }
  el.dateTime = date.toISOString();
  el.textContent = clock ? fmtClock(date) : fmtTime(date);
  el.title = fmtTime(date, timeMode === 'utc' ? 'local' : 'utc');
  return el;
}
