// FIFO topics and FIFO consumer groups with the official Node.js SDK:
// per message group ordering across several SimpleConsumers of one group
// with injected failures (a receive gets consecutive messages of a group
// in order; a message left unacked comes back first, with delivery
// attempt + 1, with the rest of its group after it, and blocks only its
// own message group), dead
// letters unblocking a group (SimpleConsumer expiry and PushConsumer
// ForwardMessageToDeadLetterQueue), a non-FIFO group reading a FIFO topic
// concurrently, ILLEGAL_MESSAGE_GROUP for bad groups, and FIFO progress
// surviving a SIGKILL restart (flush: sync).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, require } from './harness.mjs';
import {
  sdk, Code, codeName, defPb, pb, Raw, quietLogger, startProducer, startSimpleConsumer,
  shutdownQuietly, expectCode, wireMessage, sendRequest, withTimeout, sleep, errText, scaled, waitFor,
} from './sdk_util.mjs';

// SDK 1.0.8: FifoConsumeService opens its own file logger (egg-logger,
// with a flush timer) in a private field that is never closed, which keeps
// node alive after the tests; give it a quiet logger instead.
require('rocketmq-client-nodejs/dist/client/Logger.js').getDefaultLogger = () => ({ ...quietLogger, close() {} });

// topics: [{name, type, queues}], groups: [{name, fifo, max}].
function yamlFifo({ topics, groups }) {
  let y = 'topics:\n';
  for (const t of topics) y += `  - {name: "${t.name}", type: ${t.type ?? 'FIFO'}, queues: ${t.queues ?? 2}}\n`;
  y += 'groups:\n';
  for (const gr of groups) {
    y += `  - {name: "${gr.name}", fifo: ${gr.fifo ?? true}, max_delivery_attempts: ${gr.max ?? 16}}\n`;
  }
  return y;
}

const T_MULTI = 'FifoMultiT'; const G_MULTI = 'FifoMultiG';
const T_ONEQ = 'FifoOneQT'; const G_ONEQ = 'FifoOneQG';
const T_DLQ = 'FifoDlqT'; const G_DLQ = 'FifoDlqG'; const G_DLQ_READ = 'FifoDlqReadG';
const T_PUSH = 'FifoPushT'; const G_PUSH = 'FifoPushG'; const G_PUSH_DLQ_READ = 'FifoPushDlqReadG';
const T_CONC = 'FifoConcT'; const G_CONC = 'FifoConcG';
const T_BAD = 'FifoBadT';
const T_RESTART = 'FifoRestartT'; const G_RESTART = 'FifoRestartG';
const PUSH_MAX = 3;

const YAML = yamlFifo({
  topics: [
    { name: T_MULTI, queues: 2 }, { name: T_ONEQ, queues: 1 }, { name: T_DLQ, queues: 1 },
    { name: T_PUSH, queues: 2 }, { name: T_CONC, queues: 1 }, { name: T_BAD, queues: 2 },
  ],
  groups: [
    { name: G_MULTI }, { name: G_ONEQ }, { name: G_DLQ, max: 2 }, { name: G_DLQ_READ, fifo: false },
    { name: G_PUSH, max: PUSH_MAX }, { name: G_PUSH_DLQ_READ, fifo: false }, { name: G_CONC, fifo: false },
  ],
});

let g;
before(async () => {
  g = await startGantry({ logLevel: 'info', yaml: YAML, flush: 'sync' });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

// Sends `n` messages of each message group, in order within a group (each
// send awaited before the next of its group); groups go concurrently.
// Returns Map messageId -> {mg, seq}.
async function sendGroups(producer, topic, groups, n, tag = 'fifo') {
  const ids = new Map();
  await Promise.all(groups.map(async (mg) => {
    for (let seq = 0; seq < n; seq++) {
      const r = await producer.send({
        topic, tag, messageGroup: mg, body: Buffer.from(`${mg}:${seq}`),
        properties: new Map([['mg', mg], ['seq', String(seq)]]),
      });
      ids.set(r.messageId, { mg, seq });
    }
  }));
  return ids;
}

const label = (m) => `${m.properties.get('mg')}${m.properties.get('seq')}#${m.deliveryAttempt}`;
const seqOf = (m) => Number(m.properties.get('seq'));

// Receives on `consumer` (batches of `max`) until `pred(all)` is true or
// scaled(ms) elapse; returns the messages seen (not acked).
async function receiveUntil(consumer, ms, invisible, pred, onBatch, max = 32) {
  const all = [];
  const deadline = Date.now() + scaled(ms);
  while (Date.now() < deadline && !pred(all)) {
    const batch = await consumer.receive(max, invisible);
    all.push(...batch);
    if (onBatch) await onBatch(batch);
  }
  return all;
}

test('FIFO group, 3 SimpleConsumers, injected failures (nack): per message group order, no later message of a group to anyone while one is in flight, failed message first again with attempt+1', async () => {
  const MGS = ['ga', 'gb', 'gc', 'gd', 'ge', 'gf'];
  const N = 8;
  const INVISIBLE = 10000; // the SDK's receive minimum
  const RETRY_MS = 1000;
  // First delivery of these fails: not acked, made visible again after
  // RETRY_MS with ChangeInvisibleDuration (a SimpleConsumer's nack).
  const FAIL = new Set(['gb:1', 'gd:0', 'ge:4']);
  let producer; const consumers = [];
  const violations = [];
  const events = []; // {t, c, mg, seq, attempt, kind}
  const ackStarted = new Map(); // mg -> Set(seq)
  const ackDone = new Map(); // mg -> Set(seq)
  const lastDelivery = new Map(); // `${mg}:${seq}` -> attempt
  const failedOnce = new Set();
  const ackErrors = [];
  let stop = false;
  try {
    producer = await startProducer(g, [T_MULTI]);
    for (let i = 0; i < 3; i++) consumers.push(await startSimpleConsumer(g, G_MULTI, T_MULTI));
    await sendGroups(producer, T_MULTI, MGS, N);
    for (const mg of MGS) { ackStarted.set(mg, new Set()); ackDone.set(mg, new Set()); }
    const total = () => MGS.reduce((s, mg) => s + ackDone.get(mg).size, 0);
    const loops = consumers.map((c, ci) => (async () => {
      while (!stop) {
        let batch;
        try {
          batch = await c.receive(8, INVISIBLE);
        } catch (e) {
          if (!stop) violations.push(`consumer ${ci} receive failed: ${errText(e)}`);
          await sleep(200);
          continue;
        }
        const t = Date.now();
        // Check the whole batch before acking any of it: a message comes
        // after its predecessor was acked or right behind it in the batch.
        const inBatch = new Set();
        for (const m of batch) {
          const mg = m.properties.get('mg'); const seq = seqOf(m); const key = `${mg}:${seq}`;
          events.push({ t, c: ci, mg, seq, attempt: m.deliveryAttempt, kind: 'recv' });
          if (seq > 0 && !ackStarted.get(mg).has(seq - 1) && !inBatch.has(`${mg}:${seq - 1}`)) {
            violations.push(`${label(m)} handed out before ${mg}${seq - 1} was acked`);
          }
          inBatch.add(key);
          if (ackDone.get(mg).has(seq)) violations.push(`${label(m)} delivered again after its ack succeeded`);
          const prev = lastDelivery.get(key);
          if (prev !== undefined && m.deliveryAttempt !== prev + 1) {
            violations.push(`${key} redelivered with attempt ${m.deliveryAttempt} after attempt ${prev}`);
          }
          if (prev === undefined && m.deliveryAttempt !== 1) violations.push(`${key} first delivery has attempt ${m.deliveryAttempt}`);
          lastDelivery.set(key, m.deliveryAttempt);
        }
        // A failed message: it and the rest of its group in this batch are
        // given back (nack), in order, and come back together.
        const failedGroups = new Set();
        for (const m of batch) {
          const mg = m.properties.get('mg'); const seq = seqOf(m); const key = `${mg}:${seq}`;
          if (failedGroups.has(mg) || (FAIL.has(key) && !failedOnce.has(key))) {
            if (!failedGroups.has(mg)) {
              failedOnce.add(key);
              failedGroups.add(mg);
              events.push({ t: Date.now(), c: ci, mg, seq, kind: 'fail' });
            }
            try {
              await c.changeInvisibleDuration(m, RETRY_MS);
            } catch (e) {
              violations.push(`ChangeInvisibleDuration of ${label(m)} failed: ${errText(e)}`);
            }
            continue;
          }
          ackStarted.get(mg).add(seq);
          try {
            await c.ack(m);
            ackDone.get(mg).add(seq);
            events.push({ t: Date.now(), c: ci, mg, seq, kind: 'ack' });
          } catch (e) {
            ackStarted.get(mg).delete(seq);
            ackErrors.push(`${label(m)}: ${errText(e)}`);
          }
        }
        if (total() === MGS.length * N) stop = true;
      }
    })());
    try {
      await waitFor(() => stop, 45000, 'every message acked', 100);
    } catch { /* the assertions below say what is missing */ }
    stop = true;
    await withTimeout(Promise.all(loops), scaled(15000), 'receive loops to end');
    assert.deepEqual(violations, [], 'FIFO violations');
    const missing = MGS.flatMap((mg) => Array.from({ length: N }, (_, s) => s)
      .filter((s) => !ackDone.get(mg).has(s)).map((s) => `${mg}${s}`));
    assert.deepEqual(missing, [], `messages never acked within ${scaled(45000)} ms (ack errors: ${ackErrors.join('; ')})`);
    // Each failed message came back exactly once more, with attempt 2.
    for (const key of FAIL) assert.equal(lastDelivery.get(key), 2, `${key}: last delivery attempt`);
    // Per group, first deliveries are in send order.
    for (const mg of MGS) {
      const firsts = events.filter((e) => e.kind === 'recv' && e.mg === mg && e.attempt === 1).map((e) => e.seq);
      assert.deepEqual(firsts, Array.from({ length: N }, (_, s) => s), `order of first deliveries of ${mg}`);
    }
    // While gd0 was waiting for its redelivery, other message groups went on.
    const failAt = events.find((e) => e.kind === 'fail' && e.mg === 'gd').t;
    const redeliveredAt = events.find((e) => e.kind === 'recv' && e.mg === 'gd' && e.attempt === 2).t;
    const others = events.filter((e) => e.kind === 'ack' && e.mg !== 'gd' && e.t > failAt && e.t < redeliveredAt);
    assert.ok(others.length > 0, 'no other message group made progress while gd0 was invisible');
    // All three consumers took part.
    const byConsumer = [0, 1, 2].map((ci) => events.filter((e) => e.kind === 'ack' && e.c === ci).length);
    assert.ok(byConsumer.filter((n) => n > 0).length >= 2, `acks per consumer ${byConsumer}`);
  } finally {
    stop = true;
    await shutdownQuietly(producer, ...consumers);
  }
});

test('one queue, two consumers: a batch holds consecutive messages of each group; an unacked one (invisible time expires) blocks only its own message group and comes back first with attempt 2, the rest of its group behind it', async () => {
  let producer; let c1; let c2;
  const INVISIBLE = 10000; // the SDK's receive minimum
  try {
    producer = await startProducer(g, [T_ONEQ]);
    c1 = await startSimpleConsumer(g, G_ONEQ, T_ONEQ);
    c2 = await startSimpleConsumer(g, G_ONEQ, T_ONEQ);
    for (const mg of ['A', 'B']) await sendGroups(producer, T_ONEQ, [mg], 2);

    // One receive: consecutive messages of each group, in order.
    const first = await receiveUntil(c1, 10000, INVISIBLE, (all) => all.length >= 4);
    const tFail = Date.now();
    const ofGroup = (list, mg) => list.filter((m) => m.properties.get('mg') === mg).map(label);
    assert.deepEqual(ofGroup(first, 'A'), ['A0#1', 'A1#1'], `first deliveries: ${first.map(label)}`);
    assert.deepEqual(ofGroup(first, 'B'), ['B0#1', 'B1#1'], `first deliveries: ${first.map(label)}`);
    for (const m of first) if (m.properties.get('mg') === 'B') await c1.ack(m); // A0, A1 are not acked

    // B goes on while A0 and A1 are invisible; no later A before A0 again.
    const more = new Map([['A', 2], ['B', 2]]);
    const send = async (mg) => {
      const seq = more.get(mg); more.set(mg, seq + 1);
      await producer.send({ topic: T_ONEQ, tag: 'fifo', messageGroup: mg, body: Buffer.from(`${mg}:${seq}`),
        properties: new Map([['mg', mg], ['seq', String(seq)]]) });
    };
    for (const mg of ['A', 'B', 'A', 'B']) await send(mg);
    const seen = [];
    const timeline = [];
    await receiveUntil(c2, INVISIBLE + 10000, 20000, () => seen.some((m) => m.properties.get('mg') === 'A'),
      async (batch) => {
        for (const m of batch) {
          seen.push(m); timeline.push(`${label(m)}@${Date.now() - tFail}ms`);
          if (m.properties.get('mg') === 'B') await c2.ack(m);
        }
      });
    assert.deepEqual(ofGroup(seen, 'B'), ['B2#1', 'B3#1'], `B while A0 was unacked: ${timeline.join(' ')}`);
    assert.deepEqual(ofGroup(seen, 'A'), ['A0#2', 'A1#2', 'A2#1', 'A3#1'], `A after the expiry: ${timeline.join(' ')}`);
    const a0 = first.find((m) => label(m) === 'A0#1');
    assert.equal(seen.find((m) => label(m) === 'A0#2').messageId, a0.messageId);
    const aAt = Number(timeline.find((x) => x.startsWith('A0#2')).split('@')[1].replace('ms', ''));
    assert.ok(aAt >= INVISIBLE - 1000, `A0 came back ${aAt} ms after it was received with a ${INVISIBLE} ms invisible time`);
    const bLastAt = Number(timeline.find((x) => x.startsWith('B3#1')).split('@')[1].replace('ms', ''));
    assert.ok(bLastAt < aAt, `B3 (${bLastAt} ms) should not wait for A0's redelivery (${aAt} ms)`);

    // A0 acked, A1 not yet: the next A waits for A1.
    const aBatch = seen.filter((m) => m.properties.get('mg') === 'A');
    await c2.ack(aBatch[0]);
    await send('A');
    const none = await c1.receive(32, 20000);
    assert.deepEqual(none.map(label), [], 'A4 handed out while A1..A3 were unacked');
    for (const m of aBatch.slice(1)) await c2.ack(m);
    const rest = await receiveUntil(c1, 15000, 20000, (all) => all.length >= 1);
    assert.deepEqual(rest.map(label), ['A4#1'], 'A after A0..A3 were acked');
    await c1.ack(rest[0]);
    // Nothing more.
    const extra = await c2.receive(32, 20000);
    assert.deepEqual(extra.map(label), [], 'deliveries after everything was acked');
  } finally {
    await shutdownQuietly(producer, c1, c2);
  }
});

test('a FIFO message dead-lettered after max_delivery_attempts (SimpleConsumer nacks) unblocks its group and is in %DLQ%', async () => {
  let producer; let c; let dlq;
  const INVISIBLE = 10000;
  try {
    producer = await startProducer(g, [T_DLQ]);
    c = await startSimpleConsumer(g, G_DLQ, T_DLQ);
    const ids = await sendGroups(producer, T_DLQ, ['D'], 3);
    const poisonId = [...ids].find(([, v]) => v.seq === 0)[0];
    const seen = [];
    // D0 always fails (nack: visible again after 1 s): delivered twice
    // (max 2), then D1 and D2 (acked).  Received one at a time: a batch
    // would hold D1 and D2 behind D0, and each redelivery of the batch
    // would count as an attempt of theirs too.
    await receiveUntil(c, 20000, INVISIBLE, () => seen.filter((m) => seqOf(m) === 2).length > 0, async (batch) => {
      for (const m of batch) {
        seen.push(m);
        if (seqOf(m) > 0) await c.ack(m);
        else await c.changeInvisibleDuration(m, 1000);
      }
    }, 1);
    assert.deepEqual(seen.map(label), ['D0#1', 'D0#2', 'D1#1', 'D2#1'],
      'deliveries with max_delivery_attempts 2 and D0 never acked');
    await sleep(1000); // a wrong redelivery (1 s after the nack) would come now
    const more = await c.receive(32, INVISIBLE);
    assert.deepEqual(more.map(label), [], 'D0 delivered again after its last attempt');
    dlq = await startSimpleConsumer(g, G_DLQ_READ, `%DLQ%${G_DLQ}`);
    const d = await receiveUntil(dlq, 10000, 10000, (all) => all.length >= 1);
    assert.deepEqual(d.map((m) => [m.messageId, m.body.toString()]), [[poisonId, 'D:0']], `%DLQ%${G_DLQ} content`);
  } finally {
    await shutdownQuietly(producer, c, dlq);
  }
});

test('PushConsumer of a FIFO group: in order per message group; a message failing every local attempt is forwarded to %DLQ% and its group goes on', async () => {
  let producer; let consumer; let svc; let dlq;
  const log = []; // per delivery: `${mg}${seq}#${attempt}`
  const byGroup = new Map();
  try {
    producer = await startProducer(g, [T_PUSH]);
    consumer = new sdk.PushConsumer({
      endpoints: g.endpoint, consumerGroup: G_PUSH, subscriptions: new Map([[T_PUSH, '*']]),
      requestTimeout: scaled(5000), logger: quietLogger,
      messageListener: {
        async consume(mv) {
          const mg = mv.properties.get('mg');
          log.push(label(mv));
          const list = byGroup.get(mg) ?? [];
          byGroup.set(mg, list);
          list.push(label(mv));
          await sleep(20);
          return mg === 'P' && seqOf(mv) === 1 ? sdk.ConsumeResult.FAILURE : sdk.ConsumeResult.SUCCESS;
        },
      },
    });
    await withTimeout(consumer.startup(), scaled(30000), 'PushConsumer.startup');
    svc = consumer.getConsumeService();
    const ids = await sendGroups(producer, T_PUSH, ['P', 'Q'], 4);
    const poisonId = [...ids].find(([, v]) => v.mg === 'P' && v.seq === 1)[0];
    try {
      await waitFor(() => (byGroup.get('P') ?? []).length >= 3 + PUSH_MAX && (byGroup.get('Q') ?? []).length >= 4,
        30000, 'deliveries of groups P and Q', 100);
    } catch { /* the assertions below say what is missing */ }
    await sleep(1500); // late or extra deliveries show up here
    const expectP = ['P0#1', ...Array.from({ length: PUSH_MAX }, (_, i) => `P1#${i + 1}`), 'P2#1', 'P3#1'];
    assert.deepEqual(byGroup.get('P'), expectP, `group P (P1 always fails, max attempts ${PUSH_MAX}); all: ${log.join(' ')}`);
    assert.deepEqual(byGroup.get('Q'), ['Q0#1', 'Q1#1', 'Q2#1', 'Q3#1'], `group Q; all: ${log.join(' ')}`);
    // PushConsumer.shutdown() waits for its receives in flight (20 s long
    // polls); sentinels in several message groups (so in every queue), sent
    // until it returns, end them.
    let shutDone = false;
    const shut = consumer.shutdown().finally(() => { shutDone = true; });
    for (let k = 0; !shutDone && k < scaled(30); k++) {
      await sleep(300);
      if (shutDone) break;
      await Promise.all([1, 2, 3, 4, 5, 6].map((i) => producer.send({
        topic: T_PUSH, body: Buffer.from('sentinel'), messageGroup: `S${k}_${i}`,
        properties: new Map([['mg', `S${k}_${i}`], ['seq', '0']]),
      })));
    }
    await withTimeout(shut, scaled(60000), 'PushConsumer.shutdown');
    consumer = undefined;
    dlq = await startSimpleConsumer(g, G_PUSH_DLQ_READ, `%DLQ%${G_PUSH}`);
    const d = await receiveUntil(dlq, 10000, 10000, (all) => all.length >= 1);
    assert.deepEqual(d.map((m) => [m.messageId, m.body.toString()]), [[poisonId, 'P:1']], `%DLQ%${G_PUSH} content`);
  } finally {
    await shutdownQuietly(producer, consumer, dlq);
    svc?.logger?.close?.();
  }
});

test('a non-FIFO group reading a FIFO topic gets several messages of one message group at once', async () => {
  let producer; let c;
  try {
    producer = await startProducer(g, [T_CONC]);
    c = await startSimpleConsumer(g, G_CONC, T_CONC);
    await sendGroups(producer, T_CONC, ['C'], 5);
    // Nothing is acked: a FIFO group would hand out C0 only.
    const seen = await receiveUntil(c, 10000, 30000, (all) => all.length >= 5);
    assert.deepEqual(seen.map(label).sort(), ['C0#1', 'C1#1', 'C2#1', 'C3#1', 'C4#1'],
      'unacked messages of one message group handed to a non-FIFO group');
    for (const m of seen) await c.ack(m);
  } finally {
    await shutdownQuietly(producer, c);
  }
});

test('bad message groups: blank, 64 bytes or more, control characters → ILLEGAL_MESSAGE_GROUP', async () => {
  let producer;
  const raw = new Raw(g.endpoint);
  try {
    producer = await startProducer(g, [T_BAD]);
    const send = (mg) => producer.send({ topic: T_BAD, body: Buffer.from('x'), messageGroup: mg });
    // The SDK sends these as FIFO messages (non-empty group).
    const bad = {
      'whitespace only': '   ',
      '64 ASCII bytes': 'g'.repeat(64),
      '200 bytes': 'g'.repeat(200),
      '64 bytes in 32 two-byte characters': 'é'.repeat(32),
      'control character \\x01': 'a\x01b',
      'newline': 'a\nb',
      'DEL (\\x7f)': 'a\x7fb',
    };
    const wrong = [];
    for (const [what, mg] of Object.entries(bad)) {
      try {
        await expectCode(send(mg), Code.ILLEGAL_MESSAGE_GROUP, what);
      } catch (e) { wrong.push(e.message); }
    }
    // Limits: 63 bytes and a group with spaces inside are fine.
    for (const mg of ['g'.repeat(63), 'order 42', 'é'.repeat(31)]) {
      try { await send(mg); } catch (e) { wrong.push(`group of ${Buffer.byteLength(mg)} bytes "${mg.slice(0, 10)}" refused: ${errText(e)}`); }
    }
    // The SDK sends an empty group as a NORMAL message; raw: FIFO with "".
    const r = await raw.unary('SendMessage', sendRequest([
      wireMessage({ topic: T_BAD, type: defPb.MessageType.FIFO, group: '' })]), pb.SendMessageResponse);
    assert.equal(r.err, null, r.err?.message);
    const entry = r.resp.getEntriesList()[0]?.getStatus();
    const top = r.resp.getStatus();
    const code = top.getCode() !== Code.OK ? top.getCode() : entry?.getCode();
    if (code !== Code.ILLEGAL_MESSAGE_GROUP) {
      wrong.push(`raw FIFO message with an empty group: expected ${codeName(Code.ILLEGAL_MESSAGE_GROUP)}, got ${codeName(code)} "${top.getMessage()}"`);
    }
    assert.deepEqual(wrong, [], 'message group validation');
  } finally {
    raw.close();
    await shutdownQuietly(producer);
  }
});

test('FIFO progress survives a SIGKILL: acked messages are not redelivered, the unacked head comes first, then the rest in order', async () => {
  const yaml = yamlFifo({ topics: [{ name: T_RESTART, queues: 1 }], groups: [{ name: G_RESTART }] });
  let gr = await startGantry({ logLevel: 'info', yaml, flush: 'sync' });
  let producer; let c;
  try {
    producer = await startProducer(gr, [T_RESTART]);
    for (const mg of ['R', 'S']) await sendGroups(producer, T_RESTART, [mg], 4);
    c = await startSimpleConsumer(gr, G_RESTART, T_RESTART);
    // Ack R0, R1, S0; R2 and S1 are received and held (not acked).
    const before = [];
    await receiveUntil(c, 15000, 10000, () => before.some((m) => label(m) === 'R2#1') && before.some((m) => label(m) === 'S1#1'),
      async (batch) => {
        for (const m of batch) {
          before.push(m);
          if (['R0#1', 'R1#1', 'S0#1'].includes(label(m))) await c.ack(m);
        }
      });
    // One batch: all of both groups (consecutive messages of each group).
    assert.deepEqual(before.map(label).sort(), ['R0#1', 'R1#1', 'R2#1', 'R3#1', 'S0#1', 'S1#1', 'S2#1', 'S3#1'],
      'deliveries before the kill');
    const acked = new Set(before.filter((m) => ['R0#1', 'R1#1', 'S0#1'].includes(label(m))).map((m) => m.messageId));
    await shutdownQuietly(producer, c);
    producer = undefined; c = undefined;
    const info = await stopGantry(gr, 'SIGKILL', { keepDir: true });
    assert.equal(info.signal, 'SIGKILL');
    gr = await startGantry({ dir: gr.dir, grpcPort: gr.grpcPort, httpPort: gr.httpPort, logLevel: 'info', yaml, flush: 'sync' });

    c = await startSimpleConsumer(gr, G_RESTART, T_RESTART);
    const after = [];
    const violations = [];
    const acks = new Set();
    await receiveUntil(c, 30000, 20000, () => acks.size >= 5, async (batch) => {
      const last = new Map();
      for (const m of batch) {
        const mg = m.properties.get('mg');
        if (last.has(mg) && seqOf(m) !== last.get(mg) + 1) violations.push(`a batch not in order within a group: ${batch.map(label)}`);
        last.set(mg, seqOf(m));
      }
      for (const m of batch) {
        after.push(m);
        if (acked.has(m.messageId)) violations.push(`${label(m)} was acked before the kill`);
        await c.ack(m); acks.add(m.messageId);
      }
    });
    assert.deepEqual(violations, []);
    const seq = (mg) => after.filter((m) => m.properties.get('mg') === mg).map((m) => seqOf(m));
    assert.deepEqual(seq('R'), [2, 3], `R after the restart: ${after.map(label)}`);
    assert.deepEqual(seq('S'), [1, 2, 3], `S after the restart: ${after.map(label)}`);
    for (const m of after.filter((x) => ['R:2', 'S:1'].includes(x.body.toString()))) {
      assert.ok(m.deliveryAttempt >= 2, `${label(m)}: held before the kill, attempt should be at least 2`);
    }
  } finally {
    await shutdownQuietly(producer, c);
    await stopGantry(gr);
  }
});
