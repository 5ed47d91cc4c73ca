// x-single-active-consumer queues (issue 10), as RabbitMQ 3.10.8's classic
// queues answer (seen on a private one; the one difference is marked):
// every consumer gets consume-ok and counts, only the first in
// subscription order gets deliveries; an exclusive consume is 403; the
// next one takes over when the active one is cancelled (at once without
// unacked deliveries, once they are acked otherwise -- 3.10.8 never hands
// over in that case until the channel closes, a bug; Gantry does as
// quorum queues) or when its channel or connection closes, and then gets
// the unacked ones first, redelivered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, sleep, require } from './harness.mjs';

const amqp = require('amqplib');
const SAC = { arguments: { 'x-single-active-consumer': true } };

async function connect(g) {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

// A consumer with prefetch 2 that records what it gets (body + 'r' when
// redelivered) and keeps the messages for acks.
async function consumer(conn, q, tag, opts = {}) {
  const ch = await conn.createChannel();
  ch.on('error', () => {});
  await ch.prefetch(2);
  const c = { ch, got: [], msgs: [] };
  await ch.consume(q, (m) => {
    if (!m) return;
    c.got.push(m.content.toString() + (m.fields.redelivered ? 'r' : ''));
    c.msgs.push(m);
  }, { consumerTag: tag, ...opts });
  return c;
}

async function fill(ch, q, n, from = 0) {
  for (let i = from; i < from + n; i++) ch.sendToQueue(q, Buffer.from(`m${i}`));
  await ch.waitForConfirms();
}

test('one active consumer; handover on cancel', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    const conn = await connect(g);
    const pub = await conn.createConfirmChannel();
    await pub.assertQueue('sq', SAC);
    await fill(pub, 'sq', 10);
    const a = await consumer(conn, 'sq', 'A');
    const b = await consumer(conn, 'sq', 'B');
    const c = await consumer(conn, 'sq', 'C');
    await waitFor(() => a.got.length === 2, 5000, 'A gets its prefetch');
    assert.equal((await pub.checkQueue('sq')).consumerCount, 3);
    await sleep(200); // (nothing may come: no timing asserted)
    assert.deepEqual([a.got, b.got, c.got], [['m0', 'm1'], [], []]);
    // Acks keep A going; B and C still get nothing.
    a.ch.ack(a.msgs[1], true);
    await waitFor(() => a.got.length === 4, 5000, 'A goes on');
    assert.deepEqual(b.got, []);

    // An exclusive consumer is refused while SAC is on (even alone).
    const x = await conn.createChannel();
    x.on('error', () => {});
    await assert.rejects(x.consume('sq', () => {}, { exclusive: true }),
      (e) => e.code === 403 && /queue 'sq' in vhost '\/' in exclusive use/.test(e.message));

    // A cancels holding m2, m3 unacked: nobody takes over while they are
    // out; once A acks them B (next in subscription order) is active.
    await a.ch.cancel('A');
    pub.sendToQueue('sq', Buffer.from('new'));
    await pub.waitForConfirms();
    await sleep(200);
    assert.deepEqual([b.got, c.got], [[], []]);
    a.ch.ack(a.msgs[3], true);
    await waitFor(() => b.got.length === 2, 5000, 'B takes over');
    assert.deepEqual(b.got, ['m4', 'm5']);
    assert.deepEqual(c.got, []);
    assert.equal(a.got.length, 4);

    // B drains the queue, acking as it goes, then cancels with nothing
    // unacked: C takes over at once.
    for (;;) {
      const n = b.got.length;
      b.ch.ack(b.msgs[n - 1], true);
      if (n === 7) break;
      await waitFor(() => b.got.length > n, 5000, `B's message ${n + 1}`);
    }
    assert.deepEqual(b.got, ['m4', 'm5', 'm6', 'm7', 'm8', 'm9', 'new']);
    await waitFor(async () => (await pub.checkQueue('sq')).messageCount === 0, 5000, 'drained');
    await b.ch.cancel('B');
    pub.sendToQueue('sq', Buffer.from('late'));
    await waitFor(() => c.got.length === 1, 5000, 'C takes over');
    assert.deepEqual(c.got, ['late']);
    assert.equal(b.got.length, 7);
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});

test('handover when the active consumer\'s channel or connection closes: unacked first', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    const conn = await connect(g);
    const pub = await conn.createConfirmChannel();
    await pub.assertQueue('sq2', SAC);
    await fill(pub, 'sq2', 8);
    const connA = await connect(g);
    const a = await consumer(connA, 'sq2', 'A');
    const b = await consumer(conn, 'sq2', 'B');
    const connC = await connect(g);
    const c = await consumer(connC, 'sq2', 'C');
    await waitFor(() => a.got.length === 2, 5000, 'A gets its prefetch');
    // A's connection goes: B gets A's two back first, redelivered.
    await connA.close();
    await waitFor(() => b.got.length === 2, 5000, 'B takes over');
    assert.deepEqual(b.got, ['m0r', 'm1r']);
    b.ch.ack(b.msgs[1], true);
    await waitFor(() => b.got.length === 4, 5000, 'then the rest');
    assert.deepEqual(b.got.slice(2), ['m2', 'm3']);
    // B's channel closes with m2, m3 unacked: C gets them first.
    await b.ch.close();
    await waitFor(() => c.got.length === 2, 5000, 'C takes over');
    assert.deepEqual(c.got, ['m2r', 'm3r']);
    c.ch.ack(c.msgs[1], true);
    await waitFor(() => c.got.length === 4, 5000, 'C goes on');
    assert.deepEqual(c.got.slice(2), ['m4', 'm5']);
    assert.equal((await pub.checkQueue('sq2')).consumerCount, 1);
    // A consumer that joins now waits behind C.
    const d = await consumer(conn, 'sq2', 'D');
    c.ch.ack(c.msgs[3], true);
    await waitFor(() => c.got.length === 6, 5000, 'C still active');
    assert.deepEqual(d.got, []);
    await connC.close();
    await waitFor(() => d.got.length === 2, 5000, 'D takes over');
    assert.deepEqual(d.got, ['m6r', 'm7r']);
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});

test('a durable single-active-consumer queue keeps the argument across a restart', async () => {
  let g = await startGantry({ logLevel: 'info', flush: 'sync' });
  let conn = await connect(g);
  const pub = await conn.createConfirmChannel();
  await pub.assertQueue('dsq', { durable: true, ...SAC });
  await fill(pub, 'dsq', 6);
  // A non-boolean value is refused (gw_qargs, RabbitMQ's text).
  const bad = await conn.createChannel();
  bad.on('error', () => {});
  await assert.rejects(bad.assertQueue('badsq', { arguments: { 'x-single-active-consumer': 'yes' } }),
    (e) => e.code === 406 && /invalid arg 'x-single-active-consumer' for queue 'badsq' in vhost '\/': \{unacceptable_type,longstr\}/.test(e.message));
  await stopGantry(g, 'SIGKILL', { keepDir: true });
  g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
    httpPort: g.httpPort, amqpPort: g.amqpPort });
  try {
    conn = await connect(g);
    const a = await consumer(conn, 'dsq', 'A');
    const b = await consumer(conn, 'dsq', 'B');
    await waitFor(() => a.got.length === 2, 5000, 'A gets its prefetch');
    a.ch.ack(a.msgs[1], true);
    await waitFor(() => a.got.length === 4, 5000, 'A goes on');
    assert.deepEqual(b.got, []);
    await a.ch.close();
    await waitFor(() => b.got.length === 2, 5000, 'B takes over');
    assert.deepEqual(b.got, ['m2r', 'm3r']);
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});
