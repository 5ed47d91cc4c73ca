// Store cluster (issue 12): a leader keeps leading through a slow lease
// renewal.  etcd (private, one member) is paused with SIGSTOP for 3/4 of
// the lease TTL, so every renewal sent meanwhile is answered late (up to
// 3/4 TTL after its sending) and none is answered for that long; then
// SIGCONT.  The lease never expired in etcd (its last renewal before the
// pause was less than a renewal period before it), so the leader must not
// stand down: its lease renewed after the pause, and a TTL later the same
// leader, same epoch, no step-down on any node
// (gantry_store_step_downs_total).
// Before cluster/gt_etcd.c renewed at a fixed pace without waiting for
// (or cancelling at TTL/3) the exchange under way, a renewal answered
// later than TTL/3 left the next one TTL after the last answered one's
// sending, and the leader stood down ("no lease renewal answered").
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startCluster, stopCluster, leaderOf, epochOf, waitHealthy, clusterSupport, etcdGet,
  waitFor, TIME_SCALE, sleep,
} from './cluster_harness.mjs';
import { httpGet } from './harness.mjs';

// Long enough that a pause of 3/4 TTL outlasts the old code's tolerance
// (2/3 TTL) by a clear margin; scaled for slow builds.
const TTL_S = Math.max(6, Math.ceil(6 * TIME_SCALE));
let c;
let skip;

before(async () => {
  skip = await clusterSupport();
  if (skip) return;
  c = await startCluster({ name: 'leasetest', proxies: 0, leaseTtlS: TTL_S, logLevel: 'info' });
});

after(async () => {
  if (c) await stopCluster(c);
});

async function stepDowns(n) {
  const r = await httpGet(n.h.httpPort, '/metrics');
  return Number(r.body.match(/^gantry_store_step_downs_total (\d+)/m)?.[1] ?? NaN);
}

// Seconds left on the lease under `key`, per etcd (NaN if none).
async function leaseLeft(key) {
  const ep = c.etcd.endpoints[0];
  const r = await fetch(`http://${ep}/v3/kv/range`, {
    method: 'POST', body: JSON.stringify({ key: Buffer.from(key).toString('base64') }),
  });
  const lease = (await r.json()).kvs?.[0]?.lease;
  if (!lease) return NaN;
  const t = await fetch(`http://${ep}/v3/lease/timetolive`, {
    method: 'POST', body: JSON.stringify({ ID: lease }),
  });
  return Number((await t.json()).TTL ?? NaN);
}

test('etcd paused for 3/4 of the lease TTL: the leader keeps leading', async (t) => {
  if (skip) return t.skip(skip);
  await waitHealthy(c);
  const leader = await leaderOf(c);
  const epoch = await epochOf(c);
  const downs0 = await Promise.all(c.nodes.map(stepDowns));
  const etcdPid = c.etcd.members[0].pid;
  process.kill(etcdPid, 'SIGSTOP');
  try {
    await sleep(TTL_S * 750);
  } finally {
    process.kill(etcdPid, 'SIGCONT');
  }
  // A renewal sent after the pause lands: the lease is back to (nearly)
  // its whole TTL.
  const key = `/gantry/${c.name}/rs/0/leader`;
  await waitFor(async () => (await leaseLeft(key)) >= TTL_S - 2, 20000,
    'the leader lease renewed after the pause', 100);
  // Give the leader a lease TTL to misbehave: a holder that missed the
  // late answers would stand down within it.
  await sleep(TTL_S * 1000);
  assert.equal(await etcdGet(c.etcd, key), leader.id);
  assert.equal(await epochOf(c), epoch);
  const downs1 = await Promise.all(c.nodes.map(stepDowns));
  assert.deepEqual(downs1, downs0, 'step-downs per node');
  assert.doesNotMatch(leader.h.log(), /standing down/);
});
