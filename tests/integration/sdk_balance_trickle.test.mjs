// Message-granularity balancing at a low message rate: messages sent one
// at a time to a 1-queue topic with four SimpleConsumers of one group all
// long-polling.  Each message wakes one waiting consumer; over 100
// messages every consumer must get a fair share (a last-parked-first-woken
// order hands every message to the same consumer).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  startProducer, startSimpleConsumer, shutdownQuietly, yamlOf, sleep,
} from './sdk_util.mjs';

const T = 'TrickleTopic';
const G = 'TrickleGroup';
const N = 100;
const C = 4;

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({ topics: [{ name: T, queues: 1 }], groups: [{ name: G }] }),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

test(`${N} messages sent one at a time reach all ${C} waiting consumers fairly`, async () => {
  let producer;
  const consumers = [];
  const owner = new Map();
  const dup = [];
  const counts = new Array(C).fill(0);
  const errors = [];
  let stop = false;
  let loops = [];
  try {
    producer = await startProducer(g, [T]);
    for (let i = 0; i < C; i++) consumers.push(await startSimpleConsumer(g, G, T, { awaitDuration: 5000 }));
    loops = consumers.map(async (c, ci) => {
      while (!stop) {
        try {
          for (const m of await c.receive(16, 60000)) {
            if (owner.has(m.messageId)) dup.push(m.messageId);
            else { owner.set(m.messageId, ci); counts[ci]++; }
            await c.ack(m);
          }
        } catch (e) {
          errors.push(`consumer ${ci}: ${e.message}`);
          await sleep(200);
        }
      }
    });
    await sleep(500); // all four are parked
    for (let i = 0; i < N; i++) {
      await producer.send({ topic: T, body: Buffer.from(`t${i}`) });
      await sleep(10);
    }
    const deadline = Date.now() + 30000;
    while (owner.size < N && Date.now() < deadline) await sleep(50);
    stop = true;
    await Promise.all(loops);
    assert.deepEqual(errors.slice(0, 5), []);
    assert.deepEqual(dup, [], 'messages consumed twice');
    assert.equal(owner.size, N, `consumed ${owner.size} of ${N}`);
    console.log(`shares: ${counts.join(' / ')}`);
    for (let i = 0; i < C; i++) {
      assert.ok(counts[i] >= N * 0.1, `consumer ${i} got ${counts[i]} of ${N} (shares ${counts.join('/')})`);
    }
  } finally {
    stop = true;
    await Promise.all(loops);
    await shutdownQuietly(producer, ...consumers);
  }
});
