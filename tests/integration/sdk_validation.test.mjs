// Every validation error of the issue produces its RocketMQ code: through
// the official Node.js SDK where the SDK lets the request through, and with
// raw grpc-js requests (the SDK's own protobuf classes) where the SDK
// checks client-side first.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  sdk, Code, codeName, defPb, pb, grpc, Raw, startProducer, startSimpleConsumer, shutdownQuietly,
  yamlOf, expectCode, wireMessage, sendRequest, receiveRequest, resource, duration, errCode,
  errText, receiveAll, newMessageId, scaled,
} from './sdk_util.mjs';

const T = 'ValTopic';
const T_FIFO = 'ValFifoTopic';
const T_OTHER = 'ValOtherTopic';
const G = 'ValGroup';

let g;
let raw;
let producer;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [{ name: T, queues: 2 }, { name: T_FIFO, type: 'FIFO', queues: 2 }, { name: T_OTHER, queues: 1 }],
      groups: [{ name: G }],
    }),
  });
  raw = new Raw(g.endpoint);
});
after(async () => {
  raw?.close();
  await shutdownQuietly(producer);
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

async function sdkProducer() {
  if (!producer) producer = await startProducer(g, [T]);
  return producer;
}

function msg(extra = {}) {
  return { topic: T, body: Buffer.from('payload'), ...extra };
}

// Raw SendMessage; returns the top-level status code and the entries.
async function rawSend(messages, opts = {}) {
  const r = await raw.unary('SendMessage', sendRequest(messages), pb.SendMessageResponse, opts);
  assert.equal(r.err, null, `SendMessage transport error: ${r.err?.message}`);
  return { code: r.resp.getStatus().getCode(), resp: r.resp };
}

async function expectRawSend(messages, code, what) {
  const { code: got, resp } = await rawSend(messages);
  assert.equal(codeName(got), codeName(code), `${what}: ${resp.getStatus().getMessage()}`);
}

// ---- through the SDK -----------------------------------------------------

test('QueryRoute: unknown topic TOPIC_NOT_FOUND, invalid names ILLEGAL_TOPIC (SDK)', async () => {
  const p = await sdkProducer();
  await expectCode(p.send(msg({ topic: 'NoSuchTopic' })), Code.TOPIC_NOT_FOUND, 'unknown topic');
  for (const bad of ['bad topic', 'bad#topic', 'x'.repeat(128)]) {
    await expectCode(p.send(msg({ topic: bad })), Code.ILLEGAL_TOPIC, `topic "${bad.slice(0, 20)}"`);
  }
});

test('empty body: MESSAGE_BODY_EMPTY (SDK)', async () => {
  const p = await sdkProducer();
  await expectCode(p.send(msg({ body: Buffer.alloc(0) })), Code.MESSAGE_BODY_EMPTY, 'empty body');
});

test('properties: over 128, over 16 KiB with tag and keys: MESSAGE_PROPERTIES_TOO_LARGE (SDK)', async () => {
  const p = await sdkProducer();
  const many = new Map(Array.from({ length: 129 }, (_, i) => [`k${i}`, 'v']));
  await expectCode(p.send(msg({ properties: many })), Code.MESSAGE_PROPERTIES_TOO_LARGE, '129 properties');
  const ok128 = new Map(Array.from({ length: 128 }, (_, i) => [`k${i}`, 'v']));
  await p.send(msg({ properties: ok128 })); // 128 is allowed
  await expectCode(p.send(msg({ properties: new Map([['big', 'v'.repeat(17 * 1024)]]) })),
    Code.MESSAGE_PROPERTIES_TOO_LARGE, 'one 17 KiB property');
  const keys = Array.from({ length: 20 }, (_, i) => `${i}-${'k'.repeat(1000)}`);
  await expectCode(p.send(msg({ keys })), Code.MESSAGE_PROPERTIES_TOO_LARGE, '20 KB of keys');
});

test('reserved or control-character property keys: ILLEGAL_MESSAGE_PROPERTY_KEY (SDK)', async () => {
  const p = await sdkProducer();
  for (const key of ['UNIQ_KEY', 'TAGS', 'KEYS', 'bad\u0001key', 'tab\tkey']) {
    await expectCode(p.send(msg({ properties: new Map([[key, 'v']]) })),
      Code.ILLEGAL_MESSAGE_PROPERTY_KEY, `property key ${JSON.stringify(key)}`);
  }
});

test('blank tag, tag with | or control chars: ILLEGAL_MESSAGE_TAG (SDK)', async () => {
  const p = await sdkProducer();
  for (const tag of ['   ', 'a|b', 'bell\u0007', 'nl\ntag']) {
    await expectCode(p.send(msg({ tag })), Code.ILLEGAL_MESSAGE_TAG, `tag ${JSON.stringify(tag)}`);
  }
});

test('blank key or key with control chars: ILLEGAL_MESSAGE_KEY (SDK)', async () => {
  const p = await sdkProducer();
  for (const keys of [['  '], ['ok', 'k\u0001'], ['\t']]) {
    await expectCode(p.send(msg({ keys })), Code.ILLEGAL_MESSAGE_KEY, `keys ${JSON.stringify(keys)}`);
  }
});

test('receive: unknown group, invisible time out of range, bad filter (SDK; more in sdk_filter)', async () => {
  // Unknown group: refused at startup or at the first receive.
  let c;
  try {
    c = new sdk.SimpleConsumer({
      endpoints: g.endpoint, consumerGroup: 'NoSuchGroup', subscriptions: new Map([[T, '*']]),
      requestTimeout: scaled(5000), awaitDuration: 2000,
      logger: { info() {}, warn() {}, error() {}, debug() {}, trace() {} },
    });
    let startErr;
    try { await c.startup(); } catch (e) { startErr = e; }
    if (startErr) {
      assert.equal(codeName(errCode(startErr)), codeName(Code.CONSUMER_GROUP_NOT_FOUND), errText(startErr));
    } else {
      await expectCode(c.receive(1, 15000), Code.CONSUMER_GROUP_NOT_FOUND, 'receive with an unknown group');
    }
  } finally {
    await shutdownQuietly(c);
  }

  let consumer;
  try {
    consumer = await startSimpleConsumer(g, G, T_OTHER);
    await expectCode(consumer.receive(1, 9999), Code.ILLEGAL_INVISIBLE_TIME, 'invisible 9.999 s');
    await expectCode(consumer.receive(1, 12 * 3600 * 1000 + 1000), Code.ILLEGAL_INVISIBLE_TIME, 'invisible 12 h + 1 s');
    assert.deepEqual(await consumer.receive(1, 12 * 3600 * 1000), [], 'invisible 12 h is allowed (empty topic)');
    await consumer.subscribe(T_OTHER, new sdk.FilterExpression('TagA||\u0007'));
    await expectCode(consumer.receive(1, 15000), Code.ILLEGAL_FILTER_EXPRESSION, 'tag filter with a control character');
  } finally {
    await shutdownQuietly(consumer);
  }
});

test('changeInvisibleDuration over 12 h: ILLEGAL_INVISIBLE_TIME (SDK)', async () => {
  let consumer;
  try {
    const p = await sdkProducer();
    await p.send(msg({ topic: T_OTHER, body: Buffer.from('cid') }));
    consumer = await startSimpleConsumer(g, G, T_OTHER);
    const [m] = await receiveAll(consumer, 1, 15000, { ack: false });
    assert.ok(m, 'no message received');
    const handle = m.receiptHandle;
    await expectCode(consumer.changeInvisibleDuration(m, 12 * 3600 * 1000 + 1000), Code.ILLEGAL_INVISIBLE_TIME,
      'changeInvisibleDuration 12 h + 1 s');
    m.receiptHandle = handle;
    await consumer.changeInvisibleDuration(m, 12 * 3600 * 1000); // 12 h is allowed
    await consumer.ack(m);
  } finally {
    await shutdownQuietly(consumer);
  }
});

// ---- raw requests (the SDK refuses these client-side) -------------------

test('no x-mq-client-id: CLIENT_ID_REQUIRED (raw)', async () => {
  const calls = [
    ['QueryRoute', new pb.QueryRouteRequest().setTopic(resource(T)), pb.QueryRouteResponse],
    ['Heartbeat', new pb.HeartbeatRequest().setClientType(defPb.ClientType.PRODUCER), pb.HeartbeatResponse],
    ['SendMessage', sendRequest([wireMessage({ topic: T })]), pb.SendMessageResponse],
    ['QueryAssignment', new pb.QueryAssignmentRequest().setTopic(resource(T)).setGroup(resource(G)),
      pb.QueryAssignmentResponse],
  ];
  for (const [method, req, Resp] of calls) {
    const r = await raw.unary(method, req, Resp, { clientId: null });
    assert.equal(r.err, null, `${method}: ${r.err?.message}`);
    assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.CLIENT_ID_REQUIRED), method);
  }
  const s = await raw.serverStream('ReceiveMessage', receiveRequest({ group: G, topic: T }),
    pb.ReceiveMessageResponse, { clientId: null });
  assert.equal(s.err, null, `ReceiveMessage: ${s.err?.message}`);
  assert.ok(s.resps.length >= 1, 'ReceiveMessage sent no response');
  assert.equal(codeName(s.resps[0].getStatus()?.getCode()), codeName(Code.CLIENT_ID_REQUIRED), 'ReceiveMessage');
});

test('empty batch or mixed topics: MESSAGE_CORRUPTED (raw)', async () => {
  await expectRawSend([], Code.MESSAGE_CORRUPTED, 'empty batch');
  await expectRawSend([wireMessage({ topic: T }), wireMessage({ topic: T_OTHER })],
    Code.MESSAGE_CORRUPTED, 'mixed topics');
});

test('SendMessage topic checks: TOPIC_NOT_FOUND, ILLEGAL_TOPIC (raw)', async () => {
  await expectRawSend([wireMessage({ topic: 'NoSuchTopic' })], Code.TOPIC_NOT_FOUND, 'unknown topic');
  await expectRawSend([wireMessage({ topic: '' })], Code.ILLEGAL_TOPIC, 'blank topic');
  await expectRawSend([wireMessage({ topic: 'a b' })], Code.ILLEGAL_TOPIC, 'topic with a space');
});

test('body over 4 MiB: MESSAGE_BODY_TOO_LARGE; exactly 4 MiB is accepted (raw)', async () => {
  await expectRawSend([wireMessage({ topic: T_OTHER, body: Buffer.alloc(4 * 1024 * 1024 + 1, 7) })],
    Code.MESSAGE_BODY_TOO_LARGE, '4 MiB + 1');
  const { code, resp } = await rawSend([wireMessage({ topic: T_OTHER, body: Buffer.alloc(4 * 1024 * 1024, 7) })]);
  assert.equal(codeName(code), codeName(Code.OK), `4 MiB: ${resp.getStatus().getMessage()}`);
});

test('blank message id: ILLEGAL_MESSAGE_ID (raw)', async () => {
  await expectRawSend([wireMessage({ topic: T, id: '' })], Code.ILLEGAL_MESSAGE_ID, 'empty id');
  await expectRawSend([wireMessage({ topic: T, id: '   ' })], Code.ILLEGAL_MESSAGE_ID, 'blank id');
});

test('message type not accepted by the topic: MESSAGE_PROPERTY_CONFLICT_WITH_TYPE (raw)', async () => {
  await expectRawSend([wireMessage({ topic: T, type: defPb.MessageType.FIFO, group: 'mg' })],
    Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, 'FIFO message to a NORMAL topic');
  await expectRawSend([wireMessage({ topic: T_FIFO, type: defPb.MessageType.NORMAL })],
    Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, 'NORMAL message to a FIFO topic');
  await expectRawSend([wireMessage({
    topic: T, type: defPb.MessageType.DELAY, deliveryTimestamp: new Date(Date.now() + 60000),
  })], Code.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, 'DELAY message to a NORMAL topic');
});

test('a batch: one entry per message, in order, ids echoed, consecutive offsets (raw)', async () => {
  const ids = [newMessageId(), newMessageId(), newMessageId()];
  const { code, resp } = await rawSend(ids.map((id) => wireMessage({ topic: T_OTHER, id, queueId: 0 })));
  assert.equal(codeName(code), codeName(Code.OK), resp.getStatus().getMessage());
  const entries = resp.getEntriesList();
  assert.deepEqual(entries.map((e) => e.getMessageId()), ids);
  for (const e of entries) assert.equal(codeName(e.getStatus().getCode()), codeName(Code.OK));
  const offs = entries.map((e) => Number(e.getOffset()));
  assert.deepEqual(offs, [offs[0], offs[0] + 1, offs[0] + 2], `offsets ${offs}`);
});

test('Telemetry settings with neither publishing nor subscription: gRPC INVALID_ARGUMENT', async () => {
  const settings = new defPb.Settings().setClientType(defPb.ClientType.PRODUCER)
    .setRequestTimeout(duration(3000));
  const r = await raw.telemetry(settings);
  try {
    assert.ok(r.err, `expected the stream to fail, got ${JSON.stringify(r.first?.toObject())?.slice(0, 200)}`);
    assert.equal(r.err.code, grpc.status.INVALID_ARGUMENT, r.err.message);
  } finally {
    r.call.cancel();
  }
});
