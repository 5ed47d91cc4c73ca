// Replication inside gantry-store (issue 12; docs/store-protocol.md, Replication), with the
// test-only static roles (GANTRY_TEST_REPL_ROLE; no etcd): a leader and
// two followers, SDK traffic through a proxy in remote mode pointed at the
// leader.  The followers' commitlog segments end byte-identical to the
// leader's records; a follower restarted as the leader of the next epoch
// on its own directory serves every acknowledged message and keeps the
// acks made before (nothing acked delivered again, nothing unacked lost).
// A follower's commitlog pages leave the page cache once written back (it
// does not read them while it follows).
// Gating: a send is answered once max(min_insync, a majority of the
// in-sync set) members hold it: with min_insync 2 of 3 and one follower
// stopped (SIGSTOP) it is answered; with both stopped it is not, and it is
// once one of them runs again; with min_insync 3 one stopped follower holds
// it back.  Store RPCs on a follower answer UNAVAILABLE "not leader".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startGantry, startStore, stopGantry } from './harness.mjs';
import {
  yamlOf, startProducer, startSimpleConsumer, shutdownQuietly, receiveAll, scaled, waitFor,
  grpc,
} from './sdk_util.mjs';

const T = 'ReplTopic';
const G = 'ReplGroup';
const YAML = yamlOf({ topics: [{ name: T, queues: 4 }], groups: [{ name: G }] });

function clusterYaml(id, minInsync) {
  return `${YAML}
cluster:
  node_id: ${id}
  min_insync: ${minInsync}
  replica_lag_ms: 2000
`;
}

function leader(id, isr, minInsync, extra = {}) {
  return startStore({
    logLevel: 'info', yaml: clusterYaml(id, minInsync), ...extra,
    env: { GANTRY_TEST_REPL_ROLE: 'leader', GANTRY_TEST_REPL_ISR: isr.join(','),
      GANTRY_TEST_REPL_EPOCH: String(extra.epoch ?? 1) },
  });
}

function follower(id, lead, extra = {}) {
  return startStore({
    logLevel: 'info', yaml: clusterYaml(id, 2), ...extra,
    env: { GANTRY_TEST_REPL_ROLE: 'follower', GANTRY_TEST_REPL_LEADER: lead.endpoint,
      GANTRY_TEST_REPL_EPOCH: String(extra.epoch ?? 1) },
  });
}

// Stops every process; then throws the first failure (a sanitizer report).
async function stopAll(...hs) {
  let first;
  for (const h of hs.filter(Boolean)) {
    try { process.kill(h.pid, 'SIGCONT'); } catch { /* gone */ }
    await stopGantry(h).catch((e) => { first ??= e; });
  }
  if (first) throw first;
}

// Leader n1 (in-sync set n1 n2 n3, min_insync as given), followers n2
// and n3, a proxy in remote mode on the leader and a producer on it, into
// `s` as each starts (so that the caller's finally stops what did:
// stopThree).
async function threeNodes(s, minInsync, extra = {}) {
  s.L = await leader('n1', ['n1', 'n2', 'n3'], minInsync, extra);
  s.F1 = await follower('n2', s.L, extra);
  s.F2 = await follower('n3', s.L, extra);
  s.P = await startGantry({ logLevel: 'info', yaml: YAML, remoteStore: s.L.endpoint });
  s.producer = await startProducer(s.P, [T]);
  return s;
}

async function stopThree(s) {
  await shutdownQuietly(s.producer);
  await stopAll(s.P, s.F2, s.F1, s.L);
}

function segs(node) {
  const d = path.join(node.dir, 'data', 'commitlog');
  if (!fs.existsSync(d)) return [];
  return fs.readdirSync(d).filter((n) => /^\d{20}$/.test(n)).sort();
}

function read(node, name) {
  return fs.readFileSync(path.join(node.dir, 'data', 'commitlog', name));
}

// The follower holds every record the leader has: same segments, each the
// leader's bytes up to where the leader's zero fill starts.
function sameLog(lead, f) {
  const a = segs(lead);
  const b = segs(f);
  if (a.length === 0 || a.join() !== b.join()) return false;
  for (const n of a) {
    const x = read(lead, n);
    const y = read(f, n);
    if (y.length > x.length || !x.subarray(0, y.length).equals(y)) return false;
    if (x.subarray(y.length).some((v) => v !== 0)) return false;
  }
  return true;
}

test('followers copy the leader byte for byte; a follower promoted serves every acknowledged message and keeps the acks', async () => {
  let L; let F1; let F2; let P; let P2; let producer; let consumer; let c2;
  try {
    // min_insync 3: every answer waits for both followers, so n2 alone
    // holds everything acknowledged when it is promoted below
    L = await leader('n1', ['n1', 'n2', 'n3'], 3);
    F1 = await follower('n2', L);
    F2 = await follower('n3', L);
    P = await startGantry({ logLevel: 'info', yaml: YAML, remoteStore: L.endpoint });
    producer = await startProducer(P, [T]);
    const sent = new Set();
    for (let i = 0; i < 60; i++) {
      const r = await producer.send({ topic: T, body: Buffer.from(`repl-${i}`), tag: 't' });
      sent.add(r.messageId);
    }
    consumer = await startSimpleConsumer(P, G, T);
    // 20 received and acked (answered only once both followers hold the acks)
    const acked = new Set();
    while (acked.size < 20) {
      const msgs = await consumer.receive(Math.min(8, 20 - acked.size), 30000);
      for (const m of msgs) {
        await consumer.ack(m);
        acked.add(m.messageId);
      }
    }
    await waitFor(() => sameLog(L, F1) && sameLog(L, F2), 20000,
      'followers hold the leader\'s commitlog');
    assert.ok(segs(F1).length > 0);
    for (const f of [F1, F2]) {
      assert.ok(!fs.existsSync(path.join(f.dir, 'data', 'cq')), 'a follower keeps no consume queues');
      assert.ok(!fs.existsSync(path.join(f.dir, 'data', 'tables.snap')));
      assert.ok(fs.existsSync(path.join(f.dir, 'data', 'state.log')), 'state log copied');
    }
    // The proxy's appends were answered only after both followers had them:
    // the leader dies now, without a clean stop.
    await shutdownQuietly(producer, consumer);
    producer = consumer = undefined;
    await stopGantry(P);
    P = undefined;
    await stopGantry(L, 'SIGKILL');
    L = undefined;
    await stopGantry(F2);
    F2 = undefined;
    await stopGantry(F1, 'SIGTERM', { keepDir: true });
    // n2 leads epoch 2 on its own directory (alone: min_insync 1).
    const L2 = await leader('n2', ['n2'], 1,
      { dir: F1.dir, grpcPort: F1.grpcPort, httpPort: F1.httpPort, epoch: 2 });
    F1 = L2;
    P2 = await startGantry({ logLevel: 'info', yaml: YAML, remoteStore: L2.endpoint });
    c2 = await startSimpleConsumer(P2, G, T);
    const want = [...sent].filter((id) => !acked.has(id));
    const got = await receiveAll(c2, want.length, 30000, { invisible: 60000 });
    const ids = new Set(got.map((m) => m.messageId));
    assert.deepEqual(want.filter((id) => !ids.has(id)), [], 'acknowledged messages lost');
    assert.deepEqual([...ids].filter((id) => acked.has(id)), [], 'acked messages delivered again');
    assert.equal(ids.size, want.length);
    assert.match(fs.readFileSync(path.join(L2.dir, 'data', 'epochs'), 'utf8'), /^1 \d+\n2 \d+\n$/);
  } finally {
    await shutdownQuietly(producer, consumer, c2);
    await stopAll(P, P2, F2, F1, L);
  }
});

// A send that must wait: not answered within a quiet period while
// `stopped` are stopped (SIGSTOP), answered once they run again.
async function heldBack(producer, stopped, body) {
  for (const h of stopped) process.kill(h.pid, 'SIGSTOP');
  let answered = false;
  const pending = producer.send({ topic: T, body: Buffer.from(body) })
    .then((r) => { answered = true; return r; });
  pending.catch(() => {});
  await new Promise((r) => setTimeout(r, scaled(1500)));
  assert.equal(answered, false, `answered while ${stopped.length} of 2 followers were stopped`);
  for (const h of stopped) process.kill(h.pid, 'SIGCONT');
  const r = await pending;
  assert.ok(r.messageId);
}

test('gating: a send is answered once max(min_insync, a majority) of the in-sync set hold it; store RPCs on a follower: UNAVAILABLE not leader', async () => {
  const s = {};
  try {
    const { F1, F2, producer } = await threeNodes(s, 2);
    await producer.send({ topic: T, body: Buffer.from('warm') });
    // n3 stopped: n1 and n2 are 2 of 3, the send is answered (within the
    // SDK's own timeout; the leader does not wait for n3)
    process.kill(F2.pid, 'SIGSTOP');
    try {
      const r = await producer.send({ topic: T, body: Buffer.from('quorum') });
      assert.ok(r.messageId);
    } finally {
      process.kill(F2.pid, 'SIGCONT');
    }
    // both stopped: the leader alone is not enough
    await heldBack(producer, [F1, F2], 'gated');
    // A store RPC on a follower: UNAVAILABLE "not leader".
    const client = new grpc.Client(F1.endpoint, grpc.credentials.createInsecure());
    const err = await new Promise((resolve) => {
      client.makeUnaryRequest('/gantry.store.v1.Store/GetTopics', (x) => x, (x) => x,
        Buffer.alloc(0), (e) => resolve(e));
    });
    client.close();
    assert.equal(err?.code, grpc.status.UNAVAILABLE);
    assert.match(err.details, /not leader/);
  } finally {
    await stopThree(s);
  }
});

test('gating with min_insync 3 of 3: one stopped follower holds a send back', async () => {
  const s = {};
  try {
    const { F2, producer } = await threeNodes(s, 3);
    await producer.send({ topic: T, body: Buffer.from('warm') });
    await heldBack(producer, [F2], 'gated');
  } finally {
    await stopThree(s);
  }
});

test('an old leader with a tail nobody else has rejoins as a follower of the next epoch: the tail is cut, the new leader\'s log copied', async () => {
  let A; let B; let P; let producer;
  try {
    // A leads epoch 1 alone in its in-sync set (its answers wait for nobody);
    // B follows, then stops fetching (SIGSTOP) while A takes more sends.
    A = await leader('n1', ['n1'], 1);
    B = await follower('n2', A);
    P = await startGantry({ logLevel: 'info', yaml: YAML, remoteStore: A.endpoint });
    producer = await startProducer(P, [T]);
    for (let i = 0; i < 10; i++) await producer.send({ topic: T, body: Buffer.from(`common-${i}`) });
    await waitFor(() => sameLog(A, B), 20000, 'B holds A\'s log');
    process.kill(B.pid, 'SIGSTOP');
    for (let i = 0; i < 10; i++) await producer.send({ topic: T, body: Buffer.from(`only-on-a-${i}`) });
    await shutdownQuietly(producer);
    producer = undefined;
    await stopGantry(P);
    P = undefined;
    await stopGantry(A, 'SIGKILL', { keepDir: true });
    // Killed while stopped: A answered B's parked fetch with the first of
    // those sends (a leader ships what it writes at once), but B never
    // read that answer, so nobody else has the tail.
    await stopGantry(B, 'SIGKILL', { keepDir: true });
    // B leads epoch 2 and takes other sends; A comes back as its follower.
    const B2 = await leader('n2', ['n2'], 1,
      { dir: B.dir, grpcPort: B.grpcPort, httpPort: B.httpPort, epoch: 2 });
    B = B2;
    P = await startGantry({ logLevel: 'info', yaml: YAML, remoteStore: B.endpoint });
    producer = await startProducer(P, [T]);
    for (let i = 0; i < 10; i++) await producer.send({ topic: T, body: Buffer.from(`epoch2-${i}`) });
    const A2 = await follower('n1', B, { dir: A.dir, grpcPort: A.grpcPort, httpPort: A.httpPort, epoch: 2 });
    A = A2;
    // the history is kept right after the bytes it covers are written
    const epochs = () => {
      try { return fs.readFileSync(path.join(A.dir, 'data', 'epochs'), 'utf8'); } catch { return ''; }
    };
    await waitFor(() => sameLog(B, A) && /^1 \d+\n2 \d+\n$/.test(epochs()), 20000,
      'A truncated and copied B\'s log and history');
    assert.match(A.log(), /truncating the commitlog/);
    const log = Buffer.concat(segs(A).map((n) => read(A, n))).toString('latin1');
    assert.ok(!log.includes('only-on-a-'), 'A kept the tail nobody else had');
    assert.ok(log.includes('epoch2-9'));
  } finally {
    await shutdownQuietly(producer);
    await stopAll(P, A, B);
  }
});

// Bytes of a node's commitlog in the page cache, and in the files
// (fincore, util-linux).
function cached(node, names = segs(node)) {
  let res = 0; let size = 0;
  for (const n of names) {
    const out = execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES,SIZE',
      path.join(node.dir, 'data', 'commitlog', n)], { encoding: 'utf8' });
    const [r, s] = out.trim().split(/\s+/).map(Number);
    res += r; size += s;
  }
  return { res, size };
}

test('a follower\'s commitlog leaves the page cache once written back', async () => {
  const s = {};
  const MiB = 1 << 20;
  try {
    const { F1, F2, producer } = await threeNodes(s, 3);
    // 36 MiB, answered once both followers hold it (min_insync 3)
    for (let i = 0; i < 12; i++) {
      await producer.send({ topic: T, body: Buffer.alloc(3 * MiB, 97 + i) });
    }
    for (const f of [F1, F2]) {
      const { res, size } = cached(f);
      assert.ok(size >= 36 * MiB, `${f.dir}: ${size} bytes of commitlog`);
      // the newest 16 MiB or so may stay (written since the last step or
      // the one before); before the change all 36 MiB did
      assert.ok(res <= size / 2,
        `follower keeps ${(res / MiB).toFixed(1)} of ${(size / MiB).toFixed(1)} MiB of its commitlog cached`);
    }
  } finally {
    await stopThree(s);
  }
});

test('a follower\'s completed segment leaves the page cache, its tail too', async () => {
  const s = {};
  const MiB = 1 << 20;
  try {
    // 16 MiB segments: 36 MiB of 3 MiB messages fill two and start a third
    const { F1, F2, producer } = await threeNodes(s, 3, { storeYaml: `  segment_size: ${16 * MiB}` });
    for (let i = 0; i < 12; i++) {
      await producer.send({ topic: T, body: Buffer.alloc(3 * MiB, 97 + i) });
    }
    for (const f of [F1, F2]) {
      const done = segs(f).slice(0, -1);
      assert.ok(done.length >= 2, `${f.dir}: segments ${segs(f).join(' ')}`);
      const { res, size } = cached(f, done);
      assert.ok(size >= 28 * MiB, `${f.dir}: ${size} bytes in completed segments`);
      // before: the last 8-16 MiB written to each stayed
      assert.ok(res < MiB,
        `follower keeps ${(res / MiB).toFixed(1)} of ${(size / MiB).toFixed(1)} MiB of its completed segments cached`);
    }
  } finally {
    await stopThree(s);
  }
});
