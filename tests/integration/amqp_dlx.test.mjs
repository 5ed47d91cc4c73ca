// Dead-lettering (issue 10, gateway-amqp/gw_dlx.c): every scenario of
// amqp_dlx_cases.mjs (reject, nack with a dead-letter routing key and an
// expiration, repeated deaths updating x-death in place, a queue
// dead-lettering into itself, a quorum queue's x-delivery-limit and its
// x-delivery-count header, a return by a closed channel past the limit,
// limits -1 and "5", a delivery_limit cycle dropped, no DLX / a missing DLX
// dropped) must deliver what RabbitMQ 3.10.8 delivered, field by
// field and with every header's type (tests/data/amqp/dlx_fixtures.json).
// Then what the fixture cannot show: dead-lettered messages survive a
// SIGKILL, and none is lost between the dead-letter append and the ack.
import amqp from './amqp_typed.mjs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGantry, stopGantry, waitFor } from './harness.mjs';
import { runScenarios } from './amqp_dlx_cases.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const fixture = JSON.parse(fs.readFileSync(path.join(here, '../data/amqp/dlx_fixtures.json')));

test('dead-lettered messages are what RabbitMQ 3.10 delivers (fixture)', async () => {
  const g = await startGantry({ logLevel: 'debug' });
  try {
    // what a scenario leaves behind is known from gantry's log
    const settle = async (name) => {
      const want = {
        cycle: /dead-letter cycle: a message of 'dlx\.cycle\.c2' \(delivery_limit\) is not delivered to 'dlx\.cycle\.c1' again/,
        no_dlx: /queue 'dlx\.no_dlx\.lost': a rejected message reached no queue through 'dlx\.no_dlx\.missing': dropped/,
      }[name];
      await waitFor(() => want.test(g.log()), 10000, `log: ${want}`);
    };
    const got = await runScenarios(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`, settle);
    for (const [name, want] of Object.entries(fixture.results)) {
      assert.deepEqual(got[name], want, `scenario ${name}`);
      // the order of table entries too (deepEqual ignores key order)
      assert.equal(JSON.stringify(got[name]), JSON.stringify(want), `scenario ${name}: order`);
    }
  } finally {
    await stopGantry(g);
  }
});

test('dead-lettered messages survive a SIGKILL; a source whose ack was lost is dead-lettered again', async () => {
  let g = await startGantry({ logLevel: 'info', flush: 'sync' });
  let conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  let ch = await conn.createConfirmChannel();
  await ch.assertQueue('k.src', { durable: true,
    arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'k.dlq' } });
  await ch.assertQueue('k.dlq', { durable: true });
  for (let i = 0; i < 50; i++) ch.sendToQueue('k.src', Buffer.from(`m${i}`), { persistent: true });
  await ch.waitForConfirms();
  const rch = await conn.createChannel();
  await rch.prefetch(50);
  await rch.consume('k.src', (m) => rch.reject(m, false));
  // killed while dead-lettering: some sources may not be acked yet
  await waitFor(async () => (await ch.checkQueue('k.dlq')).messageCount >= 25, 10000, '25 dead');
  await stopGantry(g, 'SIGKILL', { keepDir: true });
  g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
    httpPort: g.httpPort, amqpPort: g.amqpPort });
  try {
    conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
    conn.on('error', () => {});
    ch = await conn.createChannel();
    // what was not dead-lettered before the kill comes back to k.src
    const rch2 = await conn.createChannel();
    await rch2.consume('k.src', (m) => rch2.reject(m, false));
    const bodies = new Set();
    await waitFor(async () => {
      for (;;) {
        const m = await ch.get('k.dlq', { noAck: true });
        if (!m) break;
        bodies.add(m.content.toString());
        assert.equal(m.properties.typedHeaders['x-first-death-reason'].v, 'rejected');
        assert.equal(m.properties.typedHeaders['x-death'].v[0].v.queue.v, 'k.src');
      }
      return bodies.size === 50;
    }, 10000, 'all 50 dead-lettered');
    assert.equal((await ch.checkQueue('k.src')).messageCount, 0);
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});

test('through the default exchange, a dead-lettered message reaches every queue its CC names', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
    conn.on('error', () => {});
    const ch = await conn.createChannel();
    const names = Array.from({ length: 20 }, (_, i) => `cc.q${i}`);
    for (const n of names) await ch.assertQueue(n, { durable: false });
    await ch.assertQueue('cc.src', { durable: false, arguments: { 'x-dead-letter-exchange': '' } });
    ch.sendToQueue('cc.src', Buffer.from('x'), { headers: { CC: names } });
    const m = await waitFor(() => ch.get('cc.src'), 5000, 'the message');
    ch.reject(m, false);
    // one copy from the publish (CC routes it too), one dead-lettered
    for (const n of names) {
      await waitFor(async () => (await ch.checkQueue(n)).messageCount === 2, 5000, `in ${n}`);
    }
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});
