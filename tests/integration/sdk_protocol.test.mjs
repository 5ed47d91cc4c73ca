// The protocol details the SDKs rely on, checked on the wire with grpc-js
// and the SDK's protobuf classes: telemetry settings, QueryRoute,
// QueryAssignment, Heartbeat and NotifyClientTermination.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  Code, codeName, defPb, pb, Raw, yamlOf, resource, consumerSettings, producerSettings,
  receiveRequest, splitReceive, wireMessage, sendRequest, ackRequest, duration, SVC,
  scaled,
} from './sdk_util.mjs';

const T = 'ProtoTopic';
const T_FIFO = 'ProtoFifo';
const G = 'ProtoGroup';
const MAX_ATTEMPTS = 7;
const T_Q = 'ProtoQueues';

let g;
let raw;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [{ name: T, queues: 3 }, { name: T_FIFO, type: 'FIFO', queues: 2 }, { name: 'ProtoRecv', queues: 2 },
        { name: T_Q, queues: 2 }],
      groups: [{ name: G, max_delivery_attempts: MAX_ATTEMPTS }, { name: 'ProtoDlqReader' }],
    }),
  });
  raw = new Raw(g.endpoint);
});
after(async () => {
  raw?.close();
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

function durMs(d) { return d.getSeconds() * 1000 + Math.floor(d.getNanos() / 1e6); }

test('Telemetry: producer settings come back at once with backoff, validation and 4 MiB', async () => {
  const r = await raw.telemetry(producerSettings([T]));
  try {
    assert.equal(r.err, null, r.err?.message);
    assert.equal(r.first.getCommandCase(), pb.TelemetryCommand.CommandCase.SETTINGS);
    const s = r.first.getSettings();
    assert.ok(s.hasPublishing(), 'publishing settings');
    assert.equal(s.getPublishing().getMaxBodySize(), 4 * 1024 * 1024);
    assert.equal(s.getPublishing().getValidateMessageType(), true);
    const bp = s.getBackoffPolicy();
    assert.ok(bp, 'backoff policy');
    assert.ok(bp.hasExponentialBackoff(), 'exponential backoff (the Java SDK requires it)');
    assert.ok(bp.getMaxAttempts() >= 1);
  } finally {
    r.call?.end();
  }
});

test('Telemetry: consumer settings carry the group retry policy, batch 32 and 20 s long polling', async () => {
  const r = await raw.telemetry(consumerSettings(G, T));
  try {
    assert.equal(r.err, null, r.err?.message);
    assert.equal(r.first.getCommandCase(), pb.TelemetryCommand.CommandCase.SETTINGS);
    const s = r.first.getSettings();
    assert.ok(s.hasSubscription(), 'subscription settings');
    const sub = s.getSubscription();
    assert.equal(sub.getFifo(), false);
    assert.equal(sub.getReceiveBatchSize(), 32);
    assert.equal(durMs(sub.getLongPollingTimeout()), 20000);
    const bp = s.getBackoffPolicy();
    assert.ok(bp, 'backoff policy');
    assert.equal(bp.getMaxAttempts(), MAX_ATTEMPTS, 'max attempts from the group');
  } finally {
    r.call?.end();
  }
});

test('QueryRoute: the topic queues, permissions, types, broker 0 and the address the client used', async () => {
  for (const [topic, n, type] of [[T, 3, defPb.MessageType.NORMAL], [T_FIFO, 2, defPb.MessageType.FIFO]]) {
    const ep = new defPb.Endpoints().setScheme(defPb.AddressScheme.IPV4);
    ep.addAddresses(new defPb.Address().setHost('127.0.0.1').setPort(g.grpcPort));
    const r = await raw.unary('QueryRoute', new pb.QueryRouteRequest().setTopic(resource(topic)).setEndpoints(ep),
      pb.QueryRouteResponse);
    assert.equal(r.err, null);
    assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.OK));
    const qs = r.resp.getMessageQueuesList();
    assert.deepEqual(qs.map((q) => q.getId()).sort(), Array.from({ length: n }, (_, i) => i), `${topic} queue ids`);
    for (const q of qs) {
      assert.equal(q.getTopic().getName(), topic);
      assert.equal(q.getPermission(), defPb.Permission.READ_WRITE);
      assert.deepEqual(q.getAcceptMessageTypesList(), [type], `${topic} accepted types`);
      const b = q.getBroker();
      assert.equal(b.getId(), 0);
      assert.ok(b.getName().length > 0, 'broker name');
      const addrs = b.getEndpoints().getAddressesList().map((a) => `${a.getHost()}:${a.getPort()}`);
      assert.deepEqual(addrs, [`127.0.0.1:${g.grpcPort}`], 'broker endpoint is the address the client used');
    }
  }
  // Through "localhost" the endpoint is that name, not the server's own.
  const viaName = new Raw(`localhost:${g.grpcPort}`);
  try {
    const ep = new defPb.Endpoints().setScheme(defPb.AddressScheme.DOMAIN_NAME);
    ep.addAddresses(new defPb.Address().setHost('localhost').setPort(g.grpcPort));
    const r = await viaName.unary('QueryRoute', new pb.QueryRouteRequest().setTopic(resource(T)).setEndpoints(ep),
      pb.QueryRouteResponse);
    assert.equal(r.err, null);
    const b = r.resp.getMessageQueuesList()[0].getBroker();
    const addrs = b.getEndpoints().getAddressesList().map((a) => `${a.getHost()}:${a.getPort()}`);
    assert.deepEqual(addrs, [`localhost:${g.grpcPort}`]);
  } finally {
    viaName.close();
  }
});

test('QueryAssignment: one assignment with queue id -1 (message-level balancing); Heartbeat OK', async () => {
  const r = await raw.unary('QueryAssignment', new pb.QueryAssignmentRequest().setTopic(resource(T))
    .setGroup(resource(G)), pb.QueryAssignmentResponse);
  assert.equal(r.err, null);
  assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.OK), r.resp.getStatus().getMessage());
  const as = r.resp.getAssignmentsList();
  assert.equal(as.length, 1, 'one assignment per broker');
  const mq = as[0].getMessageQueue();
  assert.equal(mq.getId(), -1);
  assert.equal(mq.getTopic().getName(), T);
  assert.equal(mq.getBroker().getId(), 0);

  const u = await raw.unary('QueryAssignment', new pb.QueryAssignmentRequest().setTopic(resource('NoSuchTopic'))
    .setGroup(resource(G)), pb.QueryAssignmentResponse);
  assert.equal(codeName(u.resp.getStatus().getCode()), codeName(Code.TOPIC_NOT_FOUND));

  const h = await raw.unary('Heartbeat', new pb.HeartbeatRequest().setClientType(defPb.ClientType.SIMPLE_CONSUMER)
    .setGroup(resource(G)), pb.HeartbeatResponse);
  assert.equal(h.err, null);
  assert.equal(codeName(h.resp.getStatus().getCode()), codeName(Code.OK));
});

test('ReceiveMessage with a queue id other than 0 pops from every queue of the topic', async () => {
  // Put one message in each of the 3 queues, then receive naming queue 2 only.
  const ids = [];
  for (let q = 0; q < 3; q++) {
    const r = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, queueId: q, body: Buffer.from(`q${q}`) })]),
      pb.SendMessageResponse);
    assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.OK));
    ids.push(r.resp.getEntriesList()[0].getMessageId());
  }
  const tel = await raw.telemetry(consumerSettings(G, T));
  try {
    const got = new Map();
    const deadline = Date.now() + scaled(15000);
    while (got.size < 3 && Date.now() < deadline) {
      const s = await raw.serverStream('ReceiveMessage',
        receiveRequest({ group: G, topic: T, queueId: 2, batch: 32, invisibleMs: 30000, longPollMs: 1000 }),
        pb.ReceiveMessageResponse, { timeoutMs: scaled(10000) });
      assert.equal(s.err, null, s.err?.message);
      const sp = splitReceive(s.resps);
      assert.equal(sp.order[0], 'status', `stream order ${sp.order}`);
      for (const m of sp.messages) got.set(m.getSystemProperties().getMessageId(), m.getSystemProperties());
    }
    assert.deepEqual([...got.keys()].sort(), [...ids].sort(), 'messages of all 3 queues received');
    assert.deepEqual([...got.values()].map((s) => s.getQueueId()).sort(), [0, 1, 2], 'queue ids reported');
    const ack = await raw.unary('AckMessage', ackRequest(G, T, [...got.entries()].map(([id, s]) => (
      { id, handle: s.getReceiptHandle() }))), pb.AckMessageResponse);
    assert.equal(codeName(ack.resp.getStatus().getCode()), codeName(Code.OK));
    assert.equal(ack.resp.getEntriesList().length, 3, 'one ack entry per request entry');
  } finally {
    tel.call?.end();
  }
});

test('NotifyClientTermination: messages a push consumer held are visible again promptly', async () => {
  const holder = new Raw(g.endpoint);
  const other = new Raw(g.endpoint);
  let tel1; let tel2;
  try {
    const r = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, body: Buffer.from('held') })]),
      pb.SendMessageResponse);
    const id = r.resp.getEntriesList()[0].getMessageId();
    tel1 = await holder.telemetry(consumerSettings(G, T, defPb.ClientType.PUSH_CONSUMER));
    assert.equal(tel1.err, null);
    const s = await holder.serverStream('ReceiveMessage',
      receiveRequest({ group: G, topic: T, queueId: -1, autoRenew: true, batch: 32, longPollMs: 3000 }),
      pb.ReceiveMessageResponse, { timeoutMs: scaled(10000) });
    const held = splitReceive(s.resps).messages.map((m) => m.getSystemProperties().getMessageId());
    assert.deepEqual(held, [id], 'the push consumer received the message');

    tel2 = await other.telemetry(consumerSettings(G, T));
    const recv = () => other.serverStream('ReceiveMessage',
      receiveRequest({ group: G, topic: T, batch: 32, invisibleMs: 30000, longPollMs: 1000 }),
      pb.ReceiveMessageResponse, { timeoutMs: scaled(10000) });
    // Held while the holder is alive (auto-renewed, not redelivered).
    const before = splitReceive((await recv()).resps).messages;
    assert.deepEqual(before.map((m) => m.getSystemProperties().getMessageId()), [], 'redelivered while held');

    const n = await holder.unary('NotifyClientTermination',
      new pb.NotifyClientTerminationRequest().setGroup(resource(G)), pb.NotifyClientTerminationResponse);
    assert.equal(codeName(n.resp.getStatus().getCode()), codeName(Code.OK));
    tel1.call.end();
    const t0 = Date.now();
    let again = [];
    while (again.length === 0 && Date.now() - t0 < scaled(5000)) again = splitReceive((await recv()).resps).messages;
    assert.deepEqual(again.map((m) => m.getSystemProperties().getMessageId()), [id],
      'released within 5 s of NotifyClientTermination');
    assert.equal(again[0].getSystemProperties().getDeliveryAttempt(), 2);
    await other.unary('AckMessage', ackRequest(G, T, [{ id, handle: again[0].getSystemProperties().getReceiptHandle() }]),
      pb.AckMessageResponse);
  } finally {
    tel1?.call?.end();
    tel2?.call?.end();
    holder.close();
    other.close();
  }
});

// ---- receive, ack, change-invisible and DLQ details on the wire -----------

async function withConsumer(group, topic, fn, type = defPb.ClientType.SIMPLE_CONSUMER) {
  const c = new Raw(g.endpoint);
  const tel = await c.telemetry(consumerSettings(group, topic, type));
  assert.equal(tel.err, null, `telemetry: ${tel.err?.message}`);
  try {
    return await fn(c, tel);
  } finally {
    tel.call?.end();
    c.close();
  }
}

async function rawReceive(c, o, timeoutMs = scaled(10000), more = {}) {
  const s = await c.serverStream('ReceiveMessage', receiveRequest({ group: G, topic: T_RECV, ...o }),
    pb.ReceiveMessageResponse, { timeoutMs, ...more });
  assert.equal(s.err, null, `ReceiveMessage transport error: ${s.err?.message}`);
  return { ...splitReceive(s.resps), ms: s.ms };
}

async function rawSendN(topic, n, prefix) {
  const msgs = Array.from({ length: n }, (_, i) => wireMessage({ topic, body: Buffer.from(`${prefix}${i}`) }));
  const r = await raw.unary('SendMessage', sendRequest(msgs), pb.SendMessageResponse);
  assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.OK), r.resp.getStatus().getMessage());
  return r.resp.getEntriesList().map((e) => e.getMessageId());
}

const T_RECV = 'ProtoRecv';

test('ReceiveMessage: at most 32 per batch; the long poll ends inside the call deadline', async () => {
  await withConsumer(G, T_RECV, async (c) => {
    const ids = await rawSendN(T_RECV, 50, 'b');
    const first = await rawReceive(c, { batch: 100, invisibleMs: 60000, longPollMs: 1000 });
    assert.equal(codeName(first.status.getCode()), codeName(Code.OK));
    assert.ok(first.messages.length >= 1 && first.messages.length <= 32,
      `a batch_size 100 receive returned ${first.messages.length} messages`);
    const got = new Map(first.messages.map((m) => [m.getSystemProperties().getMessageId(), m]));
    while (got.size < ids.length) {
      const more = await rawReceive(c, { batch: 32, invisibleMs: 60000, longPollMs: 1000 });
      if (more.messages.length === 0) break;
      for (const m of more.messages) got.set(m.getSystemProperties().getMessageId(), m);
    }
    assert.equal(got.size, ids.length);
    const ack = await c.unary('AckMessage', ackRequest(G, T_RECV, [...got].map(([id, m]) => (
      { id, handle: m.getSystemProperties().getReceiptHandle() }))), pb.AckMessageResponse);
    assert.equal(codeName(ack.resp.getStatus().getCode()), codeName(Code.OK));

    // Nothing to receive, long poll 60 s, deadline 3 s (scaled): the server
    // answers MESSAGE_NOT_FOUND before the deadline instead of letting it
    // expire (its gRPC runtime would end the call DEADLINE_EXCEEDED).  The
    // deadline goes to the server as its grpc-timeout header; the client
    // does not enforce it too, as the answer's way back may take longer on
    // a loaded machine (it missed a client-side 3 s by 2 ms at load
    // average 26); it gives up after 20 s (scaled): a long poll left to run.
    const deadline = scaled(3000);
    const empty = await rawReceive(c, { batch: 32, invisibleMs: 30000, longPollMs: 60000 }, Infinity,
      { metadata: { 'grpc-timeout': `${deadline}m` }, cancelAfterMs: scaled(20000) });
    assert.deepEqual(empty.order, ['status'], `stream ${empty.order}`);
    assert.equal(codeName(empty.status.getCode()), codeName(Code.MESSAGE_NOT_FOUND));
  });
});

test('AckMessage: per-entry status, MULTIPLE_RESULTS when the entries differ', async () => {
  await withConsumer(G, T_RECV, async (c) => {
    const [id] = await rawSendN(T_RECV, 1, 'ack');
    const r = await rawReceive(c, { batch: 32, invisibleMs: 60000, longPollMs: 3000 });
    assert.deepEqual(r.messages.map((m) => m.getSystemProperties().getMessageId()), [id]);
    const handle = r.messages[0].getSystemProperties().getReceiptHandle();
    const ack = await c.unary('AckMessage', ackRequest(G, T_RECV, [
      { id, handle }, { id: 'bogus-id', handle: 'bogus-handle' }]), pb.AckMessageResponse);
    assert.equal(ack.err, null);
    assert.equal(codeName(ack.resp.getStatus().getCode()), codeName(Code.MULTIPLE_RESULTS));
    const entries = ack.resp.getEntriesList();
    assert.equal(entries.length, 2);
    assert.equal(entries[0].getMessageId(), id);
    assert.equal(codeName(entries[0].getStatus().getCode()), codeName(Code.OK));
    assert.equal(entries[1].getMessageId(), 'bogus-id');
    assert.equal(codeName(entries[1].getStatus().getCode()), codeName(Code.INVALID_RECEIPT_HANDLE));
    // The acked message is gone.
    const after1 = await rawReceive(c, { batch: 32, invisibleMs: 30000, longPollMs: 1000 });
    assert.equal(after1.messages.length, 0);
  });
});

test('ChangeInvisibleDuration always returns a receipt handle: the new one, or the old one on error', async () => {
  await withConsumer(G, T_RECV, async (c) => {
    const [id] = await rawSendN(T_RECV, 1, 'cid');
    const r = await rawReceive(c, { batch: 32, invisibleMs: 60000, longPollMs: 3000 });
    const handle = r.messages[0].getSystemProperties().getReceiptHandle();
    const cid = (h, ms) => c.unary('ChangeInvisibleDuration', new pb.ChangeInvisibleDurationRequest()
      .setGroup(resource(G)).setTopic(resource(T_RECV)).setReceiptHandle(h).setMessageId(id)
      .setInvisibleDuration(duration(ms)), pb.ChangeInvisibleDurationResponse);
    const bad = await cid(handle, 13 * 3600 * 1000);
    assert.equal(codeName(bad.resp.getStatus().getCode()), codeName(Code.ILLEGAL_INVISIBLE_TIME));
    assert.equal(bad.resp.getReceiptHandle(), handle, 'the old handle on error');
    const garbage = await cid('garbage-handle', 20000);
    assert.equal(codeName(garbage.resp.getStatus().getCode()), codeName(Code.INVALID_RECEIPT_HANDLE));
    assert.equal(garbage.resp.getReceiptHandle(), 'garbage-handle', 'the given handle on error');
    const ok = await cid(handle, 30000);
    assert.equal(codeName(ok.resp.getStatus().getCode()), codeName(Code.OK));
    const fresh = ok.resp.getReceiptHandle();
    assert.ok(fresh && fresh !== handle, 'a new handle');
    const ack = await c.unary('AckMessage', ackRequest(G, T_RECV, [{ id, handle: fresh }]), pb.AckMessageResponse);
    assert.equal(codeName(ack.resp.getStatus().getCode()), codeName(Code.OK));
  });
});

test('ForwardMessageToDeadLetterQueue moves the message to %DLQ%<group> at once', async () => {
  const dlqTopic = `%DLQ%${G}`;
  await withConsumer(G, T_RECV, async (c) => {
    const [id] = await rawSendN(T_RECV, 1, 'fwd');
    const r = await rawReceive(c, { batch: 32, invisibleMs: 60000, longPollMs: 3000 });
    assert.deepEqual(r.messages.map((m) => m.getSystemProperties().getMessageId()), [id]);
    const sp = r.messages[0].getSystemProperties();
    const f = await c.unary('ForwardMessageToDeadLetterQueue', new pb.ForwardMessageToDeadLetterQueueRequest()
      .setGroup(resource(G)).setTopic(resource(T_RECV)).setReceiptHandle(sp.getReceiptHandle())
      .setMessageId(id).setDeliveryAttempt(sp.getDeliveryAttempt()).setMaxDeliveryAttempts(MAX_ATTEMPTS),
    pb.ForwardMessageToDeadLetterQueueResponse);
    assert.equal(codeName(f.resp.getStatus().getCode()), codeName(Code.OK), f.resp.getStatus().getMessage());
    const route = await c.unary('QueryRoute', new pb.QueryRouteRequest().setTopic(resource(dlqTopic)),
      pb.QueryRouteResponse);
    assert.equal(codeName(route.resp.getStatus().getCode()), codeName(Code.OK), `QueryRoute ${dlqTopic}`);
    // Its receipt handle is spent; it is not redelivered to the group.
    const again = await c.unary('ChangeInvisibleDuration', new pb.ChangeInvisibleDurationRequest()
      .setGroup(resource(G)).setTopic(resource(T_RECV)).setReceiptHandle(sp.getReceiptHandle()).setMessageId(id)
      .setInvisibleDuration(duration(0)), pb.ChangeInvisibleDurationResponse);
    assert.equal(codeName(again.resp.getStatus().getCode()), codeName(Code.INVALID_RECEIPT_HANDLE),
      'changeInvisibleDuration after forwarding to the DLQ');
    const none = await rawReceive(c, { batch: 32, invisibleMs: 30000, longPollMs: 1000 });
    assert.equal(none.messages.length, 0, 'redelivered after forwarding to the DLQ');
  });
  await withConsumer('ProtoDlqReader', dlqTopic, async (c) => {
    const s = await c.serverStream('ReceiveMessage', receiveRequest({
      group: 'ProtoDlqReader', topic: dlqTopic, batch: 32, invisibleMs: 30000, longPollMs: 3000,
    }), pb.ReceiveMessageResponse);
    const msgs = splitReceive(s.resps).messages;
    assert.deepEqual(msgs.map((m) => m.getBody_asU8()).map((b) => Buffer.from(b).toString()), ['fwd0']);
    assert.equal(msgs[0].getTopic().getName(), dlqTopic);
  });
});

test('a push consumer whose telemetry stream ends releases the messages it held', async () => {
  const [id] = await rawSendN(T_RECV, 1, 'gone');
  const holder = new Raw(g.endpoint);
  const tel = await holder.telemetry(consumerSettings(G, T_RECV, defPb.ClientType.PUSH_CONSUMER));
  try {
    const r = await rawReceive(holder, { queueId: -1, autoRenew: true, batch: 32, longPollMs: 3000 });
    assert.deepEqual(r.messages.map((m) => m.getSystemProperties().getMessageId()), [id]);
  } finally {
    tel.call.end(); // no NotifyClientTermination: the client just goes away
    holder.close();
  }
  await withConsumer(G, T_RECV, async (c) => {
    const t0 = Date.now();
    let got = [];
    while (got.length === 0 && Date.now() - t0 < scaled(10000)) {
      got = (await rawReceive(c, { batch: 32, invisibleMs: 30000, longPollMs: 1000 })).messages;
    }
    assert.deepEqual(got.map((m) => m.getSystemProperties().getMessageId()), [id],
      'not released within 10 s of the stream ending');
    await c.unary('AckMessage', ackRequest(G, T_RECV, [{ id, handle: got[0].getSystemProperties().getReceiptHandle() }]),
      pb.AckMessageResponse);
  });
});

test('an invalid message fails its whole batch: nothing of it is stored', async () => {
  const good = wireMessage({ topic: T_RECV, body: Buffer.from('good') });
  const bad = wireMessage({ topic: T_RECV, body: Buffer.alloc(0) });
  const r = await raw.unary('SendMessage', sendRequest([good, bad]), pb.SendMessageResponse);
  assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.MESSAGE_BODY_EMPTY));
  const entries = r.resp.getEntriesList();
  if (entries.length) {
    assert.deepEqual(entries.map((e) => e.getMessageId()),
      [good, bad].map((m) => m.getSystemProperties().getMessageId()), 'entries in order, ids echoed');
  }
  await withConsumer(G, T_RECV, async (c) => {
    const none = await rawReceive(c, { batch: 32, invisibleMs: 30000, longPollMs: 1500 });
    assert.deepEqual(none.messages.map((m) => Buffer.from(m.getBody_asU8()).toString()), [],
      'a message of a refused batch was stored');
  });
});

test('any x-mq-language value is accepted', async () => {
  for (const lang of ['JAVA', 'GOLANG', 'CPP', 'DOTNET', 'PYTHON', 'RUST', 'NODE_JS', 'something-else']) {
    const md = raw.md();
    md.set('x-mq-language', lang);
    const r = await new Promise((resolve) => {
      raw.client.makeUnaryRequest(`${SVC}QueryRoute`, (x) => x, (x) => x,
        Buffer.from(new pb.QueryRouteRequest().setTopic(resource(T)).serializeBinary()), md,
        { deadline: Date.now() + scaled(5000) }, (err, out) => resolve({ err, out }));
    });
    assert.equal(r.err, null, `${lang}: ${r.err?.message}`);
    const resp = pb.QueryRouteResponse.deserializeBinary(new Uint8Array(r.out));
    assert.equal(codeName(resp.getStatus().getCode()), codeName(Code.OK), `x-mq-language ${lang}`);
  }
});

test('SendMessage with an out-of-range queue id still stores the message in a real queue', async () => {
  const r = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: T_Q, queueId: 99, body: Buffer.from('q99') })]),
    pb.SendMessageResponse);
  assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.OK), r.resp.getStatus().getMessage());
  const id = r.resp.getEntriesList()[0].getMessageId();
  await withConsumer(G, T_Q, async (c) => {
    const s = await c.serverStream('ReceiveMessage', receiveRequest({
      group: G, topic: T_Q, batch: 32, invisibleMs: 30000, longPollMs: 3000,
    }), pb.ReceiveMessageResponse);
    const msgs = splitReceive(s.resps).messages;
    assert.deepEqual(msgs.map((m) => m.getSystemProperties().getMessageId()), [id]);
    assert.ok([0, 1].includes(msgs[0].getSystemProperties().getQueueId()), `queue id ${msgs[0].getSystemProperties().getQueueId()}`);
    await c.unary('AckMessage', ackRequest(G, T_Q, [{ id, handle: msgs[0].getSystemProperties().getReceiptHandle() }]),
      pb.AckMessageResponse);
  });
});

test("one group's receipt handle cannot ack the message for another group", async () => {
  const G2 = 'ProtoDlqReader';
  const [id] = await rawSendN(T_RECV, 1, 'xgroup');
  await withConsumer(G, T_RECV, async (c) => {
    const r = await rawReceive(c, { batch: 32, invisibleMs: 60000, longPollMs: 3000 });
    assert.deepEqual(r.messages.map((m) => m.getSystemProperties().getMessageId()), [id]);
    const handle = r.messages[0].getSystemProperties().getReceiptHandle();
    const ack = await c.unary('AckMessage', ackRequest(G2, T_RECV, [{ id, handle }]), pb.AckMessageResponse);
    assert.notEqual(codeName(ack.resp.getStatus().getCode()), codeName(Code.OK), 'ack under another group');
    // Still held by G: make it visible at once and receive it again there.
    const cid = await c.unary('ChangeInvisibleDuration', new pb.ChangeInvisibleDurationRequest()
      .setGroup(resource(G)).setTopic(resource(T_RECV)).setReceiptHandle(handle).setMessageId(id)
      .setInvisibleDuration(duration(0)), pb.ChangeInvisibleDurationResponse);
    assert.equal(codeName(cid.resp.getStatus().getCode()), codeName(Code.OK), 'the handle still works for its group');
    const again = await rawReceive(c, { batch: 32, invisibleMs: 30000, longPollMs: 3000 });
    assert.deepEqual(again.messages.map((m) => m.getSystemProperties().getMessageId()), [id]);
    await c.unary('AckMessage', ackRequest(G, T_RECV, [{ id, handle: again.messages[0].getSystemProperties().getReceiptHandle() }]),
      pb.AckMessageResponse);
  });
});
