// SimpleConsumer end to end with the official Node.js SDK: receive, ack,
// changeInvisibleDuration, redelivery after the invisible time with
// delivery attempt 2, long polling, and the dead-letter queue.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  Code, startProducer, startSimpleConsumer, shutdownQuietly, receiveAll,
  yamlOf, expectCode, sleep, withTimeout, scaled,
} from './sdk_util.mjs';

const T = 'SimpleTopic';
const T_RETRY = 'SimpleRetryTopic';
const T_HANDLE = 'SimpleHandleTopic';
const T_POLL = 'SimplePoll';
const T_DLQ = 'SimpleDlqTopic';
const T_TERM = 'SimpleTermTopic';
const G_TERM = 'SimpleTerm';
const T_MULTI1 = 'SimpleMultiA';
const T_MULTI2 = 'SimpleMultiB';
const G_MULTI = 'SimpleMulti';
const G_BASIC = 'SimpleBasic';
const G_RETRY = 'SimpleRetry';
const G_POLL = 'SimplePollGroup';
const G_DLQ = 'SimpleDlq';
const G_DLQ_READER = 'SimpleDlqReader';
const DLQ_TOPIC = `%DLQ%${G_DLQ}`;
const INVISIBLE_MIN = 10000;

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [
        { name: T, queues: 2 }, { name: T_RETRY, queues: 2 }, { name: T_HANDLE, queues: 1 },
        { name: T_POLL, queues: 2 }, { name: T_DLQ, queues: 2 }, { name: T_TERM, queues: 2 },
        { name: T_MULTI1, queues: 2 }, { name: T_MULTI2, queues: 3 },
      ],
      groups: [
        { name: G_BASIC }, { name: G_RETRY, max_delivery_attempts: 5 }, { name: G_POLL },
        { name: G_DLQ, max_delivery_attempts: 2 }, { name: G_DLQ_READER }, { name: G_TERM },
        { name: G_MULTI },
      ],
    }),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

// Receives until every id in `ids` was seen once (ack = false), at most
// scaled(ms).
async function receiveIds(consumer, ids, ms, invisible) {
  const got = new Map();
  const deadline = Date.now() + scaled(ms);
  while (Date.now() < deadline && [...ids].some((id) => !got.has(id))) {
    for (const m of await consumer.receive(16, invisible)) {
      assert.ok(ids.has(m.messageId), `unexpected message ${m.messageId} (${m.body})`);
      assert.ok(!got.has(m.messageId), `${m.body} delivered twice within its invisible time`);
      got.set(m.messageId, m);
    }
  }
  return got;
}

test('receive then ack: every message once, nothing left after the acks', async () => {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T]);
    consumer = await startSimpleConsumer(g, G_BASIC, T);
    const ids = new Set();
    for (let i = 0; i < 20; i++) ids.add((await producer.send({ topic: T, body: Buffer.from(`m${i}`) })).messageId);
    const got = await receiveAll(consumer, ids.size, 20000, { invisible: 30000, ack: false });
    const seen = new Set(got.map((m) => m.messageId));
    assert.equal(got.length, ids.size, 'one delivery per message');
    assert.deepEqual([...seen].sort(), [...ids].sort());
    for (const m of got) {
      assert.equal(m.deliveryAttempt, 1);
      await consumer.ack(m); // throws on a non-OK status
    }
    const more = await consumer.receive(32, 30000);
    assert.deepEqual(more.map((m) => m.body.toString()), [], 'messages after all were acked');
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});

test('ack, changeInvisibleDuration and redelivery after the invisible time', async () => {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_RETRY]);
    consumer = await startSimpleConsumer(g, G_RETRY, T_RETRY);
    const names = ['A', 'B', 'C', 'D'];
    const idOf = {};
    for (const n of names) {
      idOf[n] = (await producer.send({ topic: T_RETRY, body: Buffer.from(n), tag: `t${n}` })).messageId;
    }
    const nameOf = Object.fromEntries(Object.entries(idOf).map(([k, v]) => [v, k]));
    const first = await receiveIds(consumer, new Set(Object.values(idOf)), 20000, INVISIBLE_MIN);
    const t0 = Date.now(); // invisible until about t0 + 10 s
    assert.equal(first.size, 4, `received ${[...first.keys()].map((k) => nameOf[k])}`);
    const v = Object.fromEntries([...first.values()].map((m) => [nameOf[m.messageId], m]));
    for (const n of names) assert.equal(v[n].deliveryAttempt, 1, `${n} first delivery attempt`);

    // A: acked.  C: invisible time extended to 60 s.  D: made visible at once.
    await consumer.ack(v.A);
    const oldHandleC = v.C.receiptHandle;
    await consumer.changeInvisibleDuration(v.C, 60000);
    assert.ok(v.C.receiptHandle && v.C.receiptHandle !== oldHandleC,
      'changeInvisibleDuration returns a new receipt handle');
    await consumer.changeInvisibleDuration(v.D, 0);

    const again = await receiveAll(consumer, 1, 8000, { invisible: INVISIBLE_MIN, ack: false, batch: 16 });
    assert.deepEqual(again.map((m) => nameOf[m.messageId] ?? m.body.toString()), ['D'],
      'only D (visibility 0) is redelivered before the 10 s invisible time ends');
    assert.equal(again[0].deliveryAttempt, 2, 'D redelivered with delivery attempt 2');
    assert.deepEqual(again[0].body, Buffer.from('D'));
    assert.equal(again[0].tag, 'tD');
    await consumer.ack(again[0]);

    // After the invisible time only B comes back, with attempt 2.
    const wait = t0 + INVISIBLE_MIN + 500 - Date.now();
    if (wait > 0) await sleep(wait);
    const later = await receiveAll(consumer, 1, 15000, { invisible: 30000, ack: false, batch: 16 });
    assert.deepEqual(later.map((m) => nameOf[m.messageId] ?? m.body.toString()), ['B'],
      'after the invisible time: B (not acked) is redelivered; A (acked), C (extended) and D (acked) are not');
    const b2 = later[0];
    assert.equal(b2.deliveryAttempt, 2, 'B redelivered with delivery attempt 2');
    assert.deepEqual(b2.body, Buffer.from('B'));
    assert.equal(b2.tag, 'tB');
    assert.notEqual(b2.receiptHandle, v.B.receiptHandle, 'a redelivery has a new receipt handle');

    // The expired handle of B's first delivery is refused; the new one acks.
    await expectCode(consumer.ack(v.B), Code.INVALID_RECEIPT_HANDLE, 'ack with an expired handle');
    await consumer.ack(b2);
    // C acks with the handle changeInvisibleDuration returned.
    await consumer.ack(v.C);
    const rest = await consumer.receive(16, 30000);
    assert.deepEqual(rest.map((m) => nameOf[m.messageId] ?? m.body.toString()), [], 'nothing left');
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});

test('an unknown receipt handle is refused with INVALID_RECEIPT_HANDLE', async () => {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_HANDLE]);
    consumer = await startSimpleConsumer(g, G_POLL, T_HANDLE);
    await producer.send({ topic: T_HANDLE, body: Buffer.from('h') });
    const [m] = await receiveAll(consumer, 1, 15000, { ack: false });
    assert.ok(m, 'message received');
    const fake = Object.assign(Object.create(Object.getPrototypeOf(m)), m,
      { receiptHandle: 'not-a-receipt-handle' });
    await expectCode(consumer.ack(fake), Code.INVALID_RECEIPT_HANDLE, 'ack with a garbage handle');
    await expectCode(consumer.changeInvisibleDuration(fake, 20000), Code.INVALID_RECEIPT_HANDLE,
      'changeInvisibleDuration with a garbage handle');
    await consumer.ack(m);
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});

test('long polling: an empty receive waits, and a send wakes a waiting receive', async () => {
  let producer; let consumer; let slow;
  try {
    producer = await startProducer(g, [T_POLL]);
    consumer = await startSimpleConsumer(g, G_POLL, T_POLL, { awaitDuration: 3000 });
    let t0 = Date.now();
    const none = await consumer.receive(16, 30000);
    let ms = Date.now() - t0;
    assert.deepEqual(none, [], 'MESSAGE_NOT_FOUND gives an empty batch');
    assert.ok(ms >= 2000, `an empty receive returned after ${ms} ms; it should long-poll ~3 s`);

    // The wake bound is well inside the long poll on any machine.
    const WAKE_MS = scaled(10000);
    slow = await startSimpleConsumer(g, G_POLL, T_POLL, { awaitDuration: WAKE_MS + 20000 });
    const pending = slow.receive(16, 30000);
    await sleep(1000);
    const r = await producer.send({ topic: T_POLL, body: Buffer.from('wake') });
    t0 = Date.now();
    const got = await withTimeout(pending, WAKE_MS + 30000, 'woken receive');
    ms = Date.now() - t0;
    assert.deepEqual(got.map((m) => m.messageId), [r.messageId]);
    assert.ok(ms < WAKE_MS, `the receive returned ${ms} ms after the send, not when the message arrived`);
    await slow.ack(got[0]);
  } finally {
    await shutdownQuietly(producer, consumer, slow);
  }
});

test('past max delivery attempts a message goes to %DLQ%<group>, readable by a SimpleConsumer', async () => {
  let producer; let consumer; let dlq;
  try {
    producer = await startProducer(g, [T_DLQ]);
    consumer = await startSimpleConsumer(g, G_DLQ, T_DLQ);
    const props = new Map([['why', 'poison']]);
    const r = await producer.send({
      topic: T_DLQ, body: Buffer.from('poison-pill'), tag: 'bad', keys: ['pk'], properties: props,
    });
    const ok = await producer.send({ topic: T_DLQ, body: Buffer.from('fine') });
    // max_delivery_attempts 2: fail attempts 1 and 2 (nack, visible at once).
    const attempts = [];
    const deadline = Date.now() + scaled(30000);
    while (attempts.length < 2 && Date.now() < deadline) {
      for (const m of await consumer.receive(16, 30000)) {
        if (m.messageId === ok.messageId) { await consumer.ack(m); continue; }
        assert.equal(m.messageId, r.messageId);
        attempts.push(m.deliveryAttempt);
        await consumer.changeInvisibleDuration(m, 0);
      }
    }
    assert.deepEqual(attempts, [1, 2], 'delivery attempts of the poison message');
    // A third delivery must not happen: the message is dead-lettered.
    const after3 = await consumer.receive(16, 30000);
    assert.deepEqual(after3.map((m) => `${m.body} attempt ${m.deliveryAttempt}`), [],
      'delivered again past max_delivery_attempts');

    dlq = await startSimpleConsumer(g, G_DLQ_READER, DLQ_TOPIC);
    const got = await receiveAll(dlq, 1, 15000, { ack: false });
    assert.equal(got.length, 1, `${DLQ_TOPIC} holds ${got.length} messages`);
    const d = got[0];
    assert.equal(d.topic, DLQ_TOPIC);
    assert.equal(d.messageId, r.messageId, 'the dead letter keeps its message id');
    assert.deepEqual(d.body, Buffer.from('poison-pill'));
    assert.equal(d.tag, 'bad');
    assert.deepEqual(d.keys, ['pk']);
    assert.equal(d.properties.get('why'), 'poison');
    assert.equal(d.deliveryAttempt, 1, 'first delivery from the DLQ');
    await dlq.ack(d);
    const more = await dlq.receive(16, 30000);
    assert.equal(more.length, 0, 'DLQ empty after ack');
  } finally {
    await shutdownQuietly(producer, consumer, dlq);
  }
});

test('receive with an invisible duration outside 10 s .. 12 h is refused', async () => {
  let consumer;
  try {
    consumer = await startSimpleConsumer(g, G_BASIC, T_HANDLE);
    await expectCode(consumer.receive(1, 5000), Code.ILLEGAL_INVISIBLE_TIME, 'invisible 5 s');
    await expectCode(consumer.receive(1, 13 * 3600 * 1000), Code.ILLEGAL_INVISIBLE_TIME, 'invisible 13 h');
  } finally {
    await shutdownQuietly(consumer);
  }
});


test('messages a SimpleConsumer held become visible again when it shuts down', async () => {
  const HELD_MS = 3600000;
  let producer; let a; let b;
  try {
    producer = await startProducer(g, [T_TERM]);
    a = await startSimpleConsumer(g, G_TERM, T_TERM);
    b = await startSimpleConsumer(g, G_TERM, T_TERM);
    const r = await producer.send({ topic: T_TERM, body: Buffer.from('held') });
    // Held far longer than the test waits for it on any machine.
    const held = await receiveAll(a, 1, 15000, { invisible: HELD_MS, ack: false });
    assert.deepEqual(held.map((m) => m.messageId), [r.messageId]);
    assert.deepEqual((await b.receive(16, 60000)).map((m) => m.body.toString()), [], 'visible while held');
    await a.shutdown();
    a = undefined;
    const t0 = Date.now();
    const got = await receiveAll(b, 1, 10000, { invisible: 30000 });
    assert.deepEqual(got.map((m) => m.messageId), [r.messageId],
      `not visible again ${Date.now() - t0} ms after the holder shut down (${HELD_MS} ms invisible time)`);
    assert.equal(got[0].deliveryAttempt, 2);
  } finally {
    await shutdownQuietly(producer, a, b);
  }
});

test('one SimpleConsumer, two topics: every message once, from the topic it was sent to', async () => {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_MULTI1, T_MULTI2]);
    consumer = await startSimpleConsumer(g, G_MULTI, new Map([[T_MULTI1, '*'], [T_MULTI2, '*']]));
    const topicOf = new Map();
    for (let i = 0; i < 10; i++) {
      for (const t of [T_MULTI1, T_MULTI2]) {
        topicOf.set((await producer.send({ topic: t, body: Buffer.from(`${t}-${i}`) })).messageId, t);
      }
    }
    const got = await receiveAll(consumer, topicOf.size, 20000, { invisible: 30000 });
    assert.equal(got.length, topicOf.size, `received ${got.length} of ${topicOf.size}`);
    for (const m of got) {
      assert.equal(m.topic, topicOf.get(m.messageId), `topic of ${m.body}`);
      assert.ok(m.body.toString().startsWith(`${m.topic}-`));
    }
    assert.equal(new Set(got.map((m) => m.messageId)).size, topicOf.size, 'duplicates');
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});
