// Process lifecycle: graceful stop with open streams, a busy port, and a
// bad config refused at start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  require, startGantry, spawnGantry, stopGantry, scaled, waitFor,
} from './harness.mjs';
import { producerSettings, clientMetadata } from './grpc_util.mjs';

const grpc = require('@grpc/grpc-js');
const pb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js');
const ident = (x) => x;

test('SIGTERM with open Telemetry streams exits 0 within 5 s (scaled)', async () => {
  const g = await startGantry();
  const client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure());
  const streams = [];
  for (let i = 0; i < 3; i++) {
    const call = client.makeBidiStreamRequest(
      '/apache.rocketmq.v2.MessagingService/Telemetry', ident, ident, clientMetadata(`lc-${i}`), {});
    const s = { call, got: 0, status: null };
    call.on('data', () => { s.got++; });
    call.on('status', (st) => { s.status = st; });
    call.on('error', () => {});
    call.write(producerSettings());
    streams.push(s);
  }
  await waitFor(() => streams.every((s) => s.got > 0), 5000, 'every Telemetry stream answered');
  assert.ok(streams.every((s) => s.got === 1), 'every stream is open and answered');
  const t0 = Date.now();
  const info = await stopGantry(g, 'SIGTERM');
  const ms = info.at - t0;
  client.close();
  assert.equal(info.code, 0, `exit code ${info.code} signal ${info.signal}\n${info.log}`);
  assert.ok(ms < scaled(5000), `took ${ms} ms to exit`);
  await waitFor(() => streams.every((s) => s.status), 5000, 'every stream got a final status');
  for (const s of streams) {
    assert.ok(s.status, 'stream got a final status');
    // Ended by the server with OK (clients reconnect; an error status would
    // crash Node SDK 1.0.8 clients that are shutting down themselves).
    assert.equal(s.status.code, grpc.status.OK, s.status.details);
  }
  assert.match(info.log, /received SIGTERM/);
});

test('a second instance on the same gRPC port fails at start with a clear message', async () => {
  const first = await startGantry();
  const second = await spawnGantry({ grpcPort: first.grpcPort });
  const killer = setTimeout(() => second.proc.kill('SIGKILL'), scaled(10000));
  const info = await second.exited;
  clearTimeout(killer);
  const log = second.log();
  assert.equal(info.code, 1, `second instance exit ${JSON.stringify(info)}\n${log}`);
  assert.match(log, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${first.grpcPort}: Address already in use`));
  // The first instance still serves.
  const r = await stopGantry(first);
  assert.equal(r.code, 0);
  fs.rmSync(second.dir, { recursive: true, force: true });
});

test('a config with a misspelt key is refused naming the key and the line', async () => {
  const g = await spawnGantry({ yaml: 'topics:\n  - {name: T1, type: NORMAL, queus: 8}\n' });
  const info = await g.exited;
  const log = g.log();
  assert.equal(info.code, 1, log);
  assert.match(log, /gantry\.yaml:\d+: topics\[0\]\.queus: unknown key/);
  fs.rmSync(g.dir, { recursive: true, force: true });
});
