// Gantry dashboard: a single page over the admin API (/api/v1, JSON) and
// /metrics, served by gantry itself (proxy/http/px_dashboard.c).  Plain
// JavaScript, no external resources.  Pages are hash routes (#/topics/T);
// every API failure is shown in the #error banner with its status and the
// server's message, never as a blank page.  Data is put into the DOM as
// text (textContent), never as HTML.
'use strict';

const API = '/api/v1';
const enc = encodeURIComponent;
const main = () => document.getElementById('main');
// Replaces the page's content (arrays flattened, null and false skipped).
const setMain = (...kids) => main().replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
let timer = null;       // the overview's refresh
let renderSeq = 0;      // a page started later wins over a slower earlier one

// ---- helpers

class ApiError extends Error {}

async function api(method, path, body) {
  const opts = { method, headers: {}, cache: 'no-store' };
  const token = sessionStorage.getItem('gantry-token');
  if (token) opts.headers.authorization = `Bearer ${token}`;
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers['content-type'] = 'application/json';
  }
  let res;
  try {
    res = await fetch(path.startsWith('/') ? path : `${API}/${path}`, opts);
  } catch (e) {
    throw new ApiError(`cannot reach gantry (${method} ${path}): ${e.message}`);
  }
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  if (!res.ok) {
    const why = json && json.error ? json.error : text.trim() || res.statusText;
    const hint = res.status === 401 ? ` (${token ? 'the token was refused' : 'no token set'}: use the Token button)` : '';
    const err = new ApiError(`${method} ${path} failed: HTTP ${res.status}: ${why}${hint}`);
    err.status = res.status;
    throw err;
  }
  if (json === null && !path.startsWith('/metrics')) {
    throw new ApiError(`${method} ${path}: the answer is not JSON`);
  }
  return json ?? text;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'class') e.className = v;
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function table(heads, rows, attrs) {
  const num = heads.map((h) => h.endsWith('#'));
  return el('table', attrs,
    el('thead', null, el('tr', null, heads.map((h, i) =>
      el('th', { class: num[i] ? 'num' : null }, num[i] ? h.slice(0, -1) : h)))),
    el('tbody', null, rows.length === 0
      ? el('tr', null, el('td', { colspan: heads.length, class: 'muted' }, 'none'))
      : rows.map((r) => el('tr', r.attrs ?? null, (r.cells ?? r).map((c, i) =>
        el('td', { class: num[i] ? 'num' : null }, c))))));
}

function kv(pairs, attrs) {
  return el('dl', { class: 'kv', ...attrs }, pairs.flatMap(([k, v, id]) =>
    [el('dt', null, k), el('dd', { id }, v ?? '—')]));
}

function card(label, value, sub, id) {
  return el('div', { class: 'card' }, el('div', { class: 'label' }, label),
    el('div', { class: 'value', id }, value), sub ? el('div', { class: 'sub', id: id && `${id}-sub` }, sub) : null);
}

function link(href, text) { return el('a', { href }, text); }

function fmtTime(ms) {
  return ms === null || ms === undefined ? '—' : new Date(ms).toISOString().replace('T', ' ').replace('Z', ' UTC');
}

function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '—';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(1)} ${u[i]}`;
}

function showError(e) {
  const box = document.getElementById('error');
  box.textContent = e instanceof Error ? e.message : String(e);
  box.hidden = false;
}

function clearError() {
  const box = document.getElementById('error');
  box.hidden = true;
  box.textContent = '';
}

// The hash route: #/a/b?x=1 -> {parts: ['a', 'b'], query: URLSearchParams}
function route() {
  const h = location.hash.replace(/^#\/?/, '');
  const [p, q] = h.split('?');
  return { parts: p.split('/').filter(Boolean).map(decodeURIComponent), query: new URLSearchParams(q ?? '') };
}

// Fetches in parallel at most `limit` at a time.
async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) { const i = next++; out[i] = await fn(items[i], i); }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

// ---- /metrics: sums every series of a name (labels summed over)

function parseMetrics(text) {
  const sums = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    sums.set(m[1], (sums.get(m[1]) ?? 0) + v);
  }
  return sums;
}

const METRIC_IN = ['rocketmq_messages_in_total'];
const METRIC_OUT = ['rocketmq_messages_out_total'];
const METRIC_STORAGE = ['rocketmq_storage_size'];

function pick(sums, names) {
  for (const n of names) if (sums.has(n)) return sums.get(n);
  return null;
}

let lastSample = null;  // {t, in, out}
const rateHistory = [];     // {t, rin, rout}: the rates of the last samples
const HISTORY_MAX = 120;

// The rates since this page was opened as a small SVG chart (in: blue,
// out: green), drawn here: no chart library.
function rateChart() {
  const W = 600;
  const H = 120;
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('id', 'ov-chart');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('width', String(W));
  svg.setAttribute('height', String(H));
  svg.setAttribute('role', 'img');
  const pts = rateHistory.filter((h) => h.rin !== null || h.rout !== null);
  const max = Math.max(1, ...pts.map((h) => Math.max(h.rin ?? 0, h.rout ?? 0)));
  const t0 = pts.length ? pts[0].t : 0;
  const span = pts.length > 1 ? pts[pts.length - 1].t - t0 : 1;
  const line = (key, cls) => {
    const p = document.createElementNS(NS, 'polyline');
    p.setAttribute('class', cls);
    p.setAttribute('points', pts.filter((h) => h[key] !== null).map((h) =>
      `${(((h.t - t0) / span) * (W - 10) + 5).toFixed(1)},${(H - 5 - (h[key] / max) * (H - 20)).toFixed(1)}`).join(' '));
    return p;
  };
  const label = document.createElementNS(NS, 'text');
  label.setAttribute('x', '5');
  label.setAttribute('y', '12');
  label.textContent = `max ${max.toFixed(1)}/s`;
  svg.append(line('rin', 'rate-in'), line('rout', 'rate-out'), label);
  return el('div', { class: 'chart' }, svg,
    el('div', { class: 'muted' }, el('span', { class: 'key-in' }, '■'), ' in  ', el('span', { class: 'key-out' }, '■'), ' out'));
}

// ---- pages

async function pageOverview(seq) {
  const [topics, groups, clients, metricsText] = await Promise.all([
    api('GET', 'topics'), api('GET', 'groups'), api('GET', 'clients'),
    api('GET', '/metrics').catch((e) => { showError(e); return ''; }),
  ]);
  const sums = parseMetrics(typeof metricsText === 'string' ? metricsText : '');
  const now = Date.now();
  const mi = pick(sums, METRIC_IN);
  const mo = pick(sums, METRIC_OUT);
  let rin = null;
  let rout = null;
  if (lastSample && now > lastSample.t) {
    const dt = (now - lastSample.t) / 1000;
    if (mi !== null && lastSample.in !== null) rin = Math.max(0, (mi - lastSample.in) / dt);
    if (mo !== null && lastSample.out !== null) rout = Math.max(0, (mo - lastSample.out) / dt);
  }
  lastSample = { t: now, in: mi, out: mo };
  if (rin !== null || rout !== null) {
    rateHistory.push({ t: now, rin, rout });
    if (rateHistory.length > HISTORY_MAX) rateHistory.shift();
  }
  const userTopics = topics.topics.filter((t) => !t.system);
  // what the user topics retain (the first 200)
  const shown = userTopics.slice(0, 200);
  const details = await mapLimit(shown, 8, (t) => api('GET', `topics/${enc(t.name)}`).catch(() => null));
  const retained = details.reduce((s, d) => s + (d?.messages ?? 0), 0);
  const retainedBytes = details.reduce((s, d) => s + (d?.bytes ?? 0), 0);
  let storage = pick(sums, METRIC_STORAGE);
  let storageSub = 'rocketmq_storage_size';
  if (storage === null) {
    storage = retainedBytes;
    storageSub = `retained by ${shown.length} topic(s)`;
  }
  if (seq !== renderSeq) return;
  const cl = clients.clients;
  const producers = cl.filter((c) => c.type === 'PRODUCER').length;
  const amqpConns = cl.filter((c) => c.type === 'AMQP').length;
  const consumers = cl.length - producers - amqpConns;
  const rate = (r) => (r === null ? '—' : `${r.toFixed(1)}/s`);
  const noMetric = 'metric not exported';
  setMain(
    el('h1', null, 'Overview'),
    el('div', { class: 'cards' },
      card('Messages in', rate(rin), mi === null ? noMetric : `${mi} in total`, 'ov-in'),
      card('Messages out', rate(rout), mo === null ? noMetric : `${mo} in total`, 'ov-out'),
      card('Connections', String(cl.length), `${producers} producer(s), ${consumers} consumer(s), ${amqpConns} AMQP`, 'ov-clients'),
      card('Topics', String(userTopics.length), `${topics.topics.length - userTopics.length} system`, 'ov-topics'),
      card('Groups', String(groups.groups.filter((g) => !g.system).length), null, 'ov-groups'),
      card('Storage', fmtBytes(storage), storageSub, 'ov-storage'),
      card('Messages retained', String(retained), `${fmtBytes(retainedBytes)} in ${shown.length} topic(s)`, 'ov-retained')),
    mi !== null || mo !== null ? [el('h2', null, 'Messages per second'), rateChart()] : null,
    el('p', { class: 'muted' }, 'Rates are measured between refreshes (every 5 s while this page is open).'));
  timer = setTimeout(() => render(false), 5000);
}

async function pageTopics(seq, q) {
  const all = q.get('system') === '1';
  const r = await api('GET', 'topics');
  if (seq !== renderSeq) return;
  const topics = r.topics.filter((t) => all || !t.system);
  setMain(
    el('h1', null, 'Topics'),
    el('p', null, all ? link('#/topics', 'Hide system topics') : link('#/topics?system=1', 'Show system topics')),
    table(['Name', 'Type', 'Queues#', 'Perm', 'System'], topics.map((t) => ({
      attrs: { 'data-topic': t.name },
      cells: [link(`#/topics/${enc(t.name)}`, t.name), t.type, t.queues, t.perm || '(none)', t.system ? 'yes' : ''],
    })), { id: 'topics-table' }),
    createTopicForm());
}

const TOPIC_TYPES = ['NORMAL', 'FIFO', 'DELAY', 'TRANSACTION', 'MIXED'];

function createTopicForm() {
  const form = el('form', { class: 'inline', id: 'topic-create' },
    el('input', { name: 'name', id: 'new-topic-name', placeholder: 'name', size: 24, required: true }),
    el('select', { name: 'type', id: 'new-topic-type' }, TOPIC_TYPES.map((t) => el('option', { value: t }, t))),
    el('label', null, 'queues ', el('input', { name: 'queues', id: 'new-topic-queues', type: 'number', min: 1, max: 1024, value: 8, size: 4 })),
    el('select', { name: 'perm', id: 'new-topic-perm' },
      [['rw', 'read + write'], ['r', 'read only'], ['w', 'write only'], ['', 'no access']].map(([v, l]) => el('option', { value: v }, l))),
    el('button', { type: 'submit', id: 'new-topic-go' }, 'Create topic'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: form.name.value.trim(), type: form.type.value, queues: Number(form.queues.value), perm: form.perm.value };
    try {
      await api('POST', 'topics', body);
      location.hash = `#/topics/${enc(body.name)}`;
    } catch (e) { showError(e); }
  });
  return [el('h2', null, 'Create a topic'), form];
}

async function pageTopic(seq, name) {
  const t = await api('GET', `topics/${enc(name)}`);
  if (seq !== renderSeq) return;
  setMain(
    el('h1', null, `Topic ${t.name}`),
    kv([['Type', t.type], ['Queues', t.queues], ['Permission', t.perm || '(none)'],
      ['Messages', t.messages, 'topic-messages'], ['Retained', fmtBytes(t.bytes)],
      ['First stored', fmtTime(t.first_store_time_ms)], ['Last stored', fmtTime(t.last_store_time_ms)]]),
    el('h2', null, 'Queues'),
    table(['Queue#', 'Min offset#', 'Max offset#', 'Messages#', 'Bytes#', ''], t.queue_stats.map((s) => [
      s.queue, s.min_offset, s.max_offset, s.messages, s.bytes,
      s.max_offset > s.min_offset
        ? link(`#/messages?topic=${enc(t.name)}&queue=${s.queue}&offset=${s.max_offset - 1}`, 'last message') : '',
    ]), { id: 'queues-table' }),
    t.system ? el('p', { class: 'muted' }, 'A system topic: it cannot be changed or deleted.') : [
      el('h2', null, 'Change'),
      el('form', { class: 'inline', id: 'topic-update', onsubmit: async (ev) => {
        ev.preventDefault();
        const f = ev.currentTarget;
        const body = { queues: Number(f.queues.value), perm: f.perm.value, type: f.type.value };
        try { await api('PUT', `topics/${enc(t.name)}`, body); render(false); } catch (e) { showError(e); }
      } },
      el('label', null, 'queues ', el('input', { name: 'queues', id: 'topic-queues', type: 'number', min: t.queues, max: 1024, value: t.queues, size: 4 })),
      el('select', { name: 'perm', id: 'topic-perm' }, [['rw', 'read + write'], ['r', 'read only'], ['w', 'write only'], ['', 'no access']]
        .map(([v, l]) => el('option', { value: v, selected: v === t.perm }, l))),
      el('select', { name: 'type', id: 'topic-type' }, TOPIC_TYPES.map((x) => el('option', { value: x, selected: x === t.type }, x))),
      el('button', { type: 'submit', id: 'topic-save' }, 'Save')),
      el('p', { class: 'muted' }, 'Queue counts only grow.'),
      el('button', { type: 'button', id: 'topic-delete', class: 'danger', onclick: async () => {
        if (!confirm(`Delete topic ${t.name} and its messages?`)) return;
        try { await api('DELETE', `topics/${enc(t.name)}`); location.hash = '#/topics'; } catch (e) { showError(e); }
      } }, 'Delete topic')]);
}

async function pageGroups(seq) {
  const r = await api('GET', 'groups');
  const groups = r.groups.filter((g) => !g.system);
  const details = await mapLimit(groups.slice(0, 200), 8,
    (g) => api('GET', `groups/${enc(g.name)}`).catch((e) => ({ error: e.message })));
  if (seq !== renderSeq) return;
  setMain(
    el('h1', null, 'Groups'),
    table(['Name', 'FIFO', 'Max attempts#', 'Lag#', 'In flight#', 'DLQ#', 'Members#'], groups.map((g, i) => {
      const d = details[i];
      const n = (v) => (d === undefined ? '…' : d.error ? '!' : v);
      return {
        attrs: { 'data-group': g.name, title: d?.error ?? null },
        cells: [link(`#/groups/${enc(g.name)}`, g.name), g.fifo ? 'yes' : '', g.max_delivery_attempts,
          n(d?.lag), n(d?.inflight), n(d?.dlq_messages), n(d?.members?.length)],
      };
    }), { id: 'groups-table' }),
    groups.length > 200 ? el('p', { class: 'muted' }, 'Counts are shown for the first 200 groups.') : null,
    el('h2', null, 'Create a group'),
    groupForm(null, 'group-create', 'Create group', async (body) => {
      await api('POST', 'groups', body);
      location.hash = `#/groups/${enc(body.name)}`;
    }));
}

// The settings form of a group (g null: a new one, with its name).
function groupForm(g, id, label, submit) {
  const num = (name, value, min, max, title) => el('label', { title }, `${name.replace(/_/g, ' ')} `,
    el('input', { name, id: `${id}-${name}`, type: 'number', min, max, value, size: 6 }));
  const form = el('form', { class: 'inline', id },
    g ? null : el('input', { name: 'name', id: `${id}-name`, placeholder: 'name', size: 24, required: true }),
    el('label', null, el('input', { name: 'fifo', id: `${id}-fifo`, type: 'checkbox', checked: g?.fifo ?? false }), ' FIFO'),
    num('max_delivery_attempts', g?.max_delivery_attempts ?? 16, 1, 1000),
    el('select', { name: 'consume_from', id: `${id}-consume-from` },
      ['FIRST', 'LAST'].map((v) => el('option', { value: v, selected: (g?.consume_from ?? 'FIRST') === v }, `from ${v.toLowerCase()}`))),
    num('retry_initial_ms', g?.retry?.initial_ms ?? 0, 0, 86400000, 'retry back-off: first delay (0: none)'),
    num('retry_max_ms', g?.retry?.max_ms ?? 0, 0, 86400000, 'retry back-off: longest delay'),
    num('retry_multiplier', g?.retry?.multiplier ?? 0, 0, 10000, 'retry back-off: growth per attempt in percent (200 doubles; 0 or 100: fixed)'),
    el('span', { class: 'muted' }, '%'),
    el('button', { type: 'submit', id: `${id}-go` }, label));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = {
      fifo: form.fifo.checked, max_delivery_attempts: Number(form.max_delivery_attempts.value),
      consume_from: form.consume_from.value,
      retry: { initial_ms: Number(form.retry_initial_ms.value), max_ms: Number(form.retry_max_ms.value),
        multiplier: Number(form.retry_multiplier.value) },
    };
    if (!g) body.name = form.name.value.trim();
    try { await submit(body); } catch (e) { showError(e); }
  });
  return form;
}

async function pageGroup(seq, name) {
  const g = await api('GET', `groups/${enc(name)}`);
  if (seq !== renderSeq) return;
  const rows = [];
  for (const t of g.topics) {
    for (const qq of t.queues) {
      rows.push({ attrs: { 'data-topic': t.topic, 'data-queue': qq.queue },
        cells: [t.topic, qq.queue, qq.min_offset, qq.max_offset, qq.committed, qq.lag] });
    }
  }
  const retry = g.retry && (g.retry.initial_ms || g.retry.max_ms) ? `${g.retry.initial_ms} ms .. ${g.retry.max_ms} ms, ×${(g.retry.multiplier || 100) / 100} per attempt` : 'none';
  setMain(
    el('h1', null, `Group ${g.name}`),
    kv([['Lag', g.lag, 'group-lag'], ['Ready', g.ready], ['In flight', g.inflight, 'group-inflight'],
      ['DLQ messages', g.dlq_messages, 'group-dlq'], ['FIFO', g.fifo ? 'yes' : 'no'],
      ['Max delivery attempts', g.max_delivery_attempts], ['Consume from', g.consume_from],
      ['Retry', retry], ['Members', g.members.length ? g.members.join(', ') : 'none', 'group-members']]),
    el('h2', null, 'Lag per topic'),
    table(['Topic', 'Ready#', 'In flight#', 'Lag#'], g.topics.map((t) => ({
      attrs: { 'data-topic': t.topic }, cells: [link(`#/topics/${enc(t.topic)}`, t.topic), t.ready, t.inflight, t.lag] })),
    { id: 'group-topics' }),
    el('h2', null, 'Lag per queue'),
    table(['Topic', 'Queue#', 'Min offset#', 'Max offset#', 'Committed#', 'Lag#'], rows, { id: 'group-queues' }),
    g.dlq_messages > 0 ? el('p', null, link('#/dlq', `${g.dlq_messages} message(s) in the DLQ`)) : null,
    resetForm(g),
    g.system ? null : [
      el('h2', null, 'Change'),
      groupForm(g, 'group-update', 'Save', async (body) => { await api('PUT', `groups/${enc(g.name)}`, body); render(false); }),
      el('button', { type: 'button', id: 'group-delete', class: 'danger', onclick: async () => {
        if (!confirm(`Delete group ${g.name} and its consumption state?`)) return;
        try { await api('DELETE', `groups/${enc(g.name)}`); location.hash = '#/groups'; } catch (e) { showError(e); }
      } }, 'Delete group')]);
}

// Moves the group's committed offsets on every queue of a topic (to the
// beginning, the end, or the first message stored at or after a time).
function resetForm(g) {
  const prev = document.getElementById('reset-result');
  const result = el('p', { id: 'reset-result', role: 'status', class: prev?.className ?? null }, prev?.textContent ?? '');
  const form = el('form', { class: 'inline', id: 'reset-form' },
    el('input', { name: 'topic', id: 'reset-topic', placeholder: 'topic', size: 20, list: 'reset-topics',
      value: g.topics[0]?.topic ?? '' }),
    el('datalist', { id: 'reset-topics' }, g.topics.map((t) => el('option', { value: t.topic }))),
    el('select', { name: 'to', id: 'reset-to' },
      el('option', { value: 'beginning' }, 'to the beginning'), el('option', { value: 'end' }, 'to the end'),
      el('option', { value: 'time' }, 'to a time (UTC)')),
    el('input', { name: 'time', id: 'reset-time', type: 'datetime-local', step: 1, hidden: true }),
    el('button', { type: 'submit', id: 'reset-go' }, 'Reset offsets'));
  form.to.addEventListener('change', () => { form.time.hidden = form.to.value !== 'time'; });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { topic: form.topic.value.trim(), to: form.to.value };
    if (body.to === 'time') {
      if (form.time.value === '') { showError('Pick a time to reset to.'); return; }
      body.time = `${form.time.value.length === 16 ? `${form.time.value}:00` : form.time.value}Z`;
    }
    if (!confirm(`Reset ${g.name}'s offsets on ${body.topic} ${form.to.selectedOptions[0].textContent}?`)) return;
    form.querySelector('button').disabled = true;
    try {
      const a = await api('POST', `groups/${enc(g.name)}/reset-offset`, body);
      result.textContent = `${a.topic} reset ${body.to === 'time' ? `to ${body.time}` : `to the ${a.to}`}: offsets ${a.offsets.join(', ')}`;
      result.className = 'ok';
      render(false, true);
    } catch (e) {
      showError(e);
      form.querySelector('button').disabled = false;
    }
  });
  return [el('h2', null, 'Reset offsets'), form, result,
    el('p', { class: 'muted' }, 'In-flight deliveries below the new offset are forgotten.')];
}

async function pageClients(seq) {
  const r = await api('GET', 'clients');
  if (seq !== renderSeq) return;
  const close = async (id, what) => {
    if (!confirm(`Close ${id}? ${what}`)) return;
    try { await api('DELETE', `clients/${enc(id)}`); render(false); } catch (e) { showError(e); }
  };
  const rmq = r.clients.filter((c) => c.type !== 'AMQP');
  const amqp = r.clients.filter((c) => c.type === 'AMQP');
  setMain(
    el('h1', null, 'Clients'),
    el('h2', null, 'RocketMQ clients'),
    table(['Client id', 'Type', 'Language', 'Version', 'Remote', 'Group', 'Topics', 'Since', 'Held#', ''],
      rmq.map((c) => ({ attrs: { 'data-client': c.client_id },
        cells: [c.client_id, c.type, c.language, c.version, c.remote, c.group ?? '',
          (c.topics ?? []).join(', '), fmtTime(c.since_ms), c.held,
          el('button', { type: 'button', onclick: () => close(c.client_id, 'Its SDK reconnects by itself.') }, 'Close')] })),
      { id: 'clients-table' }),
    el('p', { class: 'muted' }, 'RocketMQ clients with a Telemetry stream.'),
    el('h2', null, 'AMQP connections'),
    table(['Connection', 'Client', 'Remote', 'Vhost', 'User', 'Channels#', 'TLS', 'Since', ''],
      amqp.map((c) => ({ attrs: { 'data-client': c.client_id },
        cells: [c.client_id, c.version || '—', c.remote, c.vhost, c.user, c.channels, c.tls ? 'yes' : 'no',
          fmtTime(c.since_ms),
          el('button', { type: 'button', onclick: () => close(c.client_id, 'It gets connection.close 320 CONNECTION_FORCED.') }, 'Close')] })),
      { id: 'amqp-table' }),
    el('p', { class: 'muted' }, 'Connections to the AMQP gateway past connection.open; Close ends one as RabbitMQ\'s management UI does (320 CONNECTION_FORCED).'));
}

function messageView(m) {
  return el('div', { class: 'msg', 'data-msg-id': m.msg_id },
    el('h2', null, `Message ${m.msg_id}`),
    kv([['Topic', link(`#/topics/${enc(m.topic)}`, m.topic)], ['Queue / offset', `${m.queue} / ${m.offset}`],
      ['Tag', m.tag || '—'], ['Keys', (m.keys ?? []).join(', ') || '—'], ['Message group', m.message_group || '—'],
      ['Born', `${fmtTime(m.born_time_ms)} at ${m.born_host || '?'}`], ['Stored', fmtTime(m.store_time_ms)],
      ['Delivery time', fmtTime(m.delivery_time_ms)],
      ['Properties', Object.entries(m.properties ?? {}).map(([k, v]) => `${k}=${v}`).join(', ') || '—'],
      ['Body', `${m.body_size} bytes${m.body_encoding === 'base64' ? ', shown as base64' : ''}${m.body_truncated ? ', truncated' : ''}`]]),
    el('p', null, link(`#/trace?id=${enc(m.msg_id)}`, 'Trace of this message')),
    el('pre', { class: 'body' }, m.body ?? ''),
    table(['Group', 'Committed#', 'Consumed'], (m.groups ?? []).map((x) =>
      [link(`#/groups/${enc(x.group)}`, x.group), x.committed, x.consumed ? 'yes' : 'no'])));
}

async function pageMessages(seq, q) {
  const mode = q.get('key') !== null ? 'key' : q.get('queue') !== null ? 'pos' : 'id';
  const input = (name, ph, size) => el('input', { name, id: `msg-${name}`, placeholder: ph, size,
    value: q.get(name === 'msgid' ? 'id' : name) ?? '' });
  const form = el('form', { class: 'inline', id: 'msg-form' },
    el('select', { id: 'msg-mode', name: 'mode' },
      ['id', 'key', 'pos'].map((v) => el('option', { value: v, selected: v === mode },
        { id: 'by message id', key: 'by key', pos: 'by topic, queue, offset' }[v]))),
    input('msgid', 'message id', 34), input('topic', 'topic', 16), input('key', 'key', 16),
    input('queue', 'queue', 4), input('offset', 'offset', 8),
    el('button', { type: 'submit', id: 'msg-find' }, 'Find'));
  const sync = () => {
    const m = form.mode.value;
    form.msgid.hidden = m !== 'id';
    form.key.hidden = m !== 'key';
    form.queue.hidden = form.offset.hidden = m !== 'pos';
    form.topic.placeholder = m === 'id' ? 'topic (optional)' : 'topic';
  };
  form.mode.addEventListener('change', sync);
  sync();
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const m = form.mode.value;
    const p = new URLSearchParams();
    const keys = m === 'id' ? ['msgid', 'topic'] : m === 'key' ? ['topic', 'key'] : ['topic', 'queue', 'offset'];
    for (const k of keys) if (form[k].value.trim() !== '') p.set(k === 'msgid' ? 'id' : k, form[k].value.trim());
    location.hash = `#/messages?${p}`;
  });
  const out = el('div', { id: 'msg-result' });
  setMain(el('h1', null, 'Message lookup'), form, out);
  let path = null;
  if (mode === 'id' && q.get('id')) {
    path = `messages/${enc(q.get('id'))}${q.get('topic') ? `?topic=${enc(q.get('topic'))}` : ''}`;
  } else if (mode === 'key' && q.get('topic')) {
    path = `messages?topic=${enc(q.get('topic'))}&key=${enc(q.get('key'))}`;
  } else if (mode === 'pos' && q.get('topic')) {
    path = `topics/${enc(q.get('topic'))}/queues/${enc(q.get('queue'))}/offsets/${enc(q.get('offset') ?? '')}`;
  }
  if (path === null) {
    out.append(el('p', { class: 'muted' }, 'Look a message up by its id, by a key (with its topic), or by its position.'));
    return;
  }
  out.append(el('p', { class: 'muted' }, 'Searching…'));
  const r = await api('GET', path);
  if (seq !== renderSeq) return;
  out.replaceChildren(el('p', null, `${r.messages.length} message(s)`), ...r.messages.map(messageView));
}

async function pageDlq(seq) {
  const r = await api('GET', 'groups');
  const groups = r.groups.filter((g) => !g.system);
  const details = await mapLimit(groups.slice(0, 200), 8, (g) => api('GET', `groups/${enc(g.name)}`).catch(() => null));
  const withDlq = groups.map((g, i) => ({ g, d: details[i] })).filter((x) => x.d && x.d.dlq_messages > 0);
  // the newest dead letters still there (not moved back: the group has
  // not consumed them from its %DLQ% topic), newest first, at most 20 of
  // each of the first 20 groups
  const samples = await mapLimit(withDlq.slice(0, 20), 4, async ({ g }) => {
    const t = await api('GET', `topics/${enc(`%DLQ%${g.name}`)}`).catch(() => null);
    const found = [];
    for (const s of t?.queue_stats ?? []) {
      for (let o = s.max_offset - 1; o >= s.min_offset && found.length < 20; o--) {
        const m = await api('GET', `topics/${enc(t.name)}/queues/${s.queue}/offsets/${o}`).catch(() => null);
        const left = (m?.messages ?? []).filter((x) => !(x.groups ?? []).some((y) => y.group === g.name && y.consumed));
        if (m && left.length === 0) break;  // below the group's committed offset: all moved
        found.push(...left);
      }
    }
    return found;
  });
  if (seq !== renderSeq) return;
  const result = el('p', { id: 'redrive-result', role: 'status' });
  const redrive = async (name, btn) => {
    if (!confirm(`Move the dead letters of ${name} back to their topics?`)) return;
    btn.disabled = true;
    try {
      const a = await api('POST', `groups/${enc(name)}/dlq/redrive`, {});
      result.textContent = `${name}: moved ${a.moved}, failed ${a.failed}${a.max_reached ? ' (limit reached: redrive again)' : ''}`;
      result.className = a.failed ? 'warn' : 'ok';
      setTimeout(() => { if (location.hash.startsWith('#/dlq')) render(false, true); }, 0);
    } catch (e) {
      showError(e);
      btn.disabled = false;
    }
  };
  const prev = document.getElementById('redrive-result');
  if (prev) { result.textContent = prev.textContent; result.className = prev.className; }
  setMain(
    el('h1', null, 'Dead-letter queues'),
    result,
    withDlq.length === 0 ? el('p', { id: 'dlq-empty', class: 'muted' }, 'No group has dead letters.') : null,
    ...withDlq.map(({ g, d }, i) => el('section', { 'data-dlq-group': g.name },
      el('h2', null, `${g.name}: `, el('span', { class: 'dlq-count' }, String(d.dlq_messages)), ' dead letter(s)'),
      el('button', { type: 'button', id: `redrive-${g.name}`,
        onclick: (ev) => redrive(g.name, ev.currentTarget) }, 'Redrive to their topics'),
      i < samples.length
        ? table(['Message id', 'From topic', 'Stored', 'Body'], samples[i].map((m) => [
          link(`#/messages?id=${enc(m.msg_id)}`, m.msg_id), m.properties?.RETRY_TOPIC ?? '?',
          fmtTime(m.store_time_ms), (m.body ?? '').slice(0, 80)]), { class: 'dlq-messages' })
        : el('p', { class: 'muted' }, link(`#/topics/${enc(`%DLQ%${g.name}`)}`, 'its DLQ topic')))),
    el('p', { class: 'muted' }, 'Redrive moves dead letters back to the topic each came from, with their ids; ' +
      'every group of that topic gets them again. Resending one message to one group is not available yet.'));
}

function fmtTimeMs(ms) {
  return ms === null || ms === undefined ? '—' : new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

// One event of the timeline: when (and how long after the first), what,
// who, and the details that apply to its kind.
function traceEvent(e, t0) {
  const details = [];
  if (e.vhost) details.push(['vhost', e.vhost]);
  if (e.amqp_message_id) details.push(['message-id', e.amqp_message_id]);
  if (e.group) details.push(['group', link(`#/groups/${enc(e.group)}`, e.group)]);
  if (e.attempt !== null) details.push(['attempt', e.attempt]);
  if (e.queue !== null) details.push(['queue / offset', `${e.queue} / ${e.offset ?? '—'}`]);
  if (e.invisible_ms !== null) details.push(['invisible for', `${e.invisible_ms} ms`]);
  if (e.tag) details.push(['tag', e.tag]);
  if (e.body_size !== null) details.push(['body', `${e.body_size} bytes`]);
  if (e.client_id) details.push(['client', e.client_id]);
  if (e.addr) details.push(['address', e.addr]);
  const ok = /^OK/.test(e.result);
  return el('li', { class: `ev ev-${e.kind}`, 'data-kind': e.kind, 'data-seq': e.seq },
    el('div', { class: 'ev-when' }, el('span', { class: 'ev-time' }, fmtTimeMs(e.time_ms)),
      el('span', { class: 'muted' }, ` +${e.time_ms - t0} ms`)),
    el('div', { class: 'ev-what' }, el('span', { class: 'ev-kind' }, e.kind),
      el('span', { class: ok ? 'ok ev-result' : 'warn ev-result' }, e.result)),
    el('div', { class: 'ev-details' }, details.map(([k, v]) =>
      el('span', { class: 'ev-detail' }, el('span', { class: 'muted' }, `${k} `), v))));
}

async function pageTrace(seq, q) {
  const id = (q.get('id') ?? '').trim();
  const form = el('form', { class: 'inline', id: 'trace-form' },
    el('input', { name: 'id', id: 'trace-id', placeholder: 'message id', size: 34, value: id }),
    el('button', { type: 'submit', id: 'trace-find' }, 'Show trace'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const v = form.id.value.trim();
    location.hash = v ? `#/trace?id=${enc(v)}` : '#/trace';
  });
  const out = el('div', { id: 'trace-result' });
  setMain(el('h1', null, 'Message trace'), form, out);
  if (id === '') {
    out.append(el('p', { class: 'muted' }, 'What happened to a message of a traced topic or group (config trace.topics / ' +
      'trace.groups): its publish, each delivery with its attempt, acks, nacks, dead-lettering, transaction end.'));
    return;
  }
  out.append(el('p', { class: 'muted' }, 'Loading…'));
  const r = await api('GET', `messages/${enc(id)}/trace`);
  if (seq !== renderSeq) return;
  const evs = r.events ?? [];
  if (evs.length === 0) {
    out.replaceChildren(el('div', { class: 'notice', id: 'trace-notice' }, r.enabled
      ? `No trace events for ${id}: its topic and groups are not traced, the id is unknown, or its events are not written yet (they are written every trace.flush_ms).`
      : 'Message tracing is off: set trace.topics or trace.groups in the config to record publish and delivery events.'));
    return;
  }
  const t0 = evs[0].time_ms;
  const deliveries = evs.filter((e) => e.kind === 'deliver').length;
  const last = evs[evs.length - 1];
  out.replaceChildren(
    kv([['Message', link(`#/messages?id=${enc(id)}`, id)], ['Topic', evs[0].topic || '—'],
      ['Events', String(evs.length), 'trace-count'], ['Deliveries', String(deliveries)],
      ['Span', `${last.time_ms - t0} ms`], ['Last', `${last.kind} (${last.result})`, 'trace-last']], { id: 'trace-summary' }),
    el('p', { class: r.truncated ? 'warn' : 'muted', id: 'trace-note' }, r.truncated
      ? 'Only the most recent events are shown: there are more.'
      : 'Oldest first; times are when Gantry saw each event.'),
    el('ol', { class: 'timeline', id: 'trace-timeline' }, evs.map((e) => traceEvent(e, t0))));
}

// ---- router

const PAGES = {
  overview: (s) => pageOverview(s),
  topics: (s, p, q) => (p[1] !== undefined ? pageTopic(s, p[1]) : pageTopics(s, q)),
  groups: (s, p) => (p[1] !== undefined ? pageGroup(s, p[1]) : pageGroups(s)),
  clients: (s) => pageClients(s),
  messages: (s, p, q) => pageMessages(s, q),
  dlq: (s) => pageDlq(s),
  trace: (s, p, q) => pageTrace(s, q),
};

async function render(fresh = true, keepError = false) {
  clearTimeout(timer);
  timer = null;
  const seq = ++renderSeq;
  const { parts, query } = route();
  const name = PAGES[parts[0]] ? parts[0] : 'overview';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.id === `nav-${name}`);
  if (!keepError) clearError();
  if (fresh) setMain(el('p', { class: 'muted' }, 'Loading…'));
  document.body.dataset.page = name;
  document.body.dataset.loaded = '';
  try {
    await PAGES[name](seq, parts, query);
  } catch (e) {
    if (seq !== renderSeq) return;
    showError(e);
    if (fresh) setMain(el('p', { class: 'muted' }, 'This page could not be loaded.'));
    if (name === 'overview') timer = setTimeout(() => render(false, true), 5000);
  }
  if (seq === renderSeq) document.body.dataset.loaded = String(seq);
}

window.addEventListener('hashchange', () => render());
document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('refresh').addEventListener('click', () => render(false));
  // The admin API's bearer token, when it asks for one: kept for this tab
  // only (sessionStorage), sent as Authorization: Bearer.
  const tokenBtn = document.getElementById('token');
  const showToken = () => { tokenBtn.textContent = sessionStorage.getItem('gantry-token') ? 'Token ✓' : 'Token'; };
  tokenBtn.addEventListener('click', () => {
    const v = prompt('Admin API token (empty: none). Kept in this tab only.', '');
    if (v === null) return;
    if (v.trim() === '') sessionStorage.removeItem('gantry-token');
    else sessionStorage.setItem('gantry-token', v.trim());
    showToken();
    render(false);
  });
  showToken();
  if (!location.hash) history.replaceState(null, '', '#/overview');
  render();
});
