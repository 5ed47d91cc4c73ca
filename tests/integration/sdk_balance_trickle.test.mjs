// Message-granularity balancing at a low message rate: messages sent one
// at a time to a 1-queue topic with four SimpleConsumers of one group all
// long-polling.  Each message wakes one waiting consumer; over 100
// messages every consumer must get a fair share (a last-parked-first-woken
// order hands every message to the same consumer).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  startProducer, startSimpleConsumer, shutdownQuietly, yamlOf, sleep, waitFor,
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
    const asked = new Array(C).fill(false);
    loops = consumers.map(async (c, ci) => {
      while (!stop) {
        asked[ci] = true;
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
    // Every consumer has asked; the grace lets their polls park.
    await waitFor(() => asked.every(Boolean), 10000, 'every consumer receiving');
    await sleep(500);
    for (let i = 0; i < N; i++) {
      await producer.send({ topic: T, body: Buffer.from(`t${i}`) });
      await sleep(10);
    }
    try {
      await waitFor(() => owner.size >= N, 30000, `all ${N} messages consumed`, 50);
    } catch { /* the assertions below say what is missing */ }
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
