// The gRPC runtime and the MessagingService stubs, driven over real HTTP/2
// by grpc-js and the SDK's own generated protobuf classes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  require, startGantry, spawnGantry, stopGantry, httpGet, sleep, scaled, waitFor,
} from './harness.mjs';
import { producerSettings } from './grpc_util.mjs';

const grpc = require('@grpc/grpc-js');
const pb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js');
const adminPb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/admin_pb.js');
const defPb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb.js');

const SVC = '/apache.rocketmq.v2.MessagingService/';
const ident = (x) => x;
const NOT_IMPLEMENTED = defPb.Code.NOT_IMPLEMENTED;
const BAD_REQUEST = defPb.Code.BAD_REQUEST;
// "Answered at once" (not held until a deadline): generous, and scaled for
// slow machines and sanitizer builds.
const PROMPT_MS = scaled(2000);

let g;
let client;
before(async () => {
  g = await startGantry();
  client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure());
});
after(async () => {
  client.close();
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}\n${info.log}`);
});

function md() {
  const m = new grpc.Metadata();
  m.set('x-mq-client-id', 'it-client-1');
  m.set('x-mq-language', 'HTTP');
  return m;
}

function unary(path, bytes, timeoutMs = scaled(5000)) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    client.makeUnaryRequest(path, ident, ident, Buffer.from(bytes), md(),
      { deadline: Date.now() + timeoutMs }, (err, resp) => {
        resolve({ err, resp, ms: Date.now() - t0 });
      });
  });
}

function serverStream(path, bytes, timeoutMs = scaled(5000)) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const msgs = [];
    const call = client.makeServerStreamRequest(path, ident, ident, Buffer.from(bytes), md(),
      { deadline: Date.now() + timeoutMs });
    call.on('data', (d) => msgs.push(d));
    call.on('error', (err) => resolve({ err, msgs, ms: Date.now() - t0 }));
    call.on('status', (s) => { if (s.code === 0) resolve({ err: null, msgs, ms: Date.now() - t0 }); });
  });
}

test('an unknown method gets UNIMPLEMENTED promptly', async () => {
  for (const p of [SVC + 'NoSuchMethod', '/no.such.Service/Call', '/x/y']) {
    const r = await unary(p, []);
    assert.ok(r.err, `${p}: expected an error`);
    assert.equal(r.err.code, grpc.status.UNIMPLEMENTED, `${p}: ${r.err.message}`);
    assert.ok(r.ms < PROMPT_MS, `${p}: answered after ${r.ms} ms`);
  }
});

// RPCs still waiting for their issue: they answer NOT_IMPLEMENTED.
const STUBBED = [
  ['SyncLiteSubscription', pb.SyncLiteSubscriptionRequest, pb.SyncLiteSubscriptionResponse],
];
// Implemented unary RPCs: an empty request is answered at once, in-band,
// with a validation error (never OK, never a hang).
const IMPLEMENTED = [
  ['QueryRoute', pb.QueryRouteRequest, pb.QueryRouteResponse, defPb.Code.ILLEGAL_TOPIC],
  ['SendMessage', pb.SendMessageRequest, pb.SendMessageResponse, defPb.Code.MESSAGE_CORRUPTED],
  ['QueryAssignment', pb.QueryAssignmentRequest, pb.QueryAssignmentResponse, defPb.Code.ILLEGAL_TOPIC],
  ['AckMessage', pb.AckMessageRequest, pb.AckMessageResponse, defPb.Code.ILLEGAL_CONSUMER_GROUP],
  ['ForwardMessageToDeadLetterQueue', pb.ForwardMessageToDeadLetterQueueRequest,
    pb.ForwardMessageToDeadLetterQueueResponse, defPb.Code.ILLEGAL_CONSUMER_GROUP],
  ['ChangeInvisibleDuration', pb.ChangeInvisibleDurationRequest,
    pb.ChangeInvisibleDurationResponse, defPb.Code.ILLEGAL_CONSUMER_GROUP],
  ['UpdateOffset', pb.UpdateOffsetRequest, pb.UpdateOffsetResponse,
    defPb.Code.ILLEGAL_CONSUMER_GROUP],
  ['GetOffset', pb.GetOffsetRequest, pb.GetOffsetResponse, defPb.Code.ILLEGAL_CONSUMER_GROUP],
  ['QueryOffset', pb.QueryOffsetRequest, pb.QueryOffsetResponse, defPb.Code.ILLEGAL_TOPIC],
  ['EndTransaction', pb.EndTransactionRequest, pb.EndTransactionResponse, defPb.Code.ILLEGAL_TOPIC],
  ['RecallMessage', pb.RecallMessageRequest, pb.RecallMessageResponse, defPb.Code.ILLEGAL_TOPIC],
];

test('RPCs not implemented yet answer NOT_IMPLEMENTED in-band, promptly', async () => {
  for (const [name, Req, Resp] of STUBBED) {
    const r = await unary(SVC + name, new Req().serializeBinary());
    assert.equal(r.err, null, `${name}: ${r.err && r.err.message}`);
    const resp = Resp.deserializeBinary(new Uint8Array(r.resp));
    assert.equal(resp.getStatus().getCode(), NOT_IMPLEMENTED, name);
    assert.match(resp.getStatus().getMessage(), new RegExp(name));
    assert.ok(r.ms < PROMPT_MS, `${name} took ${r.ms} ms`);
  }
});

test('implemented RPCs answer an empty request with an in-band validation code', async () => {
  for (const [name, Req, Resp, code] of IMPLEMENTED) {
    const r = await unary(SVC + name, new Req().serializeBinary());
    assert.equal(r.err, null, `${name}: ${r.err && r.err.message}`);
    const resp = Resp.deserializeBinary(new Uint8Array(r.resp));
    assert.equal(resp.getStatus().getCode(), code, `${name}: ${resp.getStatus().getMessage()}`);
    assert.ok(r.ms < PROMPT_MS, `${name} took ${r.ms} ms`);
  }
});

test('a request without x-mq-client-id gets CLIENT_ID_REQUIRED', async () => {
  const r = await new Promise((resolve) => {
    client.makeUnaryRequest(SVC + 'Heartbeat', ident, ident,
      Buffer.from(new pb.HeartbeatRequest().serializeBinary()), new grpc.Metadata(),
      { deadline: Date.now() + scaled(5000) }, (err, resp) => resolve({ err, resp }));
  });
  assert.equal(r.err, null);
  const resp = pb.HeartbeatResponse.deserializeBinary(new Uint8Array(r.resp));
  assert.equal(resp.getStatus().getCode(), defPb.Code.CLIENT_ID_REQUIRED);
});

test('a malformed request gets BAD_REQUEST in-band, not a crash', async () => {
  // 0x0a then a length running past the end: not a valid protobuf message.
  const r = await unary(SVC + 'SendMessage', [0x0a, 0xff, 0xff, 0x01]);
  assert.equal(r.err, null);
  const resp = pb.SendMessageResponse.deserializeBinary(new Uint8Array(r.resp));
  assert.equal(resp.getStatus().getCode(), BAD_REQUEST);
});

test('server-streaming RPCs answer one status response then close OK', async () => {
  for (const [name, Req, Resp, code] of [
    ['ReceiveMessage', pb.ReceiveMessageRequest, pb.ReceiveMessageResponse,
      defPb.Code.ILLEGAL_CONSUMER_GROUP],
    ['PullMessage', pb.PullMessageRequest, pb.PullMessageResponse,
      defPb.Code.ILLEGAL_CONSUMER_GROUP],
  ]) {
    const r = await serverStream(SVC + name, new Req().serializeBinary());
    assert.equal(r.err, null, `${name}: ${r.err && r.err.message}`);
    assert.equal(r.msgs.length, 1, name);
    const resp = Resp.deserializeBinary(new Uint8Array(r.msgs[0]));
    assert.equal(resp.getStatus().getCode(), code, name);
    assert.ok(r.ms < PROMPT_MS, `${name} took ${r.ms} ms`);
  }
});

test('Telemetry answers each Settings with merged settings and stays open until the client ends', async () => {
  const call = client.makeBidiStreamRequest(SVC + 'Telemetry', ident, ident, md(), {});
  const got = [];
  let ended = false;
  let status = null;
  call.on('data', (d) => got.push(pb.TelemetryCommand.deserializeBinary(new Uint8Array(d))));
  call.on('status', (s) => { status = s; });
  call.on('end', () => { ended = true; });
  call.on('error', () => {});
  call.write(producerSettings());
  call.write(producerSettings());
  await waitFor(() => got.length >= 2, 5000, 'two Telemetry answers');
  assert.equal(got.length, 2);
  assert.equal(got[0].getStatus().getCode(), defPb.Code.OK);
  const st = got[0].getSettings();
  assert.ok(st, 'settings in the reply');
  assert.equal(st.getPublishing().getMaxBodySize(), 4 * 1024 * 1024);
  assert.equal(st.getBackoffPolicy().getStrategyCase(),
    defPb.RetryPolicy.StrategyCase.EXPONENTIAL_BACKOFF);
  await sleep(200); // a wrong early close would show up here
  assert.equal(ended, false, 'stream closed by the server too early');
  call.end();
  await waitFor(() => status, 5000, 'a status after half-close');
  assert.ok(status, 'no status after half-close');
  assert.equal(status.code, grpc.status.OK);
});

test('Admin.ChangeLogLevel changes the level and answers a remark', async () => {
  const req = new adminPb.ChangeLogLevelRequest();
  req.setLevel(adminPb.ChangeLogLevelRequest.Level.INFO);
  const r = await unary('/apache.rocketmq.v2.Admin/ChangeLogLevel', req.serializeBinary());
  assert.equal(r.err, null);
  const resp = adminPb.ChangeLogLevelResponse.deserializeBinary(new Uint8Array(r.resp));
  assert.match(resp.getRemark(), /info/);
  assert.match(g.log(), /log level set to info/);
});

test('Admin.ChangeLogLevel: a malformed request finishes INVALID_ARGUMENT, an unknown level too', async () => {
  let r = await unary('/apache.rocketmq.v2.Admin/ChangeLogLevel', [0x0a, 0xff, 0xff, 0x01]);
  assert.ok(r.err);
  assert.equal(r.err.code, grpc.status.INVALID_ARGUMENT);
  assert.match(r.err.details, /malformed ChangeLogLevelRequest/);
  r = await unary('/apache.rocketmq.v2.Admin/ChangeLogLevel', [0x08, 0x09]);
  assert.ok(r.err);
  assert.equal(r.err.code, grpc.status.INVALID_ARGUMENT);
  assert.match(r.err.details, /unknown level 9/);
});

test('requests far above the default 4 MiB gRPC limit reach the handler (20 MiB body -> MESSAGE_BODY_TOO_LARGE)', async () => {
  const msg = new defPb.Message();
  const sp = new defPb.SystemProperties();
  sp.setMessageId('0123456789ABCDEF');
  msg.setSystemProperties(sp);
  const topic = new defPb.Resource();
  topic.setName('TopicTest');
  msg.setTopic(topic);
  msg.setBody(new Uint8Array(20 * 1024 * 1024));
  const req = new pb.SendMessageRequest();
  req.addMessages(msg);
  const r = await unary(SVC + 'SendMessage', req.serializeBinary(), scaled(20000));
  assert.equal(r.err, null, r.err && r.err.message);
  const resp = pb.SendMessageResponse.deserializeBinary(new Uint8Array(r.resp));
  assert.equal(resp.getStatus().getCode(), defPb.Code.MESSAGE_BODY_TOO_LARGE);
});

test('HTTP endpoint: healthz, readyz, metrics, 404', async () => {
  assert.equal((await httpGet(g.httpPort, '/healthz')).status, 200);
  assert.equal((await httpGet(g.httpPort, '/readyz')).status, 200);
  const m = await httpGet(g.httpPort, '/metrics');
  assert.equal(m.status, 200);
  assert.match(m.body, /^gantry_up 1$/m);
  assert.equal((await httpGet(g.httpPort, '/nope')).status, 404);
});
