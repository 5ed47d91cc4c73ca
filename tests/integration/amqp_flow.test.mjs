// AMQP flow control and big messages (issue 9): the connection.blocked
// marks come from the config (amqp.flow_control_bytes for the store's
// unanswered appends, amqp.memory_high_watermark for the process's resident
// memory, as RabbitMQ's vm_memory_high_watermark), and message bodies up to
// amqp.max_message_size (RabbitMQ's 128 MiB default) are stored, delivered
// byte for byte and survive a SIGKILL.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { startGantry, stopGantry, waitFor, require } from './harness.mjs';

const amqp = require('amqplib');

async function open(g) {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

function watch(conn) {
  const events = [];
  conn.on('blocked', (reason) => events.push(`blocked:${reason}`));
  conn.on('unblocked', () => events.push('unblocked'));
  return events;
}

function publish(ch, q, body, opts = {}) {
  return new Promise((res, rej) => ch.sendToQueue(q, body, opts, (e) => (e ? rej(e) : res())));
}

const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');

function rssBytes(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m[1]) * 1024;
}

// A big body that is not all one byte (catches misplaced frames).
function bigBody(n, seed) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i += 4096) b.writeUInt32LE((i * 2654435761 + seed) >>> 0, i);
  return b;
}

test('amqp.flow_control_bytes: a publish over the mark blocks its connection until the store answers; consumers go on', async () => {
  const g = await startGantry({ logLevel: 'info', amqpYaml: '  flow_control_bytes: 65536' });
  try {
    const pubc = await open(g);
    const subc = await open(g);
    const events = watch(pubc);
    const subEvents = watch(subc);
    const sub = await subc.createChannel();
    await sub.assertQueue('fc.q', { durable: false });
    const got = [];
    await sub.consume('fc.q', (m) => { if (m) { got.push(m); sub.ack(m); } });
    const ch = await pubc.createConfirmChannel();
    // 200 KiB in flight is over 64 KiB whatever the machine's speed.
    await publish(ch, 'fc.q', bigBody(200 * 1024, 1));
    await publish(ch, 'fc.q', Buffer.from('small'));
    await waitFor(() => got.length === 2, 10000, 'both delivered');
    await waitFor(() => events.at(-1) === 'unblocked', 5000, 'unblocked after the answer');
    assert.equal(events[0], 'blocked:low on memory', events.join());
    assert.deepEqual(subEvents, [], 'a connection that never published is not blocked');
    assert.equal(sha(got[0].content), sha(bigBody(200 * 1024, 1)));
    await pubc.close();
    await subc.close();
  } finally {
    await stopGantry(g);
  }
});

test('amqp.memory_high_watermark 0.0 blocks every publisher (RabbitMQ\'s 0 watermark); consumers still get what was published', async () => {
  const g = await startGantry({ logLevel: 'info', amqpYaml: '  memory_high_watermark: "0.0"' });
  try {
    const pubc = await open(g);
    const subc = await open(g);
    const events = watch(pubc);
    const subEvents = watch(subc);
    const sub = await subc.createChannel();
    await sub.assertQueue('mw.q', { durable: false });
    const ch = await pubc.createConfirmChannel();
    await publish(ch, 'mw.q', Buffer.from('first')); // read before the block
    await waitFor(() => events.length > 0, 5000, 'connection.blocked');
    assert.deepEqual(events, ['blocked:low on memory']);
    const m = await sub.get('mw.q', { noAck: true });
    assert.equal(m.content.toString(), 'first');
    assert.deepEqual(subEvents, []);
    await waitFor(() => /over the high watermark/.test(g.log()), 5000, 'the log says why');
    assert.deepEqual(events, ['blocked:low on memory'], 'never unblocked while over the mark');
    await subc.close();
    pubc.connection.stream.destroy(); // a blocked connection is not read: no close-ok
  } finally {
    await stopGantry(g);
  }
});

test('amqp.memory_high_watermark 0.0 blocks a publisher in a transaction too (its publishes wait in memory until tx.commit)', async () => {
  const defs = require('amqplib/lib/defs');
  const g = await startGantry({ logLevel: 'info', amqpYaml: '  memory_high_watermark: "0.0"' });
  try {
    const pubc = await open(g);
    const events = watch(pubc);
    const ch = await pubc.createChannel();
    await ch.assertQueue('mwtx.q', { durable: false });
    await ch.rpc(defs.TxSelect, {}, defs.TxSelectOk);
    ch.sendToQueue('mwtx.q', Buffer.from('uncommitted'));
    await waitFor(() => events.length > 0, 5000, 'connection.blocked for a transactional publish');
    assert.deepEqual(events, ['blocked:low on memory']);
    pubc.connection.stream.destroy(); // a blocked connection is not read: no close-ok
  } finally {
    await stopGantry(g);
  }
});

test('amqp.memory_high_watermark as a size: a 96 MiB publish takes memory over it (blocked), then back under it (unblocked); the body arrives whole', async () => {
  // The mark is set over an idle server's resident memory, measured on a
  // first run with the same config.  Freed memory must go back to the
  // system for the unblock: no ASan quarantine for this server.
  const prevAsan = process.env.ASAN_OPTIONS;
  process.env.ASAN_OPTIONS = `${prevAsan ?? 'detect_leaks=1'}:quarantine_size_mb=0`;
  let g;
  try {
    g = await startGantry({ logLevel: 'info' });
    let c = await open(g);
    let ch = await c.createConfirmChannel();
    await ch.assertQueue('mm.q', { durable: true });
    await publish(ch, 'mm.q', Buffer.from('warm'), { persistent: true });
    await ch.get('mm.q', { noAck: true });
    await c.close();
    const idle = rssBytes(g.pid);
    await stopGantry(g, 'SIGTERM', { keepDir: true });
    const mark = idle + 48 * 1024 * 1024;
    g = await startGantry({ logLevel: 'info', dir: g.dir, grpcPort: g.grpcPort,
      httpPort: g.httpPort, amqpPort: g.amqpPort,
      amqpYaml: `  memory_high_watermark: "${mark}"` });
    c = await open(g);
    const events = watch(c);
    ch = await c.createConfirmChannel();
    const body = bigBody(96 * 1024 * 1024, 2);
    await publish(ch, 'mm.q', body, { persistent: true });
    await waitFor(() => events.at(-1) === 'unblocked', 30000,
      `unblocked once memory is back under ${mark} (now ${rssBytes(g.pid)})`);
    assert.equal(events[0], 'blocked:low on memory', events.join());
    const m = await ch.get('mm.q', { noAck: false });
    assert.equal(m.content.length, body.length);
    assert.equal(sha(m.content), sha(body));
    ch.ack(m);
    await c.close();
  } finally {
    if (prevAsan === undefined) delete process.env.ASAN_OPTIONS; else process.env.ASAN_OPTIONS = prevAsan;
    if (g) await stopGantry(g);
  }
});

test('big messages: 40 MiB and 100 MiB bodies survive a SIGKILL and come back byte for byte; over amqp.max_message_size is 406', async () => {
  let g = await startGantry({ logLevel: 'info', flush: 'sync' });
  try {
    let c = await open(g);
    let ch = await c.createConfirmChannel();
    await ch.assertQueue('big.q', { durable: true });
    const a = bigBody(40 * 1024 * 1024, 3), b = bigBody(100 * 1024 * 1024, 4);
    await publish(ch, 'big.q', a, { persistent: true, headers: { n: 1 } });
    await publish(ch, 'big.q', b, { persistent: true, headers: { n: 2 } });
    await stopGantry(g, 'SIGKILL', { keepDir: true });
    g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
      httpPort: g.httpPort, amqpPort: g.amqpPort });
    c = await open(g);
    ch = await c.createChannel();
    assert.equal((await ch.checkQueue('big.q')).messageCount, 2);
    const got = [];
    await ch.prefetch(1);
    await ch.consume('big.q', (m) => { if (m) { got.push(m); ch.ack(m); } });
    await waitFor(() => got.length === 2, 60000, 'both big messages delivered');
    assert.deepEqual(got.map((m) => m.properties.headers.n), [1, 2]);
    assert.equal(sha(got[0].content), sha(a));
    assert.equal(sha(got[1].content), sha(b));
    await c.close();
  } finally {
    await stopGantry(g);
  }
  g = await startGantry({ logLevel: 'info', amqpYaml: '  max_message_size: 1048576' });
  try {
    const c = await open(g);
    const ch = await c.createChannel();
    await ch.assertQueue('lim.q', { durable: false });
    const closed = new Promise((res) => ch.on('error', res));
    ch.sendToQueue('lim.q', Buffer.alloc(1048577));
    const e = await closed;
    assert.equal(e.code, 406);
    assert.match(e.message, /message size 1048577 is larger than configured max size 1048576/);
    await c.close();
  } finally {
    await stopGantry(g);
  }
});
