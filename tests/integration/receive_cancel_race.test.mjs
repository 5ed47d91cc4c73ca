// A ReceiveMessage or PullMessage cancelled before its handler attached
// the store request to the call: the cancel notice found nothing to cancel,
// and the pop stayed parked in the store for its whole long poll.  The
// handlers re-check the call after attaching.  GANTRY_TEST_LATE_ATTACH=1
// makes them attach only after the call's interrupt has come and gone
// (px_test_late_attach), so the window is always hit: the store must end
// the request at once (the service logs that the store answered after the
// call went away), not after its 60 s long poll.
// The same for a server stop: a SIGTERM whose shutdown notice came before
// the handler attached must still end the receive at once ("server
// shutting down"), and gantry must stop gracefully -- not wait out its
// shutdown bound (set to 60 s here) and cancel the call then.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { require, startGantry, stopGantry, scaled, waitFor } from './harness.mjs';
import { clientMetadata } from './grpc_util.mjs';

const grpc = require('@grpc/grpc-js');
const pb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js');
const defPb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb.js');
const { Duration } = require('google-protobuf/google/protobuf/duration_pb.js');

const SVC = '/apache.rocketmq.v2.MessagingService/';
const ident = (x) => x;
const YAML = `
topics:
  - {name: RaceTopic, type: NORMAL, queues: 2}
groups:
  - {name: RaceGroup}
`;

function resource(name) {
  const r = new defPb.Resource();
  r.setName(name);
  return r;
}

function duration(ms) {
  const d = new Duration();
  d.setSeconds(Math.floor(ms / 1000));
  d.setNanos((ms % 1000) * 1e6);
  return d;
}

function filter() {
  const f = new defPb.FilterExpression();
  f.setType(defPb.FilterType.TAG);
  f.setExpression('*');
  return f;
}

function queue() {
  const q = new defPb.MessageQueue();
  q.setTopic(resource('RaceTopic'));
  q.setId(0);
  return q;
}

function receiveReq(pollMs) {
  const req = new pb.ReceiveMessageRequest();
  req.setGroup(resource('RaceGroup'));
  req.setMessageQueue(queue());
  req.setFilterExpression(filter());
  req.setBatchSize(8);
  req.setInvisibleDuration(duration(30000));
  req.setLongPollingTimeout(duration(pollMs));
  return req;
}

function pullReq(pollMs) {
  const req = new pb.PullMessageRequest();
  req.setGroup(resource('RaceGroup'));
  req.setMessageQueue(queue());
  req.setOffset(0);
  req.setBatchSize(8);
  req.setFilterExpression(filter());
  req.setLongPollingTimeout(duration(pollMs));
  return req;
}

const count = (text, s) => text.split(s).length - 1;

async function cancelBeforeAttach(g, client, method, req, rpc, gone) {
  const waiting = `test hook: ${rpc} waits for its call's interrupt`;
  const before = count(g.log(), gone);
  const waitedBefore = count(g.log(), waiting);
  const call = client.makeServerStreamRequest(SVC + method, ident, ident,
    Buffer.from(req.serializeBinary()), clientMetadata(),
    { deadline: Date.now() + scaled(90000) });
  const ended = new Promise((resolve) => {
    call.on('data', () => {});
    call.on('error', resolve);
    call.on('end', () => resolve(null));
  });
  // The handler is inside the hook, not attached yet: cancel now.
  await waitFor(() => count(g.log(), waiting) > waitedBefore, 10000, `${rpc} handler in the hook`);
  call.cancel();
  const err = await ended;
  assert.equal(err?.code, grpc.status.CANCELLED);
  await waitFor(() => g.log().includes(`test hook: ${rpc} attaches after its call's interrupt`),
    10000, `${rpc} attached after the interrupt`);
  // The store request ends now, not after its 60 s long poll.
  await waitFor(() => count(g.log(), gone) > before, 10000,
    `the store to end the cancelled ${rpc} (it stays parked for its long poll)`);
}

test('a receive or pull cancelled before it attached its store request ends at once', async () => {
  process.env.GANTRY_TEST_LATE_ATTACH = '1';
  const g = await startGantry({ yaml: YAML, serverYaml: '  threads: 4' });
  delete process.env.GANTRY_TEST_LATE_ATTACH;
  const client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure(),
    { 'grpc.use_local_subchannel_pool': 1 });
  try {
    await cancelBeforeAttach(g, client, 'ReceiveMessage', receiveReq(scaled(60000)), 'receive',
      'the store answered after the call went away');
    await cancelBeforeAttach(g, client, 'PullMessage', pullReq(scaled(60000)), 'pull',
      'pull on RaceTopic: the store answered after the call went away');
  } finally {
    client.close();
    await stopGantry(g);
  }
});

// SIGTERM while `rpc`'s handler is held before attaching: the call must end
// with the shutdown status and gantry stop gracefully.
async function stopBeforeAttach(method, req, rpc, gone) {
  process.env.GANTRY_TEST_LATE_ATTACH = '1';
  const g = await startGantry({ yaml: YAML, serverYaml: '  threads: 4', shutdownTimeoutMs: 60000 });
  delete process.env.GANTRY_TEST_LATE_ATTACH;
  const client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure(),
    { 'grpc.use_local_subchannel_pool': 1 });
  let stopped = null;
  try {
    const call = client.makeServerStreamRequest(SVC + method, ident, ident,
      Buffer.from(req.serializeBinary()), clientMetadata(),
      { deadline: Date.now() + scaled(90000) });
    const ended = new Promise((resolve) => {
      call.on('data', () => {});
      call.on('error', resolve);
      call.on('end', () => resolve(null));
    });
    // The handler is inside the hook, not attached yet: stop the server.
    await waitFor(() => g.log().includes(`test hook: ${rpc} waits for its call's interrupt`),
      10000, `${rpc} handler in the hook`);
    // stopGantry sends SIGTERM and SIGKILLs after 10 s (scaled): within the
    // 60 s shutdown bound, so only a graceful stop passes.
    stopped = stopGantry(g, 'SIGTERM', { keepDir: true });
    const err = await ended;
    assert.equal(err?.code, grpc.status.UNAVAILABLE, `${rpc} ended with ${err?.code}: ${err?.details}`);
    assert.match(err.details, /server shutting down/);
    const info = await stopped;
    stopped = null;
    assert.equal(info.signal, null, `gantry had to be killed (the stop waited for the parked ${rpc})`);
    assert.equal(info.code, 0);
    assert.ok(info.log.includes(`test hook: ${rpc} attaches after its call's interrupt`));
    assert.doesNotMatch(info.log, /calls still running after/);
    assert.ok(info.log.includes(gone), `the store ended the ${rpc}`);
  } finally {
    client.close();
    if (stopped !== null) await stopped.catch(() => {});
    else if (g.proc.exitCode === null && g.proc.signalCode === null) await stopGantry(g, 'SIGKILL', { keepDir: true });
    fs.rmSync(g.dir, { recursive: true, force: true });
  }
}

test('a receive or pull held before attaching when the server stops ends at once', async () => {
  await stopBeforeAttach('ReceiveMessage', receiveReq(scaled(60000)), 'receive',
    'the store answered after the call went away');
  await stopBeforeAttach('PullMessage', pullReq(scaled(60000)), 'pull',
    'pull on RaceTopic: the store answered after the call went away');
});
