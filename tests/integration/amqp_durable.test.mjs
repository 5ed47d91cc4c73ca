// Durable AMQP metadata and delivery lifetimes (issue 9): durable queues,
// exchanges and bindings are records in the store (st_meta_*) and come back
// after a SIGKILL of gantry in sync-flush mode, with their confirmed
// persistent messages; transient and exclusive queues (their store topics
// are swept at start), transient exchanges and the bindings of either do
// not.  Unacked deliveries keep their invisibility renewed and come back
// redelivered after a crash, at once (given back before the listener
// accepts); consumer_timeout closes a channel with 406;
// publishers get connection.blocked while too many appends are in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, scaled, require } from './harness.mjs';

const amqp = require('amqplib');

async function open(g) {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

async function missing(conn, fn) {
  const ch = await conn.createChannel();
  ch.on('error', () => {});
  await assert.rejects(fn(ch), (e) => e.code === 404);
}

test('durable queues, exchanges and bindings survive a SIGKILL; transient ones do not', async () => {
  let g = await startGantry({ logLevel: 'info', flush: 'sync' });
  let conn = await open(g);
  let ch = await conn.createConfirmChannel();
  await ch.assertExchange('d.x', 'topic', { durable: true });
  await ch.assertExchange('t.x', 'fanout', { durable: false });
  await ch.assertQueue('d.q', { durable: true });
  await ch.assertQueue('t.q', { durable: false });
  await ch.assertQueue('d.xq', { durable: true, exclusive: true });
  await ch.bindQueue('d.q', 'd.x', 'a.#');
  await ch.bindQueue('d.q', 'amq.direct', 'dk');
  await ch.bindQueue('d.q', 't.x', '');
  await ch.bindQueue('t.q', 'd.x', '#');
  const sends = [];
  for (let i = 0; i < 100; i++) {
    sends.push(new Promise((res, rej) => ch.publish('d.x', 'a.b', Buffer.from(`m${i}`),
      { persistent: true, headers: { i } }, (e) => (e ? rej(e) : res()))));
  }
  await Promise.all(sends); // every one confirmed: durable in sync mode
  await stopGantry(g, 'SIGKILL', { keepDir: true });

  g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
    httpPort: g.httpPort, amqpPort: g.amqpPort });
  try {
    conn = await open(g);
    ch = await conn.createChannel();
    assert.equal((await ch.checkQueue('d.q')).messageCount, 100);
    await ch.checkExchange('d.x');
    await missing(conn, (c) => c.checkQueue('t.q'));
    await missing(conn, (c) => c.checkQueue('d.xq'));
    await missing(conn, (c) => c.checkExchange('t.x'));
    // The store topics of the transient and exclusive queues are swept.
    await waitFor(() => /deleted the store topics of 2 queues no longer declared/.test(g.log()),
      5000, 'the sweep');
    // The messages, in order, with their headers.
    for (let i = 0; i < 100; i++) {
      const m = await ch.get('d.q', { noAck: true });
      assert.ok(m, `message ${i}`);
      assert.equal(m.content.toString(), `m${i}`);
      assert.equal(m.properties.headers.i, i);
      assert.equal(m.properties.deliveryMode, 2);
    }
    // The durable bindings route; the one to a transient queue is gone.
    ch.publish('d.x', 'a.c', Buffer.from('topic'));
    ch.publish('amq.direct', 'dk', Buffer.from('direct'));
    await waitFor(async () => (await ch.checkQueue('d.q')).messageCount === 2, 5000, 'routed');
    await ch.purgeQueue('d.q');
    await ch.deleteQueue('d.q');
    await ch.deleteExchange('d.x');
    await conn.close();
  } finally {
    const info = await stopGantry(g, 'SIGTERM', { keepDir: true });
    assert.equal(info.code, 0);
  }
  // Deleted ones stay deleted.
  g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
    httpPort: g.httpPort, amqpPort: g.amqpPort });
  try {
    conn = await open(g);
    await missing(conn, (c) => c.checkQueue('d.q'));
    await missing(conn, (c) => c.checkExchange('d.x'));
    await conn.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('unacked deliveries stay with their consumer (invisibility renewed) and come back redelivered after a SIGKILL', async () => {
  // A short invisibility (renewed at half) so that the test runs in seconds;
  // the default is 60 s.
  const inv = scaled(1500);
  process.env.GANTRY_TEST_AMQP_INVISIBLE_MS = String(inv);
  let g;
  try {
    g = await startGantry({ logLevel: 'info', flush: 'sync' });
  } finally {
    delete process.env.GANTRY_TEST_AMQP_INVISIBLE_MS;
  }
  let conn = await open(g);
  const other = await open(g);
  let ch = await conn.createConfirmChannel();
  ch.on('error', () => {}); // the SIGKILL ends these connections
  await ch.assertQueue('r.q', { durable: true });
  for (let i = 0; i < 3; i++) {
    await new Promise((res, rej) => ch.sendToQueue('r.q', Buffer.from(`u${i}`), { persistent: true },
      (e) => (e ? rej(e) : res())));
  }
  const held = [];
  await ch.prefetch(3);
  await ch.consume('r.q', (m) => held.push(m));
  await waitFor(() => held.length === 3, 5000, '3 deliveries');
  ch.ack(held[0]);
  // Another consumer gets nothing while they are held for three
  // invisibility periods (a negative check: it needs the time to pass).
  const stolen = [];
  const och = await other.createChannel();
  och.on('error', () => {});
  await och.consume('r.q', (m) => stolen.push(m));
  await new Promise((r) => setTimeout(r, 3 * inv));
  assert.deepEqual(stolen.map((m) => m.content.toString()), [], 'held deliveries stay invisible');
  await stopGantry(g, 'SIGKILL', { keepDir: true });

  process.env.GANTRY_TEST_AMQP_INVISIBLE_MS = String(inv);
  try {
    g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
      httpPort: g.httpPort, amqpPort: g.amqpPort });
  } finally {
    delete process.env.GANTRY_TEST_AMQP_INVISIBLE_MS;
  }
  try {
    conn = await open(g);
    ch = await conn.createChannel();
    const got = [];
    await ch.consume('r.q', (m) => { if (m) { got.push(m); ch.ack(m); } });
    await waitFor(() => got.length === 2, 10000, 'the unacked two after the restart');
    assert.deepEqual(got.map((m) => m.content.toString()).sort(), ['u1', 'u2']);
    assert.ok(got.every((m) => m.fields.redelivered), 'redelivered=true');
    await ch.deleteQueue('r.q');
    await conn.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('after a restart the unacked deliveries are back at once (the first basic.get), not after the 60 s invisibility', async () => {
  let g = await startGantry({ logLevel: 'info', flush: 'sync' }); // the default invisibility
  let conn = await open(g);
  let ch = await conn.createConfirmChannel();
  ch.on('error', () => {}); // the SIGKILL ends it
  await ch.assertQueue('rq.q', { durable: true });
  for (let i = 0; i < 2; i++) {
    await new Promise((res, rej) => ch.sendToQueue('rq.q', Buffer.from(`w${i}`), { persistent: true },
      (e) => (e ? rej(e) : res())));
  }
  const held = [];
  await ch.consume('rq.q', (m) => held.push(m));
  await waitFor(() => held.length === 2, 5000, '2 deliveries');
  await stopGantry(g, 'SIGKILL', { keepDir: true });

  g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
    httpPort: g.httpPort, amqpPort: g.amqpPort });
  try {
    conn = await open(g);
    ch = await conn.createChannel();
    // No waiting: the listener accepts only after they were given back.
    const got = [await ch.get('rq.q', { noAck: true }), await ch.get('rq.q', { noAck: true })];
    assert.ok(got.every((m) => m), 'both there on the first gets');
    assert.deepEqual(got.map((m) => m.content.toString()), ['w0', 'w1']);
    assert.ok(got.every((m) => m.fields.redelivered), 'redelivered=true');
    assert.match(g.log(), /2 unacked messages of an earlier run requeued/);
    await ch.deleteQueue('rq.q');
    await conn.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('consumer_timeout: a delivery unacked for longer closes its channel with 406; the message goes back', async () => {
  const timeout = scaled(1000);
  process.env.GANTRY_TEST_AMQP_CONSUMER_TIMEOUT_MS = String(timeout);
  let g;
  try {
    g = await startGantry({ logLevel: 'info' });
  } finally {
    delete process.env.GANTRY_TEST_AMQP_CONSUMER_TIMEOUT_MS;
  }
  try {
    const conn = await open(g);
    const ch = await conn.createChannel();
    let err = null;
    ch.on('error', (e) => { err = e; });
    await ch.assertQueue('ct.q', { durable: false });
    ch.sendToQueue('ct.q', Buffer.from('slow'));
    const held = [];
    await ch.consume('ct.q', (m) => { if (m) held.push(m); });
    await waitFor(() => err !== null, 10000, 'the channel closed by consumer_timeout');
    assert.equal(held.length, 1);
    assert.equal(err.code, 406);
    assert.match(err.message, new RegExp(`PRECONDITION_FAILED - delivery acknowledgement on channel ${ch.ch} timed out. Timeout value used: ${timeout} ms`));
    const ch2 = await conn.createChannel();
    let m;
    await waitFor(async () => (m = await ch2.get('ct.q', { noAck: true })), 5000, 'given back');
    assert.equal(m.content.toString(), 'slow');
    assert.equal(m.fields.redelivered, true);
    await ch2.deleteQueue('ct.q');
    await conn.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});

test('flow control: over the in-flight mark publishers get connection.blocked, then unblocked; consumers are not blocked', async () => {
  process.env.GANTRY_TEST_AMQP_BLOCK_BYTES = '1'; // every append blocks until answered
  let g;
  try {
    g = await startGantry({ logLevel: 'info', flush: 'sync' });
  } finally {
    delete process.env.GANTRY_TEST_AMQP_BLOCK_BYTES;
  }
  try {
    const pubc = await open(g);
    const subc = await open(g);
    const events = [];
    pubc.on('blocked', (reason) => events.push(`blocked:${reason}`));
    pubc.on('unblocked', () => events.push('unblocked'));
    const subEvents = [];
    subc.on('blocked', () => subEvents.push('blocked'));
    const sub = await subc.createChannel();
    await sub.assertQueue('fc.q', { durable: false });
    const got = [];
    await sub.consume('fc.q', (m) => { if (m) { got.push(m); sub.ack(m); } });
    const ch = await pubc.createConfirmChannel();
    const sends = [];
    for (let i = 0; i < 20; i++) {
      sends.push(new Promise((res, rej) => ch.sendToQueue('fc.q', Buffer.from(`f${i}`), {},
        (e) => (e ? rej(e) : res()))));
    }
    await Promise.all(sends);
    await waitFor(() => got.length === 20, 10000, 'all delivered');
    await waitFor(() => events.at(-1) === 'unblocked', 5000, 'unblocked at the end');
    assert.ok(events.includes('blocked:low on memory'), events.join());
    assert.deepEqual(subEvents, [], 'a connection that never published is not blocked');
    assert.deepEqual(got.map((m) => m.content.toString()), Array.from({ length: 20 }, (_, i) => `f${i}`));
    await sub.deleteQueue('fc.q');
    await pubc.close();
    await subc.close();
  } finally {
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
  }
});
