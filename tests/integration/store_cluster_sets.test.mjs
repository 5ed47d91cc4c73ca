// Several replica sets (issue 12, store-server/ss_cluster.c membership;
// docs/cluster.md): on a private etcd (tests/integration/cluster_harness.mjs)
// six gantry-store nodes with replicas 3 form rs/0 (n1..n3) and rs/1
// (n4..n6), each with exactly one leader at epoch 1; every node says its
// set on /metrics (gantry_store_replica_set) and in GetInfo.replica_set;
// the leader of rs/1 serves rs/1's data.  SIGKILL of rs/1's leader: a
// member of rs/1's in-sync set leads epoch 2 of rs/1 and serves the data
// while rs/0 keeps its leader and epoch; the killed node, restarted,
// returns to rs/1 (no third set appears) and rejoins its in-sync set.
// Six nodes started at once (racing for the member lists) still make two
// sets of three.  R=1: one set per node, each its own leader.  All along,
// no two nodes report leading one epoch of one set (every node's /metrics
// sampled).  No proxies: the store protocol is called directly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { httpGet, sleep } from './harness.mjs';
import {
  startCluster, stopCluster, setsOf, leaderOf, epochOf, isrOf, roleOf, signalNode, restartNode,
  waitFor, waitHealthy, waitNewLeader, LEASE_TTL_S,
} from './cluster_harness.mjs';
import { storeCall } from './store_rpc.mjs';

const call = (node, method, req) => storeCall(node.h.endpoint, method, req, 5000);

// Retries a call on set k's leader until it is answered OK.
async function leaderCall(c, k, method, req) {
  return waitFor(async () => {
    const l = await leaderOf(c, k);
    if (!l) return false;
    const r = await call(l, method, req);
    return !r.err && r.resp.err === 'OK' ? r.resp : false;
  }, LEASE_TTL_S * 1000 + 10000, `${method} answered OK by the leader of rs/${k}`, 100);
}

// Background check over the clusters running: no two nodes report leading
// one epoch of one set.
const clusters = [];
const seen = new Map(); // `${name}/${set}/${epoch}` -> Set of ids
let sampling = true;
let samples = 0;
async function sampler() {
  while (sampling) {
    for (const c of clusters) {
      await Promise.all(c.nodes.map(async (n) => {
        if (!n.h || n.h.proc.exitCode !== null || n.h.proc.signalCode !== null) return;
        const r = await roleOf(n);
        if (!r || r.role !== 1) return;
        const key = `${c.name}/${r.set}/${r.epoch}`;
        if (!seen.has(key)) seen.set(key, new Set());
        seen.get(key).add(n.id);
      }));
    }
    samples++;
    await sleep(50);
  }
}
let samplerDone;

// Every running node of set k agrees with etcd: the leader reports role 1
// at `epoch`, the others role 2 at `epoch`, all of them set k.
async function settled(c, k, epoch) {
  return waitFor(async () => {
    const s = (await setsOf(c)).find((x) => x.k === k);
    if (!s || !s.leader || s.epoch !== epoch) return false;
    for (const n of c.nodes.filter((x) => s.members.includes(x.id))) {
      if (n.h.proc.exitCode !== null || n.h.proc.signalCode !== null) continue;
      const r = await roleOf(n);
      if (!r || r.set !== k || r.epoch !== epoch || r.role !== (n.id === s.leader ? 1 : 2)) return false;
    }
    return c.nodes.find((n) => n.id === s.leader);
  }, LEASE_TTL_S * 1000 + 15000, `rs/${k} settled at epoch ${epoch}`, 50);
}

let c6;
before(async () => {
  samplerDone = sampler();
  c6 = await startCluster({ name: 'sets', nodes: 6, replicas: 3, proxies: 0 });
  clusters.push(c6);
});

after(async () => {
  sampling = false;
  await samplerDone;
  const errs = [];
  for (const c of clusters) await stopCluster(c).catch((e) => errs.push(e));
  if (errs.length) throw errs[0];
});

test('six nodes with R=3: rs/0 and rs/1, one leader each at epoch 1', async () => {
  const sets = await setsOf(c6);
  assert.deepEqual(sets.map((s) => [s.k, [...s.members].sort()]),
    [[0, ['n1', 'n2', 'n3']], [1, ['n4', 'n5', 'n6']]]);
  for (const k of [0, 1]) {
    const l = await settled(c6, k, 1);
    assert.equal(l.set, k);
    await waitHealthy(c6, 30000, k);
    assert.match((await setsOf(c6))[k].history, /^1@\d+$/);
  }
  for (const n of c6.nodes) {
    const m = await httpGet(n.h.httpPort, '/metrics');
    assert.match(m.body, new RegExp(`^gantry_store_replica_set ${n.set}$`, 'm'));
    const r = await call(n, 'GetInfo', {});
    assert.equal(r.err, null);
    assert.equal(r.resp.replica_set, n.set);
  }
  // Each leader serves its own set's data; the sets do not share it.
  await leaderCall(c6, 1, 'PutTopic', { topic: { name: 'S1', type: 'TOPIC_NORMAL', queue_count: 1, perm: 6 } });
  const a = await leaderCall(c6, 1, 'Append', { topic: 'S1', messages: ['a', 'b'].map((b) => ({
    body: Buffer.from(b), queue_id: 0, born_ts_ms: Date.now() })) });
  assert.equal(a.items.length, 2);
  const t0 = await call(await leaderOf(c6, 0), 'GetTopics', { name: 'S1' });
  assert.ok(!t0.err);
  assert.equal(t0.resp.err, 'ENOTFOUND');
});

test('SIGKILL of the leader of rs/1: rs/1 elects from its in-sync set at epoch 2, rs/0 untouched', async () => {
  await waitHealthy(c6, 30000, 1);
  const l0 = await leaderOf(c6, 0);
  const old = await leaderOf(c6, 1);
  const isr = (await isrOf(c6, 1)).ids;
  assert.equal(old.set, 1);
  const downs = async (n) => Number((await httpGet(n.h.httpPort, '/metrics')).body
    .match(/^gantry_store_step_downs_total (\d+)/m)?.[1]);
  const rs0 = c6.nodes.filter((x) => x.set === 0);
  const downs0 = await Promise.all(rs0.map(downs));
  const t0 = Date.now();
  await signalNode(old, 'SIGKILL');
  const l1 = await waitNewLeader(c6, old, LEASE_TTL_S * 1000 + 15000, 1);
  console.log(`FAILOVER rs/1 sigkill: ${Date.now() - t0} ms to a new leader (lease ttl ${LEASE_TTL_S} s)`);
  assert.ok(isr.includes(l1.id) && l1.set === 1, `${l1.id} not in rs/1's in-sync set ${isr}`);
  assert.equal(await settled(c6, 1, 2), l1);
  assert.equal((await isrOf(c6, 1)).epoch, 2);
  const p = await leaderCall(c6, 1, 'Pull', { topic: 'S1', queue: 0, offset: 0, max: 8 });
  assert.deepEqual(p.messages.map((m) => m.body.toString()), ['a', 'b']);
  // rs/0: same leader, same epoch, nobody stood down.
  assert.equal(await leaderOf(c6, 0), l0);
  assert.equal(await epochOf(c6, 0), 1);
  assert.deepEqual(await Promise.all(rs0.map(downs)), downs0);
  for (const n of rs0) assert.equal((await roleOf(n)).epoch, 1);
  // The killed node comes back to rs/1 and rejoins its in-sync set.
  await restartNode(c6, old);
  await waitFor(async () => (await roleOf(old))?.set === 1, 15000, `${old.id} back in rs/1`);
  await settled(c6, 1, 2);
  await waitFor(async () => (await isrOf(c6, 1)).ids.includes(old.id), 20000, `${old.id} back in sync`);
  const sets = await setsOf(c6);
  assert.deepEqual(sets.map((s) => s.k), [0, 1]);
  assert.deepEqual([...sets[1].members].sort(), ['n4', 'n5', 'n6']);
  const r = await call(old, 'GetInfo', {});
  assert.equal(r.resp.replica_set, 1);
});

test('six nodes started at once still make two sets of three', async () => {
  // The first cluster is done with: never twelve nodes at once.
  await stopCluster(c6);
  clusters.splice(clusters.indexOf(c6), 1);
  const c = await startCluster({ name: 'race', nodes: 6, replicas: 3, proxies: 0, together: true });
  clusters.push(c);
  const sets = await setsOf(c);
  assert.deepEqual(sets.map((s) => [s.k, s.members.length]), [[0, 3], [1, 3]]);
  const all = sets.flatMap((s) => s.members).sort();
  assert.deepEqual(all, ['n1', 'n2', 'n3', 'n4', 'n5', 'n6']);
  for (const k of [0, 1]) await settled(c, k, 1);
  for (const n of c.nodes) assert.equal((await roleOf(n)).set, n.set);
  await stopCluster(c);
  clusters.splice(clusters.indexOf(c), 1);
});

test('R=1: one replica set per node, each its own leader', async () => {
  const c = await startCluster({ name: 'solo', nodes: 3, replicas: 1, minInsync: 1, proxies: 0,
    together: true });
  clusters.push(c);
  const sets = await setsOf(c);
  assert.deepEqual(sets.map((s) => [s.k, s.members.length]), [[0, 1], [1, 1], [2, 1]]);
  for (const s of sets) {
    const l = await settled(c, s.k, 1);
    assert.deepEqual(s.members, [l.id]);
    assert.equal((await roleOf(l)).set, s.k);
  }
  await stopCluster(c);
  clusters.splice(clusters.indexOf(c), 1);
});

test('no two nodes ever reported leading the same epoch of one set', async () => {
  sampling = false;
  await samplerDone;
  assert.ok(samples > 10);
  for (const [key, ids] of seen) assert.equal(ids.size, 1, `${key} had leaders ${[...ids]}`);
});
