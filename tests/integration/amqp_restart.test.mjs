// Restart durability of the AMQP gateway (issue 9), sync flush: 10,000
// persistent messages published with confirms to a durable queue are all
// confirmed; gantry is SIGKILLed and started again on the same data dir;
// one consumer then gets exactly those 10,000, in publish order, with their
// bodies and headers, none redelivered.  Tests run in order on one data dir.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, scaled, require } from './harness.mjs';

const amqp = require('amqplib');

const N = 10000;
const Q = 'restart.q';

// Message i: a body of 64..1087 bytes that names it, header i.
function body(i) {
  const head = `msg-${i}:`;
  return Buffer.concat([Buffer.from(head),
    Buffer.alloc(64 + ((i * 131) % 1024) - head.length, String.fromCharCode(97 + (i % 26)))]);
}

let g = null;
after(async () => { if (g) await stopGantry(g, 'SIGKILL'); });

function restart(prev, env = {}) {
  return startGantry({ logLevel: 'info', flush: 'sync', dir: prev.dir, grpcPort: prev.grpcPort,
    httpPort: prev.httpPort, amqpPort: prev.amqpPort, env, readyTimeoutMs: 30000 });
}

async function open() {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}`);
  conn.on('error', () => {}); // a SIGKILL ends it
  return conn;
}

async function kill() {
  await stopGantry(g, 'SIGKILL', { keepDir: true });
  const prev = g;
  g = null;
  return prev;
}

test(`${N} confirmed persistent messages survive a SIGKILL, in order`, async () => {
  g = await startGantry({ logLevel: 'info', flush: 'sync' });
  let conn = await open();
  let ch = await conn.createConfirmChannel();
  ch.on('error', () => {});
  await ch.assertQueue(Q, { durable: true });
  let acked = 0;
  const nacked = [];
  for (let i = 0; i < N; i++) {
    const ok = ch.sendToQueue(Q, body(i), { persistent: true, headers: { i } },
      (err) => { if (err) nacked.push(i); else acked++; });
    if (!ok) await new Promise((r) => ch.once('drain', r));
  }
  await waitFor(() => acked + nacked.length === N, 120000,
    `confirms for ${N} publishes (${acked} acked)`, 50);
  assert.deepEqual(nacked, [], 'nacked publishes');
  g = await restart(await kill());

  conn = await open();
  ch = await conn.createChannel();
  assert.equal((await ch.checkQueue(Q)).messageCount, N, 'ready after the restart');
  // One consumer: every message once, in publish order.
  const got = [];
  await ch.prefetch(500);
  await ch.consume(Q, (m) => { got.push(m); ch.ack(m); });
  await waitFor(() => got.length >= N, 120000, `${N} deliveries (${got.length})`, 50);
  for (let i = 0; i < N; i++) {
    const m = got[i];
    if (!m.content.equals(body(i)) || m.properties.headers.i !== i || m.fields.redelivered ||
        m.properties.deliveryMode !== 2) {
      assert.fail(`delivery ${i}: ${m.content.subarray(0, 16)} headers ${JSON.stringify(m.properties.headers)} ` +
        `redelivered ${m.fields.redelivered} mode ${m.properties.deliveryMode}`);
    }
  }
  // Acks are handled in frame order: this answer means all were applied.
  assert.equal((await ch.checkQueue(Q)).messageCount, 0);
  assert.equal(got.length, N, 'no extra delivery');
  await conn.close();
  const info = await stopGantry(g);
  g = null;
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});
