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

// A node stopped (SIGTERM) while proxies hold MetaWatch streams: the
// streams end (half of them cancelled by their clients meanwhile), the
// node exits 0, and its log holds no sanitizer report.
// Before the fix the shutdown cleared the node's watch while the streams'
// interrupts were still reading it (ThreadSanitizer: data race between
// ss_main's shutdown and ss_meta_watch_interrupt), and freed it under them.
test('SIGTERM with MetaWatch streams open: they end and the node stops cleanly', async () => {
  const N = 16;
  for (let round = 0; round < 5; round++) {
    const S = await startStore({ logLevel: 'info', yaml: YAML });
    const clients = [];
    const calls = [];
    const ended = [];
    const opened = [];
    for (let i = 0; i < N; i++) {
      const c = new grpc.Client(S.endpoint, grpc.credentials.createInsecure());
      clients.push(c);
      const call = c.makeServerStreamRequest('/gantry.store.v1.Store/MetaWatch',
        (x) => x, (x) => x, Buffer.alloc(0), new grpc.Metadata(), {});
      calls.push(call);
      opened.push(new Promise((resolve) => call.once('data', resolve)));
      ended.push(new Promise((resolve) => {
        call.on('data', () => {});
        call.on('error', resolve);
        call.on('status', resolve);
      }));
    }
    await Promise.all(opened); // every stream got its snapshot: listed
    // Half the watchers go away as the node stops (proxies stopping too):
    // their cancels reach the node during its shutdown.
    const stopping = stopGantry(S); // throws on a sanitizer report
    for (let i = 0; i < N; i += 2) calls[i].cancel();
    const { code } = await stopping;
    assert.equal(code, 0, `round ${round}: the node exited ${code}`);
    await Promise.all(ended);
    for (const c of clients) c.close();
  }
});
