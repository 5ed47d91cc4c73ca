// grpc.health.v1.Health on the gRPC port (rpc/px_rpc_health.c), driven by
// grpc-js with a client generated from our apis/grpc/health/v1/health.proto:
// Check for the server, a registered service and an unknown one (NOT_FOUND,
// as the gRPC health-checking spec says), and Watch, which sees SERVING and
// then NOT_SERVING when a SIGTERM starts the drain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { require, startGantry, stopGantry, waitFor } from './harness.mjs';

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const here = path.dirname(fileURLToPath(import.meta.url));
const def = protoLoader.loadSync('grpc/health/v1/health.proto', {
  includeDirs: [path.resolve(here, '../../apis')], enums: String,
});
const { Health } = grpc.loadPackageDefinition(def).grpc.health.v1;

function check(client, service) {
  return new Promise((resolve) => {
    client.Check({ service }, { deadline: Date.now() + 10000 }, (err, resp) => resolve({ err, resp }));
  });
}

test('Check: SERVING for "" and registered services, NOT_FOUND for others', async () => {
  const g = await startGantry();
  const client = new Health(g.endpoint, grpc.credentials.createInsecure());
  try {
    for (const svc of ['', 'apache.rocketmq.v2.MessagingService', 'grpc.health.v1.Health']) {
      const r = await check(client, svc);
      assert.equal(r.err, null, `Check("${svc}"): ${r.err?.message}`);
      assert.equal(r.resp.status, 'SERVING', `Check("${svc}")`);
    }
    const r = await check(client, 'no.such.Service');
    assert.equal(r.err?.code, grpc.status.NOT_FOUND, `unknown service: ${r.err?.message}`);
  } finally {
    client.close();
    await stopGantry(g);
  }
});

test('Watch: SERVING, then NOT_SERVING on SIGTERM drain, then the stream ends OK; unknown service: SERVICE_UNKNOWN', async () => {
  const g = await startGantry();
  const client = new Health(g.endpoint, grpc.credentials.createInsecure());
  const seen = [];
  const unknown = [];
  let status = null;
  const w = client.Watch({ service: '' });
  w.on('data', (d) => seen.push(d.status));
  w.on('status', (s) => { status = s; });
  w.on('error', () => {});
  const u = client.Watch({ service: 'no.such.Service' });
  u.on('data', (d) => unknown.push(d.status));
  u.on('error', () => {});
  try {
    await waitFor(() => seen.length >= 1 && unknown.length >= 1, 5000, 'first Watch answers');
    assert.deepEqual(seen, ['SERVING']);
    assert.deepEqual(unknown, ['SERVICE_UNKNOWN']);
    const info = await stopGantry(g, 'SIGTERM');
    assert.equal(info.code, 0, info.log);
    await waitFor(() => status !== null, 5000, 'the Watch stream ended');
    assert.deepEqual(seen, ['SERVING', 'NOT_SERVING'], 'NOT_SERVING reached the watcher before the stream ended');
    assert.equal(status.code, grpc.status.OK, status.details);
    assert.deepEqual(unknown, ['SERVICE_UNKNOWN'], 'an unknown service stays SERVICE_UNKNOWN');
  } finally {
    client.close();
  }
});
