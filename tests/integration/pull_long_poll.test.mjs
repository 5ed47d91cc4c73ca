// PullMessage long polling over raw gRPC: a pull at the end of an empty
// queue with a long_polling_timeout waits in the server and returns the
// message sent after it parked; with nothing sent it answers
// MESSAGE_NOT_FOUND at its timeout; a client that cancels its parked pull
// leaves nothing behind (the server stops promptly).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { require, startGantry, stopGantry, scaled } from './harness.mjs';
import { clientMetadata } from './grpc_util.mjs';

const grpc = require('@grpc/grpc-js');
const pb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js');
const defPb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb.js');
const { Duration } = require('google-protobuf/google/protobuf/duration_pb.js');

const SVC = '/apache.rocketmq.v2.MessagingService/';
const ident = (x) => x;
const Code = defPb.Code;
const YAML = `
topics:
  - {name: LpTopic, type: NORMAL, queues: 2}
groups:
  - {name: LpGroup}
`;

function resource(name) {
  const r = new defPb.Resource();
  r.setName(name);
  return r;
}

function pullReq(queue, offset, pollMs, tags = '*') {
  const req = new pb.PullMessageRequest();
  req.setGroup(resource('LpGroup'));
  const q = new defPb.MessageQueue();
  q.setTopic(resource('LpTopic'));
  q.setId(queue);
  req.setMessageQueue(q);
  req.setOffset(offset);
  req.setBatchSize(8);
  const f = new defPb.FilterExpression();
  f.setType(defPb.FilterType.TAG);
  f.setExpression(tags);
  req.setFilterExpression(f);
  if (pollMs !== undefined) {
    const d = new Duration();
    d.setSeconds(Math.floor(pollMs / 1000));
    d.setNanos((pollMs % 1000) * 1e6);
    req.setLongPollingTimeout(d);
  }
  return req;
}

// Starts a pull; returns { done: Promise<result>, call }.
function pull(client, req, deadlineMs) {
  const out = { status: null, messages: [], next: null, answered: false };
  const call = client.makeServerStreamRequest(SVC + 'PullMessage', ident, ident,
    Buffer.from(req.serializeBinary()), clientMetadata(),
    { deadline: Date.now() + deadlineMs });
  const done = new Promise((resolve, reject) => {
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
    call.on('end', () => { out.answered = true; resolve(out); });
  });
  return { done, call, out };
}

async function send(client, body, tag, queue) {
  const m = new defPb.Message();
  m.setTopic(resource('LpTopic'));
  const sp = new defPb.SystemProperties();
  sp.setMessageId(`LP${body.padStart(10, '0')}`);
  sp.setTag(tag);
  sp.setMessageType(defPb.MessageType.NORMAL);
  sp.setBodyEncoding(defPb.Encoding.IDENTITY);
  sp.setQueueId(queue);
  m.setSystemProperties(sp);
  m.setBody(Buffer.from(body));
  const req = new pb.SendMessageRequest();
  req.addMessages(m);
  await new Promise((resolve, reject) => {
    client.makeUnaryRequest(SVC + 'SendMessage', ident, ident, Buffer.from(req.serializeBinary()),
      clientMetadata(), { deadline: Date.now() + scaled(5000) }, (err, resp) => {
        if (err) return reject(err);
        const r = pb.SendMessageResponse.deserializeBinary(new Uint8Array(resp));
        assert.equal(r.getStatus().getCode(), Code.OK, r.getStatus().getMessage());
        return resolve();
      });
  });
}

const bodies = (r) => r.messages.map((m) => Buffer.from(m.getBody_asU8()).toString());

test('PullMessage long-polls: wakes on a new message, times out empty', async () => {
  const g = await startGantry({ yaml: YAML });
  const client = new grpc.Client(g.endpoint, grpc.credentials.createInsecure(),
    { 'grpc.use_local_subchannel_pool': 1 });
  try {
    // Waits on the empty queue 0 ...
    const a = pull(client, pullReq(0, 0, scaled(60000)), scaled(90000));
    // ... and is still waiting a moment later (before long polling it
    // answered MESSAGE_NOT_FOUND at once).
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(a.out.answered, false, 'a long-polling pull answered before any message');
    // A message on the other queue and one its filter rejects do not end
    // it; the one it wants does.
    const b = pull(client, pullReq(1, 0, scaled(60000), 'want'), scaled(90000));
    await send(client, 'elsewhere', 'want', 0);
    const ra = await a.done;
    assert.equal(ra.status.getCode(), Code.OK);
    assert.deepEqual(bodies(ra), ['elsewhere']);
    assert.equal(ra.next, 1);
    await send(client, 'skip-me', 'other', 1);
    await send(client, 'wanted', 'want', 1);
    const rb = await b.done;
    assert.equal(rb.status.getCode(), Code.OK);
    assert.deepEqual(bodies(rb), ['wanted']);
    assert.equal(rb.next, 2, 'next_offset passes the rejected message too');

    // Nothing arrives: MESSAGE_NOT_FOUND at the timeout, offset unchanged.
    const t0 = Date.now();
    const c = await pull(client, pullReq(0, 1, 1000), scaled(30000)).done;
    assert.equal(c.status.getCode(), Code.MESSAGE_NOT_FOUND);
    assert.equal(c.next, 1);
    assert.ok(Date.now() - t0 >= 900, `answered after ${Date.now() - t0} ms, before its 1 s poll`);

    // Without a long-polling timeout a pull still answers at once.
    const d = await pull(client, pullReq(0, 1), scaled(30000)).done;
    assert.equal(d.status.getCode(), Code.MESSAGE_NOT_FOUND);

    // A cancelled parked pull: the client gets CANCELLED, the server
    // carries on and later pulls work.
    const e = pull(client, pullReq(0, 1, scaled(60000)), scaled(90000));
    await new Promise((r) => setTimeout(r, 100));
    e.call.cancel();
    await assert.rejects(e.done, (err) => err.code === grpc.status.CANCELLED);
    await send(client, 'after', 'x', 0);
    const f = await pull(client, pullReq(0, 1, scaled(60000)), scaled(90000)).done;
    assert.deepEqual(bodies(f), ['after']);
  } finally {
    client.close();
    await stopGantry(g);
  }
});
