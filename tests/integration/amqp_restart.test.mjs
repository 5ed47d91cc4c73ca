// Restart durability of the AMQP gateway (issue 9), sync flush: 10,000
// persistent messages published with confirms to a durable queue are all
// confirmed; gantry is SIGKILLed and started again on the same data dir;
// one consumer then gets exactly those 10,000, in publish order, with their
// bodies and headers, none redelivered.  It acks all but the last 1,000;
// after a second SIGKILL and restart exactly those 1,000 come back, with
// redelivered=true.  The tests run in order on one data dir.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, scaled, require } from './harness.mjs';

const amqp = require('amqplib');

const N = 10000;
const HELD = 1000;
const Q = 'restart.q';
// How long a delivery stays invisible to others (renewed at half while
// unacked): short, so that the deliveries unacked at a SIGKILL come back
// within seconds; long enough that no renewal races the acks.
const INVISIBLE_MS = scaled(6000);

// Message i: a body of 64..1087 bytes that names it, header i.
function body(i) {
  const head = `msg-${i}:`;
  return Buffer.concat([Buffer.from(head),
    Buffer.alloc(64 + ((i * 131) % 1024) - head.length, String.fromCharCode(97 + (i % 26)))]);
}

let g = null;
after(async () => { if (g) await stopGantry(g, 'SIGKILL'); });

const env = { GANTRY_TEST_AMQP_INVISIBLE_MS: String(INVISIBLE_MS) };

function restart(prev) {
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
  g = await startGantry({ logLevel: 'info', flush: 'sync', env });
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
  ch.on('error', () => {});
  assert.equal((await ch.checkQueue(Q)).messageCount, N, 'ready after the restart');
  // One consumer: every message once, in publish order.  It acks all but
  // the last HELD, which stay unacked (its prefetch is HELD: the window
  // is full only at the end) for the next test's SIGKILL.
  const got = [];
  await ch.prefetch(HELD);
  await ch.consume(Q, (m) => { got.push(m); if (got.length <= N - HELD) ch.ack(m); });
  await waitFor(() => got.length >= N, 120000, `${N} deliveries (${got.length})`, 50);
  for (let i = 0; i < N; i++) {
    const m = got[i];
    if (!m.content.equals(body(i)) || m.properties.headers.i !== i || m.fields.redelivered ||
        m.properties.deliveryMode !== 2) {
      assert.fail(`delivery ${i}: ${m.content.subarray(0, 16)} headers ${JSON.stringify(m.properties.headers)} ` +
        `redelivered ${m.fields.redelivered} mode ${m.properties.deliveryMode}`);
    }
  }
  // Acks are handled in frame order (and are in the store's state log
  // when handled): this answer means all of them were.
  assert.equal((await ch.checkQueue(Q)).messageCount, 0);
  assert.equal(got.length, N, 'no extra delivery');
});

test(`the ${HELD} delivered but unacked at a second SIGKILL come back redelivered, nothing else`, async () => {
  assert.ok(g, 'the previous test left gantry running with deliveries held');
  g = await restart(await kill());
  const conn = await open();
  const ch = await conn.createChannel();
  let chErr = null;
  ch.on('error', (e) => { chErr = e; });
  const got = [];
  // (null: the server's basic.cancel when the queue is deleted at the end)
  await ch.consume(Q, (m) => { if (m) { got.push(m); ch.ack(m); } });
  // They come back when their invisibility (INVISIBLE_MS) ends.
  await waitFor(() => chErr || got.length >= HELD, 60000, `${HELD} redeliveries (${got.length})`, 50);
  assert.equal(chErr, null, `channel error: ${chErr?.message}`);
  const ids = got.map((m) => m.properties.headers.i).sort((a, b) => a - b);
  assert.deepEqual(ids, Array.from({ length: HELD }, (_, k) => N - HELD + k), 'exactly the unacked');
  for (const m of got) {
    const i = m.properties.headers.i;
    assert.ok(m.fields.redelivered, `message ${i} redelivered=true`);
    assert.ok(m.content.equals(body(i)), `message ${i}'s body`);
  }
  // Every acked message's deadline was before the held ones': none can
  // still come.  The answer below comes after the acks above.
  assert.equal((await ch.checkQueue(Q)).messageCount, 0);
  assert.equal(got.length, HELD, 'no extra delivery');
  await ch.deleteQueue(Q);
  await conn.close();
  const info = await stopGantry(g);
  g = null;
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});
