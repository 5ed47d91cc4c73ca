// Acknowledging at a quorum and electing by position (issue 12;
// store-server/ss_repl.c "Gating", cluster/gt_elect.h "Positions",
// docs/cluster.md): a private etcd and three real gantry-store nodes (R = 3,
// min_insync 2, no lag report during the test).
//
// With one follower (B) stopped, writes are answered once the leader and
// the other follower (A) hold them: B stays in the in-sync set and lacks
// them.  The leader is then killed and B continues at once: both A and B
// may stand, but only A holds every acknowledged write, and A must win;
// the new leader serves every acknowledged write, and B catches up and is
// listed in sync again.
//
// Then, with all three back, the leader and a follower are killed at once:
// the one left may not campaign (one position of the two it needs), which
// it counts in gantry_store_election_reads_total{outcome=
// "waiting_for_positions"}; once a killed node returns, the set elects and
// the new leader serves every acknowledged write.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { scaled, waitFor, TIME_SCALE, httpGet } from './harness.mjs';
import {
  startCluster, stopCluster, waitHealthy, leaderOf, followersOf, roleOf, epochOf,
  isrOf, signalNode, waitNewLeader, restartNode, T,
} from './cluster_harness.mjs';
import { storeCall } from './store_rpc.mjs';

const WRITES = 20;
let c;
let killed; // the first test's leader, killed and not restarted there

after(async () => {
  if (c) await stopCluster(c);
});

const call = (node, method, req, ms = 10000) => storeCall(node.h.endpoint, method, req, ms);

const append = (node, body) => call(node, 'Append', {
  topic: T, messages: [{ body: Buffer.from(body), queue_id: 0, born_ts_ms: Date.now() }],
});

async function queueEnd(node) {
  const r = await call(node, 'QueryOffset', { topic: T, queue: 0, kind: 'OFFSET_END' });
  assert.equal(r.err, null, `QueryOffset: ${r.err?.details}`);
  assert.equal(r.resp.err, 'OK');
  return r.resp.offset;
}

test('a write is answered by a quorum; the member holding every acknowledged write wins the next election', async () => {
  c = await startCluster({
    name: 'electtest', proxies: 0, replicaLagMs: scaled(60000),
    // B is stopped for a few writes: well inside its lease
    leaseTtlS: Math.ceil(6 * TIME_SCALE),
  });
  await waitHealthy(c);
  const L = await leaderOf(c);
  const [A, B] = followersOf(c, L);
  const epoch = await epochOf(c);
  for (const f of [A, B]) {
    await waitFor(async () => {
      const r = await roleOf(f);
      return r && r.role === 2 && r.epoch === epoch;
    }, 30000, `${f.id} following`, 50);
  }
  let last;
  await waitFor(async () => {
    last = await call(L, 'PutTopic', { topic: { name: T, type: 'TOPIC_NORMAL',
      queue_count: 1, perm: 6 } });
    if (last.err || last.resp.err !== 'OK') return false;
    last = await append(L, 'warm');
    return !last.err && last.resp.err === 'OK';
  }, 30000, 'a write answered', 100).catch((e) => {
    throw new Error(`${e.message}: ${last?.err?.details ?? JSON.stringify(last?.resp)}`);
  });
  const before = await queueEnd(L);

  await signalNode(B, 'SIGSTOP');
  let resumed = false;
  try {
    for (let i = 0; i < WRITES; i++) {
      const r = await append(L, `quorum-${i}`);
      assert.equal(r.err, null, `write ${i} with ${B.id} stopped: ${r.err?.details} ` +
        '(answers must not wait for every in-sync member)');
      assert.equal(r.resp.err, 'OK');
    }
    assert.ok((await isrOf(c)).ids.includes(B.id), `${B.id} still listed in sync`);
    assert.equal(await queueEnd(L), before + WRITES);
    await signalNode(L, 'SIGKILL');
    killed = L;
    await signalNode(B, 'SIGCONT');
    resumed = true;
  } finally {
    if (!resumed) await signalNode(B, 'SIGCONT');
  }

  const L2 = await waitNewLeader(c, L, 120000);
  assert.equal(L2.id, A.id, `${L2.id} won the election without the writes acknowledged ` +
    `while it was stopped (${A.id} held them)`);
  assert.ok(await epochOf(c) > epoch);
  // B logs its position once etcd has taken it, which may be after A read it
  await waitFor(() => /position for the election after epoch/.test(B.h.log()), 10000,
    'B put its position', 50);
  // every acknowledged write is served by the new leader
  await waitFor(async () => {
    const r = await call(L2, 'QueryOffset', { topic: T, queue: 0, kind: 'OFFSET_END' });
    return !r.err && r.resp.err === 'OK';
  }, 30000, 'the new leader serving', 100);
  assert.equal(await queueEnd(L2), before + WRITES, 'acknowledged writes lost');
  // B catches up and is listed again; a write goes through
  await waitFor(async () => (await isrOf(c)).ids.includes(B.id) &&
    (await isrOf(c)).ids.includes(A.id), 60000, `${B.id} listed in sync again`, 100);
  const r = await append(L2, 'after');
  assert.equal(r.err, null);
  assert.equal(r.resp.err, 'OK');
});

// gantry_store_election_reads_total{outcome=...} of a node, by outcome.
async function electionReads(node) {
  const r = await httpGet(node.h.httpPort, '/metrics');
  assert.equal(r.status, 200);
  const out = {};
  for (const m of r.body.matchAll(/^gantry_store_election_reads_total\{outcome="(\w+)"\} (\d+)$/mg))
    out[m[1]] = Number(m[2]);
  return out;
}

test('one member of three left waits, counting its reads, and the set elects when a second returns', async () => {
  assert.ok(c && killed, 'the first test ran');
  await restartNode(c, killed);
  await waitHealthy(c);
  const L = await leaderOf(c);
  const [F1, F2] = followersOf(c, L);
  const r0 = await append(L, 'before-two-faults');
  assert.equal(r0.err, null, `write: ${r0.err?.details}`);
  assert.equal(r0.resp.err, 'OK');
  const end = await queueEnd(L);
  const reads0 = await electionReads(F2);
  assert.equal(typeof reads0.waiting_for_positions, 'number',
    `no waiting_for_positions outcome in ${JSON.stringify(reads0)}`);

  await signalNode(L, 'SIGKILL');
  await signalNode(F1, 'SIGKILL');
  await waitFor(async () => (await electionReads(F2)).waiting_for_positions >
    reads0.waiting_for_positions, 60000, `${F2.id} counting reads that wait for positions`, 100);
  assert.notEqual((await roleOf(F2)).role, 1, `${F2.id} leads alone (min_insync 2)`);

  await restartNode(c, F1);
  const L2 = await waitNewLeader(c, L, 120000);
  assert.ok(L2 === F1 || L2 === F2, `leader ${L2.id}`);
  await waitFor(async () => {
    const r = await call(L2, 'QueryOffset', { topic: T, queue: 0, kind: 'OFFSET_END' });
    return !r.err && r.resp.err === 'OK';
  }, 30000, 'the new leader serving', 100);
  assert.equal(await queueEnd(L2), end, 'acknowledged writes lost');
});
