// TTLs as RabbitMQ 3.10 applies them (issue 10): a queue's x-message-ttl,
// a message's `expiration` (the smaller one wins; an invalid one is 406),
// TTL 0 (expired unless a consumer takes it at once), expired messages
// never delivered and gone from the counts once at the head, and
// x-expires deleting an unused queue.  Every test also passes against a
// RabbitMQ 3.10.8 (TTL_TEST_URL=amqp://...; the tests that need gantry's
// log or a restart are skipped then).  Times are lower bounds: a test
// waits until a TTL has surely passed, then for the condition.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, sleep, require } from './harness.mjs';

const amqp = require('amqplib');
const REMOTE = process.env.TTL_TEST_URL;

async function server(t, opts = {}) {
  if (REMOTE) return { url: REMOTE, stop: async () => {} };
  const g = await startGantry({ logLevel: 'info', ...opts });
  return {
    g,
    url: `amqp://guest:guest@127.0.0.1:${g.amqpPort}/`,
    stop: async () => {
      const info = await stopGantry(g, 'SIGTERM');
      assert.equal(info.code, 0);
    },
  };
}

async function open(url) {
  const conn = await amqp.connect(url);
  conn.on('error', () => {});
  return conn;
}

const uniq = (p) => `${p}.${process.pid}.${Math.random().toString(36).slice(2, 8)}`;

// Publishes bodies confirmed; resolves with the times before the first
// publish and after the last confirm (the store times lie between).
async function publish(ch, q, bodies, props = {}) {
  const before = Date.now();
  await Promise.all(bodies.map((b) => new Promise((res, rej) =>
    ch.sendToQueue(q, Buffer.from(b), typeof props === 'function' ? props(b) : props,
      (e) => (e ? rej(e) : res())))));
  return { before, after: Date.now() };
}

// Waits until at least ms have passed since the confirms of p (a TTL
// counted from the store time surely ran out).
async function until(p, ms) {
  const left = p.after + ms - Date.now();
  if (left > 0) await sleep(left + 5);
}

test('queue x-message-ttl: expired messages are not counted, got or consumed', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const ch = await conn.createConfirmChannel();
    const q = uniq('ttl.q');
    const TTL = 400;
    await ch.assertQueue(q, { durable: false, arguments: { 'x-message-ttl': TTL } });
    const t0 = await publish(ch, q, ['a', 'b', 'c']);
    const n = (await ch.checkQueue(q)).messageCount;
    if (Date.now() - t0.before < TTL) assert.equal(n, 3, 'not expired before the TTL'); // a lower bound
    await until(t0, TTL);
    assert.equal((await ch.checkQueue(q)).messageCount, 0);
    assert.equal((await ch.assertQueue(q, { durable: false,
      arguments: { 'x-message-ttl': TTL } })).messageCount, 0);
    assert.equal(await ch.get(q), false);
    // A consumer that comes later gets only what is fresh.
    const t1 = await publish(ch, q, ['old']);
    await until(t1, TTL);
    const got = [];
    await ch.consume(q, (m) => got.push(m.content.toString()), { noAck: true });
    await publish(ch, q, ['fresh']);
    await waitFor(() => got.length > 0, 5000, 'the fresh message');
    assert.deepEqual(got, ['fresh']);
  } finally {
    await conn.close();
    await s.stop();
  }
});

test('per-message expiration: expires at the head; behind an unexpired head it stays counted', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const ch = await conn.createConfirmChannel();
    const q = uniq('exp.q');
    await ch.assertQueue(q, { durable: false });
    const t0 = await publish(ch, q, ['long', 'short', 'none'],
      (b) => (b === 'short' ? { expiration: '100' } : {}));
    await until(t0, 100);
    // RabbitMQ's classic queues drop expired messages at the head only.
    assert.equal((await ch.checkQueue(q)).messageCount, 3);
    const m1 = await ch.get(q, { noAck: true });
    assert.equal(m1.content.toString(), 'long');
    assert.equal(m1.fields.messageCount, 1, 'the expired one behind is gone once at the head');
    const m2 = await ch.get(q, { noAck: true });
    assert.equal(m2.content.toString(), 'none');
    assert.equal(m2.fields.messageCount, 0);
    assert.equal(await ch.get(q), false);
    // An expiration alone, at the head, with nobody looking: the queue's timer.
    const t1 = await publish(ch, q, ['e1', 'e2'], { expiration: '150' });
    await until(t1, 150);
    await waitFor(async () => (await ch.checkQueue(q)).messageCount === 0, 5000, 'expired');
  } finally {
    await conn.close();
    await s.stop();
  }
});

test('the smaller of x-message-ttl and expiration wins', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const ch = await conn.createConfirmChannel();
    const q1 = uniq('min1.q');
    await ch.assertQueue(q1, { durable: false, arguments: { 'x-message-ttl': 60000 } });
    const t0 = await publish(ch, q1, ['a', 'b'], (b) => ({ expiration: b === 'a' ? '100' : '60000' }));
    await until(t0, 100);
    const m = await ch.get(q1, { noAck: true });
    assert.equal(m.content.toString(), 'b');
    assert.equal(m.fields.messageCount, 0);
    const q2 = uniq('min2.q');
    await ch.assertQueue(q2, { durable: false, arguments: { 'x-message-ttl': 100 } });
    const t1 = await publish(ch, q2, ['c'], { expiration: '60000' });
    await until(t1, 100);
    assert.equal(await ch.get(q2), false);
  } finally {
    await conn.close();
    await s.stop();
  }
});

test('TTL 0: expired unless a consumer can take the message at once', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const ch = await conn.createConfirmChannel();
    const q = uniq('zero.q');
    await ch.assertQueue(q, { durable: false, arguments: { 'x-message-ttl': 0 } });
    await publish(ch, q, ['nobody']);
    assert.equal((await ch.checkQueue(q)).messageCount, 0);
    assert.equal(await ch.get(q), false);
    // A waiting consumer gets it.
    const got = [];
    const c1 = await ch.consume(q, (m) => got.push(m.content.toString()), { noAck: true });
    await publish(ch, q, ['taken']);
    await waitFor(() => got.length === 1, 5000, 'the delivery');
    assert.deepEqual(got, ['taken']);
    await ch.cancel(c1.consumerTag);
    // A consumer at its prefetch limit cannot take the second one.
    const ch2 = await conn.createChannel();
    await ch2.prefetch(1);
    const got2 = [];
    await ch2.consume(q, (m) => got2.push(m), { noAck: false });
    await publish(ch, q, ['p1']);
    await waitFor(() => got2.length === 1, 5000, 'p1');
    await publish(ch, q, ['p2']);
    ch2.ack(got2[0]);
    await publish(ch, q, ['p3']); // in order: p2 would come before it
    await waitFor(() => got2.length === 2, 5000, 'p3');
    assert.deepEqual(got2.map((m) => m.content.toString()), ['p1', 'p3']);
    // expiration "0" on a queue without a TTL, with a consumer waiting.
    const q2 = uniq('zero2.q');
    await ch.assertQueue(q2, { durable: false });
    await publish(ch, q2, ['lost'], { expiration: '0' });
    assert.equal((await ch.checkQueue(q2)).messageCount, 0);
    const got3 = [];
    await ch.consume(q2, (m) => got3.push(m.content.toString()), { noAck: true });
    await publish(ch, q2, ['kept'], { expiration: '0' });
    await waitFor(() => got3.length === 1, 5000, 'kept');
    assert.deepEqual(got3, ['kept']);
  } finally {
    await conn.close();
    await s.stop();
  }
});

test('an invalid expiration is 406 with RabbitMQ text; valid odd forms are taken', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const q = uniq('inv.q');
    const cases = [
      ['abc', "invalid expiration 'abc': no_integer"],
      ['', "invalid expiration '': no_integer"],
      [' 5', "invalid expiration ' 5': no_integer"],
      ['-1', "invalid expiration '-1': {value_negative,-1}"],
      ['1.5', "invalid expiration '1.5': {leftover_string,\".5\"}"],
      ['5 ', "invalid expiration '5 ': {leftover_string,\" \"}"],
      ['5\t', "invalid expiration '5\t': {leftover_string,\"\\t\"}"],
      ['315360000001', "invalid expiration '315360000001': {value_too_large,315360000001}"],
      ['-007', "invalid expiration '-007': {value_negative,-7}"],
      // Erlang's ~p goes to the next line past column 78 (RabbitMQ 3.10.8's answers).
      ['-999999999999999999', "invalid expiration '-999999999999999999': {value_negative,-999999999999999999}"],
      ['-9999999999999999999', "invalid expiration '-9999999999999999999': {value_negative,\n" +
        `${' '.repeat(44)}-9999999999999999999}`],
      ['1' + 'x'.repeat(25), `invalid expiration '1${'x'.repeat(25)}': {leftover_string,\n` +
        `${' '.repeat(50)}"${'x'.repeat(25)}"}`],
    ];
    for (const [exp, text] of cases) {
      const ch = await conn.createChannel();
      let err = null;
      ch.on('error', (e) => { err = e; });
      await ch.assertQueue(q, { durable: false });
      ch.sendToQueue(q, Buffer.from('x'), { expiration: exp });
      await assert.rejects(ch.checkQueue(q), (e) => {
        assert.match(e.message, /406/);
        return true;
      });
      await waitFor(() => err, 5000, 'the channel error');
      assert.equal(err.code, 406);
      assert.ok(err.message.includes(`PRECONDITION_FAILED - ${text}`), `${exp}: ${err.message}`);
    }
    const ch = await conn.createConfirmChannel();
    await ch.purgeQueue(q);
    await publish(ch, q, ['a', 'b', 'c', 'd'],
      (b) => ({ expiration: { a: '+5000', b: '007000', c: '-0', d: '315360000000' }[b] }));
    const got = await ch.get(q, { noAck: true });
    assert.equal(got.content.toString(), 'a');
    assert.equal(got.properties.expiration, '+5000', 'the property is delivered as sent');
    await ch.deleteQueue(q);
  } finally {
    await conn.close();
    await s.stop();
  }
});

test('x-message-ttl and x-expires arguments are checked as RabbitMQ does', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const cases = [
      ['x-message-ttl', -1, '{value_negative,-1}'],
      ['x-message-ttl', 'abc', '"expected integer, got longstr"'],
      ['x-expires', 0, '{value_zero,0}'],
      ['x-expires', -5, '{value_negative,-5}'],
    ];
    for (const [k, v, why] of cases) {
      const ch = await conn.createChannel();
      ch.on('error', () => {});
      const q = uniq('arg.q');
      await assert.rejects(ch.assertQueue(q, { arguments: { [k]: v } }), (e) => {
        assert.equal(e.code, 406);
        assert.ok(e.message.includes(
          `PRECONDITION_FAILED - invalid arg '${k}' for queue '${q}' in vhost '/': ${why}`), e.message);
        return true;
      });
    }
  } finally {
    await conn.close();
    await s.stop();
  }
});

// A queue's existence without touching it: a mandatory publish comes back
// when the queue is gone (a passive declare would count as a use).
async function exists(conn, q) {
  const ch = await conn.createConfirmChannel();
  let returned = false;
  ch.on('return', () => { returned = true; });
  await new Promise((res, rej) => ch.publish('', q, Buffer.from('probe'), { mandatory: true },
    (e) => (e ? rej(e) : res())));
  await ch.close();
  return !returned;
}

test('x-expires deletes an unused queue, not one in use', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const ch = await conn.createChannel();
    const EXP = 500;
    const idle = uniq('idle.q');
    const t0 = Date.now();
    await ch.assertQueue(idle, { durable: false, arguments: { 'x-expires': EXP } });
    await waitFor(async () => !(await exists(conn, idle)), 10000, 'the idle queue deleted');
    assert.ok(Date.now() - t0 >= EXP, 'not before x-expires');
    // A consumer keeps it; when it goes, the lease starts again.
    const used = uniq('used.q');
    await ch.assertQueue(used, { durable: false, arguments: { 'x-expires': EXP } });
    const ch2 = await conn.createChannel();
    let cancelled = false;
    await ch2.consume(used, (m) => { if (m === null) cancelled = true; }, { noAck: true });
    await sleep(EXP * 2);
    assert.ok(await exists(conn, used), 'a queue with a consumer stays');
    const t1 = Date.now(); // before the server starts the lease again
    await ch2.close();
    await waitFor(async () => !(await exists(conn, used)), 10000, 'deleted after its consumer left');
    assert.ok(Date.now() - t1 >= EXP, 'not before x-expires');
    assert.equal(cancelled, false);
    // basic.get and declares are uses too.
    const got = uniq('get.q');
    await ch.assertQueue(got, { durable: false, arguments: { 'x-expires': EXP } });
    for (let i = 0; i < 4; i++) {
      await sleep(EXP / 2);
      if (i % 2) await ch.get(got); else await ch.checkQueue(got);
    }
    assert.ok(await exists(conn, got), 'used every EXP/2');
  } finally {
    await conn.close();
    await s.stop();
  }
});

// x-expires is a lower bound to the millisecond: a probe answered before
// declare time + x-expires (the declare was sent after t0, so the server's
// lease started later still) must find the queue.  Each queue is probed
// back to back (a mandatory publish on one confirm channel: one round trip)
// from just before its time until it is gone, so a deletion that comes a
// few ms early (a timer armed from a coarse or cached clock) is seen.
test('x-expires never deletes a queue before its time', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const ch = await conn.createChannel();
    const probe = await conn.createConfirmChannel();
    const gone = new Set();
    probe.on('return', (m) => gone.add(m.fields.routingKey));
    const EXP = 100;
    for (let i = 0; i < 25; i++) {
      const q = uniq('early.q');
      const t0 = Date.now();
      await ch.assertQueue(q, { durable: false, arguments: { 'x-expires': EXP } });
      const left = t0 + EXP - 15 - Date.now();
      if (left > 0) await sleep(left);
      for (;;) {
        await new Promise((res, rej) => probe.publish('', q, Buffer.from('probe'), { mandatory: true },
          (e) => (e ? rej(e) : res())));
        const at = Date.now();
        if (gone.has(q)) {
          assert.ok(at - t0 >= EXP, `queue ${i} gone ${at - t0} ms after its declare was sent (x-expires ${EXP})`);
          break;
        }
        assert.ok(at - t0 < EXP + 10000, `queue ${i} still there after ${at - t0} ms`);
      }
    }
  } finally {
    await conn.close();
    await s.stop();
  }
});

test('a durable queue deleted by x-expires stays deleted after a restart', { skip: !!REMOTE }, async () => {
  let g = await startGantry({ logLevel: 'info' });
  try {
    let conn = await open(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
    const ch = await conn.createConfirmChannel();
    const q = uniq('durexp.q');
    await ch.assertQueue(q, { durable: true, arguments: { 'x-expires': 300 } });
    await publish(ch, q, ['m'], { persistent: true });
    await waitFor(() => g.log().includes(`queue '${q}' unused for 300 ms (x-expires): deleted`),
      10000, 'the queue deleted');
    assert.equal(await exists(conn, q), false);
    await conn.close();
    await stopGantry(g, 'SIGTERM', { keepDir: true });
    g = await startGantry({ logLevel: 'info', dir: g.dir, grpcPort: g.grpcPort,
      httpPort: g.httpPort, amqpPort: g.amqpPort });
    conn = await open(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
    assert.equal(await exists(conn, q), false, 'its durable record went with it');
    await conn.close();
  } finally {
    const info = await stopGantry(g, 'SIGTERM');
    assert.equal(info.code, 0);
  }
});

test('the head timer expires messages while the only consumer is at its prefetch limit', { skip: !!REMOTE }, async () => {
  const g = await startGantry({ logLevel: 'debug' });
  const conn = await open(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  try {
    const ch = await conn.createConfirmChannel();
    const q = uniq('held.q');
    const TTL = 300;
    await ch.assertQueue(q, { durable: false, arguments: { 'x-message-ttl': TTL } });
    const cch = await conn.createChannel();
    await cch.prefetch(1);
    const got = [];
    await cch.consume(q, (m) => got.push(m), { noAck: false });
    await publish(ch, q, ['m0']);
    await waitFor(() => got.length === 1, 5000, 'm0');
    const t0 = await publish(ch, q, ['m1', 'm2', 'm3']);
    await until(t0, TTL);
    // Nobody pops, declares or gets: the queue's own timer removes them.
    const expired = () => (g.log().match(new RegExp(`a message expired in queue '${q.replace(/\./g, '\\.')}'`, 'g')) || []).length;
    await waitFor(() => expired() === 3, 5000, 'three expired by the timer');
    cch.ack(got[0]);
    await publish(ch, q, ['m4']);
    await waitFor(() => got.length === 2, 5000, 'm4');
    assert.deepEqual(got.map((m) => m.content.toString()), ['m0', 'm4']);
    // A delivery given back after its TTL is gone too (it keeps its expiry).
    cch.ack(got[1]);
    const t1 = await publish(ch, q, ['r']);
    await waitFor(() => got.length === 3, 5000, 'r');
    await until(t1, TTL);
    cch.nack(got[2], false, true);
    await waitFor(() => expired() === 4, 5000, 'r expired after its requeue');
    assert.equal((await ch.checkQueue(q)).messageCount, 0);
    assert.equal(got.length, 3);
  } finally {
    await conn.close();
    const info = await stopGantry(g, 'SIGTERM');
    assert.equal(info.code, 0);
  }
});

test('TTLs count from publish time across a SIGKILL; a durable x-expires lease starts anew', { skip: !!REMOTE }, async () => {
  let g = await startGantry({ logLevel: 'info', flush: 'sync' });
  const TTL = 1000;
  const EXP = 1500;
  const qt = uniq('dur.ttl.q');
  const qe = uniq('dur.exp.q');
  const qx = uniq('dur.expires.q');
  let p;
  try {
    let conn = await open(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
    let ch = await conn.createConfirmChannel();
    await ch.assertQueue(qt, { durable: true, arguments: { 'x-message-ttl': TTL } });
    await ch.assertQueue(qe, { durable: true });
    await ch.assertQueue(qx, { durable: true, arguments: { 'x-expires': EXP } });
    p = await publish(ch, qt, ['t1', 't2'], { persistent: true });
    await publish(ch, qe, ['e1', 'e2'], { persistent: true, expiration: String(TTL) });
    await publish(ch, qe, ['keep'], { persistent: true });
    await stopGantry(g, 'SIGKILL', { keepDir: true });
    // The TTLs run out while gantry is down.
    await until(p, TTL + 200);
    const restarted = Date.now();
    g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
      httpPort: g.httpPort, amqpPort: g.amqpPort });
    conn = await open(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
    // The lease of the x-expires queue started again at the restart: a
    // mandatory publish (not a use) finds it if we are within EXP of it.
    const there = await exists(conn, qx);
    if (Date.now() - restarted < EXP) assert.ok(there, 'the lease starts anew at a restart');
    ch = await conn.createChannel();
    assert.equal((await ch.checkQueue(qt)).messageCount, 0, 'x-message-ttl counted from publish');
    assert.equal(await ch.get(qt), false);
    const m = await ch.get(qe, { noAck: true });
    assert.equal(m.content.toString(), 'keep', 'expirations counted from publish');
    await waitFor(async () => !(await exists(conn, qx)), 10000, 'the x-expires queue deleted');
    assert.ok(Date.now() - restarted >= EXP, 'not before its lease since the restart');
    await ch.deleteQueue(qt);
    await ch.deleteQueue(qe);
    await conn.close();
  } finally {
    const info = await stopGantry(g, 'SIGTERM');
    assert.equal(info.code, 0);
  }
});

test('expired messages are dead-lettered with reason expired (head timer, get, TTL 0, a TTL+DLX delay loop)', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const ch = await conn.createConfirmChannel();
    const src = uniq('dl.src');
    const dlq = uniq('dl.dlq');
    await ch.assertQueue(dlq, { durable: false });
    await ch.assertQueue(src, { durable: false, arguments: { 'x-message-ttl': 100,
      'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dlq } });
    // Nobody looks at src: its head timer dead-letters both.
    await publish(ch, src, ['d1', 'd2'], (b) => (b === 'd1'
      ? { expiration: '50', headers: { h: 1 } } : {}));
    await waitFor(async () => (await ch.checkQueue(dlq)).messageCount === 2, 5000, 'both dead');
    const m1 = await ch.get(dlq, { noAck: true });
    assert.equal(m1.content.toString(), 'd1');
    assert.equal(m1.properties.expiration, undefined, 'expiration removed');
    const h = m1.properties.headers;
    assert.deepEqual(Object.keys(h), ['h', 'x-death', 'x-first-death-exchange',
      'x-first-death-queue', 'x-first-death-reason']);
    const { time, ...death } = h['x-death'][0];
    assert.ok(time, 'x-death time');
    assert.equal(JSON.stringify(death), JSON.stringify({ count: 1, reason: 'expired', queue: src,
      exchange: '', 'routing-keys': [src], 'original-expiration': '50' }));
    assert.equal(h['x-first-death-reason'], 'expired');
    assert.equal(h['x-first-death-queue'], src);
    const m2 = await ch.get(dlq, { noAck: true });
    assert.equal(m2.content.toString(), 'd2');
    assert.equal(h['x-first-death-exchange'], '');
    assert.equal(m2.properties.headers['x-death'][0]['original-expiration'], undefined);
    // TTL 0 with no consumer: dead-lettered on the spot.
    const zero = uniq('dl.zero');
    await ch.assertQueue(zero, { durable: false, arguments: { 'x-message-ttl': 0,
      'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dlq } });
    await publish(ch, zero, ['z']);
    await waitFor(async () => (await ch.checkQueue(dlq)).messageCount === 1, 5000, 'z dead');
    const z = await ch.get(dlq, { noAck: true });
    assert.equal(z.content.toString(), 'z');
    assert.equal(z.properties.headers['x-first-death-reason'], 'expired');
    // The usual delay loop: rejected into a TTL queue whose DLX leads back.
    const work = uniq('dl.work');
    const wait = uniq('dl.wait');
    await ch.assertQueue(work, { durable: false, arguments: {
      'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': wait } });
    await ch.assertQueue(wait, { durable: false, arguments: { 'x-message-ttl': 100,
      'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': work } });
    const cch = await conn.createChannel();
    const seen = [];
    await cch.consume(work, (m) => {
      seen.push(m);
      if (seen.length === 1) cch.reject(m, false); else cch.ack(m);
    });
    await publish(ch, work, ['loop']);
    await waitFor(() => seen.length === 2, 5000, 'back from the wait queue');
    const reasons = seen[1].properties.headers['x-death'].map((d) => `${d.queue === wait ? 'wait' : 'work'}:${d.reason}`);
    assert.deepEqual(reasons, ['wait:expired', 'work:rejected']);
  } finally {
    await conn.close();
    await s.stop();
  }
});

test('a message with an expiration that was unacked while its queue looked empty expires once requeued (dead-lettered, not counted)', async (t) => {
  const s = await server(t);
  const conn = await open(s.url);
  try {
    const ch = await conn.createConfirmChannel();
    const src = uniq('rq.src');
    const dlq = uniq('rq.dlq');
    await ch.assertQueue(dlq, { durable: false });
    await ch.assertQueue(src, { durable: false, arguments: {
      'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': dlq } });
    const cch = await conn.createChannel();
    const got = [];
    await cch.consume(src, (m) => got.push(m));
    const p = await publish(ch, src, ['held'], { expiration: '1000' });
    await waitFor(() => got.length === 1, 5000, 'delivered before it expires');
    await until(p, 1000);
    // Looked at while the only message is out (unacked): nothing ready.
    assert.equal((await ch.checkQueue(src)).messageCount, 0);
    await cch.close(); // requeued, already expired
    await waitFor(async () => (await ch.checkQueue(dlq)).messageCount === 1, 5000,
      'dead-lettered once back');
    assert.equal((await ch.checkQueue(src)).messageCount, 0);
    const m = await ch.get(dlq, { noAck: true });
    assert.equal(m.content.toString(), 'held');
    assert.equal(m.properties.headers['x-first-death-reason'], 'expired');
  } finally {
    await conn.close();
    await s.stop();
  }
});
