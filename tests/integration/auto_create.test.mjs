// Unknown topics: rejected by default, created on first use (NORMAL, 8
// queues) only when server.auto_create_topics is true.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { require, startGantry, stopGantry, waitFor } from './harness.mjs';

const { Producer, SimpleConsumer } = require('rocketmq-client-nodejs');
const quiet = { info() {}, warn() {}, debug() {}, error() {}, trace() {} };

test('auto_create_topics: true creates an unknown topic on first use', async () => {
  const g = await startGantry({ serverYaml: '  auto_create_topics: true' });
  const producer = new Producer({ endpoints: g.endpoint, topics: ['Fresh_Topic'], logger: quiet });
  const consumer = new SimpleConsumer({ endpoints: g.endpoint, consumerGroup: 'GroupTest',
    subscriptions: new Map([['Fresh_Topic', '*']]), awaitDuration: 3000, logger: quiet });
  try {
    await producer.startup();
    const r = await producer.send({ topic: 'Fresh_Topic', body: Buffer.from('auto') });
    assert.ok(r.messageId);
    await consumer.startup();
    let msgs = [];
    await waitFor(async () => (msgs = await consumer.receive(4, 15000)).length > 0, 15000, 'the message received');
    assert.equal(msgs.length, 1);
    assert.equal(msgs[0].body.toString(), 'auto');
    await consumer.ack(msgs[0]);
  } finally {
    await consumer.shutdown().catch(() => {});
    await producer.shutdown().catch(() => {});
    await stopGantry(g);
  }
});

test('by default an unknown topic is refused, not created', async () => {
  const g = await startGantry();
  const producer = new Producer({ endpoints: g.endpoint, topics: ['Fresh_Topic'], logger: quiet });
  try {
    await assert.rejects(producer.startup(), (e) => {
      const chain = [];
      for (let x = e; x; x = x.cause) chain.push(String(x.message));
      return /40402|TOPIC_NOT_FOUND|does not exist/.test(chain.join(' | '));
    });
  } finally {
    await producer.shutdown().catch(() => {});
    await stopGantry(g);
  }
});
