// PushConsumer (auto_renew receives): a message is not redelivered while
// the consumer that holds it is alive, however long its listener takes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  sdk, quietLogger, startProducer, shutdownQuietly, yamlOf, withTimeout, sleep, scaled, shutdownPush,
} from './sdk_util.mjs';

const T_SLOW = 'PushSlowTopic';
const G_SLOW = 'PushSlowGroup';

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({ topics: [{ name: T_SLOW, queues: 2 }], groups: [{ name: G_SLOW }] }),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

test('a message a slow listener holds for 40 s is not redelivered while the consumer lives', async () => {
  const HOLD_MS = 40000;
  let producer; let consumer;
  const calls = []; // {body, attempt, at}
  let release;
  const released = new Promise((r) => { release = r; });
  let slowStarted;
  const started = new Promise((r) => { slowStarted = r; });
  const listener = {
    async consume(mv) {
      const body = mv.body.toString();
      calls.push({ body, attempt: mv.deliveryAttempt, at: Date.now() });
      if (body === 'slow') {
        slowStarted();
        await released;
      }
      return sdk.ConsumeResult.SUCCESS;
    },
  };
  let svc;
  try {
    producer = await startProducer(g, [T_SLOW]);
    consumer = new sdk.PushConsumer({
      endpoints: g.endpoint, consumerGroup: G_SLOW, subscriptions: new Map([[T_SLOW, '*']]),
      messageListener: listener, requestTimeout: scaled(5000), logger: quietLogger,
    });
    await withTimeout(consumer.startup(), scaled(30000), 'PushConsumer.startup');
    svc = consumer.getConsumeService();
    await producer.send({ topic: T_SLOW, body: Buffer.from('slow') });
    await withTimeout(started, scaled(30000), 'slow message delivered');
    const t0 = Date.now();
    // Other messages keep flowing meanwhile.
    for (let i = 0; i < 5; i++) {
      await producer.send({ topic: T_SLOW, body: Buffer.from(`fast-${i}`) });
      await sleep(HOLD_MS / 6);
    }
    const wait = t0 + HOLD_MS - Date.now();
    if (wait > 0) await sleep(wait);
    const slowCalls = calls.filter((c) => c.body === 'slow');
    assert.equal(slowCalls.length, 1, 'the held message was delivered again while the listener still held it: '
      + `${slowCalls.map((c) => `attempt ${c.attempt} at +${c.at - t0} ms`).join(', ')}`);
    const fast = calls.filter((c) => c.body.startsWith('fast-')).map((c) => c.body).sort();
    assert.deepEqual(fast, ['fast-0', 'fast-1', 'fast-2', 'fast-3', 'fast-4'], 'messages sent meanwhile');
    release();
    await sleep(1500); // a wrong redelivery after the ack would show up here
    assert.equal(calls.filter((c) => c.body === 'slow').length, 1, 'the slow message was redelivered after its ack');
    await shutdownPush(consumer, () => producer.send({ topic: T_SLOW, body: Buffer.from('sentinel') }));
  } finally {
    release();
    await shutdownQuietly(producer, consumer);
    svc?.logger?.close?.();
  }
});
