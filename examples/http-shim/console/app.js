// jitflow console: a client of the shim's REST endpoints like any other. The bearer token the
// user pastes in is kept in this tab's sessionStorage only and sent on every call, so every
// scope and tenant rule of the API applies. No framework, no build step: plain DOM.
'use strict';

const TOKEN_KEY = 'jitflow.token';
const PAGE = 50;            // rows per list page
const POLL_MS = 1000;       // how often a connection's page asks for new events
const STREAM_PAGE = 1000;   // events per request (the shim's largest stream page)

let pollTimer = null;       // the live connection page's poller, stopped on navigation

function token() { return sessionStorage.getItem(TOKEN_KEY); }

// Elements are built with this helper: text goes through textContent, never innerHTML.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// What a client sent with the signal an event records (requestOrigin, metaData), for a tooltip.
function sentWith(e) {
  const parts = [];
  if (e.requestOrigin) parts.push('requestOrigin: ' + e.requestOrigin);
  if (e.metaData) parts.push('metaData: ' + JSON.stringify(e.metaData));
  return parts.length ? parts.join('\n') : undefined;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

class ApiError extends Error {
  constructor(status, text) { super(text); this.status = status; }
}

// One call to the API. A 401 signs the user out (the token expired or was refused).
async function api(method, path, body) {
  const headers = { 'Authorization': 'Bearer ' + token() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = text; }
  if (!response.ok) {
    const message = value && value.messages && value.messages[0] ? value.messages[0].text : (typeof value === 'string' ? value : response.statusText);
    if (response.status === 401) { signOut(message); }
    throw new ApiError(response.status, message);
  }
  return { value, headers: response.headers };
}

function showError(e) {
  const box = document.getElementById('error');
  box.textContent = e ? (e.status ? e.status + ': ' : '') + e.message : '';
  box.hidden = !e;
}

function badge(state, id) {
  return el('span', { class: 'badge state-' + state, id }, state);
}

function relative(iso) {
  if (!iso) return '';
  const ms = Date.parse(iso) - Date.now();
  const s = Math.round(Math.abs(ms) / 1000);
  const amount = s < 60 ? s + ' s' : s < 6000 ? Math.round(s / 60) + ' min' : s < 172800 ? Math.round(s / 3600) + ' h' : Math.round(s / 86400) + ' d';
  return ms > 0 ? 'in ' + amount : amount + ' ago';
}

function when(iso) { return iso ? el('span', { title: iso }, iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), ' (', relative(iso), ')') : '-'; }

function query(params) {
  return Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== '')
    .map(([k, v]) => encodeURIComponent(k) + '=' + encodeURIComponent(v)).join('&');
}

function page(title, ...content) {
  const p = document.getElementById('page');
  p.replaceChildren(el('h1', {}, title), ...content);
  return p;
}

// ---- connections ---------------------------------------------------------------------------

function connectionsPage(params) {
  const filter = params.get('filter') || '';
  const input = el('input', { id: 'filter', type: 'text', value: filter, placeholder: 'state.value eq "ACTIVE" and identity.id eq "alice"' });
  const error = el('div', { id: 'filter-error', class: 'error', hidden: true });
  const body = el('tbody', {});
  const pager = el('div', { class: 'pager' });
  const apply = () => { location.hash = '#/connections?' + query({ filter: input.value.trim() }); };
  const form = el('form', { class: 'filter-row', onsubmit: (e) => { e.preventDefault(); apply(); } },
    input, el('button', { type: 'submit', id: 'apply' }, 'Filter'));
  page('Connections', form, error,
    el('table', { id: 'connections' },
      el('thead', {}, el('tr', {}, ['Id', 'State', 'Type', 'Identity', 'Entitlement', 'Expires'].map((h) => el('th', {}, h)))),
      body),
    pager);
  // Keyset paging: the searchAfter of each page seen, so Previous goes back.
  const stack = [];
  const load = async (after) => {
    try {
      const { value, headers } = await api('GET', '/entitlement-connections/v1?' + query({ filters: filter, sorters: 'id', limit: PAGE, count: 'true', searchAfter: after }));
      error.hidden = true;
      body.replaceChildren(...value.map((c) => el('tr', { 'data-id': c.id },
        el('td', { class: 'mono' }, el('a', { href: '#/connection/' + c.id, class: 'conn-link' }, c.id)),
        el('td', {}, badge(c.state.value)),
        el('td', {}, c.type),
        el('td', {}, c.identity.name + ' (' + c.identity.id + ')'),
        el('td', {}, c.entitlement.name),
        el('td', {}, when(c.jit.expiration)))));
      const total = headers.get('x-total-count');
      const next = value.length === PAGE ? value[value.length - 1].id : null;
      pager.replaceChildren(
        el('button', { type: 'button', id: 'prev', disabled: stack.length === 0, onclick: () => { stack.pop(); load(stack[stack.length - 1]); } }, 'Previous'),
        el('button', { type: 'button', id: 'next', disabled: !next, onclick: () => { stack.push(next); load(next); } }, 'Next'),
        el('span', { id: 'total' }, total === null ? '' : total + ' connections'));
    } catch (e) {
      if (e.status === 400) {
        // The filter (or another parameter) did not parse: the reason goes under the box.
        error.textContent = e.message;
        error.hidden = false;
        body.replaceChildren();
      } else { showError(e); }
    }
  };
  load(undefined);
}

// ---- one connection ------------------------------------------------------------------------

function changeOf(e) {
  const c = e.event && e.event.event ? e.event.event.change : null;
  const fields = c && typeof c === 'object' ? Object.values(c)[0] : null;
  return fields && typeof fields === 'object' ? fields : {};
}

const MARKS = {
  Provisioned: 'provisioned', Extended: 'extend', ExpiryWarned: 'warning', Expired: 'deprovision',
  DeactivationRequested: 'deprovision', RevokeFailed: 'retry', RevokeRetried: 'retry', Revoked: 'deprovision',
  GrantFailed: 'retry', GrantRetried: 'retry',
};

// The activation as a horizontal bar from its request to its expiry (or its end), with a mark
// for each extend, the warning, the deprovision and each of its retries, and "now".
function timeline(detail, events) {
  const a = detail.activation;
  const box = svg('svg', { id: 'timeline', viewBox: '0 0 1000 120', preserveAspectRatio: 'none', role: 'img' });
  if (!a) { box.append(svg('text', { x: 10, y: 60 }, 'never activated')); return box; }
  const ms = (iso) => (iso ? Date.parse(iso) : NaN);
  const mine = events.filter((e) => e.event && e.event.event && e.event.event.activation === a.id);
  const start = ms(a.requestedAt);
  const times = [start, ms(a.expiresAt), ms(a.endedAt), ms(a.warnAt), ms(a.retryAt), start + a.periodMins * 60000]
    .concat(mine.map((e) => ms(e.at))).filter((t) => !isNaN(t));
  let end = Math.max(...times);
  // "Now" is this machine's clock: drawn when it falls on or near the activation's span (an
  // activation that ended long ago keeps its own scale instead of shrinking to a sliver).
  const showNow = Date.now() >= start && Date.now() <= end + (end - start) * 0.25;
  if (showNow) end = Math.max(end, Date.now());
  const span = Math.max(end - start, 1000);
  const x = (t) => 20 + ((t - start) / span) * 960;
  const barEnd = ms(a.expiresAt) || ms(a.endedAt) || start + a.periodMins * 60000;
  box.append(svg('rect', { id: 'timeline-bar', class: 'bar' + (detail.running ? '' : ' ended'), x: x(start), y: 40, width: Math.max(x(barEnd) - x(start), 2), height: 24, 'data-from': a.requestedAt, 'data-to': new Date(barEnd).toISOString() }));
  box.append(svg('text', { x: x(start), y: 30 }, 'requested'));
  if (a.expiresAt) box.append(svg('text', { x: Math.min(x(ms(a.expiresAt)), 940), y: 80 }, 'expiry'));
  let row = 0;
  for (const e of mine) {
    const kind = MARKS[e.change];
    if (!kind) continue;
    const t = x(ms(e.at));
    box.append(svg('line', { class: 'mark ' + kind, x1: t, x2: t, y1: 34, y2: 70, 'data-change': e.change },));
    box.append(svg('text', { x: Math.min(t + 2, 940), y: 92 + (row++ % 3) * 10 }, e.change));
  }
  if (detail.running && a.warnAt) {
    const t = x(ms(a.warnAt));
    box.append(svg('line', { class: 'mark warning', x1: t, x2: t, y1: 34, y2: 70, 'stroke-dasharray': '2 2', 'data-change': 'WarningDue' }));
  }
  if (showNow) {
    const now = x(Date.now());
    box.append(svg('line', { class: 'now', x1: now, x2: now, y1: 10, y2: 110 }));
    box.append(svg('text', { x: Math.min(now + 2, 960), y: 18 }, 'now'));
  }
  return box;
}

function facts(rows) {
  return el('table', { class: 'facts' }, el('tbody', {}, rows.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, v)))));
}

function connectionPage(id) {
  const head = el('div', { id: 'connection-head' });
  const minutes = el('input', { id: 'minutes', type: 'number', min: 1, placeholder: 'minutes' });
  const signal = async (kind) => {
    const body = { connectionId: id };
    const m = parseInt(minutes.value, 10);
    if (kind === 'activate' && m > 0) body.activationPeriodMins = m;
    if (kind === 'extend' && m > 0) body.activationPeriodExtensionMins = m;
    try { await api('POST', '/jit-activations/v1/' + kind, body); showError(null); await refresh(); } catch (e) { showError(e); }
  };
  const signals = el('div', { class: 'signals' }, minutes,
    el('button', { type: 'button', id: 'activate', onclick: () => signal('activate') }, 'Activate'),
    el('button', { type: 'button', id: 'extend', onclick: () => signal('extend') }, 'Extend'),
    el('button', { type: 'button', id: 'deactivate', onclick: () => signal('deactivate') }, 'Deactivate'));
  const chart = el('div', { id: 'timeline-box' });
  const list = el('tbody', {});
  const side = el('div', { id: 'connection-facts' });
  page('Connection ' + id, head, signals, chart,
    el('div', { class: 'split' },
      el('div', {}, el('h2', {}, 'Events'), el('table', { id: 'events' }, el('thead', {}, el('tr', {}, ['#', 'At', 'Actor', 'Change'].map((h) => el('th', {}, h)))), list)),
      el('div', {}, el('h2', {}, 'Record'), side)));
  const events = [];
  let after = 0;
  let detail = null;
  const render = () => {
    const c = detail.connection;
    const a = detail.activation;
    head.replaceChildren(badge(c.state.value, 'state-badge'), ' ', c.identity.name, ' - ', c.entitlement.name, ' (', c.type, ')');
    chart.replaceChildren(timeline(detail, events));
    list.replaceChildren(...events.map((e) => el('tr', { 'data-change': e.change }, el('td', {}, e.version), el('td', {}, when(e.at)), el('td', {}, e.actor), el('td', { title: sentWith(e) }, e.change))));
    side.replaceChildren(facts([
      ['state', c.state.value + ' since ' + c.state.changed],
      ['account', c.account.name + ' (' + c.account.id + ')'],
      ['source', c.source.name],
      ['activation', a ? a.id + ' ' + a.status : 'none'],
      ['expires', a && a.expiresAt ? when(a.expiresAt) : '-'],
      ['extensions', a ? a.extensions + ' (+' + a.extendedByMins + ' min)' : '-'],
      ['timers', detail.timers.map((t) => t.kind + ' ' + relative(t.due)).join(', ') || 'none'],
      ['pending effects', detail.pendingEffects.map((e) => e.kind + ' try ' + e.attempt).join(', ') || 'none'],
      ['stuck', detail.stuck ? 'YES' : 'no'],
    ]));
  };
  // New events since the last seen version; the record is read again only when some came.
  const refresh = async () => {
    let fresh = false;
    for (;;) {
      let value, headers;
      try {
        ({ value, headers } = await api('GET', '/jitflow/v1/connections/' + id + '/events?' + query({ after, limit: STREAM_PAGE })));
      } catch (e) {
        if (e.status === 404 && after === 0) break; // no events yet
        throw e;
      }
      events.push(...value);
      fresh = fresh || value.length > 0;
      after = Number(headers.get('x-next-after'));
      if (value.length < STREAM_PAGE) break;
    }
    if (fresh || !detail) {
      detail = (await api('GET', '/jitflow/v1/connections/' + id)).value;
      render();
    }
  };
  const tick = async () => {
    try { await refresh(); showError(null); } catch (e) { showError(e); }
    if (location.hash === '#/connection/' + id && token()) pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}

// ---- activation history ---------------------------------------------------------------------

function activationsPage(params) {
  const offset = Math.max(0, parseInt(params.get('offset') || '0', 10) || 0);
  const body = el('tbody', {});
  const pager = el('div', { class: 'pager' });
  page('Activation history', el('table', { id: 'activations' },
    el('thead', {}, el('tr', {}, ['Activation', 'Status', 'Identity', 'Entitlement', 'Initiated', 'Provisioned', 'Deprovisioned'].map((h) => el('th', {}, h)))), body), pager);
  api('GET', '/jit-activation-history/v1?' + query({ limit: PAGE, offset, count: 'true' })).then(({ value, headers }) => {
    body.replaceChildren(...value.map((h) => el('tr', {},
      el('td', { class: 'mono' }, el('a', { href: '#/connection/' + h.connectionId }, h.id)),
      el('td', {}, h.status), el('td', {}, h.identityName), el('td', {}, h.entitlementName),
      el('td', {}, when(h.activationInitiated)), el('td', {}, when(h.provisionCompleted)), el('td', {}, when(h.deprovisionComplete)))));
    const total = Number(headers.get('x-total-count') || 0);
    pager.replaceChildren(
      el('a', { href: '#/activations?offset=' + Math.max(0, offset - PAGE), hidden: offset === 0 }, 'Previous'),
      el('a', { href: '#/activations?offset=' + (offset + PAGE), hidden: offset + PAGE >= total }, 'Next'),
      el('span', {}, total + ' activations'));
  }).catch(showError);
}

// ---- approvals ------------------------------------------------------------------------------

function approvalsPage() {
  const body = el('tbody', {});
  page('Pending approvals', el('table', { id: 'approvals' },
    el('thead', {}, el('tr', {}, ['Approval', 'Requested for', 'Requester', 'Item', 'Created', 'Comment', ''].map((h) => el('th', {}, h)))), body));
  const load = () => api('GET', '/access-request-approvals/v1/pending?' + query({ limit: 250 })).then(({ value }) => {
    body.replaceChildren(...value.map((r) => {
      const comment = el('input', { type: 'text', class: 'comment', placeholder: 'comment' });
      const decide = async (verb) => {
        try { await api('POST', '/access-request-approvals/v1/' + r.id + '/' + verb, comment.value ? { comment: comment.value } : {}); showError(null); load(); } catch (e) { showError(e); }
      };
      return el('tr', { 'data-id': r.id },
        el('td', { class: 'mono' }, r.id), el('td', {}, r.requestedFor.id), el('td', {}, r.requester.id), el('td', {}, r.name),
        el('td', {}, when(r.created)), el('td', {}, comment),
        el('td', {}, el('button', { type: 'button', class: 'approve', onclick: () => decide('approve') }, 'Approve'), ' ',
          el('button', { type: 'button', class: 'reject', onclick: () => decide('reject') }, 'Reject')));
    }));
  }).catch(showError);
  load();
}

// ---- operations -----------------------------------------------------------------------------

// The Prometheus text of /metrics as {name or name{labels}: value}.
function parseMetrics(text) {
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out[line.slice(0, i)] = Number(line.slice(i + 1));
  }
  return out;
}

function operationsPage() {
  const cards = el('div', { class: 'cards', id: 'figures' });
  const body = el('tbody', {});
  page('Operations', cards, el('h2', {}, 'Connections being activated or revoked'),
    el('table', { id: 'moving' }, el('thead', {}, el('tr', {}, ['Id', 'State', 'Identity', 'Since'].map((h) => el('th', {}, h)))), body));
  fetch('/metrics').then((r) => r.text()).then((text) => {
    const m = parseMetrics(text);
    const card = (id, label, value) => el('div', { class: 'card', id }, el('div', { class: 'value' }, String(value)), el('div', { class: 'label' }, label));
    cards.replaceChildren(
      card('stuck', 'stuck activations', m['jitflow_stuck_activations'] ?? '?'),
      card('effects-pending', 'connections with effects pending', m['jitflow_effects_pending{of="connection"}'] ?? '?'),
      card('items-pending', 'request items with effects pending', m['jitflow_effects_pending{of="request_item"}'] ?? '?'),
      card('timers-pending', 'timers armed', m['jitflow_timers_pending'] ?? '?'),
      card('timer-lag', 'timer lag (s)', m['jitflow_timer_lag_seconds'] ?? '?'),
      card('commits', 'commits', m['jitflow_commits_total'] ?? '?'));
  }).catch(showError);
  api('GET', '/entitlement-connections/v1?' + query({ filters: 'state.value in ("ACTIVATING", "DEACTIVATING")', sorters: 'id', limit: PAGE })).then(({ value }) => {
    body.replaceChildren(...value.map((c) => el('tr', {},
      el('td', { class: 'mono' }, el('a', { href: '#/connection/' + c.id }, c.id)), el('td', {}, badge(c.state.value)),
      el('td', {}, c.identity.id), el('td', {}, when(c.state.changed)))));
  }).catch(showError);
}

// ---- routing --------------------------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  route();
  if (message) showError({ message });
}

function route() {
  clearTimeout(pollTimer);
  showError(null);
  const signedIn = !!token();
  document.getElementById('signin').hidden = signedIn;
  document.getElementById('page').hidden = !signedIn;
  document.getElementById('nav').hidden = !signedIn;
  if (!signedIn) return;
  const hash = location.hash || '#/connections';
  const [path, search] = hash.slice(1).split('?');
  const params = new URLSearchParams(search || '');
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('current', hash.startsWith(a.getAttribute('href')));
  const parts = path.split('/').filter(Boolean);
  if (parts[0] === 'connection' && parts[1]) connectionPage(decodeURIComponent(parts[1]));
  else if (parts[0] === 'activations') activationsPage(params);
  else if (parts[0] === 'approvals') approvalsPage();
  else if (parts[0] === 'operations') operationsPage();
  else connectionsPage(params);
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = document.getElementById('token-input').value.trim();
    if (t) { sessionStorage.setItem(TOKEN_KEY, t); document.getElementById('token-input').value = ''; route(); }
  });
  document.getElementById('signout').addEventListener('click', () => signOut());
  window.addEventListener('hashchange', route);
  route();
});
