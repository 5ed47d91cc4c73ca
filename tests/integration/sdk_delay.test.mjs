// Delay (timer) messages and recall with the official Node.js SDK: a
// delayed message is delivered at its delivery time (not before, at most
// about a second late; bounds scaled for slow machines) and a past time delivers at once; more than
// message.max_delay_ms ahead is ILLEGAL_DELIVERY_TIME; SendMessage returns a
// recall handle with which RecallMessage cancels the delivery before the
// time, while a recall after the time, a repeated recall, a wrong topic or
// a bad handle get a clear error; pending timers and recalls survive a
// SIGKILL restart (flush: sync).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  Code, codeName, pb, Raw, resource, startProducer, startSimpleConsumer, shutdownQuietly,
  expectCode, errText, scaled,
} from './sdk_util.mjs';

function yamlOf(topics, groups, extra = '') {
  let y = 'topics:\n';
  for (const t of topics) y += `  - {name: "${t}", type: DELAY, queues: 2}\n`;
  y += 'groups:\n';
  for (const gr of groups) y += `  - {name: "${gr}"}\n`;
  return y + extra;
}

const T_TIME = 'DelayTimeT'; const G_TIME = 'DelayTimeG';
const T_PAST = 'DelayPastT'; const G_PAST = 'DelayPastG';
const T_MAX = 'DelayMaxT';
const T_RECALL = 'DelayRecallT'; const G_RECALL = 'DelayRecallG';
const T_LATE = 'DelayLateT'; const G_LATE = 'DelayLateG';
const T_OTHER = 'DelayOtherT';
const T_RESTART = 'DelayRestartT'; const G_RESTART = 'DelayRestartG';
const MAX_DELAY_MS = 86400000; // default message.max_delay_ms

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info', flush: 'sync',
    yaml: yamlOf([T_TIME, T_PAST, T_MAX, T_RECALL, T_LATE, T_OTHER], [G_TIME, G_PAST, G_RECALL, G_LATE]),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

// Receives (acking) until `stopAt` (ms since epoch) or until `want`
// messages were seen; returns [{m, at}] with the receive time.
async function collect(consumer, { want = Infinity, stopAt }) {
  const got = [];
  while (got.length < want && Date.now() < stopAt) {
    const msgs = await consumer.receive(32, 15000);
    const at = Date.now();
    for (const m of msgs) {
      got.push({ m, at });
      await consumer.ack(m);
    }
  }
  return got;
}

// The RocketMQ code of a failed recall: the SDK throws a plain Error
// "Failed to recall message: <msg> (code: N)"; other errors carry .code.
function recallCode(err) {
  for (let e = err; e; e = e.cause) {
    if (typeof e.code === 'number' && e.code >= 10000) return e.code;
    const m = /\(code: (\d+)\)/.exec(e.message ?? '');
    if (m) return Number(m[1]);
  }
  return undefined;
}

// The recall must fail with a non-OK RocketMQ code (4xxxx or 5xxxx).
async function expectRecallError(p, what) {
  let res;
  try {
    res = await p;
  } catch (err) {
    const code = recallCode(err);
    assert.ok(code !== undefined && code >= 40000 && code < 60000,
      `${what}: expected a RocketMQ error code, got ${code === undefined ? 'none' : codeName(code)}: ${errText(err)}`);
    return code;
  }
  assert.fail(`${what}: expected an error, but the recall succeeded: ${JSON.stringify(res)}`);
}

function body(m) { return m.body.toString(); }

test('delayed messages are delivered at their time: not before, at most ~1 s late', async () => {
  let producer; let c;
  try {
    producer = await startProducer(g, [T_TIME]);
    c = await startSimpleConsumer(g, G_TIME, T_TIME);
    const now = Date.now();
    const due = new Map(); // body -> deliveryTimestamp ms
    for (const [i, d] of [1500, 2500, 3500].entries()) {
      const ts = new Date(now + d);
      const r = await producer.send({ topic: T_TIME, body: Buffer.from(`d${i}`), deliveryTimestamp: ts });
      assert.ok(r.recallHandle, `send of a delayed message returned no recall handle: ${JSON.stringify(r)}`);
      due.set(`d${i}`, ts.getTime());
    }
    const got = await collect(c, { want: 3, stopAt: now + 3500 + scaled(6000) });
    const report = got.map(({ m, at }) => `${body(m)}@${at - due.get(body(m))}ms`).join(' ');
    assert.deepEqual(got.map(({ m }) => body(m)).sort(), ['d0', 'd1', 'd2'], `received: ${report}`);
    for (const { m, at } of got) {
      const dueAt = due.get(body(m));
      assert.ok(at >= dueAt - 20, `${body(m)} received ${dueAt - at} ms before its delivery time (${report})`);
      assert.ok(at <= dueAt + scaled(2500), `${body(m)} received ${at - dueAt} ms after its delivery time (${report})`);
      assert.equal(m.deliveryTimestamp?.getTime(), dueAt, `${body(m)}: delivery timestamp on the received message`);
      assert.equal(m.deliveryAttempt, 1);
    }
    // Nothing delivered twice.
    const more = await c.receive(32, 15000);
    assert.deepEqual(more.map(body), []);
  } finally {
    await shutdownQuietly(producer, c);
  }
});

test('a delivery time in the past delivers at once', async () => {
  let producer; let c;
  try {
    producer = await startProducer(g, [T_PAST]);
    c = await startSimpleConsumer(g, G_PAST, T_PAST);
    const t0 = Date.now();
    await producer.send({ topic: T_PAST, body: Buffer.from('past'), deliveryTimestamp: new Date(t0 - 60000) });
    const got = await collect(c, { want: 1, stopAt: t0 + scaled(5000) });
    assert.deepEqual(got.map(({ m }) => body(m)), ['past'], 'message with a past delivery time');
    assert.ok(got[0].at - t0 < scaled(2500), `received ${got[0].at - t0} ms after the send`);
  } finally {
    await shutdownQuietly(producer, c);
  }
});

test('more than max_delay_ms ahead → ILLEGAL_DELIVERY_TIME; just under is accepted', async () => {
  let producer;
  try {
    producer = await startProducer(g, [T_MAX]);
    await expectCode(producer.send({
      topic: T_MAX, body: Buffer.from('far'), deliveryTimestamp: new Date(Date.now() + MAX_DELAY_MS + 60000),
    }), Code.ILLEGAL_DELIVERY_TIME, 'delivery time max_delay_ms + 60 s ahead');
    await expectCode(producer.send({
      topic: T_MAX, body: Buffer.from('far'), deliveryTimestamp: new Date(Date.now() + 30 * 86400000),
    }), Code.ILLEGAL_DELIVERY_TIME, 'delivery time 30 days ahead');
    const r = await producer.send({
      topic: T_MAX, body: Buffer.from('near'), deliveryTimestamp: new Date(Date.now() + MAX_DELAY_MS - 60000),
    });
    assert.ok(r.messageId);
    // Leave nothing pending for a day.
    if (r.recallHandle) await producer.recallMessage(T_MAX, r.recallHandle).catch(() => {});
  } finally {
    await shutdownQuietly(producer);
  }
});

test('recall before the delivery time: never delivered; a repeated recall is an error', async () => {
  let producer; let c;
  try {
    producer = await startProducer(g, [T_RECALL]);
    c = await startSimpleConsumer(g, G_RECALL, T_RECALL);
    // Far enough ahead for the sends and recalls on a slow machine.
    const at = new Date(Date.now() + scaled(2500));
    const keep = await producer.send({ topic: T_RECALL, body: Buffer.from('keep'), deliveryTimestamp: at });
    const gone = await producer.send({ topic: T_RECALL, body: Buffer.from('recalled'), deliveryTimestamp: at });
    assert.ok(gone.recallHandle, 'no recall handle');
    assert.notEqual(gone.recallHandle, keep.recallHandle, 'two messages with the same recall handle');
    const rr = await producer.recallMessage(T_RECALL, gone.recallHandle);
    assert.equal(rr.messageId, gone.messageId, 'RecallMessage answers the recalled message id');
    await expectRecallError(producer.recallMessage(T_RECALL, gone.recallHandle), 'second recall of the same handle');
    // Until 'keep' comes (a bound, not a wait), then one more receive: the
    // recalled message, due at the same time, would be ready by then.
    const got = await collect(c, { want: 1, stopAt: at.getTime() + scaled(15000) });
    for (const m of await c.receive(32, 15000)) got.push({ m, at: Date.now() });
    assert.deepEqual(got.map(({ m }) => body(m)), ['keep'], 'delivered after one of two was recalled');
  } finally {
    await shutdownQuietly(producer, c);
  }
});

test('recall after the delivery time, with a wrong topic or a bad handle: clear errors', async () => {
  let producer; let c;
  const raw = new Raw(g.endpoint);
  try {
    producer = await startProducer(g, [T_LATE, T_OTHER]);
    c = await startSimpleConsumer(g, G_LATE, T_LATE);
    const at = new Date(Date.now() + 1000);
    const r = await producer.send({ topic: T_LATE, body: Buffer.from('late'), deliveryTimestamp: at });
    assert.ok(r.recallHandle, 'no recall handle');
    // A wrong topic: the message stays pending and is delivered.
    await expectRecallError(producer.recallMessage(T_OTHER, r.recallHandle), 'recall handle with another topic');
    await expectRecallError(producer.recallMessage(T_LATE, 'no-such-handle'), 'garbage recall handle');
    await expectRecallError(producer.recallMessage(T_LATE, `${r.recallHandle}x`), 'recall handle with a character appended');
    const got = await collect(c, { want: 1, stopAt: at.getTime() + scaled(5000) });
    assert.deepEqual(got.map(({ m }) => body(m)), ['late'], 'the message (wrong-topic recall must not cancel it)');
    await expectRecallError(producer.recallMessage(T_LATE, r.recallHandle), 'recall after the delivery time');
    // Empty handle and unknown topic (raw: the SDK refuses an empty handle).
    const bad = [
      ['empty handle', T_LATE, ''],
      ['unknown topic', 'NoSuchDelayTopic', r.recallHandle],
    ];
    for (const [what, topic, handle] of bad) {
      const x = await raw.unary('RecallMessage', new pb.RecallMessageRequest().setTopic(resource(topic))
        .setRecallHandle(handle), pb.RecallMessageResponse);
      assert.equal(x.err, null, `${what}: transport error ${x.err?.message}`);
      const code = x.resp.getStatus().getCode();
      assert.ok(code >= 40000 && code < 50000, `${what}: expected a 4xxxx code, got ${codeName(code)} "${x.resp.getStatus().getMessage()}"`);
    }
  } finally {
    raw.close();
    await shutdownQuietly(producer, c);
  }
});

test('a pending delayed message and a recall survive a SIGKILL; a handle from before the kill recalls after it', async () => {
  const yaml = yamlOf([T_RESTART], [G_RESTART]);
  let gr = await startGantry({ logLevel: 'info', yaml, flush: 'sync' });
  let producer; let c;
  try {
    producer = await startProducer(gr, [T_RESTART]);
    // Far enough ahead for a SIGKILL restart on a slow machine.
    const at = new Date(Date.now() + scaled(4000));
    const send = (b) => producer.send({ topic: T_RESTART, body: Buffer.from(b), deliveryTimestamp: at });
    await send('pending');
    const before = await send('recalled-before');
    const later = await send('recalled-after');
    assert.ok(before.recallHandle && later.recallHandle, 'no recall handles');
    await producer.recallMessage(T_RESTART, before.recallHandle);
    await shutdownQuietly(producer);
    producer = undefined;
    const info = await stopGantry(gr, 'SIGKILL', { keepDir: true });
    assert.equal(info.signal, 'SIGKILL');
    gr = await startGantry({ dir: gr.dir, grpcPort: gr.grpcPort, httpPort: gr.httpPort, logLevel: 'info', yaml, flush: 'sync' });

    producer = await startProducer(gr, [T_RESTART]);
    assert.ok(Date.now() < at.getTime() - 500, 'restart took too long for this test');
    const rr = await producer.recallMessage(T_RESTART, later.recallHandle);
    assert.equal(rr.messageId, later.messageId);
    await expectRecallError(producer.recallMessage(T_RESTART, before.recallHandle), 'recall (before the kill) repeated after it');
    c = await startSimpleConsumer(gr, G_RESTART, T_RESTART);
    // Until 'pending' comes, then one more receive (the others were due
    // at the same time).
    const got = await collect(c, { want: 1, stopAt: at.getTime() + scaled(15000) });
    for (const m of await c.receive(32, 15000)) got.push({ m, at: Date.now() });
    const report = got.map(({ m, at: t }) => `${body(m)}@${t - at.getTime()}ms`).join(' ');
    assert.deepEqual(got.map(({ m }) => body(m)), ['pending'], `delivered after the restart: ${report}`);
    assert.ok(got[0].at >= at.getTime() - 20, `delivered before its time: ${report}`);
  } finally {
    await shutdownQuietly(producer, c);
    await stopGantry(gr);
  }
});
