// Message-granularity load balancing: one queue, four SimpleConsumers of
// one group.  Every message is consumed exactly once and every consumer
// gets a fair share (queue-level balancing would starve three of them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  startProducer, startSimpleConsumer, shutdownQuietly, yamlOf, sleep, waitFor,
} from './sdk_util.mjs';

const T = 'BalanceTopic';
const G = 'BalanceGroup';
const N = 200;
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

test(`1-queue topic, ${C} consumers of one group: each of ${N} messages once, fair shares`, async () => {
  let producer;
  const consumers = [];
  const owner = new Map(); // messageId -> consumer index
  const dup = [];
  const counts = new Array(C).fill(0);
  const errors = [];
  let stop = false;
  try {
    producer = await startProducer(g, [T]);
    for (let i = 0; i < C; i++) consumers.push(await startSimpleConsumer(g, G, T, { awaitDuration: 2000 }));
    const sentIds = new Set();
    // Consumers poll with small batches and spend a little time per batch
    // (as real consumers do) while the producer sends.
    const loops = consumers.map(async (c, ci) => {
      while (!stop) {
        let msgs;
        try {
          msgs = await c.receive(4, 60000);
        } catch (e) {
          errors.push(`consumer ${ci}: ${e.message}`);
          await sleep(200);
          continue;
        }
        for (const m of msgs) {
          if (owner.has(m.messageId)) dup.push(`${m.messageId} to ${owner.get(m.messageId)} and ${ci}`);
          else { owner.set(m.messageId, ci); counts[ci]++; }
          await c.ack(m);
        }
        if (msgs.length) await sleep(30);
      }
    });
    for (let i = 0; i < N; i += 20) {
      const batch = [];
      for (let k = i; k < i + 20 && k < N; k++) batch.push(producer.send({ topic: T, body: Buffer.from(`m${k}`) }));
      for (const r of await Promise.all(batch)) sentIds.add(r.messageId);
    }
    try {
      await waitFor(() => owner.size >= N || dup.length > 0, 60000, `all ${N} messages consumed`, 100);
    } catch { /* the assertions below say what is missing */ }
    stop = true;
    await Promise.all(loops);
    assert.deepEqual(errors.slice(0, 5), [], 'receive errors');
    assert.deepEqual(dup.slice(0, 5), [], 'messages consumed twice');
    assert.equal(owner.size, N, `consumed ${owner.size} of ${N}`);
    for (const id of owner.keys()) assert.ok(sentIds.has(id), `unknown message ${id}`);
    console.log(`shares: ${counts.join(' / ')}`);
    for (let i = 0; i < C; i++) {
      assert.ok(counts[i] >= N * 0.1, `consumer ${i} got ${counts[i]} of ${N} (shares ${counts.join('/')})`);
    }
  } finally {
    stop = true;
    await shutdownQuietly(producer, ...consumers);
  }
});
