// Priority queues (issue 10): x-max-priority as RabbitMQ 3.10's classic
// queues have it, checked against a local RabbitMQ 3.10.8 -- higher
// priorities first, FIFO within a priority, a priority above the maximum
// counts as the maximum, none as 0; a requeued message goes back to its
// own priority, ahead of that priority's newer messages and behind higher
// ones; basic.get and consumers follow the same order; a durable priority
// queue keeps its order across a SIGKILL.  Each level is a store queue of
// the queue's topic (docs/amqp.md, storage mapping).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, require } from './harness.mjs';

const amqp = require('amqplib');

async function open(g) {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

// Publishes [body, priority] pairs (priority undefined: no property),
// confirmed.
async function publish(ch, q, list, extra = {}) {
  for (const [b, p] of list) {
    ch.sendToQueue(q, Buffer.from(b), p === undefined ? { ...extra } : { ...extra, priority: p });
  }
  await ch.waitForConfirms();
}

async function getAll(ch, q, noAck = true) {
  const out = [];
  for (;;) {
    const m = await ch.get(q, { noAck });
    if (!m) return out;
    out.push(m);
  }
}

const bodies = (ms) => ms.map((m) => m.content.toString());

async function declareFails(conn, name, args, text) {
  const ch = await conn.createChannel();
  ch.on('error', () => {});
  await assert.rejects(ch.assertQueue(name, { arguments: args }),
    (e) => e.code === 406 && e.message.includes(text), `${JSON.stringify(args)}`);
}

test('priority order, FIFO within a priority, over the max, missing, requeue, get and consume', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    const conn = await open(g);
    const ch = await conn.createConfirmChannel();

    // RabbitMQ 3.10.8's answers to bad values.
    await declareFails(conn, 'p.bad', { 'x-max-priority': 256 },
      "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'p.bad' in vhost '/': {max_value_exceeded,256}");
    await declareFails(conn, 'p.bad', { 'x-max-priority': -1 },
      "invalid arg 'x-max-priority' for queue 'p.bad' in vhost '/': {value_negative,-1}");
    await declareFails(conn, 'p.bad', { 'x-max-priority': '5' },
      "invalid arg 'x-max-priority' for queue 'p.bad' in vhost '/': \"expected integer, got longstr\"");

    // The order RabbitMQ 3.10.8 gives for this list on a queue with max 3.
    await ch.assertQueue('p.q', { arguments: { 'x-max-priority': 3 } });
    await publish(ch, 'p.q', [['n', undefined], ['x5', 5], ['x3', 3], ['x1', 1], ['z0', 0],
      ['y2', 2], ['x255', 255], ['n2', undefined]]);
    assert.equal((await ch.checkQueue('p.q')).messageCount, 8);
    let ms = await getAll(ch, 'p.q', false);
    assert.deepEqual(bodies(ms), ['x5', 'x3', 'x255', 'y2', 'x1', 'n', 'z0', 'n2']);
    assert.equal(ms[0].properties.priority, 5); // the property is kept as sent
    assert.equal(ms[0].fields.messageCount, 7);

    // Requeued: back in their own level, ahead of its newer messages, behind
    // higher ones (RabbitMQ 3.10.8: x5* new3 n2* new0, counts 3 2 1 0).
    ch.nack(ms[7], false, true); // n2, level 0
    ch.nack(ms[0], false, true); // x5, level 3
    for (const m of ms.slice(1, 7)) ch.ack(m);
    await publish(ch, 'p.q', [['new3', 3], ['new0', undefined]]);
    ms = await getAll(ch, 'p.q', false);
    assert.deepEqual(bodies(ms), ['x5', 'new3', 'n2', 'new0']);
    assert.deepEqual(ms.map((m) => m.fields.redelivered), [true, false, true, false]);
    assert.deepEqual(ms.map((m) => m.fields.messageCount), [3, 2, 1, 0]);
    ch.ackAll();

    // A backlog of 300 with priorities 0..9 on max 5, drained by a consumer
    // with prefetch 10: highest first, publish order within a level.
    await ch.assertQueue('p.big', { arguments: { 'x-max-priority': 5 } });
    const list = [];
    for (let i = 0; i < 300; i++) list.push([`m${i}`, (i * 7) % 10]);
    await publish(ch, 'p.big', list);
    const want = list.map(([b, p], i) => ({ b, l: Math.min(p, 5), i }))
      .sort((a, b) => b.l - a.l || a.i - b.i).map((x) => x.b);
    const got = [];
    const cch = await conn.createChannel();
    await cch.prefetch(10);
    await cch.consume('p.big', (m) => { got.push(m.content.toString()); cch.ack(m); });
    await waitFor(() => got.length === 300, 10000, 'the backlog drained');
    assert.deepEqual(got, want);

    // x-max-priority 0 (accepted by RabbitMQ): one level, publish order.
    await ch.assertQueue('p.zero', { arguments: { 'x-max-priority': 0 } });
    await publish(ch, 'p.zero', [['a', 5], ['b', 0], ['c', 9]]);
    assert.deepEqual(bodies(await getAll(ch, 'p.zero')), ['a', 'b', 'c']);

    // A queue without x-max-priority ignores the property; one message
    // fanned out to it and to a priority queue is ordered in each by its
    // own rules (one store record, an entry in each queue's level).
    await ch.assertQueue('p.plain');
    await ch.assertQueue('p.fan', { arguments: { 'x-max-priority': 2 } });
    await ch.assertExchange('p.x', 'fanout');
    await ch.bindQueue('p.plain', 'p.x', '');
    await ch.bindQueue('p.fan', 'p.x', '');
    for (const [b, p] of [['lo', 0], ['hi', 2], ['mid', 1]]) ch.publish('p.x', '', Buffer.from(b), { priority: p });
    await ch.waitForConfirms();
    assert.deepEqual(bodies(await getAll(ch, 'p.plain')), ['lo', 'hi', 'mid']);
    assert.deepEqual(bodies(await getAll(ch, 'p.fan')), ['hi', 'mid', 'lo']);
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});

test('a durable priority queue keeps its levels and order across a SIGKILL', async () => {
  let g = await startGantry({ logLevel: 'info', flush: 'sync' });
  let conn = await open(g);
  let ch = await conn.createConfirmChannel();
  await ch.assertQueue('p.dur', { durable: true, arguments: { 'x-max-priority': 9 } });
  const list = [];
  for (let i = 0; i < 60; i++) list.push([`m${i}`, (i * 5) % 12]);
  await publish(ch, 'p.dur', list, { persistent: true });
  // two delivered and unacked when the process dies: they come back in
  // their own level (redelivered)
  const u1 = await ch.get('p.dur', { noAck: false });
  const u2 = await ch.get('p.dur', { noAck: false });
  assert.ok(u1 && u2);
  await stopGantry(g, 'SIGKILL', { keepDir: true });

  g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
    httpPort: g.httpPort, amqpPort: g.amqpPort });
  try {
    conn = await open(g);
    ch = await conn.createConfirmChannel();
    // redeclared with the same argument: equivalent; new messages join their levels
    await ch.assertQueue('p.dur', { durable: true, arguments: { 'x-max-priority': 9 } });
    await publish(ch, 'p.dur', [['late9', 9], ['late0', 0]], { persistent: true });
    const all = [...list, ['late9', 9], ['late0', 0]];
    const want = all.map(([b, p], i) => ({ b, l: Math.min(p, 9), i }))
      .sort((a, b) => b.l - a.l || a.i - b.i).map((x) => x.b);
    const ms = await getAll(ch, 'p.dur');
    assert.deepEqual(bodies(ms), want);
    assert.deepEqual(ms.filter((m) => m.fields.redelivered).map((m) => m.content.toString()).sort(),
      [u1.content.toString(), u2.content.toString()].sort());
    const other = await conn.createChannel();
    other.on('error', () => {});
    await assert.rejects(other.assertQueue('p.dur', { durable: true, arguments: { 'x-max-priority': 5 } }),
      (e) => e.code === 406 && /inequivalent arg 'x-max-priority'/.test(e.message));
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});
