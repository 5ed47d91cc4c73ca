// Migration operations on AMQP queues (issue 10, Gantry's own): pause and
// resume (config and HTTP, kept across a restart), a per-queue delivery
// rate limit shared by consumers on several connections and channels,
// graded retry delays for nacked messages and RabbitMQ 4.3's
// x-delayed-retry-* arguments, a per-vhost body limit (406), and the
// per-queue counters on /metrics.  Timings are asserted as lower bounds
// (or upper bounds that hold on any machine: a token bucket cannot hand
// out more than burst + rate * elapsed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startGantry, stopGantry, waitFor, scaled, sleep, require, httpGet } from './harness.mjs';

const amqp = require('amqplib');

const OPS_YAML = `  vhosts: ["/", small]
  permissions:
    - {user: guest, vhost: "/", configure: ".*", write: ".*", read: ".*"}
    - {user: guest, vhost: small, configure: ".*", write: ".*", read: ".*"}
  queue_policies:
    - {queue: ops.paused, paused: true}
    - {queue: ops.rate, rate_limit: 20, burst: 5}
    - {pattern: "^ops\\\\.retry", retry_delays: [300ms, 600ms, 900ms]}
  vhost_limits:
    - {vhost: small, max_message_size: 100}
`;

function post(port, p) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: p, method: 'POST',
      timeout: scaled(10000) }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

async function open(g, vhost = '') {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/${vhost}`);
  conn.on('error', () => {});
  return conn;
}

async function publishAll(ch, q, n, prefix = 'm') {
  const sends = [];
  for (let i = 0; i < n; i++) {
    sends.push(new Promise((res, rej) => ch.sendToQueue(q, Buffer.from(`${prefix}${i}`),
      { persistent: true }, (e) => (e ? rej(e) : res()))));
  }
  await Promise.all(sends);
}

// A counter of /metrics for a queue of vhost "/".
async function counter(g, name, queue, vhost = '/') {
  const r = await httpGet(g.httpPort, '/metrics');
  assert.equal(r.status, 200);
  const line = r.body.split('\n').find((l) =>
    l.startsWith(`gantry_amqp_queue_${name}{vhost="${vhost}",queue="${queue}"} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

test('pause and resume: nothing delivered while paused, everything after, nothing lost',
  { timeout: scaled(90000) }, async () => {
  let g = await startGantry({ logLevel: 'info', amqpYaml: OPS_YAML });
  try {
    let conn = await open(g);
    let ch = await conn.createConfirmChannel();
    // Paused by the config: publishes are confirmed, the messages wait.
    await ch.assertQueue('ops.paused', { durable: true });
    const got = [];
    await ch.consume('ops.paused', (m) => { got.push(m.content.toString()); ch.ack(m); });
    await publishAll(ch, 'ops.paused', 20);
    assert.equal(await counter(g, 'paused', 'ops.paused'), 1);
    assert.equal(await counter(g, 'published_total', 'ops.paused'), 20);
    const gch = await conn.createChannel();
    assert.equal(await gch.get('ops.paused'), false, 'basic.get finds a paused queue empty');
    await sleep(1500); // a window for deliveries that must not come (idle ticks are 1 s)
    assert.deepEqual(got, []);
    assert.equal(await counter(g, 'delivered_total', 'ops.paused'), 0);

    // Resumed at run time: all 20, in order.
    const r = await post(g.httpPort, '/api/v1/amqp/queues/%2F/ops.paused/resume');
    assert.equal(r.status, 200, r.body);
    await waitFor(() => got.length === 20, 10000, 'the 20 messages after resume');
    assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => `m${i}`));
    await waitFor(async () => (await counter(g, 'acked_total', 'ops.paused')) === 20, 5000,
      'acked 20');
    assert.equal(await counter(g, 'delivered_total', 'ops.paused'), 20);
    assert.equal(await counter(g, 'redelivered_total', 'ops.paused'), 0);
    assert.equal(await counter(g, 'paused', 'ops.paused'), 0);

    // The operator's pause of a queue the config leaves alone, kept across
    // a restart.
    await ch.assertQueue('ops.p2', { durable: true });
    assert.equal((await post(g.httpPort, '/api/v1/amqp/queues/%2F/ops.p2/pause')).status, 200);
    assert.equal((await post(g.httpPort, '/api/v1/amqp/queues/%2F/nope/pause')).status, 404);
    assert.equal((await httpGet(g.httpPort, '/api/v1/amqp/queues/%2F/ops.p2/pause')).status, 405);
    await publishAll(ch, 'ops.p2', 10);
    await conn.close();
    await stopGantry(g, 'SIGTERM', { keepDir: true });
    g = await startGantry({ logLevel: 'info', amqpYaml: OPS_YAML, dir: g.dir,
      grpcPort: g.grpcPort, httpPort: g.httpPort, amqpPort: g.amqpPort });
    conn = await open(g);
    ch = await conn.createConfirmChannel();
    await publishAll(ch, 'ops.p2', 10, 'n');
    const got2 = [];
    await ch.consume('ops.p2', (m) => { got2.push(m.content.toString()); ch.ack(m); });
    assert.equal(await counter(g, 'paused', 'ops.p2'), 1);
    await sleep(1500);
    assert.deepEqual(got2, []);
    assert.equal((await ch.checkQueue('ops.p2')).messageCount, 20);
    assert.equal((await post(g.httpPort, '/api/v1/amqp/queues/%2F/ops.p2/resume')).status, 200);
    await waitFor(() => got2.length === 20, 10000, 'the 20 messages after resume');
    assert.deepEqual(got2, [...Array.from({ length: 10 }, (_, i) => `m${i}`),
      ...Array.from({ length: 10 }, (_, i) => `n${i}`)]);
    await conn.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('rate limit: consumers on several connections and channels share one token bucket',
  { timeout: scaled(90000) }, async () => {
  const g = await startGantry({ logLevel: 'info', amqpYaml: OPS_YAML });
  const conns = [];
  try {
    const pconn = await open(g);
    conns.push(pconn);
    const pch = await pconn.createConfirmChannel();
    await pch.assertQueue('ops.rate');
    await publishAll(pch, 'ops.rate', 200);
    const RATE = 20;
    const BURST = 5;
    const times = [];
    const per = [];
    // The bucket holds at most BURST tokens now; every delivery counted
    // below is taken after t0 (the consumers start after it).
    const t0 = Date.now();
    for (let c = 0; c < 2; c++) {
      const conn = await open(g);
      conns.push(conn);
      for (let k = 0; k < 2; k++) {
        const ch = await conn.createChannel();
        await ch.prefetch(50);
        const idx = per.length;
        per.push(0);
        await ch.consume('ops.rate', (m) => {
          times.push(Date.now());
          per[idx]++;
          ch.ack(m);
        });
      }
    }
    // Not starved: it keeps delivering well past the burst.
    await waitFor(() => times.length >= 40, 20000, '40 deliveries');
    // Never more than BURST + RATE * elapsed at any moment (+1 for the
    // server's millisecond rounding).
    for (let i = 0; i < times.length; i++) {
      const bound = BURST + RATE * (times[i] - t0) / 1000 + 1;
      assert.ok(i + 1 <= bound, `${i + 1} deliveries after ${times[i] - t0} ms (bound ${bound})`);
    }
    const elapsed = times[39] - t0;
    assert.ok(elapsed >= (40 - BURST - 1) * 1000 / RATE,
      `40 deliveries took ${elapsed} ms, at least ${(40 - BURST - 1) * 1000 / RATE} expected`);
  } finally {
    for (const c of conns) await c.close().catch(() => {});
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('graded retry: nacked without requeue, redelivered after each step, then dead-lettered',
  { timeout: scaled(90000) }, async () => {
  const g = await startGantry({ logLevel: 'info', amqpYaml: OPS_YAML });
  try {
    const conn = await open(g);
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue('ops.dlq');
    await ch.assertQueue('ops.retry1', { arguments: { 'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': 'ops.dlq' } });
    const seen = [];
    let nackAt = 0;
    await ch.consume('ops.retry1', (m) => {
      seen.push({ at: Date.now(), gap: nackAt ? Date.now() - nackAt : 0,
        redelivered: m.fields.redelivered, body: m.content.toString() });
      nackAt = Date.now();
      ch.nack(m, false, false);
    });
    await publishAll(ch, 'ops.retry1', 1, 'r');
    await waitFor(() => seen.length === 4, 15000, 'the first delivery and three retries');
    const delays = [300, 600, 900];
    for (let i = 1; i < 4; i++) {
      assert.equal(seen[i].body, 'r0');
      assert.equal(seen[i].redelivered, true);
      assert.ok(seen[i].gap >= delays[i - 1], `retry ${i} after ${seen[i].gap} ms`);
    }
    assert.equal(seen[0].redelivered, false);
    // After the last step it is dead-lettered (reason rejected, once: the
    // retries were not deaths).
    const dl = await waitFor(async () => ch.get('ops.dlq', { noAck: true }), 10000,
      'the dead-lettered message');
    assert.equal(dl.content.toString(), 'r0');
    const death = dl.properties.headers['x-death'];
    assert.equal(death.length, 1);
    assert.equal(death[0].reason, 'rejected');
    assert.equal(death[0].queue, 'ops.retry1');
    assert.equal(Number(death[0].count), 1);
    await sleep(1500); // a window for a fifth delivery that must not come
    assert.equal(seen.length, 4);
    assert.equal((await ch.checkQueue('ops.retry1')).messageCount, 0);
    assert.equal(await counter(g, 'delivered_total', 'ops.retry1'), 4);
    assert.equal(await counter(g, 'redelivered_total', 'ops.retry1'), 3);
    assert.equal(await counter(g, 'acked_total', 'ops.retry1'), 0);
    assert.equal(await counter(g, 'dead_lettered_total', 'ops.retry1'), 1);
    assert.equal(await counter(g, 'published_total', 'ops.dlq'), 1);
    assert.equal(await counter(g, 'delivered_total', 'ops.dlq'), 1);
    await conn.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('x-delayed-retry-type/-min/-max: requeued messages come back after min * n, at most max',
  { timeout: scaled(90000) }, async () => {
  const g = await startGantry({ logLevel: 'info', amqpYaml: OPS_YAML });
  try {
    const conn = await open(g);
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue('ops.xdr', { arguments: { 'x-delayed-retry-type': 'all',
      'x-delayed-retry-min': 200, 'x-delayed-retry-max': 500 } });
    const seen = [];
    let nackAt = 0;
    await ch.consume('ops.xdr', (m) => {
      seen.push(nackAt ? Date.now() - nackAt : 0);
      nackAt = Date.now();
      if (seen.length < 4) ch.nack(m, false, true);
      else ch.ack(m);
    });
    await publishAll(ch, 'ops.xdr', 1);
    await waitFor(() => seen.length === 4, 15000, 'three delayed requeues');
    for (const [i, min] of [[1, 200], [2, 400], [3, 500]])
      assert.ok(seen[i] >= min, `requeue ${i} came back after ${seen[i]} ms, ${min} expected`);
    // A bad type is refused.
    const bad = await conn.createChannel();
    bad.on('error', () => {});
    await assert.rejects(bad.assertQueue('ops.xdr.bad',
      { arguments: { 'x-delayed-retry-type': 'sometimes' } }), (e) => e.code === 406);
    await conn.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('a vhost limit on the body size: 406 beyond it, other vhosts keep the global limit',
  { timeout: scaled(90000) }, async () => {
  const g = await startGantry({ logLevel: 'info', amqpYaml: OPS_YAML });
  try {
    const small = await open(g, 'small');
    const ch = await small.createConfirmChannel();
    await ch.assertQueue('ops.size.small');
    await publishAll(ch, 'ops.size.small', 1, 'x'.repeat(99)); // 100 bytes
    const closed = new Promise((res) => ch.on('error', res));
    ch.sendToQueue('ops.size.small', Buffer.alloc(101), {}, () => {});
    const e = await closed;
    assert.equal(e.code, 406);
    assert.match(e.message, /message size 101 is larger than configured max size 100/);
    await small.close().catch(() => {});

    const root = await open(g);
    const rch = await root.createConfirmChannel();
    await rch.assertQueue('ops.size.root');
    await new Promise((res, rej) => rch.sendToQueue('ops.size.root', Buffer.alloc(5000), {},
      (err) => (err ? rej(err) : res())));
    assert.equal((await rch.checkQueue('ops.size.root')).messageCount, 1);
    await root.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('counters: expired messages (x-message-ttl) are counted',
  { timeout: scaled(90000) }, async () => {
  const g = await startGantry({ logLevel: 'info', amqpYaml: OPS_YAML });
  try {
    const conn = await open(g);
    const ch = await conn.createConfirmChannel();
    await ch.assertQueue('ops.ttl', { arguments: { 'x-message-ttl': 50 } });
    await publishAll(ch, 'ops.ttl', 3);
    assert.equal(await counter(g, 'published_total', 'ops.ttl'), 3);
    await waitFor(async () => (await counter(g, 'expired_total', 'ops.ttl')) === 3, 10000,
      'three expired');
    assert.equal(await ch.get('ops.ttl'), false);
    assert.equal(await counter(g, 'delivered_total', 'ops.ttl'), 0);
    await conn.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});
