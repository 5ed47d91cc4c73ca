// The web dashboard (/dashboard/, proxy/http/px_dashboard.c and
// proxy/http/dashboard/) in a real browser: a headless Chromium (cdp.mjs)
// loads every page against a gantry with data in it (SDK sends to a
// topic, a consumer group with a backlog, a dead letter) and checks what
// is shown: topic names and counts, the group's lag equal to the real
// backlog, the SDK's clients and an AMQP connection (closed from the page
// with 320), a message found by id and by key, the DLQ and a redrive that
// moves the dead letter back, the dead letter's trace timeline,
// and API errors shown in the error banner (a missing topic; the server
// gone).  Screenshots go to $GANTRY_SCREENSHOT_DIR (CTest: the build dir's
// screenshots/dashboard).  Also the HTTP side of the static files:
// content types, caching headers, ETag/304, 301, 404 for unknown paths
// and traversal attempts, 405.  Run by CTest with the label `browser`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { startGantry, stopGantry, waitFor, scaled, require } from './harness.mjs';
import { startProducer, startSimpleConsumer, shutdownQuietly, yamlOf } from './sdk_util.mjs';
import { launchBrowser } from './cdp.mjs';

const amqplib = require('amqplib');

const T = 'DashTopic';
const T_DLQ = 'DashDlqTopic';
const T_RATE = 'DashRate';  // no group reads it
const G = 'DashGroup';
const G_DLQ = 'DashDlq';
const N = 10;
const ACKED = 3;
const SHOTS = process.env.GANTRY_SCREENSHOT_DIR || path.join(os.tmpdir(), 'gantry-dashboard-screenshots');

let g;
let producer;
let consumer;
let dlqConsumer;
let browser;
let page;
const sent = [];
let poisonId;
const shots = [];

function get(p, headers = {}, method = 'GET') {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: g.httpPort, path: p, method, headers, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(body); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, headers: res.headers, body, json });
      });
    });
    req.setTimeout(scaled(20000), () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, headers: {}, body: String(e), json: null }));
    req.end();
  });
}

// Shows a dashboard page (a hash route) and waits until it has rendered.
async function show(hash) {
  await page.eval(`(() => { document.body.dataset.loaded = 'pending';
    if (location.hash === ${JSON.stringify(hash)}) render(); else location.hash = ${JSON.stringify(hash)}; })()`);
  await page.waitFor(`document.body.dataset.loaded !== 'pending' && document.body.dataset.loaded !== ''`,
    30000, `page ${hash} rendered`);
  // nothing rendered from a missing field or a stray object
  assert.doesNotMatch(await page.text('#main'), /\bnull\b|\bundefined\b|\[object|NaN/, hash);
}

async function shot(name) {
  shots.push(await page.screenshot(path.join(SHOTS, `${name}.png`)));
}

// What the page shows, for failure messages.
const dump = async () => `error: ${await errorShown()}\nmain: ${await page.text('#main')}`;

const errorShown = () => page.eval(`(() => { const e = document.getElementById('error');
  return e.hidden ? null : e.textContent; })()`);

before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: `${yamlOf({
      topics: [{ name: T, queues: 2 }, { name: T_DLQ, queues: 1 }, { name: T_RATE, queues: 1 }],
      groups: [{ name: G }, { name: G_DLQ, max_delivery_attempts: 1 }],
    })}trace:\n  topics: [${T}, ${T_DLQ}]\n  flush_ms: 20\n`,
  });
  producer = await startProducer(g, [T, T_DLQ, T_RATE]);
  for (let i = 0; i < N; i++) {
    const r = await producer.send({ topic: T, body: Buffer.from(`dash body ${i}`), keys: [`dash-key-${i}`] });
    sent.push(r.messageId);
  }
  // a group with a backlog: ACKED of N acknowledged
  consumer = await startSimpleConsumer(g, G, T);
  let acked = 0;
  await waitFor(async () => {
    for (const m of await consumer.receive(ACKED - acked, 30000)) { await consumer.ack(m); acked++; }
    return acked >= ACKED;
  }, 60000, 'messages acked');
  await waitFor(async () => (await get(`/api/v1/groups/${G}`)).json?.lag === N - ACKED, 20000, 'lag settled');
  // a dead letter: one attempt allowed, failed once
  dlqConsumer = await startSimpleConsumer(g, G_DLQ, T_DLQ);
  poisonId = (await producer.send({ topic: T_DLQ, body: Buffer.from('poison'), keys: ['poison-key'] })).messageId;
  await waitFor(async () => {
    for (const m of await dlqConsumer.receive(4, 30000)) { await dlqConsumer.changeInvisibleDuration(m, 0); return true; }
    return false;
  }, 60000, 'first delivery of the poison message');
  await waitFor(async () => {
    await dlqConsumer.receive(4, 30000);  // the next pop dead-letters it
    return (await get(`/api/v1/groups/${G_DLQ}`)).json?.dlq_messages === 1;
  }, 60000, 'one dead letter');

  browser = await launchBrowser();
  page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${g.httpPort}/dashboard/`);
  await page.waitFor(`document.body.dataset.loaded && document.body.dataset.loaded !== ''`, 30000, 'first render')
    .catch((e) => { throw new Error(`${e.message}; page errors: ${page.exceptions.join('; ')}`); });
});

after(async () => {
  if (browser) await browser.close();
  await shutdownQuietly(producer, consumer, dlqConsumer);
  if (g) await stopGantry(g);
  if (shots.length) console.log(`dashboard screenshots:\n  ${shots.join('\n  ')}`);
});

test('static files: content types, caching, ETag, redirect, 404 and no traversal', async () => {
  let r = await get('/dashboard/');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(r.headers['cache-control'], 'no-cache');
  assert.equal(r.headers['x-content-type-options'], 'nosniff');
  assert.match(r.headers['content-security-policy'], /default-src 'self'/);
  assert.match(r.body, /<script src="app.js"/);
  assert.equal((await get('/dashboard/index.html')).body, r.body);
  r = await get('/dashboard/app.js');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/javascript; charset=utf-8');
  const etag = r.headers.etag;
  assert.match(etag, /^"[0-9a-f]+"$/);
  r = await get('/dashboard/app.js', { 'if-none-match': etag });
  assert.equal(r.status, 304);
  assert.equal(r.body, '');
  assert.equal(r.headers.etag, etag);
  assert.equal((await get('/dashboard/app.js', { 'if-none-match': '"other"' })).status, 200);
  assert.equal((await get('/dashboard/app.css')).headers['content-type'], 'text/css; charset=utf-8');
  r = await get('/dashboard');
  assert.equal(r.status, 301);
  assert.equal(r.headers.location, '/dashboard/');
  for (const p of ['/dashboard/nope.js', '/dashboard/../metrics', '/dashboard/%2e%2e/metrics',
    '/dashboard/..%2fmetrics', '/dashboard//index.html', '/dashboard/index.html/', '/dashboardx',
    '/dashboard/app.js%00', '/dashboard/.%2e/api/v1/topics']) {
    r = await get(p);
    assert.equal(r.status, 404, p);
    assert.equal(r.headers['cache-control'], 'no-cache', p);
  }
  r = await get('/dashboard/', {}, 'POST');
  assert.equal(r.status, 405);
  assert.equal(r.headers.allow, 'GET, HEAD');
  r = await get('/dashboard/app.js', {}, 'HEAD');
  assert.equal(r.status, 200);
  assert.equal(r.body, '');
});

test('overview: connections, topics, groups, storage, message counts', async () => {
  await show('#/overview');
  const clients = (await get('/api/v1/clients')).json.clients;
  assert.equal(await page.text('#ov-clients'), String(clients.length));
  assert.ok(clients.length >= 3, JSON.stringify(clients));
  // (the AMQP gateway declares a topic of its own: count what the API has)
  const topics = (await get('/api/v1/topics')).json.topics;
  assert.ok(topics.some((t) => t.name === T));
  assert.equal(await page.text('#ov-topics'), String(topics.filter((t) => !t.system).length));
  const groups = (await get('/api/v1/groups')).json.groups;
  assert.equal(await page.text('#ov-groups'), String(groups.filter((x) => !x.system).length));
  assert.match(await page.text('#ov-storage'), /^[0-9.]+ (B|KiB|MiB)$/);
  assert.notEqual(await page.text('#ov-storage'), '0 B');
  // N in DashTopic, the dead letter in its DLQ (a system topic, not counted)
  assert.equal(await page.text('#ov-retained'), String(N + 1));
  // /metrics read defensively: a total when the RocketMQ metric is
  // exported, else said so
  const sub = await page.text('#ov-in-sub');
  const m = /^(\d+) in total$/.exec(sub);
  assert.ok(m || sub === 'metric not exported', sub);
  if (m) assert.ok(Number(m[1]) >= N + 1, sub);
  // messages sent between two samples give a rate above zero
  if (m) {
    for (let i = 0; i < 5; i++) await producer.send({ topic: T_RATE, body: Buffer.from(`rate ${i}`) });
    await page.click('#refresh');
    await page.waitFor(`document.getElementById('ov-in-sub').textContent === '${Number(m[1]) + 5} in total'`,
      30000, 'the new total');
    assert.match(await page.text('#ov-in'), /^\d+\.\d\/s$/);
    // the sample that saw them (this refresh, or an automatic one just
    // before it) has a rate above zero: a point above the chart's baseline
    // (y = 115 is zero); one more sample makes a line of at least two
    await page.click('#refresh');
    await page.waitFor(`(() => { const p = (document.querySelector('#ov-chart .rate-in')?.getAttribute('points') ?? '')
      .split(' ').filter(Boolean).map((xy) => Number(xy.split(',')[1]));
      return p.length >= 2 && p.some((y) => y < 115); })()`, 30000, 'a positive rate on the chart');
  }
  assert.equal(await errorShown(), null);
  await shot('overview');
});

test('topics: list and detail', async () => {
  await show('#/topics');
  assert.ok(await page.eval(`!!document.querySelector('#topics-table tr[data-topic="${T}"]')`));
  assert.ok(await page.eval(`!!document.querySelector('#topics-table tr[data-topic="${T_DLQ}"]')`));
  assert.ok(!await page.eval(`!!document.querySelector('#topics-table tr[data-topic="%SYS%HALF"]')`), 'system hidden');
  await shot('topics');
  await page.click(`#topics-table tr[data-topic="${T}"] a`);
  await page.waitFor(`document.body.dataset.loaded !== '' && document.querySelector('#topic-messages')`, 30000, 'topic page');
  assert.equal(await page.text('#topic-messages'), String(N));
  assert.equal(await page.eval(`document.querySelectorAll('#queues-table tbody tr').length`), 2);
  await shot('topic');
  await show('#/topics?system=1');
  assert.ok(await page.eval(`!!document.querySelector('#topics-table tr[data-topic="%DLQ%${G_DLQ}"]')`));
});

test('topics: create, change and delete through the forms; a duplicate shows the 409', async () => {
  await show('#/topics');
  await page.eval(`(() => { const f = document.getElementById('topic-create'); f.name.value = 'DashNew';
    f.type.value = 'FIFO'; f.queues.value = '3'; })()`);
  await page.click('#new-topic-go');
  await page.waitFor(`location.hash === '#/topics/DashNew' && document.body.dataset.loaded !== '' &&
    document.querySelectorAll('#queues-table tbody tr').length === 3`, 30000, 'the new topic shown');
  let r = await get('/api/v1/topics/DashNew');
  assert.equal(r.json.type, 'FIFO');
  assert.equal(r.json.queues, 3);
  // more queues, read only
  await page.eval(`(() => { const f = document.getElementById('topic-update'); f.queues.value = '5'; f.perm.value = 'r'; })()`);
  await page.click('#topic-save');
  await page.waitFor(`document.querySelectorAll('#queues-table tbody tr').length === 5`, 30000, 'five queues shown');
  r = await get('/api/v1/topics/DashNew');
  assert.equal(r.json.queues, 5);
  assert.equal(r.json.perm, 'r');
  await shot('topic-new');
  // fewer queues: the API's 400 in the banner
  await page.eval(`document.getElementById('topic-update').queues.value = '2'`);
  await page.eval(`document.getElementById('topic-update').queues.min = '1'`);
  await page.click('#topic-save');
  await page.waitFor(`/HTTP 400.*only grow/.test(document.getElementById('error').textContent)`, 30000, '400 shown');
  await page.click('#topic-delete');
  await page.waitFor(`location.hash === '#/topics' && !!document.getElementById('topics-table') &&
    !document.querySelector('#topics-table tr[data-topic="DashNew"]')`, 30000, 'deleted');
  assert.equal((await get('/api/v1/topics/DashNew')).status, 404);
  // a duplicate
  await page.eval(`document.getElementById('topic-create').name.value = ${JSON.stringify(T)}`);
  await page.click('#new-topic-go');
  await page.waitFor(`/HTTP 409/.test(document.getElementById('error').textContent)`, 30000, '409 shown');
});

test('groups: the lag shown is the real backlog', async () => {
  await show('#/groups');
  const row = `#groups-table tr[data-group="${G}"]`;
  assert.equal(await page.eval(`document.querySelector('${row}').cells[3].textContent`), String(N - ACKED));
  assert.equal(await page.eval(`document.querySelector('#groups-table tr[data-group="${G_DLQ}"]').cells[5].textContent`), '1');
  await shot('groups');
  await show(`#/groups/${G}`);
  assert.equal(await page.text('#group-lag'), String(N - ACKED));
  // per queue: max - committed, summing to the backlog
  const qs = await page.eval(`[...document.querySelectorAll('#group-queues tbody tr')].map((r) =>
    [...r.cells].map((c) => c.textContent))`);
  assert.equal(qs.length, 2);
  let sum = 0;
  for (const [topic, , , max, committed, lag] of qs) {
    assert.equal(topic, T);
    assert.equal(Number(lag), Number(max) - Number(committed));
    sum += Number(lag);
  }
  assert.equal(sum, N - ACKED);
  assert.match(await page.text('#group-members'), /\S/);
  await shot('group');
});

test('groups: reset offsets to the end and the beginning from the group page', async () => {
  await show(`#/groups/${G}`);
  assert.equal(await page.eval(`document.getElementById('reset-topic').value`), T);
  const reset = async (to, lag) => {
    await page.eval(`(() => { const f = document.getElementById('reset-form'); f.to.value = '${to}';
      f.to.dispatchEvent(new Event('change')); })()`);
    await page.click('#reset-go');
    await page.waitFor(`document.getElementById('group-lag')?.textContent === '${lag}' &&
      /reset to the ${to}/.test(document.getElementById('reset-result')?.textContent ?? '')`, 30000, `lag ${lag} shown`);
    assert.equal((await get(`/api/v1/groups/${G}`)).json.lag, lag);
  };
  await reset('end', 0);
  await reset('beginning', N);
  assert.equal(await page.text('#reset-result'), `${T} reset to the beginning: offsets 0, 0`);
  await shot('group-reset');
  // a bad topic: the API's 404 in the banner
  await page.eval(`document.getElementById('reset-topic').value = 'NoSuchTopic'`);
  await page.click('#reset-go');
  await page.waitFor(`/HTTP 404/.test(document.getElementById('error').textContent)`, 30000, 'error shown');
});

test('groups: create, change and delete through the forms; a bad value shows the 400', async () => {
  await show('#/groups');
  await page.eval(`(() => { const f = document.getElementById('group-create'); f.name.value = 'DashNewGroup';
    f.fifo.checked = true; f.max_delivery_attempts.value = '7'; })()`);
  await page.click('#group-create-go');
  await page.waitFor(`location.hash === '#/groups/DashNewGroup' && document.body.dataset.loaded !== '' &&
    !!document.getElementById('group-update')`, 30000, 'the new group shown');
  let r = await get('/api/v1/groups/DashNewGroup');
  assert.equal(r.json.fifo, true);
  assert.equal(r.json.max_delivery_attempts, 7);
  await page.eval(`(() => { const f = document.getElementById('group-update'); f.max_delivery_attempts.value = '3';
    f.consume_from.value = 'LAST'; f.retry_initial_ms.value = '1000'; f.retry_max_ms.value = '60000';
    f.retry_multiplier.value = '200'; })()`);
  await page.click('#group-update-go');
  await waitFor(async () => (await get('/api/v1/groups/DashNewGroup')).json?.max_delivery_attempts === 3, 30000, 'saved');
  r = await get('/api/v1/groups/DashNewGroup');
  assert.equal(r.json.consume_from, 'LAST');
  assert.deepEqual(r.json.retry, { initial_ms: 1000, max_ms: 60000, multiplier: 200 });
  await page.waitFor(`/1000 ms \\.\\. 60000 ms, ×2 per attempt/.test(document.getElementById('main').textContent)`, 30000, 'retry shown');
  await shot('group-new');
  // out of range for the API (the form's own bound lifted): its 400 shown
  await page.eval(`(() => { const i = document.getElementById('group-update').max_delivery_attempts; i.max = ''; i.value = '5000'; })()`);
  await page.click('#group-update-go');
  await page.waitFor(`/HTTP 400/.test(document.getElementById('error').textContent)`, 30000, '400 shown');
  await page.click('#group-delete');
  await page.waitFor(`location.hash === '#/groups' && !!document.getElementById('groups-table') &&
    !document.querySelector('#groups-table tr[data-group="DashNewGroup"]')`, 30000, 'deleted');
  assert.equal((await get('/api/v1/groups/DashNewGroup')).status, 404);
});

test('clients: the SDK clients and an AMQP connection are listed; Close ends the AMQP one with 320', async () => {
  const conn = await amqplib.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}`);
  const closed = new Promise((resolve) => { conn.on('error', resolve); conn.on('close', resolve); });
  await conn.createChannel();
  await conn.createChannel();
  const port = conn.connection.stream.localPort;
  let ac;
  await waitFor(async () => {
    ac = (await get('/api/v1/clients')).json.clients.find((c) => c.type === 'AMQP' && c.remote.endsWith(`:${port}`));
    return ac?.channels === 2;
  }, 20000, 'the AMQP connection listed with 2 channels');
  await show('#/clients');
  const arow = await page.eval(`(() => { const r = document.querySelector('#amqp-table tr[data-client="${ac.client_id}"]');
    return r ? [...r.cells].map((c) => c.textContent) : null; })()`);
  assert.ok(arow, `AMQP row: ${await dump()}`);
  assert.deepEqual(arow.slice(0, 7), [ac.client_id, ac.version, ac.remote, '/', 'guest', '2', 'no']);
  assert.match(arow[1], /^amqplib /);
  await shot('clients');
  await page.eval(`window.confirm = () => true`);
  await page.eval(`document.querySelector('#amqp-table tr[data-client="${ac.client_id}"] button').click()`);
  const err = await closed;
  assert.equal(err?.code, 320, String(err));
  await page.waitFor(`!!document.getElementById('amqp-table') &&
    !document.querySelector('#amqp-table tr[data-client="${ac.client_id}"]')`, 30000, 'the closed connection gone');
  await conn.close().catch(() => {});

  const clients = (await get('/api/v1/clients')).json.clients;
  const cons = clients.find((c) => c.group === G);
  assert.ok(cons, JSON.stringify(clients));
  const row = await page.eval(`(() => { const r = document.querySelector('#clients-table tr[data-client="${cons.client_id}"]');
    return r ? [...r.cells].map((c) => c.textContent) : null; })()`);
  assert.ok(row, 'consumer row');
  assert.equal(row[1], cons.type);
  assert.equal(row[5], G);
  assert.ok(await page.eval(`[...document.querySelectorAll('#clients-table tr[data-client]')]
    .some((r) => r.cells[1].textContent === 'PRODUCER')`), 'producer row');
});

test('messages: found by id (through the form), by key and by position', async () => {
  await show('#/messages');
  const id = sent[4];
  await page.eval(`(() => { const f = document.getElementById('msg-form'); f.mode.value = 'id';
    f.mode.dispatchEvent(new Event('change')); f.msgid.value = ${JSON.stringify(id)}; })()`);
  await page.click('#msg-find');
  await page.waitFor(`!!document.querySelector('#msg-result [data-msg-id="${id}"]')`, 30000, 'message by id')
    .catch(async (e) => { throw new Error(`${e.message}\n${await dump()}\nhash: ${await page.eval('location.hash')}`); });
  assert.equal(await page.text(`#msg-result [data-msg-id="${id}"] pre.body`), 'dash body 4');
  assert.match(await page.text(`#msg-result [data-msg-id="${id}"]`), /dash-key-4/);
  await shot('message-by-id');
  await show(`#/messages?topic=${T}&key=dash-key-7`);
  assert.ok(await page.eval(`!!document.querySelector('#msg-result [data-msg-id="${sent[7]}"]')`));
  await show(`#/messages?topic=${T}&queue=0&offset=0`);
  assert.equal(await page.eval(`document.querySelectorAll('#msg-result [data-msg-id]').length`), 1);
  assert.equal(await errorShown(), null);
});

test('DLQ: the dead letter is listed; redrive moves it back to its topic', async () => {
  await show('#/dlq');
  const sec = `section[data-dlq-group="${G_DLQ}"]`;
  assert.equal(await page.text(`${sec} .dlq-count`), '1', await dump());
  assert.ok(await page.eval(`[...document.querySelectorAll('${sec} a')].some((a) => a.textContent === ${JSON.stringify(poisonId)})`),
    'the dead letter listed by id');
  await shot('dlq-before');
  await page.click(`#redrive-${G_DLQ}`);
  await page.waitFor(`/moved 1, failed 0/.test(document.getElementById('redrive-result')?.textContent ?? '')`,
    30000, 'redrive result');
  await page.waitFor(`!document.querySelector('${sec}') && !!document.getElementById('dlq-empty')`, 30000, 'DLQ empty');
  assert.equal((await get(`/api/v1/groups/${G_DLQ}`)).json.dlq_messages, 0);
  // back on its topic, delivered to the group again
  const back = await waitFor(async () => {
    const ms = await dlqConsumer.receive(4, 30000);
    return ms.length ? ms : null;
  }, 60000, 'redriven message delivered');
  assert.equal(back[0].messageId, poisonId);
  await shot('dlq-after');
  // failed again: a second dead letter; the page lists that one only, not
  // the copy already moved back (still in the DLQ topic, consumed)
  await dlqConsumer.changeInvisibleDuration(back[0], 0);
  await waitFor(async () => {
    await dlqConsumer.receive(4, 30000);
    return (await get(`/api/v1/groups/${G_DLQ}`)).json?.dlq_messages === 1;
  }, 60000, 'dead-lettered again');
  await show('#/dlq');
  assert.equal(await page.text(`${sec} .dlq-count`), '1', await dump());
  assert.equal(await page.eval(`document.querySelectorAll('${sec} table.dlq-messages tbody tr').length`), 1, await dump());
  assert.equal((await get(`/api/v1/topics/${encodeURIComponent(`%DLQ%${G_DLQ}`)}`)).json.messages, 2);
});

test('trace: the dead letter timeline (publish, deliveries, nacks, dlq), the form, an unknown id', async () => {
  const api = (await get(`/api/v1/messages/${poisonId}/trace`)).json;
  const kinds = api.events.map((e) => e.kind);
  // publish, first delivery nacked on the last attempt -> dlq; then the
  // redrive's delivery, nacked and dead-lettered again
  assert.deepEqual(kinds.slice(0, 4), ['publish', 'deliver', 'nack', 'dlq'], JSON.stringify(api));
  await show(`#/trace?id=${encodeURIComponent(poisonId)}`);
  const shown = await page.eval(`[...document.querySelectorAll('#trace-timeline li.ev')].map((l) => l.dataset.kind)`);
  assert.deepEqual(shown, kinds, await dump());
  assert.equal(await page.text('#trace-count'), String(kinds.length));
  assert.doesNotMatch(await page.text('#trace-result'), /null|undefined|\[object/);
  const first = await page.text('#trace-timeline li.ev:first-child');
  assert.match(first, /publish/i);
  assert.match(first, /body 6 bytes/);
  const dlq = await page.text('#trace-timeline li.ev[data-kind="dlq"]');
  assert.match(dlq, new RegExp(`group ${G_DLQ}`));
  assert.match(dlq, /max delivery attempts \(1\)/);
  assert.equal(await errorShown(), null);
  await shot('trace');
  // through the form, for a message of the other traced topic
  await show('#/trace');
  await page.eval(`document.getElementById('trace-id').value = ${JSON.stringify(sent[2])}`);
  await page.click('#trace-find');
  await page.waitFor(`document.querySelector('#trace-timeline li.ev')?.dataset.kind === 'publish'`, 30000,
    'timeline from the form').catch(async (e) => { throw new Error(`${e.message}\n${await dump()}`); });
  // from a message's page
  await show(`#/messages?id=${encodeURIComponent(poisonId)}`);
  assert.ok(await page.eval(`[...document.querySelectorAll('#msg-result a')].some((a) =>
    a.getAttribute('href') === '#/trace?id=' + encodeURIComponent(${JSON.stringify(poisonId)}))`), 'trace link');
  // an id without events
  await show('#/trace?id=NO-SUCH-ID');
  assert.match(await page.text('#trace-notice'), /No trace events for NO-SUCH-ID/);
});

test('token: set through the Token button, sent as a bearer token on API calls, cleared again', async () => {
  await page.recordRequests();
  await show('#/clients');
  await page.eval(`window.prompt = () => 'dash-secret-token'`);
  const from = page.requests.length;
  await page.click('#token');
  const authOf = (r) => Object.entries(r.headers).find(([k]) => k.toLowerCase() === 'authorization')?.[1];
  await waitFor(() => page.requests.slice(from).some((r) => r.url.includes('/api/v1/clients') &&
    authOf(r) === 'Bearer dash-secret-token'), 30000, 'a request with the token');
  assert.equal(await page.text('#token'), 'Token ✓');
  await page.waitFor(`document.body.dataset.loaded !== '' && !!document.getElementById('clients-table')`, 30000, 'rendered');
  assert.equal(await errorShown(), null);
  await page.eval(`window.prompt = () => ''`);
  const from2 = page.requests.length;
  await page.click('#token');
  await waitFor(() => page.requests.slice(from2).some((r) => r.url.includes('/api/v1/clients')), 30000, 'a request');
  assert.ok(page.requests.slice(from2).filter((r) => r.url.includes('/api/')).every((r) => authOf(r) === undefined));
  assert.equal(await page.text('#token'), 'Token');
});

test('API errors are shown: a missing topic, then the server gone', async () => {
  await show('#/topics/NoSuchTopic');
  const e = await errorShown();
  assert.match(e ?? '', /HTTP 404/, e);
  assert.match(await page.text('#main'), /could not be loaded/);
  await shot('error-404');
  await show(`#/topics/${T}`);
  assert.equal(await errorShown(), null, 'cleared on the next page');
  // the server stops: the page says it cannot reach it
  await shutdownQuietly(producer, consumer, dlqConsumer);
  producer = consumer = dlqConsumer = null;
  const info = await stopGantry(g);
  g = null;
  assert.equal(info.code, 0);
  await page.click('#refresh');
  await page.waitFor(`/cannot reach gantry/.test(document.getElementById('error').textContent)`, 30000, 'unreachable shown');
  assert.equal(await page.eval(`document.getElementById('error').hidden`), false);
  await shot('error-unreachable');
  assert.deepEqual(page.exceptions, [], 'no uncaught page errors');
});
