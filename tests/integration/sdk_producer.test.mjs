// Producer end to end with the official Node.js SDK: single and concurrent
// sends with tags, keys and user properties, and binary bodies from 1 B to
// 4 MiB that must come back byte-exact.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { startGantry, stopGantry } from './harness.mjs';
import {
  Code, codeName, defPb, pb, Raw, startProducer, startSimpleConsumer, shutdownQuietly,
  receiveAll, patternBytes, md5Upper, yamlOf, consumerSettings, receiveRequest, splitReceive,
  ackRequest, scaled,
} from './sdk_util.mjs';

const T_SINGLE = 'ProdSingle';
const T_MANY = 'ProdMany';
const T_BIN = 'ProdBinary';
const T_BIG = 'ProdBig';
const G = 'ProdGroup';

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [
        { name: T_SINGLE, queues: 4 }, { name: T_MANY, queues: 4 },
        { name: T_BIN, queues: 2 }, { name: T_BIG, queues: 1 },
      ],
      groups: [{ name: G, max_delivery_attempts: 5 }],
    }),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

function propsObj(map) { return Object.fromEntries([...map.entries()].sort()); }

test('a single send: receipt, then the consumer gets it with every field intact', async () => {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_SINGLE]);
    consumer = await startSimpleConsumer(g, G, T_SINGLE);
    const props = new Map([['a', '1'], ['order', 'é✓ unicode'], ['empty', '']]);
    const body = Buffer.from('hello gantry');
    const t0 = Date.now();
    const receipt = await producer.send({
      topic: T_SINGLE, body, tag: 'TagA', keys: ['key-1', 'key-2'], properties: props,
    });
    assert.match(receipt.messageId, /^01[0-9A-F]{32}$/, 'receipt message id');
    assert.equal(typeof receipt.offset, 'number');
    assert.equal(receipt.offset, 0, 'first message of a fresh topic has queue offset 0');

    const got = await receiveAll(consumer, 1, 15000, { invisible: 30000 });
    assert.equal(got.length, 1, 'exactly one delivery');
    const m = got[0];
    assert.equal(m.messageId, receipt.messageId);
    assert.equal(m.topic, T_SINGLE);
    assert.deepEqual(m.body, body);
    assert.equal(m.tag, 'TagA');
    assert.deepEqual(m.keys, ['key-1', 'key-2']);
    assert.deepEqual(propsObj(m.properties), propsObj(props), 'user properties round-trip exactly');
    assert.ok(!m.corrupted, 'MD5 digest matches the body (uppercase hex)');
    assert.equal(m.deliveryAttempt, 1);
    assert.equal(m.offset, receipt.offset, 'queue offset equals the send receipt offset');
    assert.equal(m.bornHost, os.hostname());
    assert.ok(m.bornTimestamp instanceof Date, 'born timestamp present');
    assert.ok(Math.abs(m.bornTimestamp.getTime() - t0) < 60000, `born timestamp ${m.bornTimestamp.toISOString()}`);
    assert.ok(typeof m.receiptHandle === 'string' && m.receiptHandle.length > 0, 'receipt handle');
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});

test('300 concurrent sends: distinct ids, dense offsets, each received once with its own payload', async () => {
  const N = 300;
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_MANY]);
    consumer = await startSimpleConsumer(g, G, T_MANY);
    const sent = [];
    for (let i = 0; i < N; i++) {
      sent.push({
        topic: T_MANY,
        body: patternBytes(1 + ((i * 37) % 2048), i + 1),
        tag: `tag-${i % 7}`,
        keys: [`k-${i}`, `shared-${i % 3}`],
        properties: new Map([['idx', String(i)], ['kind', i % 2 ? 'odd' : 'even']]),
      });
    }
    const receipts = await Promise.all(sent.map((m) => producer.send(m)));
    const byId = new Map();
    receipts.forEach((r, i) => {
      assert.ok(!byId.has(r.messageId), `duplicate message id ${r.messageId}`);
      byId.set(r.messageId, { ...sent[i], receipt: r });
    });
    // Queue offsets per queue are dense from 0 in a fresh topic.
    const perQueue = new Map();
    for (const r of receipts) {
      const q = r.messageQueue.queueId;
      if (!perQueue.has(q)) perQueue.set(q, []);
      perQueue.get(q).push(Number(r.offset));
    }
    for (const [q, offs] of perQueue) {
      offs.sort((a, b) => a - b);
      assert.deepEqual(offs, offs.map((_, i) => i), `queue ${q}: offsets not dense from 0`);
    }

    const got = await receiveAll(consumer, N, 60000, { invisible: 60000 });
    const seen = new Map();
    for (const m of got) {
      const s = byId.get(m.messageId);
      assert.ok(s, `received unknown message id ${m.messageId}`);
      assert.ok(!seen.has(m.messageId), `message ${m.messageId} (idx ${s.properties.get('idx')}) delivered twice`);
      seen.set(m.messageId, m);
      const idx = s.properties.get('idx');
      assert.deepEqual(m.body, s.body, `body of idx ${idx}`);
      assert.equal(m.tag, s.tag, `tag of idx ${idx}`);
      assert.deepEqual(m.keys, s.keys, `keys of idx ${idx}`);
      assert.deepEqual(propsObj(m.properties), propsObj(s.properties), `properties of idx ${idx}`);
      assert.ok(!m.corrupted, `digest of idx ${idx}`);
      assert.equal(m.offset, s.receipt.offset, `offset of idx ${idx}`);
    }
    assert.equal(seen.size, N, `received ${seen.size} of ${N} messages`);
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});

const SIZES = [1, 2, 127, 128, 1023, 4096, 65535, 65536, 1 << 20, 4 * 1024 * 1024 - 64 * 1024];

test(`binary bodies of ${SIZES.join(', ')} bytes round-trip byte-exact through the SDK`, async () => {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_BIN]);
    consumer = await startSimpleConsumer(g, G, T_BIN);
    const bodies = new Map();
    for (const [i, size] of SIZES.entries()) {
      const body = patternBytes(size, 1000 + i);
      if (size === 1) body[0] = 0x00;
      const r = await producer.send({ topic: T_BIN, body, properties: new Map([['size', String(size)]]) });
      bodies.set(r.messageId, body);
    }
    const got = await receiveAll(consumer, SIZES.length, 60000, { invisible: 60000, batch: 4 });
    const seen = new Set();
    for (const m of got) {
      const want = bodies.get(m.messageId);
      assert.ok(want, `unknown message ${m.messageId}`);
      assert.ok(!seen.has(m.messageId), `duplicate delivery of the ${want.length} B message`);
      seen.add(m.messageId);
      assert.equal(m.body.length, want.length, `length of the ${want.length} B body`);
      assert.ok(m.body.equals(want), `the ${want.length} B body differs`);
      assert.equal(m.properties.get('size'), String(want.length));
      assert.ok(!m.corrupted, `digest of the ${want.length} B body`);
    }
    assert.equal(seen.size, SIZES.length, `received ${seen.size} of ${SIZES.length}`);
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});

// grpc-js (and so the SDK) refuses inbound messages over 4 MiB, and a
// 4 MiB body plus its properties is over that: the SDK sends it, a raw
// grpc-js client without that limit receives it.
test('a 4 MiB body sent by the SDK comes back byte-exact with every system property', async () => {
  let producer;
  const raw = new Raw(g.endpoint);
  let tel;
  try {
    producer = await startProducer(g, [T_BIG]);
    const body = patternBytes(4 * 1024 * 1024, 4242);
    const t0 = Date.now();
    const receipt = await producer.send({
      topic: T_BIG, body, tag: 'big', keys: ['big-key'], properties: new Map([['p', 'v']]),
    });

    tel = await raw.telemetry(consumerSettings(G, T_BIG));
    assert.equal(tel.err, null, `telemetry: ${tel.err?.message}`);
    const r = await raw.serverStream('ReceiveMessage',
      receiveRequest({ group: G, topic: T_BIG, batch: 1, invisibleMs: 30000, longPollMs: 5000 }),
      pb.ReceiveMessageResponse, { timeoutMs: scaled(20000) });
    assert.equal(r.err, null, `ReceiveMessage: ${r.err?.message}`);
    const s = splitReceive(r.resps);
    assert.deepEqual(s.order, ['status', 'message', 'delivery_timestamp'],
      'stream is status, one response per message, delivery_timestamp');
    assert.equal(s.status.getCode(), Code.OK, codeName(s.status.getCode()));
    const m = s.messages[0];
    const sp = m.getSystemProperties();
    assert.equal(m.getTopic().getName(), T_BIG);
    assert.ok(Buffer.from(m.getBody_asU8()).equals(body), '4 MiB body differs');
    assert.equal(sp.getMessageId(), receipt.messageId);
    assert.equal(sp.getTag(), 'big');
    assert.deepEqual(sp.getKeysList(), ['big-key']);
    assert.equal(m.getUserPropertiesMap().get('p'), 'v');
    assert.equal(sp.getBodyDigest().getType(), defPb.DigestType.MD5);
    assert.equal(sp.getBodyDigest().getChecksum(), md5Upper(body), 'MD5 digest, uppercase hex');
    assert.equal(sp.getBodyEncoding(), defPb.Encoding.IDENTITY);
    assert.equal(sp.getMessageType(), defPb.MessageType.NORMAL);
    assert.ok(sp.hasBornTimestamp() && sp.hasStoreTimestamp(), 'born and store timestamps');
    const born = sp.getBornTimestamp().toDate().getTime();
    const stored = sp.getStoreTimestamp().toDate().getTime();
    assert.ok(Math.abs(born - t0) < 60000, 'born timestamp');
    assert.ok(stored >= born - 1000 && stored <= Date.now() + 1000, `store timestamp ${stored} vs born ${born}`);
    assert.equal(sp.getBornHost(), os.hostname());
    assert.ok(sp.getStoreHost().length > 0, 'store host');
    assert.equal(sp.getQueueId(), 0);
    assert.equal(sp.getQueueOffset(), 0);
    assert.ok(sp.getReceiptHandle().length > 0, 'receipt handle');
    assert.equal(sp.getDeliveryAttempt(), 1);

    const ack = await raw.unary('AckMessage', ackRequest(G, T_BIG,
      [{ id: sp.getMessageId(), handle: sp.getReceiptHandle() }]), pb.AckMessageResponse);
    assert.equal(ack.err, null);
    assert.equal(ack.resp.getStatus().getCode(), Code.OK, codeName(ack.resp.getStatus().getCode()));
    assert.equal(ack.resp.getEntriesList().length, 1);
    assert.equal(ack.resp.getEntriesList()[0].getStatus().getCode(), Code.OK);
  } finally {
    if (tel?.call) tel.call.end();
    raw.close();
    await shutdownQuietly(producer);
  }
});
