// Pull consumers and offsets over raw gRPC (the Node SDK has no pull
// consumer): PullMessage, UpdateOffset, GetOffset, QueryOffset, their
// error codes, and committed offsets surviving a SIGKILL restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { require, startGantry, stopGantry, scaled } from './harness.mjs';
import { clientMetadata } from './grpc_util.mjs';

const grpc = require('@grpc/grpc-js');
const pb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js');
const defPb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb.js');
const { Timestamp } = require('google-protobuf/google/protobuf/timestamp_pb.js');

const SVC = '/apache.rocketmq.v2.MessagingService/';
const ident = (x) => x;
const Code = defPb.Code;
const YAML = `
topics:
  - {name: PullTopic, type: NORMAL, queues: 2}
groups:
  - {name: PullGroup}
`;

function resource(name) {
  const r = new defPb.Resource();
  r.setName(name);
  return r;
}
function mq(queue, topic = 'PullTopic') {
  const q = new defPb.MessageQueue();
  q.setTopic(resource(topic));
  q.setId(queue);
  return q;
}

function unary(client, name, req, Resp) {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(SVC + name, ident, ident, Buffer.from(req.serializeBinary()),
      clientMetadata(), { deadline: Date.now() + scaled(5000) }, (err, resp) => {
        if (err) reject(err);
        else resolve(Resp.deserializeBinary(new Uint8Array(resp)));
      });
  });
}

function pull(client, queue, offset, { batch = 32, tags = '*', sql } = {}) {
  const req = new pb.PullMessageRequest();
  req.setGroup(resource('PullGroup'));
  req.setMessageQueue(mq(queue));
  req.setOffset(offset);
  req.setBatchSize(batch);
  const f = new defPb.FilterExpression();
  f.setType(sql !== undefined ? defPb.FilterType.SQL : defPb.FilterType.TAG);
  f.setExpression(sql !== undefined ? sql : tags);
  req.setFilterExpression(f);
  return new Promise((resolve, reject) => {
    const out = { status: null, messages: [], next: null };
    const call = client.makeServerStreamRequest(SVC + 'PullMessage', ident, ident,
      Buffer.from(req.serializeBinary()), clientMetadata(), { deadline: Date.now() + scaled(5000) });
    call.on('data', (d) => {
      const r = pb.PullMessageResponse.deserializeBinary(new Uint8Array(d));
      switch (r.getContentCase()) {
        case pb.PullMessageResponse.ContentCase.STATUS: out.status = r.getStatus(); break;
        case pb.PullMessageResponse.ContentCase.MESSAGE: out.messages.push(r.getMessage()); break;
        case pb.PullMessageResponse.ContentCase.NEXT_OFFSET: out.next = r.getNextOffset(); break;
        default: break;
      }
    });
    call.on('error', reject);
    call.on('end', () => resolve(out));
  });
}

async function queryOffset(client, queue, policy, ts) {
  const req = new pb.QueryOffsetRequest();
  req.setMessageQueue(mq(queue));
  req.setQueryOffsetPolicy(policy);
  if (ts !== undefined) req.setTimestamp(Timestamp.fromDate(new Date(ts)));
  return unary(client, 'QueryOffset', req, pb.QueryOffsetResponse);
}

async function getOffset(client, queue) {
  const req = new pb.GetOffsetRequest();
  req.setGroup(resource('PullGroup'));
  req.setMessageQueue(mq(queue));
  return unary(client, 'GetOffset', req, pb.GetOffsetResponse);
}

async function updateOffset(client, queue, offset) {
  const req = new pb.UpdateOffsetRequest();
  req.setGroup(resource('PullGroup'));
  req.setMessageQueue(mq(queue));
  req.setOffset(offset);
  return unary(client, 'UpdateOffset', req, pb.UpdateOffsetResponse);
}

// Raw SendMessage (no SDK client whose streams could outlive a SIGKILL).
async function send(client, i, tag, props = 0) {
  const m = new defPb.Message();
  m.setTopic(resource('PullTopic'));
  const sp = new defPb.SystemProperties();
  sp.setMessageId(`PULL${String(i).padStart(8, '0')}`);
  sp.setTag(tag);
  sp.setMessageType(defPb.MessageType.NORMAL);
  sp.setBodyEncoding(defPb.Encoding.IDENTITY);
  sp.setQueueId(0);
  m.setSystemProperties(sp);
  m.setBody(Buffer.from(`pull-${i}`));
  for (let k = 0; k < props; k++) m.getUserPropertiesMap().set(`p${k}`, `v${k}`);
  const req = new pb.SendMessageRequest();
  req.addMessages(m);
  const r = await unary(client, 'SendMessage', req, pb.SendMessageResponse);
  assert.equal(r.getStatus().getCode(), Code.OK, r.getStatus().getMessage());
}

test('pull, offsets and their error codes; committed offsets survive SIGKILL', async () => {
  let g = await startGantry({ yaml: YAML, flush: 'sync' });
  let client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure(),
    { 'grpc.use_local_subchannel_pool': 1 });
  try {
    const before = Date.now() - 1000;
    for (let i = 0; i < 5; i++) await send(client, i, i % 2 ? 'odd' : 'even');

    let q = await queryOffset(client, 0, defPb.QueryOffsetPolicy.BEGINNING);
    assert.equal(q.getStatus().getCode(), Code.OK);
    assert.equal(q.getOffset(), 0);
    q = await queryOffset(client, 0, defPb.QueryOffsetPolicy.END);
    assert.equal(q.getOffset(), 5);
    q = await queryOffset(client, 1, defPb.QueryOffsetPolicy.END);
    assert.equal(q.getOffset(), 0);
    q = await queryOffset(client, 0, defPb.QueryOffsetPolicy.TIMESTAMP, before);
    assert.equal(q.getStatus().getCode(), Code.OK);
    assert.equal(q.getOffset(), 0);
    q = await queryOffset(client, 0, defPb.QueryOffsetPolicy.TIMESTAMP);
    assert.equal(q.getStatus().getCode(), Code.BAD_REQUEST, 'TIMESTAMP without a timestamp');
    q = await queryOffset(client, 7, defPb.QueryOffsetPolicy.END);
    assert.equal(q.getStatus().getCode(), Code.BAD_REQUEST, 'queue out of range');

    let p = await pull(client, 0, 0);
    assert.equal(p.status.getCode(), Code.OK);
    assert.deepEqual(p.messages.map((m) => Buffer.from(m.getBody_asU8()).toString()),
      ['pull-0', 'pull-1', 'pull-2', 'pull-3', 'pull-4']);
    assert.deepEqual(p.messages.map((m) => m.getSystemProperties().getQueueOffset()), [0, 1, 2, 3, 4]);
    assert.equal(p.next, 5);
    p = await pull(client, 0, 1, { batch: 2 });
    assert.equal(p.messages.length, 2);
    assert.equal(p.next, 3);
    p = await pull(client, 0, 0, { tags: 'odd' });
    assert.deepEqual(p.messages.map((m) => m.getSystemProperties().getTag()), ['odd', 'odd']);
    assert.equal(p.next, 5, 'a tag filter still advances next_offset');
    p = await pull(client, 0, 5);
    assert.equal(p.status.getCode(), Code.MESSAGE_NOT_FOUND);
    assert.equal(p.next, 5);
    p = await pull(client, 0, 6);
    assert.equal(p.status.getCode(), Code.ILLEGAL_OFFSET);
    p = await pull(client, 0, -1);
    assert.equal(p.status.getCode(), Code.ILLEGAL_OFFSET);

    let o = await getOffset(client, 0);
    assert.equal(o.getStatus().getCode(), Code.OFFSET_NOT_FOUND);
    let u = await updateOffset(client, 0, 3);
    assert.equal(u.getStatus().getCode(), Code.OK, u.getStatus().getMessage());
    o = await getOffset(client, 0);
    assert.equal(o.getStatus().getCode(), Code.OK);
    assert.equal(o.getOffset(), 3);
    u = await updateOffset(client, 0, 99);
    assert.equal(u.getStatus().getCode(), Code.ILLEGAL_OFFSET);
    u = await updateOffset(client, 0, -2);
    assert.equal(u.getStatus().getCode(), Code.ILLEGAL_OFFSET);

    // Committed offsets survive a SIGKILL (sync flush).
    client.close();
    await stopGantry(g, 'SIGKILL', { keepDir: true });
    g = await startGantry({ dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort,
      yaml: YAML, flush: 'sync' });
    client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure(),
    { 'grpc.use_local_subchannel_pool': 1 });
    o = await getOffset(client, 0);
    assert.equal(o.getStatus().getCode(), Code.OK);
    assert.equal(o.getOffset(), 3);
    q = await queryOffset(client, 0, defPb.QueryOffsetPolicy.END);
    assert.equal(q.getOffset(), 5);
  } finally {
    client.close();
    await stopGantry(g);
  }
});

test('a message with the maximum 128 user properties keeps all of them', async () => {
  const g = await startGantry({ yaml: YAML });
  const client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure(),
    { 'grpc.use_local_subchannel_pool': 1 });
  try {
    await send(client, 0, 'many', 128);
    const p = await pull(client, 0, 0);
    assert.equal(p.messages.length, 1);
    const got = p.messages[0].getUserPropertiesMap();
    assert.equal(got.getLength(), 128);
    for (let k = 0; k < 128; k++) assert.equal(got.get(`p${k}`), `v${k}`);
  } finally {
    client.close();
    await stopGantry(g);
  }
});

test('PullMessage with an SQL92 filter: matching messages only; a bad expression is ILLEGAL_FILTER_EXPRESSION', async () => {
  const g = await startGantry({ yaml: YAML });
  const client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure(),
    { 'grpc.use_local_subchannel_pool': 1 });
  try {
    for (let i = 0; i < 4; i++) await send(client, i, i % 2 ? 'odd' : 'even', 1);
    // Every message has p0 = 'v0'; tags alternate.
    let p = await pull(client, 0, 0, { sql: "TAGS = 'odd' AND p0 = 'v0'" });
    assert.equal(p.status.getCode(), Code.OK);
    assert.deepEqual(p.messages.map((m) => Buffer.from(m.getBody_asU8()).toString()),
      ['pull-1', 'pull-3']);
    assert.equal(p.next, 4);
    p = await pull(client, 0, 0, { sql: 'missing IS NOT NULL' });
    assert.equal(p.status.getCode(), Code.MESSAGE_NOT_FOUND);
    assert.equal(p.next, 4);
    p = await pull(client, 0, 0, { sql: 'a >' });
    assert.equal(p.status.getCode(), Code.ILLEGAL_FILTER_EXPRESSION);
    assert.match(p.status.getMessage(), /position/);
  } finally {
    client.close();
    await stopGantry(g);
  }
});
