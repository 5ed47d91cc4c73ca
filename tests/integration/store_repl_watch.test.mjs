// MetaWatch on a gantry-store node that does not lead (test-only static
// roles, GANTRY_TEST_REPL_ROLE; no etcd).  Proxies open their metadata
// watch on the node etcd names leader, which may not serve yet (being
// promoted) or any more: the call is refused UNAVAILABLE "not leader",
// and the node must live on.  Before the fix the refused call's interrupt
// (delivered when every call closes) read the node's metadata watch,
// which a node without an open engine does not have: the follower died of
// SIGSEGV (seen in the chaos leader-kill: the promoted node crashed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startStore, stopGantry, httpGet } from './harness.mjs';
import { yamlOf, grpc, waitFor } from './sdk_util.mjs';

const YAML = `${yamlOf({ topics: [{ name: 'WatchT', queues: 1 }], groups: [{ name: 'WatchG' }] })}
cluster:
  min_insync: 1
  replica_lag_ms: 2000
`;

function metaWatch(endpoint) {
  const client = new grpc.Client(endpoint, grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    const call = client.makeServerStreamRequest('/gantry.store.v1.Store/MetaWatch',
      (x) => x, (x) => x, Buffer.alloc(0), new grpc.Metadata(),
      { deadline: Date.now() + 10000 });
    call.on('data', () => {});
    call.on('error', (e) => { client.close(); resolve(e); });
    call.on('status', (s) => { if (s.code === grpc.status.OK) { client.close(); resolve(null); } });
  });
}

test('MetaWatch on a follower: UNAVAILABLE not leader, and the node lives on', async () => {
  let L; let F;
  try {
    L = await startStore({ logLevel: 'info', yaml: YAML,
      env: { GANTRY_TEST_REPL_ROLE: 'leader', GANTRY_TEST_REPL_ISR: 'n1' } });
    F = await startStore({ logLevel: 'info', yaml: YAML,
      env: { GANTRY_TEST_REPL_ROLE: 'follower', GANTRY_TEST_REPL_LEADER: L.endpoint } });
    let exited = null;
    F.exited.then((e) => { exited = e; });
    for (let i = 0; i < 5; i++) {
      const err = await metaWatch(F.endpoint);
      assert.equal(err?.code, grpc.status.UNAVAILABLE, `watch ${i}: ${err?.code} ${err?.details}`);
      assert.match(err.details, /not leader/);
    }
    // Still there: its HTTP endpoint answers and it did not exit.
    await waitFor(async () => (await httpGet(F.httpPort, '/healthz')).status === 200, 10000,
      'the follower answering /healthz');
    assert.equal(exited, null, `the follower exited: ${JSON.stringify(exited)}`);
    // The leader's watch works.
    const l = new grpc.Client(L.endpoint, grpc.credentials.createInsecure());
    const first = await new Promise((resolve) => {
      const call = l.makeServerStreamRequest('/gantry.store.v1.Store/MetaWatch',
        (x) => x, (x) => x, Buffer.alloc(0), new grpc.Metadata(), {});
      call.on('data', (d) => { call.cancel(); resolve(d); });
      call.on('error', (e) => resolve(e));
    });
    l.close();
    assert.ok(Buffer.isBuffer(first), `leader watch: ${first?.details ?? first}`);
  } finally {
    if (F) await stopGantry(F);
    if (L) await stopGantry(L);
  }
});
