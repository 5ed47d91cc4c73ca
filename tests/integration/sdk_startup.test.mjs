// The official RocketMQ Node.js SDK against gantry: startup must end
// promptly with a clear outcome, never hang.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { require, startGantry, stopGantry, scaled } from './harness.mjs';

const { Producer } = require('rocketmq-client-nodejs');

const quietLogger = {
  info() {}, warn() {}, debug() {}, error() {}, trace() {},
};

test('Producer.startup() against gantry ends promptly with a clear outcome', async () => {
  const g = await startGantry();
  const producer = new Producer({
    endpoints: g.endpoint, topics: ['TopicTest'], requestTimeout: scaled(3000), logger: quietLogger,
  });
  const t0 = Date.now();
  let outcome;
  let timer;
  try {
    await Promise.race([
      producer.startup().then(() => { outcome = 'started'; }),
      new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`startup hung for ${scaled(30000)} ms`)), scaled(30000)); }),
    ]);
  } catch (e) {
    outcome = e;
  }
  clearTimeout(timer);
  const ms = Date.now() - t0;
  console.log(`startup outcome after ${ms} ms: ${outcome === 'started' ? 'started' : outcome.message}`);
  assert.equal(outcome, 'started', String(outcome && outcome.stack));
  assert.ok(ms < scaled(20000), `startup took ${ms} ms`);
  await producer.shutdown().catch(() => {});
  const info = await stopGantry(g);
  assert.equal(info.code, 0);
});

test('Producer.startup() for an unknown topic fails promptly with TOPIC_NOT_FOUND', async () => {
  const g = await startGantry();
  const producer = new Producer({
    endpoints: g.endpoint, topics: ['NoSuchTopic'], requestTimeout: scaled(3000), logger: quietLogger,
  });
  const t0 = Date.now();
  let err;
  try {
    await producer.startup();
  } catch (e) {
    err = e;
  }
  const ms = Date.now() - t0;
  assert.ok(err, 'startup must fail');
  const chain = [];
  for (let e = err; e; e = e.cause) chain.push(String(e.message ?? e));
  assert.match(chain.join(' | '), /40402|TOPIC_NOT_FOUND|does not exist/i, chain.join(' | '));
  assert.ok(ms < scaled(20000), `startup took ${ms} ms`);
  await producer.shutdown().catch(() => {});
  const info = await stopGantry(g);
  assert.equal(info.code, 0);
});

test('a producer of a known and an unknown topic still finishes startup (settings reply repeated)', async () => {
  // Node SDK 1.0.8 waits for the settings reply only after fetching every
  // topic's route (here: 3 failing attempts for the unknown one) and drops
  // a reply that arrived earlier; gantry repeats the reply so it is seen.
  const g = await startGantry();
  const producer = new Producer({
    endpoints: g.endpoint, topics: ['TopicTest', 'NoSuchTopic'], requestTimeout: scaled(3000),
    logger: quietLogger,
  });
  let timer;
  try {
    const outcome = await Promise.race([
      producer.startup().then(() => 'started', (e) => `failed: ${e.message}`),
      new Promise((resolve) => { timer = setTimeout(() => resolve(`hung for ${scaled(25000)} ms`), scaled(25000)); }),
    ]);
    assert.equal(outcome, 'started');
    const r = await producer.send({ topic: 'TopicTest', body: Buffer.from('after startup') });
    assert.ok(r.messageId);
  } finally {
    clearTimeout(timer);
    await producer.shutdown().catch(() => {});
    await stopGantry(g);
  }
});
