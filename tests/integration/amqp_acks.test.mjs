// Acks reach the store in batches (gateway-amqp/gw_acks.c): the acks one
// loop round settles go to the store as one st_ack_batch per queue.  A
// basic.ack with multiple=true is one frame, so its batches are exact: one
// per queue it covers.  A burst of single acks may be read in one go or in
// several, so only its sum is asserted.  Every ack counts after a SIGKILL:
// exactly the unacked deliveries come back, redelivered.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, require } from './harness.mjs';

const amqp = require('amqplib');

async function open(g) {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

// The batches the (debug) log shows for a queue, in order.
function batches(g, name) {
  const re = new RegExp(`store ack batch: (\\d+) of queue '${name}'`, 'g');
  return [...g.log().matchAll(re)].map((m) => Number(m[1]));
}

const sum = (v) => v.reduce((x, y) => x + y, 0);

async function consumeN(ch, q, n) {
  const got = [];
  let done;
  const all = new Promise((res) => { done = res; });
  await ch.consume(q, (m) => { got.push(m); if (got.length === n) done(); }, { noAck: false });
  await all;
  return got;
}

test('multiple=true acks go as one store batch per queue; bursts sum up; acks hold across a SIGKILL', async () => {
  let g = await startGantry({ logLevel: 'debug', flush: 'sync' });
  try {
    let conn = await open(g);
    let ch = await conn.createConfirmChannel();
    await ch.assertQueue('ak.a', { durable: true });
    await ch.assertQueue('ak.b', { durable: true });
    for (let i = 0; i < 300; i++) ch.sendToQueue('ak.a', Buffer.from(`a${i}`), { persistent: true });
    for (let i = 0; i < 200; i++) ch.sendToQueue('ak.b', Buffer.from(`b${i}`), { persistent: true });
    await ch.waitForConfirms();

    // One channel consumes both queues: 150 + 100 deliveries, then one
    // multiple ack covers them all: one batch for each queue.
    const c = await conn.createChannel();
    const got = [];
    let done;
    const all = new Promise((res) => { done = res; });
    const onMsg = (m) => { got.push(m); if (got.length === 250) done(); };
    await c.prefetch(150);
    await c.consume('ak.a', onMsg);
    await c.prefetch(100);
    await c.consume('ak.b', onMsg);
    await all;
    assert.deepEqual(batches(g, 'ak.a'), []);
    const last = got.reduce((x, y) => (x.fields.deliveryTag > y.fields.deliveryTag ? x : y));
    c.ack(last, true);
    await waitFor(() => batches(g, 'ak.a').length === 1 && batches(g, 'ak.b').length === 1, 5000, 'batched');
    assert.deepEqual(batches(g, 'ak.a'), [150]);
    assert.deepEqual(batches(g, 'ak.b'), [100]);

    // A burst of single acks (ak.a's next 150 as they come, acked at once).
    await c.close();
    const c2 = await conn.createChannel();
    await c2.prefetch(150);
    const burst = await consumeN(c2, 'ak.a', 150);
    for (const m of burst) c2.ack(m);
    await waitFor(() => sum(batches(g, 'ak.a')) === 300, 5000, 'burst acked');
    await c2.close();

    // ak.b: 50 acked one by one, 50 left unacked at the SIGKILL.
    const c3 = await conn.createChannel();
    await c3.prefetch(100);
    const rest = await consumeN(c3, 'ak.b', 100);
    for (const m of rest.slice(0, 50)) c3.ack(m);
    await waitFor(() => sum(batches(g, 'ak.b')) === 150, 5000, 'ak.b acked');
    await stopGantry(g, 'SIGKILL', { keepDir: true });

    g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
      httpPort: g.httpPort, amqpPort: g.amqpPort });
    conn = await open(g);
    ch = await conn.createChannel();
    assert.equal((await ch.checkQueue('ak.a')).messageCount, 0);
    const back = [];
    for (;;) {
      const m = await ch.get('ak.b', { noAck: true });
      if (!m) break;
      back.push(m);
    }
    assert.deepEqual(back.map((m) => m.content.toString()),
      rest.slice(50).map((m) => m.content.toString()));
    assert.ok(back.every((m) => m.fields.redelivered));
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});
