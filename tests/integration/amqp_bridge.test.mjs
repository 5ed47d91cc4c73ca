// Both protocols on one data set (docs/amqp.md, "Bridges"): an AMQP exchange
// bound to a RocketMQ topic through amqp.bridges.  The official Node.js SDK on
// one side, amqplib on the other:
//   - SDK producers' messages reach the AMQP queues bound to the exchange,
//     routed by tag (or by a configured user property), with the message id
//     as message-id, keys and user properties as headers, bodies byte-exact,
//     in the topic queue's order (FIFO message groups keep theirs);
//   - AMQP publishes to the exchange reach the topic's consumer groups: the
//     routing key as the tag (or the property), headers as user properties,
//     the AMQP properties as amqp.* user properties, bodies byte-exact; AMQP
//     queues bound to the exchange get them with their properties unchanged;
//   - after a SIGKILL (sync flush) nothing confirmed and unacknowledged is
//     lost on either side.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { startGantry, stopGantry, require, waitFor, scaled } from './harness.mjs';
import zlib from 'node:zlib';
import {
  sdk, quietLogger, startProducer, startSimpleConsumer, shutdownQuietly, shutdownPush, receiveAll,
  withTimeout, Raw, pb, defPb, wireMessage, sendRequest, Code,
} from './sdk_util.mjs';

const amqp = require('amqplib');

const T_ORD = 'BridgeOrdersT';
const T_EV = 'BridgeEventsT';
const T_FIFO = 'BridgeFifoT';
const T_AUTO = 'BridgeAutoT';
const T_KILL = 'BridgeKillT';
const T_PROD = 'BridgeProdT';
const T_PUSH = 'BridgePushT';

const AMQP_YAML = `  vhosts: ["/", prod]
  permissions:
    - {user: guest, vhost: "/", configure: ".*", write: ".*", read: ".*"}
    - {user: guest, vhost: prod, configure: ".*", write: ".*", read: ".*"}
  bridges:
    - {exchange: orders, topic: ${T_ORD}}
    - {exchange: events, topic: ${T_EV}, exchange_type: topic, routing_key: "property:rk"}
    - {exchange: fifo.x, topic: ${T_FIFO}, exchange_type: fanout}
    - {vhost: "/", exchange: auto.x, topic: ${T_AUTO}, exchange_type: fanout}
    - {exchange: kill.x, topic: ${T_KILL}}
    - {vhost: prod, exchange: orders, topic: ${T_PROD}}
    - {exchange: push.x, topic: ${T_PUSH}, exchange_type: fanout}
`;
const YAML = `topics:
  - {name: ${T_ORD}, type: NORMAL, queues: 4}
  - {name: ${T_EV}, type: NORMAL, queues: 2}
  - {name: ${T_FIFO}, type: FIFO, queues: 2}
  - {name: ${T_KILL}, type: NORMAL, queues: 2}
  - {name: ${T_PUSH}, type: NORMAL, queues: 2}
groups:
  - {name: BridgeOrdG, max_delivery_attempts: 16}
  - {name: BridgeEvG, max_delivery_attempts: 16}
  - {name: BridgeAutoG, max_delivery_attempts: 16}
  - {name: BridgeKillG, max_delivery_attempts: 16}
  - {name: BridgePushG, max_delivery_attempts: 16}
`;

function opts(extra = {}) {
  return {
    logLevel: 'info', flush: 'sync', amqpYaml: AMQP_YAML, yaml: YAML,
    serverYaml: '  auto_create_topics: true', ...extra,
  };
}

let g;
before(async () => { g = await startGantry(opts()); });
after(async () => {
  if (g) {
    const info = await stopGantry(g);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});

async function amqpOpen(gg, vhost = '') {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${gg.amqpPort}/${encodeURIComponent(vhost)}`);
  const ch = await conn.createConfirmChannel();
  return { conn, ch };
}

// Collects deliveries of `queue` (acked as they come unless noAck) until
// `n` arrived; returns them in delivery order.
// Deliveries past the n-th stay unacknowledged (the channel's to give back).
async function consumeN(ch, queue, n, ms = 20000, ack = true) {
  const got = [];
  const { consumerTag } = await ch.consume(queue, (m) => {
    got.push(m);
    if (ack && got.length <= n) ch.ack(m);
  });
  await waitFor(() => got.length >= n, ms, `${n} deliveries from ${queue} (got ${got.length})`);
  await ch.cancel(consumerTag);
  return got;
}

function headerKeys(h) {
  const k = h['rocketmq.keys'];
  return Array.isArray(k) ? k.map((x) => (Buffer.isBuffer(x) ? x.toString() : x)) : k;
}

test('SDK producer -> AMQP queues: routed by tag, id as message-id, keys and properties as headers, bytes exact, in order', async () => {
  const { conn, ch } = await amqpOpen(g);
  try {
    await ch.assertQueue('br.a', { durable: true });
    await ch.assertQueue('br.b', { durable: true });
    await ch.assertQueue('br.both', { durable: true });
    await ch.bindQueue('br.a', 'orders', 'tagA');
    await ch.bindQueue('br.b', 'orders', 'tagB');
    await ch.bindQueue('br.both', 'orders', 'tagA');
    await ch.bindQueue('br.both', 'orders', 'tagB');
    const p = await startProducer(g, [T_ORD]);
    const sent = [];
    try {
      for (let i = 0; i < 40; i++) {
        const tag = i % 3 === 2 ? 'tagC' : (i % 3 === 0 ? 'tagA' : 'tagB');
        const body = Buffer.concat([crypto.randomBytes(64 + i), Buffer.from([0, 255, 0x0a, i])]);
        const keys = [`k-${i}`, `order-${i * 7}`];
        const props = new Map([['shop', `s${i % 5}`], ['seq', String(i)], ['utf8', 'grüße ✓']]);
        const r = await p.send({ topic: T_ORD, tag, keys, body, properties: props });
        sent.push({ id: r.messageId, tag, body, keys, seq: i, at: Date.now() });
      }
    } finally {
      await shutdownQuietly(p);
    }
    const wantA = sent.filter((s) => s.tag === 'tagA');
    const wantB = sent.filter((s) => s.tag === 'tagB');
    const gotA = await consumeN(ch, 'br.a', wantA.length);
    const gotB = await consumeN(ch, 'br.b', wantB.length);
    const gotBoth = await consumeN(ch, 'br.both', wantA.length + wantB.length);
    const check = (got, want) => {
      assert.deepEqual(got.map((m) => m.properties.messageId), want.map((s) => s.id));
      for (let i = 0; i < want.length; i++) {
        const m = got[i]; const s = want[i];
        assert.equal(m.fields.exchange, 'orders');
        assert.equal(m.fields.routingKey, s.tag);
        assert.ok(m.content.equals(s.body), `body of ${s.id}`);
        assert.deepEqual(headerKeys(m.properties.headers), s.keys);
        assert.equal(m.properties.headers.shop, `s${s.seq % 5}`);
        assert.equal(m.properties.headers.seq, String(s.seq));
        assert.equal(m.properties.headers.utf8, 'grüße ✓');
        assert.equal(m.properties.headers['rocketmq.tag'], s.tag);
        assert.equal(m.properties.deliveryMode, 2);
        assert.ok(Math.abs(m.properties.timestamp * 1000 - s.at) < 60000, 'timestamp: born time in s');
      }
    };
    check(gotA, wantA);
    check(gotB, wantB);
    // br.both: each message once, in send order (the topic's order)
    check(gotBoth, sent.filter((s) => s.tag !== 'tagC'));
    // nothing else arrives (tagC is not bound)
    const extra = await ch.get('br.a');
    assert.equal(extra, false);
  } finally {
    await conn.close();
  }
});

test('a body sent gzip-compressed reaches AMQP compressed, with content-encoding gzip', async () => {
  const { conn, ch } = await amqpOpen(g);
  const raw = new Raw(g.endpoint);
  try {
    await ch.assertQueue('br.gz', { durable: false });
    await ch.bindQueue('br.gz', 'orders', 'tagZ');
    const plain = Buffer.from('compressed on the wire '.repeat(50));
    const m = wireMessage({ topic: T_ORD, tag: 'tagZ', body: zlib.gzipSync(plain) });
    m.getSystemProperties().setBodyEncoding(defPb.Encoding.GZIP);
    const r = await raw.unary('SendMessage', sendRequest([m]), pb.SendMessageResponse);
    assert.equal(r.err, null);
    assert.equal(r.resp.getStatus().getCode(), Code.OK);
    const got = await consumeN(ch, 'br.gz', 1);
    assert.equal(got[0].properties.contentEncoding, 'gzip');
    assert.ok(zlib.gunzipSync(got[0].content).equals(plain));
  } finally {
    raw.client.close();
    await conn.close();
  }
});

// A bridged message that a TTL sweep expires or a drop-head drops is
// dead-lettered whole: its record rebuilt from its envelope, as consumers
// get it (before: the RocketMQ body alone, no message-id, no headers).
test('bridged messages dead-lettered by expiry (sweep) and by drop-head keep their properties', async () => {
  const { conn, ch } = await amqpOpen(g);
  try {
    await ch.assertQueue('br.dead', { durable: false });
    await ch.assertQueue('br.ttl', { durable: false, arguments: {
      'x-message-ttl': 50, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'br.dead' } });
    await ch.assertQueue('br.ml', { durable: false, arguments: {
      'x-max-length': 1, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'br.dead' } });
    await ch.bindQueue('br.ttl', 'orders', 'tagT');
    await ch.bindQueue('br.ml', 'orders', 'tagM');
    const p = await startProducer(g, [T_ORD]);
    let rt; let rm;
    try {
      rt = await p.send({ topic: T_ORD, tag: 'tagT', keys: ['kt'], body: Buffer.from('expires'),
        properties: new Map([['who', 'ttl']]) });
      rm = await p.send({ topic: T_ORD, tag: 'tagM', keys: ['km'], body: Buffer.from('dropped'),
        properties: new Map([['who', 'maxlen']]) });
    } finally {
      await shutdownQuietly(p);
    }
    // each passive declare sweeps br.ttl's expired head
    await waitFor(async () => (await ch.checkQueue('br.ttl')).messageCount === 0, 10000, 'expired');
    // bridged messages are not counted: two AMQP publishes take br.ml over
    // its limit, and the head that goes is the bridged one
    await waitFor(async () => (await ch.checkQueue('br.ml')).messageCount === 1, 10000, 'bridged in');
    for (const b of ['a1', 'a2']) ch.sendToQueue('br.ml', Buffer.from(b));
    await ch.waitForConfirms();
    const dead = await consumeN(ch, 'br.dead', 2);
    const byId = new Map(dead.map((m) => [m.properties.messageId, m]));
    for (const [r, who, body, reason, q] of [[rt, 'ttl', 'expires', 'expired', 'br.ttl'],
      [rm, 'maxlen', 'dropped', 'maxlen', 'br.ml']]) {
      const m = byId.get(r.messageId);
      assert.ok(m, `${who}: dead-lettered with its message-id`);
      assert.equal(m.content.toString(), body);
      assert.equal(m.properties.headers.who, who);
      assert.equal(m.properties.headers['rocketmq.tag'], who === 'ttl' ? 'tagT' : 'tagM');
      const xd = m.properties.headers['x-death'][0];
      assert.equal(xd.reason, reason);
      assert.equal(xd.queue, q);
      assert.equal(xd.exchange, 'orders');
    }
    await ch.deleteQueue('br.ttl');
    await ch.deleteQueue('br.ml');
    await ch.deleteQueue('br.dead');
  } finally {
    await conn.close();
  }
});

test('AMQP publisher -> SDK consumer group: routing key as tag, headers and properties as user properties, bytes exact; bound AMQP queues see the original properties', async () => {
  // tagX||tagY: not the SDK messages of the test before
  const c = await startSimpleConsumer(g, 'BridgeOrdG', new Map([[T_ORD, 'tagX||tagY']]));
  const { conn, ch } = await amqpOpen(g);
  try {
    await ch.assertQueue('br.x', { durable: true });
    await ch.bindQueue('br.x', 'orders', 'tagX');
    const sent = [];
    for (let i = 0; i < 30; i++) {
      const body = Buffer.concat([crypto.randomBytes(100), Buffer.from([i, 0, 0xff])]);
      const props = {
        contentType: 'application/octet-stream', messageId: `amqp-id-${i}-${crypto.randomUUID()}`,
        correlationId: `corr-${i}`, timestamp: 1700000000 + i, persistent: true,
        headers: { h1: `v${i}`, n: 42 + i, flag: i % 2 === 0, 'rocketmq.keys': [`key-${i}`, 'shared'] },
      };
      const rk = i % 2 === 0 ? 'tagX' : 'tagY';
      ch.publish('orders', rk, body, props);
      sent.push({ body, props, rk, i });
    }
    await ch.waitForConfirms();
    const got = await receiveAll(c, sent.length, 20000);
    // a consumer group of the topic gets every one (tag = routing key)
    const byMid = new Map(got.map((m) => [m.properties.get('amqp.message-id'), m]));
    assert.equal(byMid.size, sent.length);
    for (const s of sent) {
      const m = byMid.get(s.props.messageId);
      assert.ok(m, `message ${s.props.messageId}`);
      assert.equal(m.tag, s.rk);
      assert.ok(Buffer.from(m.body).equals(s.body), 'body byte-exact');
      assert.equal(m.properties.get('h1'), `v${s.i}`);
      assert.equal(m.properties.get('n'), String(42 + s.i));
      assert.equal(m.properties.get('flag'), s.i % 2 === 0 ? 'true' : 'false');
      assert.equal(m.properties.get('amqp.content-type'), 'application/octet-stream');
      assert.equal(m.properties.get('amqp.correlation-id'), `corr-${s.i}`);
      assert.equal(m.properties.get('amqp.timestamp'), String(1700000000 + s.i));
      assert.equal(m.properties.get('amqp.delivery-mode'), '2');
      assert.deepEqual(m.keys, [`key-${s.i}`, 'shared']);
      assert.ok(![...m.properties.keys()].some((k) => k.charCodeAt(0) < 0x20), 'no system properties');
    }
    // the AMQP queue bound with tagX: the even ones, properties as published
    const want = sent.filter((s) => s.rk === 'tagX');
    const gx = await consumeN(ch, 'br.x', want.length);
    for (let k = 0; k < want.length; k++) {
      const m = gx[k]; const s = want[k];
      assert.equal(m.fields.exchange, 'orders');
      assert.equal(m.fields.routingKey, 'tagX');
      assert.equal(m.properties.messageId, s.props.messageId);
      assert.equal(m.properties.correlationId, s.props.correlationId);
      assert.equal(m.properties.contentType, s.props.contentType);
      assert.equal(m.properties.timestamp, s.props.timestamp);
      assert.equal(m.properties.headers.h1, s.props.headers.h1);
      assert.equal(m.properties.headers.n, s.props.headers.n);
      assert.ok(m.content.equals(s.body));
    }
  } finally {
    await conn.close();
    await shutdownQuietly(c);
  }
});

test('routing key from a configured user property (routing_key: property:rk) both ways, topic exchange', async () => {
  const c = await startSimpleConsumer(g, 'BridgeEvG', T_EV);
  const { conn, ch } = await amqpOpen(g);
  const p = await startProducer(g, [T_EV]);
  try {
    await ch.assertQueue('br.ev', { durable: true });
    await ch.bindQueue('br.ev', 'events', 'user.*');
    const ids = [];
    for (const rk of ['user.created', 'order.created', 'user.deleted']) {
      const r = await p.send({ topic: T_EV, tag: 'ignored', body: Buffer.from(rk), properties: new Map([['rk', rk]]) });
      ids.push({ id: r.messageId, rk });
    }
    const got = await consumeN(ch, 'br.ev', 2);
    assert.deepEqual(got.map((m) => [m.properties.messageId, m.fields.routingKey]),
      ids.filter((x) => x.rk.startsWith('user.')).map((x) => [x.id, x.rk]));
    // the SDK's own messages come back to the group too; then an AMQP publish
    await receiveAll(c, 3, 20000);
    ch.publish('events', 'user.renamed', Buffer.from('amqp side'), { messageId: 'ev-1' });
    await ch.waitForConfirms();
    const back = await receiveAll(c, 1, 20000);
    assert.equal(back.length, 1);
    assert.equal(back[0].properties.get('rk'), 'user.renamed');
    assert.ok(!back[0].tag, 'no tag: the routing key is the property');
    assert.equal(Buffer.from(back[0].body).toString(), 'amqp side');
  } finally {
    await conn.close();
    await shutdownQuietly(c, p);
  }
});

test('FIFO message groups keep their order in the AMQP queue; a missing topic is created (auto_create_topics)', async () => {
  const { conn, ch } = await amqpOpen(g);
  const p = await startProducer(g, [T_FIFO]);
  try {
    await ch.assertQueue('br.fifo', { durable: true });
    await ch.bindQueue('br.fifo', 'fifo.x', '');
    const groups = ['g1', 'g2', 'g3', 'g4', 'g5', 'g6'];
    const N = 8;
    const offsets = new Map(); // the queue the SDK picked -> the offsets the store answered
    await Promise.all(groups.map(async (mg) => {
      for (let seq = 0; seq < N; seq++) {
        const r = await p.send({ topic: T_FIFO, tag: 'f', messageGroup: mg, body: Buffer.from(`${mg}:${seq}`) });
        const q = r.messageQueue.queueId;
        offsets.set(q, [...(offsets.get(q) ?? []), Number(r.offset)]);
      }
    }));
    // each message is in the queue the SDK picked for its group (as without a bridge):
    // every queue's offsets are 0..n-1
    for (const [q, offs] of offsets) {
      assert.deepEqual([...offs].sort((a, b) => a - b), offs.map((_, i) => i), `queue ${q}: ${offs}`);
    }
    const got = await consumeN(ch, 'br.fifo', groups.length * N);
    const last = new Map();
    for (const m of got) {
      const [mg, seq] = m.content.toString().split(':');
      assert.equal(m.properties.headers['rocketmq.message-group'], mg);
      assert.equal(Number(seq), (last.get(mg) ?? -1) + 1, `group ${mg} in order`);
      last.set(mg, Number(seq));
    }
  } finally {
    await conn.close();
    await shutdownQuietly(p);
  }
  // auto.x -> BridgeAutoT was not configured as a topic: created at start
  const c = await startSimpleConsumer(g, 'BridgeAutoG', T_AUTO);
  const a = await amqpOpen(g);
  try {
    a.ch.publish('auto.x', 'any', Buffer.from('auto'), { messageId: 'auto-1' });
    await a.ch.waitForConfirms();
    const got = await receiveAll(c, 1, 20000);
    assert.equal(got[0].properties.get('amqp.message-id'), 'auto-1');
  } finally {
    await a.conn.close();
    await shutdownQuietly(c);
  }
});

test('AMQP publishes reach a PushConsumer; headers without a text form stay AMQP-only', async () => {
  const { conn, ch } = await amqpOpen(g);
  const got = new Map();
  let consumer; let svc;
  try {
    await ch.assertQueue('br.push', { durable: false });
    await ch.bindQueue('br.push', 'push.x', '');
    consumer = new sdk.PushConsumer({
      endpoints: g.endpoint, consumerGroup: 'BridgePushG', subscriptions: new Map([[T_PUSH, '*']]),
      requestTimeout: scaled(5000), logger: quietLogger,
      messageListener: { async consume(m) { got.set(m.properties.get('amqp.message-id') ?? 'none', m); return sdk.ConsumeResult.SUCCESS; } },
    });
    await withTimeout(consumer.startup(), scaled(30000), 'PushConsumer.startup');
    const N = 20;
    const odd = {
      nested: { a: 1 }, list: [1, 'two'], nul: Buffer.from('a\0b'), '\x01ctl': 'x', plain: 'kept',
      big: { '!': 'int64', value: 9007199254740991 }, f: 1.5,
    };
    for (let i = 0; i < N; i++) {
      ch.publish('push.x', `rk.${i}`, Buffer.from(`push-${i}`), { messageId: `push-${i}`, headers: odd });
    }
    await ch.waitForConfirms();
    await waitFor(() => got.size >= N, 30000, `${N} messages pushed (got ${got.size})`);
    for (let i = 0; i < N; i++) {
      const m = got.get(`push-${i}`);
      assert.ok(m, `push-${i}`);
      assert.equal(m.tag, `rk.${i}`);
      assert.equal(Buffer.from(m.body).toString(), `push-${i}`);
      assert.equal(m.properties.get('plain'), 'kept');
      assert.equal(m.properties.get('big'), '9007199254740991');
      assert.equal(m.properties.get('f'), '1.5');
      for (const k of ['nested', 'list', 'nul', '\x01ctl']) assert.equal(m.properties.get(k), undefined, k);
    }
    // the AMQP side gets every header as published
    const q = await consumeN(ch, 'br.push', N);
    assert.deepEqual(q[0].properties.headers.nested, { a: 1 });
    assert.deepEqual(q[0].properties.headers.list, [1, 'two']);
    assert.ok(Buffer.from(q[0].properties.headers.nul).equals(Buffer.from('a\0b')));
    assert.equal(q[0].properties.headers['\x01ctl'], 'x');
    await shutdownPush(consumer, async () => {
      ch.publish('push.x', 'sentinel', Buffer.from('sentinel'));
      await ch.waitForConfirms();
    });
    try { svc = consumer.getConsumeService(); } catch { /* not started */ }
    consumer = null;
  } finally {
    await shutdownQuietly(consumer);
    // SDK 1.0.8: the consume service's own file logger keeps node alive
    svc?.logger?.close?.();
    await conn.close();
  }
});

test('a bridge in another vhost: its own exchange of the same name and its own topic', async () => {
  const root = await amqpOpen(g);
  const prod = await amqpOpen(g, 'prod');
  const p = await startProducer(g, [T_PROD]);
  try {
    await root.ch.assertQueue('br.vh', { durable: false });
    await root.ch.bindQueue('br.vh', 'orders', 'v');
    await prod.ch.assertQueue('br.vh', { durable: false });
    await prod.ch.bindQueue('br.vh', 'orders', 'v');
    const r = await p.send({ topic: T_PROD, tag: 'v', body: Buffer.from('to prod') });
    const got = await consumeN(prod.ch, 'br.vh', 1);
    assert.equal(got[0].properties.messageId, r.messageId);
    assert.equal(got[0].content.toString(), 'to prod');
    assert.equal(await root.ch.get('br.vh'), false, 'vhost "/" has its own orders exchange');
  } finally {
    await root.conn.close();
    await prod.conn.close();
    await shutdownQuietly(p);
  }
});

test('SIGKILL in the middle: confirmed and unacknowledged messages survive on both sides, in order', async () => {
  const { conn, ch } = await amqpOpen(g);
  ch.on('error', () => {});
  conn.on('error', () => {});
  await ch.assertQueue('br.kill', { durable: true });
  await ch.bindQueue('br.kill', 'kill.x', 'kill');
  const p = await startProducer(g, [T_KILL]);
  const sdkSent = [];
  for (let i = 0; i < 50; i++) {
    const r = await p.send({ topic: T_KILL, tag: 'kill', body: Buffer.from(`sdk-${i}`) });
    sdkSent.push(r.messageId);
  }
  await shutdownQuietly(p);
  const amqpSent = [];
  for (let i = 0; i < 50; i++) {
    ch.publish('kill.x', 'kill', Buffer.from(`amqp-${i}`), { messageId: `kill-${i}` });
    amqpSent.push(`kill-${i}`);
  }
  await ch.waitForConfirms();
  // the AMQP consumer acks the first 30 (of the 100 in br.kill)
  const first = await consumeN(ch, 'br.kill', 30);
  assert.deepEqual(first.slice(0, 30).map((m) => m.properties.messageId), sdkSent.slice(0, 30));
  // the SDK group of the topic acks 20 of the AMQP side's
  const c = await startSimpleConsumer(g, 'BridgeKillG', T_KILL);
  const early = await receiveAll(c, 20, 20000);
  await shutdownQuietly(c);
  await stopGantry(g, 'SIGKILL', { keepDir: true });
  g = await startGantry(opts({ dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort, amqpPort: g.amqpPort }));
  const b = await amqpOpen(g);
  try {
    const rest = (await consumeN(b.ch, 'br.kill', 70)).slice(0, 70);
    assert.deepEqual(rest.map((m) => m.properties.messageId), [...sdkSent.slice(30), ...amqpSent]);
    assert.equal(await b.ch.get('br.kill'), false);
    const c2 = await startSimpleConsumer(g, 'BridgeKillG', T_KILL);
    try {
      const seen = new Set(early.map((m) => m.messageId));
      const total = sdkSent.length + amqpSent.length;
      const later = await receiveAll(c2, total - seen.size, 30000);
      for (const m of later) seen.add(m.messageId);
      assert.equal(seen.size, total, 'every message of the topic, once acked or after the restart');
      const mids = new Set(later.concat(early).map((m) => m.properties.get('amqp.message-id')).filter(Boolean));
      for (const id of amqpSent) assert.ok(mids.has(id), `AMQP message ${id} reached the group`);
    } finally {
      await shutdownQuietly(c2);
    }
  } finally {
    await b.conn.close();
  }
});
