// A follower's watchdog on its ReplicaStream (issue 12;
// store-server/ss_repl_follow.c, follow_main), with the test-only static
// roles (GANTRY_TEST_REPL_ROLE; no etcd).  The "leader" here is the test:
// a gRPC server that takes the stream and its requests and never answers,
// while its connection stays healthy (HTTP/2 pings are answered), as a
// leader process whose replication stopped but whose sockets live would.
// The follower must give the stream up once nothing came back for its
// long poll (wait_ms) plus 10 s, and open another: it never waits forever.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startStore, stopGantry } from './harness.mjs';
import { yamlOf, grpc, waitFor } from './sdk_util.mjs';

// replica_lag_ms 2000: the follower's long poll (wait_ms) is a quarter of it.
const YAML = `${yamlOf({ topics: [{ name: 'StallT', queues: 1 }], groups: [{ name: 'StallG' }] })}
cluster:
  node_id: f1
  min_insync: 1
  replica_lag_ms: 2000
`;
const WAIT_MS = 500;

const raw = (b) => b;

async function silentLeader() {
  const streams = [];
  const server = new grpc.Server();
  server.addService({
    ReplicaStream: {
      path: '/gantry.store.v1.Store/ReplicaStream', requestStream: true, responseStream: true,
      requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw,
    },
  }, {
    ReplicaStream: (call) => {
      const s = { opened: Date.now(), requests: 0, cancelled: 0 };
      streams.push(s);
      call.on('data', () => { s.requests++; });
      call.on('cancelled', () => { s.cancelled = Date.now(); });
      call.on('error', () => {});
    },
  });
  const port = await new Promise((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(),
      (e, p) => (e ? reject(e) : resolve(p)));
  });
  return { server, streams, endpoint: `127.0.0.1:${port}` };
}

test('a leader that never answers: the follower cancels its ReplicaStream after wait_ms + 10 s and opens another', { timeout: 300000 }, async () => {
  const lead = await silentLeader();
  let f;
  try {
    f = await startStore({
      logLevel: 'info', yaml: YAML,
      env: { GANTRY_TEST_REPL_ROLE: 'follower', GANTRY_TEST_REPL_LEADER: lead.endpoint,
        GANTRY_TEST_REPL_EPOCH: '1' },
    });
    const s = lead.streams;
    await waitFor(() => s.length >= 1 && s[0].requests >= 1, 10000,
      'the follower opens a ReplicaStream and sends its first request');
    // Only one request while the first is unanswered (one fetch at a time).
    await waitFor(() => s[0].cancelled > 0, WAIT_MS + 10000 + 20000,
      'the unanswered stream is cancelled by the follower');
    const after = s[0].cancelled - s[0].opened;
    assert.ok(after >= WAIT_MS + 10000 - 200,
      `cancelled ${after} ms after it opened: not before wait_ms + 10 s`);
    assert.equal(s[0].requests, 1, 'one request on the stream, never a second unanswered one');
    await waitFor(() => s.length >= 2 && s[1].requests >= 1, 10000,
      'the follower opens another stream and asks again');
  } finally {
    if (f) await stopGantry(f);
    lead.server.forceShutdown();
  }
});
