// The protocol details the SDKs rely on, checked on the wire with grpc-js
// and the SDK's protobuf classes: telemetry settings, QueryRoute,
// QueryAssignment, Heartbeat and NotifyClientTermination.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  Code, codeName, defPb, pb, Raw, yamlOf, resource, consumerSettings, producerSettings,
  receiveRequest, splitReceive, wireMessage, sendRequest, ackRequest,
} from './sdk_util.mjs';

const T = 'ProtoTopic';
const T_FIFO = 'ProtoFifo';
const G = 'ProtoGroup';
const MAX_ATTEMPTS = 7;

let g;
let raw;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [{ name: T, queues: 3 }, { name: T_FIFO, type: 'FIFO', queues: 2 }],
      groups: [{ name: G, max_delivery_attempts: MAX_ATTEMPTS }],
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
    const deadline = Date.now() + 15000;
    while (got.size < 3 && Date.now() < deadline) {
      const s = await raw.serverStream('ReceiveMessage',
        receiveRequest({ group: G, topic: T, queueId: 2, batch: 32, invisibleMs: 30000, longPollMs: 1000 }),
        pb.ReceiveMessageResponse, { timeoutMs: 10000 });
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
      pb.ReceiveMessageResponse, { timeoutMs: 10000 });
    const held = splitReceive(s.resps).messages.map((m) => m.getSystemProperties().getMessageId());
    assert.deepEqual(held, [id], 'the push consumer received the message');

    tel2 = await other.telemetry(consumerSettings(G, T));
    const recv = () => other.serverStream('ReceiveMessage',
      receiveRequest({ group: G, topic: T, batch: 32, invisibleMs: 30000, longPollMs: 1000 }),
      pb.ReceiveMessageResponse, { timeoutMs: 10000 });
    // Held while the holder is alive (auto-renewed, not redelivered).
    const before = splitReceive((await recv()).resps).messages;
    assert.deepEqual(before.map((m) => m.getSystemProperties().getMessageId()), [], 'redelivered while held');

    const n = await holder.unary('NotifyClientTermination',
      new pb.NotifyClientTerminationRequest().setGroup(resource(G)), pb.NotifyClientTerminationResponse);
    assert.equal(codeName(n.resp.getStatus().getCode()), codeName(Code.OK));
    tel1.call.end();
    const t0 = Date.now();
    let again = [];
    while (again.length === 0 && Date.now() - t0 < 5000) again = splitReceive((await recv()).resps).messages;
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
