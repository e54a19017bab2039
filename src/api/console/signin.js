// Signing in: a key (or the one-time code of the link a first start prints) is traded for a
// session cookie the page cannot read (HttpOnly); every request and the live feed carry it.
// The key itself is sent once and never kept by the page.

import { h, fill, api, errorBox } from './lib.js';

/// The signed-in key ({key, expires_at_ms}), or null when the browser has no session.
export async function whoami() {
  try {
    return await api('GET', '/api/session');
  } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}

/// Redeems the code of a sign-in link (`#sign-in=<code>`), once, and takes it out of the
/// address so that it is neither bookmarked nor shared.
export async function redeemLink() {
  const match = /^#sign-in=([0-9a-f]+)$/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, '', location.pathname + location.search);
  try {
    return await api('POST', '/api/session', { code: match[1] });
  } catch (error) {
    return error;
  }
}

/// Draws the sign-in form in `main`; `done()` runs once a session is held.
export function render(main, done, problem) {
  const key = h('input', { name: 'key', type: 'password', autocomplete: 'current-password',
    required: true, size: 40, placeholder: 'brn_…', 'aria-describedby': 'sign-in-help' });
  const status = h('div', { role: 'status' }, problem ? errorBox(problem) : null);
  const submit = async (event) => {
    event.preventDefault();
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      await api('POST', '/api/session', { key: key.value.trim() });
      key.value = '';
      done();
    } catch (error) {
      fill(status, errorBox(error));
      key.focus();
    } finally {
      button.disabled = false;
    }
  };
  const form = h('form', { class: 'stack card', id: 'sign-in', onsubmit: submit },
    h('label', {}, 'API key', key),
    h('p', { class: 'muted', id: 'sign-in-help' },
      'A key from `brain keys create`, or the one the first start printed. ',
      'The page keeps no copy: it holds a session for 12 hours or until you sign out.'),
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')),
    status);
  fill(main, h('h1', {}, 'Sign in'), form);
  key.focus();
}

/// Ends the session.
export async function signOut() {
  await api('DELETE', '/api/session');
}
