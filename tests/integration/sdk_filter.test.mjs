// Tag filters with the official Node.js SDK: each group gets exactly the
// messages its tag expression selects, from the same topic.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  sdk, Code, codeName, errCode, errText, startProducer, startSimpleConsumer, shutdownQuietly,
  yamlOf, expectCode, receiveAll, quietLogger, withTimeout, sleep, scaled, waitFor, shutdownPush,
} from './sdk_util.mjs';

const T = 'FilterTopic';
const T_BAD = 'FilterBadTopic';
const T_PUSH = 'FilterPushTopic';
const GROUPS = {
  FilterAll: '*',
  FilterA: 'TagA',
  FilterAC: 'TagA||TagC',
  FilterSpaced: ' TagB || TagC ',
  FilterNone: 'NoSuchTag',
};

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [{ name: T, queues: 3 }, { name: T_BAD, queues: 1 }, { name: T_PUSH, queues: 2 }],
      groups: [...Object.keys(GROUPS).map((name) => ({ name })), { name: 'FilterBad' }, { name: 'FilterPush' }],
    }),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

test('tag expressions: *, one tag, tag||tag (with spaces), no match', async () => {
  let producer;
  const consumers = [];
  try {
    producer = await startProducer(g, [T]);
    const tags = ['TagA', 'TagB', 'TagC', undefined, 'TagAB', 'taga'];
    const sent = []; // {id, tag}
    for (let i = 0; i < 36; i++) {
      const tag = tags[i % tags.length];
      const r = await producer.send({ topic: T, body: Buffer.from(`m${i}-${tag}`), ...(tag ? { tag } : {}) });
      sent.push({ id: r.messageId, tag });
    }
    const expect = {
      FilterAll: sent,
      FilterA: sent.filter((m) => m.tag === 'TagA'),
      FilterAC: sent.filter((m) => m.tag === 'TagA' || m.tag === 'TagC'),
      FilterSpaced: sent.filter((m) => m.tag === 'TagB' || m.tag === 'TagC'),
      FilterNone: [],
    };
    // All groups consume the same topic at the same time.
    await Promise.all(Object.entries(GROUPS).map(async ([group, expr]) => {
      const c = await startSimpleConsumer(g, group, new Map([[T, expr]]));
      consumers.push(c);
      const want = expect[group];
      // Receive until the expected count, then one more empty long poll to
      // catch anything extra.
      const got = await receiveAll(c, want.length, 20000, { invisible: 30000 });
      got.push(...await c.receive(32, 30000));
      const gotIds = got.map((m) => m.messageId).sort();
      const wrong = got.filter((m) => !want.some((w) => w.id === m.messageId)).map((m) => m.tag || '(none)');
      assert.deepEqual(wrong, [], `group ${group} (${JSON.stringify(expr)}) got messages with tags it does not select`);
      assert.deepEqual(gotIds, want.map((m) => m.id).sort(),
        `group ${group} (${JSON.stringify(expr)}): ${got.length} received, ${want.length} expected`);
      for (const m of got) {
        const s = sent.find((x) => x.id === m.messageId);
        assert.equal(m.tag || undefined, s.tag, 'tag as sent (the SDK shows no tag as "")');
      }
    }));
  } finally {
    await shutdownQuietly(producer, ...consumers);
  }
});

test('a filter that cannot be valid is refused: ILLEGAL_FILTER_EXPRESSION', async () => {
  let c;
  try {
    c = await startSimpleConsumer(g, 'FilterBad', T_BAD);
    // Tags never hold control characters, so such an expression is invalid.
    await c.subscribe(T_BAD, new sdk.FilterExpression('TagA||Tag\u0001B'));
    await expectCode(c.receive(1, 15000), Code.ILLEGAL_FILTER_EXPRESSION, 'tag expression with a control character');
    // A malformed SQL92 expression: refused as illegal, or SQL92 as a whole
    // as not supported; never accepted.
    await c.subscribe(T_BAD, new sdk.FilterExpression('a = = (', 2 /* FilterType.SQL */));
    let err;
    try { await c.receive(1, 15000); } catch (e) { err = e; }
    assert.ok(err, 'a malformed SQL92 filter was accepted');
    assert.ok([Code.ILLEGAL_FILTER_EXPRESSION, Code.NOT_IMPLEMENTED, Code.UNSUPPORTED].includes(errCode(err)),
      `malformed SQL92 filter: got ${codeName(errCode(err))}: ${errText(err)}`);
  } finally {
    await shutdownQuietly(c);
  }
});

test('a PushConsumer with a tag expression gets exactly the selected messages', async () => {
  let producer; let consumer; let svc;
  const got = [];
  try {
    producer = await startProducer(g, [T_PUSH]);
    consumer = new sdk.PushConsumer({
      endpoints: g.endpoint, consumerGroup: 'FilterPush', subscriptions: new Map([[T_PUSH, 'TagA||タグ']]),
      messageListener: { consume(mv) { got.push(mv); return sdk.ConsumeResult.SUCCESS; } },
      requestTimeout: scaled(5000), logger: quietLogger,
    });
    await withTimeout(consumer.startup(), scaled(30000), 'PushConsumer.startup');
    svc = consumer.getConsumeService();
    const want = new Set();
    const tags = ['TagA', 'TagB', 'タグ', undefined, 'TagA '];
    for (let i = 0; i < 40; i++) {
      const tag = tags[i % tags.length];
      const r = await producer.send({ topic: T_PUSH, body: Buffer.from(`p${i}`), ...(tag ? { tag } : {}) });
      if (tag === 'TagA' || tag === 'タグ') want.add(r.messageId);
    }
    try {
      await waitFor(() => got.length >= want.size, 30000, 'the selected messages', 100);
    } catch { /* the assertions below say what is missing */ }
    await sleep(1500); // room for wrong extra deliveries to show up
    const wrong = got.filter((m) => !want.has(m.messageId)).map((m) => JSON.stringify(m.tag));
    assert.deepEqual(wrong, [], 'delivered messages the expression does not select');
    assert.deepEqual(got.map((m) => m.messageId).sort(), [...want].sort(), 'selected messages, each once');
    await shutdownPush(consumer, () => producer.send({ topic: T_PUSH, body: Buffer.from('sentinel'), tag: 'TagA' }));
  } finally {
    await shutdownQuietly(producer, consumer);
    svc?.logger?.close?.();
  }
});
