// A store node that leads again forgets the appends it answered before
// (issue 12; store-server/ss_append.c, ss_main.c engine_open): between
// two leaderships it followed another leader and cut its log to that
// leader's, so a retry of an earlier append (same idempotency key) must be
// appended afresh, not answered "deduplicated" with a message it no longer
// holds (an acknowledged send lost).  A private etcd and two gantry-store
// nodes (R = 2, min_insync 1):
//   n1 leads; n2 killed; an append with key K is written on n1 (its answer
//   waits for n2); n1 paused past its lease, n2 restarted: n2 leads epoch
//   2 without K; n1 continued: it stands down, follows n2 and cuts K off,
//   and is listed in sync again; n2 killed: n1 leads epoch 3; the append
//   with key K again: stored, and K's message is in the queue.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startStore, stopGantry, scaled, waitFor, httpGet, TIME_SCALE,
} from './harness.mjs';
import { startEtcd, stopEtcd, etcdGet } from './cluster_harness.mjs';
import { storeCall } from './store_rpc.mjs';

const NAME = 'dduptest';
const RS = `/gantry/${NAME}/rs/0`;
const TTL_S = Math.max(2, Math.ceil(2 * TIME_SCALE));
const LONG = scaled(TTL_S * 1000 + 20000);

let etcd;
const nodes = [];
const paused = new Set();

process.on('exit', () => {
  for (const pid of paused) { try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ } }
});

const call = (g, method, req, ms = 5000) => storeCall(g.endpoint, method, req, ms);

const yamlOf = (id) => `
topics:
  - {name: T, type: NORMAL, queues: 1}
cluster:
  etcd: ["${etcd.endpoints[0]}"]
  name: ${NAME}
  node_id: ${id}
  lease_ttl_s: ${TTL_S}
  replicas: 2
  min_insync: 1
  replica_lag_ms: ${scaled(60000)}
`;

async function metric(g, name) {
  const r = await httpGet(g.httpPort, '/metrics');
  return Number(r.body.match(new RegExp(`^${name} (\\d+)`, 'm'))?.[1] ?? NaN);
}
const pause = (g) => { process.kill(g.pid, 'SIGSTOP'); paused.add(g.pid); };
const cont = (g) => { process.kill(g.pid, 'SIGCONT'); paused.delete(g.pid); };
const leaderId = () => etcdGet(etcd, `${RS}/leader`);
const isrIds = async () => ((await etcdGet(etcd, `${RS}/isr`)) ?? '').split(':')[1]?.split(',') ?? [];
const byId = (id) => nodes.find((g) => g.id === id);
const appendK = (g) => call(g, 'Append', { topic: 'T', idempotency_key: 'K',
  messages: [{ body: Buffer.from('K'), queue_id: 0, born_ts_ms: Date.now() }] }, 10000);

after(async () => {
  for (const pid of paused) { try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ } }
  const errs = [];
  for (const g of nodes) await stopGantry(g).catch((e) => errs.push(e));
  if (etcd) await stopEtcd(etcd);
  if (errs.length) throw errs[0];
});

test('a node leading again appends a retried append afresh: its log was cut meanwhile', async () => {
  etcd = await startEtcd();
  for (const id of ['n1', 'n2']) {
    const g = await startStore({ yaml: yamlOf(id), logLevel: 'info', amqpListen: 'off' });
    g.id = id;
    nodes.push(g);
  }
  await waitFor(async () => (await leaderId()) && (await isrIds()).length === 2, LONG,
    'a leader, both in sync', 50);
  const a = byId(await leaderId());
  let b = nodes.find((g) => g !== a);
  await waitFor(async () => {
    const r = await call(a, 'PutTopic', { topic: { name: 'T', type: 'TOPIC_NORMAL', queue_count: 1,
      perm: 6 } });
    return !r.err && r.resp.err === 'OK';
  }, LONG, 'the topic declared', 100);
  const first = await call(a, 'Append', { topic: 'T', messages: [{ body: Buffer.from('first'),
    queue_id: 0, born_ts_ms: Date.now() }] });
  assert.equal(first.resp?.err, 'OK');
  const epoch1 = Number(await etcdGet(etcd, `${RS}/epoch`));

  // The leader's synced commitlog end, as replication ships it (asked as
  // a node holding nothing, which never counts as caught up).
  const synced = async () => (await call(a, 'ReplicaFetch', { epoch: epoch1, node_id: 'probe',
    cl_next: 0, max_bytes: 1, wait_ms: 0 })).resp?.cl_synced;
  const before = await synced();
  assert.ok(before > 64);
  // K is written on a only: its answer waits for b, which is killed (so
  // that no answer carrying K is left in its socket).
  await stopGantry(b, 'SIGKILL', { keepDir: true });
  const k1 = appendK(a);
  await waitFor(async () => (await synced()) > before, LONG, 'K written on the leader', 20);
  assert.equal(await metric(a, 'gantry_store_dedup_entries'), 1);
  // a paused past its lease, b back (still in sync: it was not reported
  // lagging): b leads the next epoch without K.
  pause(a);
  const b2 = await startStore({ dir: b.dir, grpcPort: b.grpcPort, httpPort: b.httpPort,
    yaml: yamlOf(b.id), logLevel: 'info', amqpListen: 'off' });
  b2.id = b.id;
  nodes[nodes.indexOf(b)] = b2;
  b = b2;
  await waitFor(async () => (await leaderId()) === b.id, LONG, `${b.id} leading`, 50);
  cont(a);
  await k1; // not answered OK: a stood down (UNAVAILABLE) or its call timed out
  // a follows b, cuts K off its log, and is listed in sync again.
  await waitFor(async () => (await metric(a, 'gantry_store_role')) === 2 &&
    (await isrIds()).includes(a.id), LONG, `${a.id} following and in sync`, 50);
  assert.match(a.log(), /truncating the commitlog/);
  // b killed: a leads again.
  await stopGantry(b, 'SIGKILL');
  nodes.splice(nodes.indexOf(b), 1);
  await waitFor(async () => (await leaderId()) === a.id &&
    (await metric(a, 'gantry_store_role')) === 1, LONG, `${a.id} leading again`, 50);
  assert.ok(Number(await etcdGet(etcd, `${RS}/epoch`)) >= epoch1 + 2);

  // The retry of K: stored now, not answered from before.
  const k2 = await waitFor(async () => {
    const r = await appendK(a);
    return !r.err && r.resp.err === 'OK' ? r.resp : false;
  }, LONG, 'the retry of K answered', 100);
  assert.equal(k2.deduplicated, false, 'answered from before the log was cut');
  const p = await call(a, 'Pull', { topic: 'T', queue: 0, offset: 0, max: 16 });
  assert.equal(p.resp?.err, 'OK');
  assert.deepEqual(p.resp.messages.map((m) => m.body.toString()), ['first', 'K']);
});
