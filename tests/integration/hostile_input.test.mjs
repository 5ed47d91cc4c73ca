// Hostile input over raw grpc-js (the SDK would refuse to send most of it):
// the store's system topics and groups are closed to clients, time values
// that overflow are refused, and strings that are not valid UTF-8 or carry
// a NUL are refused in-band with RocketMQ's codes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { startGantry, stopGantry } from './harness.mjs';
import {
  Code, codeName, defPb, pb, Raw, yamlOf, wireMessage, sendRequest, receiveRequest,
  resource, duration, splitReceive, ackRequest, newMessageId, Timestamp,
} from './sdk_util.mjs';

const T = 'HostileTopic';
const T_TX = 'HostileTxTopic';
const T_DELAY = 'HostileDelayTopic';
const T_LP = 'HostileLongPollTopic';
const T_STR = 'HostileStringTopic';
const T_FIFO = 'HostileFifoTopic';
const T_AUTH = 'HostileAuthorityTopic';
const G = 'HostileGroup';
const SYS_TOPICS = ['%SYS%HALF', '%SYS%TIMER'];

let g;
let raw;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [{ name: T, queues: 2 }, { name: T_TX, type: 'TRANSACTION', queues: 1 },
        { name: T_DELAY, type: 'DELAY', queues: 1 }, { name: T_LP, queues: 1 },
        { name: T_STR, queues: 1 }, { name: T_FIFO, type: 'FIFO', queues: 1 },
        { name: T_AUTH, queues: 1 }],
      groups: [{ name: G }],
    }),
  });
  raw = new Raw(g.endpoint);
});
after(async () => {
  raw?.close();
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

function expectStatus(status, code, what) {
  assert.ok(status, `${what}: no status`);
  assert.equal(codeName(status.getCode()), codeName(code), `${what}: ${status.getMessage()}`);
}

async function unaryStatus(method, req, Resp) {
  const r = await raw.unary(method, req, Resp);
  assert.equal(r.err, null, `${method}: transport error ${r.err?.message}`);
  return r.resp.getStatus();
}

async function send(messages) {
  const r = await raw.unary('SendMessage', sendRequest(messages), pb.SendMessageResponse);
  assert.equal(r.err, null, `SendMessage transport error: ${r.err?.message}`);
  return r.resp;
}

async function receive(o) {
  const r = await raw.serverStream('ReceiveMessage', receiveRequest(o), pb.ReceiveMessageResponse);
  assert.equal(r.err, null, `ReceiveMessage transport error: ${r.err?.message}`);
  return splitReceive(r.resps);
}

function mq(topic, id = 0) {
  return new defPb.MessageQueue().setTopic(resource(topic)).setId(id);
}

// ---- system topics and groups --------------------------------------------

test('system topics: a rolled-back transaction and a pending delayed message cannot be read, sent to or routed', async () => {
  // Put something in both system topics: a half message that is rolled
  // back, and a message delayed by an hour.
  const txId = newMessageId();
  let resp = await send([wireMessage({ topic: T_TX, id: txId, type: defPb.MessageType.TRANSACTION })]);
  expectStatus(resp.getStatus(), Code.OK, 'transactional send');
  expectStatus(await unaryStatus('EndTransaction', new pb.EndTransactionRequest()
    .setTopic(resource(T_TX)).setMessageId(txId).setTransactionId(txId)
    .setResolution(defPb.TransactionResolution.ROLLBACK)
    .setSource(defPb.TransactionSource.SOURCE_CLIENT), pb.EndTransactionResponse),
  Code.OK, 'rollback');
  resp = await send([wireMessage({
    topic: T_DELAY, type: defPb.MessageType.DELAY, deliveryTimestamp: new Date(Date.now() + 3600e3),
  })]);
  expectStatus(resp.getStatus(), Code.OK, 'delayed send');

  for (const sys of SYS_TOPICS) {
    const rcv = await receive({ group: G, topic: sys, longPollMs: 0 });
    assert.equal(rcv.messages.length, 0, `${sys}: a client received ${rcv.messages.length} message(s)`);
    expectStatus(rcv.status, Code.ILLEGAL_TOPIC, `ReceiveMessage ${sys}`);
    resp = await send([wireMessage({ topic: sys })]);
    expectStatus(resp.getStatus(), Code.ILLEGAL_TOPIC, `SendMessage ${sys}`);
    expectStatus(await unaryStatus('QueryRoute', new pb.QueryRouteRequest().setTopic(resource(sys)),
      pb.QueryRouteResponse), Code.ILLEGAL_TOPIC, `QueryRoute ${sys}`);
    expectStatus(await unaryStatus('QueryAssignment', new pb.QueryAssignmentRequest()
      .setTopic(resource(sys)).setGroup(resource(G)), pb.QueryAssignmentResponse),
    Code.ILLEGAL_TOPIC, `QueryAssignment ${sys}`);
    const pull = await raw.serverStream('PullMessage', new pb.PullMessageRequest()
      .setGroup(resource(G)).setMessageQueue(mq(sys)).setOffset(0).setBatchSize(32)
      .setFilterExpression(new defPb.FilterExpression().setType(defPb.FilterType.TAG).setExpression('*')),
    pb.PullMessageResponse);
    assert.equal(pull.err, null);
    const msgs = pull.resps.filter((r) => r.getContentCase() === pb.PullMessageResponse.ContentCase.MESSAGE);
    assert.equal(msgs.length, 0, `${sys}: a client pulled ${msgs.length} message(s)`);
    expectStatus(pull.resps[0]?.getStatus(), Code.ILLEGAL_TOPIC, `PullMessage ${sys}`);
    expectStatus(await unaryStatus('QueryOffset', new pb.QueryOffsetRequest().setMessageQueue(mq(sys))
      .setQueryOffsetPolicy(defPb.QueryOffsetPolicy.END), pb.QueryOffsetResponse),
    Code.ILLEGAL_TOPIC, `QueryOffset ${sys}`);
    expectStatus(await unaryStatus('GetOffset', new pb.GetOffsetRequest().setGroup(resource(G))
      .setMessageQueue(mq(sys)), pb.GetOffsetResponse), Code.ILLEGAL_TOPIC, `GetOffset ${sys}`);
    expectStatus(await unaryStatus('UpdateOffset', new pb.UpdateOffsetRequest().setGroup(resource(G))
      .setMessageQueue(mq(sys)).setOffset(0), pb.UpdateOffsetResponse), Code.ILLEGAL_TOPIC,
    `UpdateOffset ${sys}`);
    expectStatus(await unaryStatus('AckMessage', ackRequest(G, sys, [{ id: txId, handle: 'x' }]),
      pb.AckMessageResponse), Code.ILLEGAL_TOPIC, `AckMessage ${sys}`);
    expectStatus(await unaryStatus('ChangeInvisibleDuration', new pb.ChangeInvisibleDurationRequest()
      .setGroup(resource(G)).setTopic(resource(sys)).setReceiptHandle('x').setMessageId(txId)
      .setInvisibleDuration(duration(10000)), pb.ChangeInvisibleDurationResponse),
    Code.ILLEGAL_TOPIC, `ChangeInvisibleDuration ${sys}`);
    expectStatus(await unaryStatus('EndTransaction', new pb.EndTransactionRequest()
      .setTopic(resource(sys)).setMessageId(txId).setTransactionId(txId)
      .setResolution(defPb.TransactionResolution.COMMIT), pb.EndTransactionResponse),
    Code.ILLEGAL_TOPIC, `EndTransaction ${sys}`);
  }
  // The DLQ of the store's internal group is a system topic too.
  const rcv = await receive({ group: G, topic: '%DLQ%%SYS%HOLD', longPollMs: 0 });
  expectStatus(rcv.status, Code.ILLEGAL_TOPIC, 'ReceiveMessage %DLQ%%SYS%HOLD');
});

test('system groups: the store\'s internal group cannot be used by clients', async () => {
  const sysGroup = '%SYS%HOLD';
  const rcv = await receive({ group: sysGroup, topic: T, longPollMs: 0 });
  expectStatus(rcv.status, Code.ILLEGAL_CONSUMER_GROUP, 'ReceiveMessage with %SYS%HOLD');
  expectStatus(await unaryStatus('AckMessage', ackRequest(sysGroup, T, [{ id: newMessageId(), handle: 'x' }]),
    pb.AckMessageResponse), Code.ILLEGAL_CONSUMER_GROUP, 'AckMessage with %SYS%HOLD');
  expectStatus(await unaryStatus('GetOffset', new pb.GetOffsetRequest().setGroup(resource(sysGroup))
    .setMessageQueue(mq(T)), pb.GetOffsetResponse), Code.ILLEGAL_CONSUMER_GROUP, 'GetOffset with %SYS%HOLD');
  expectStatus(await unaryStatus('Heartbeat', new pb.HeartbeatRequest().setGroup(resource(sysGroup))
    .setClientType(defPb.ClientType.SIMPLE_CONSUMER), pb.HeartbeatResponse),
  Code.ILLEGAL_CONSUMER_GROUP, 'Heartbeat with %SYS%HOLD');
});

// ---- time values that overflow --------------------------------------------

// 2^61 + 512 seconds: in ms this wraps (mod 2^64) to 512 s, inside the
// allowed invisible range; 2^62 s wraps to 0 ms.
const WRAPS_TO_512_S = 2 ** 61 + 512;
const WRAPS_TO_0 = 2 ** 62;

test('delivery timestamps that overflow in ms: ILLEGAL_DELIVERY_TIME, not delivered at once', async () => {
  for (const seconds of [WRAPS_TO_0, -WRAPS_TO_0]) {
    const m = wireMessage({ topic: T_DELAY, type: defPb.MessageType.DELAY });
    m.getSystemProperties().setDeliveryTimestamp(new Timestamp().setSeconds(seconds));
    const resp = await send([m]);
    expectStatus(resp.getStatus(), Code.ILLEGAL_DELIVERY_TIME, `delivery timestamp ${seconds} s`);
  }
  const rcv = await receive({ group: G, topic: T_DELAY, longPollMs: 0 });
  assert.equal(rcv.messages.length, 0, 'a message with an overflowing delivery time was delivered');
});

test('a born timestamp outside google.protobuf.Timestamp\'s range is refused (consumers could not read it back)', async () => {
  for (const [seconds, nanos] of [[WRAPS_TO_0, 0], [-WRAPS_TO_0, 0], [253402300800, 0], [1, -1], [1, 1e9]]) {
    const m = wireMessage({ topic: T_STR });
    m.getSystemProperties().setBornTimestamp(new Timestamp().setSeconds(seconds).setNanos(nanos));
    const resp = await send([m]);
    expectStatus(resp.getStatus(), Code.BAD_REQUEST, `born timestamp ${seconds} s ${nanos} ns`);
  }
  const rcv = await receive({ group: G, topic: T_STR, longPollMs: 0 });
  assert.equal(rcv.messages.length, 0, 'a message with an invalid born timestamp was stored');
});

test('invisible durations that overflow in ms: ILLEGAL_INVISIBLE_TIME (ReceiveMessage, ChangeInvisibleDuration)', async () => {
  for (const seconds of [WRAPS_TO_512_S, -WRAPS_TO_512_S]) {
    const req = receiveRequest({ group: G, topic: T, longPollMs: 0 });
    req.setInvisibleDuration(duration(0).setSeconds(seconds));
    const r = await raw.serverStream('ReceiveMessage', req, pb.ReceiveMessageResponse);
    assert.equal(r.err, null);
    expectStatus(splitReceive(r.resps).status, Code.ILLEGAL_INVISIBLE_TIME, `receive, invisible ${seconds} s`);
    expectStatus(await unaryStatus('ChangeInvisibleDuration', new pb.ChangeInvisibleDurationRequest()
      .setGroup(resource(G)).setTopic(resource(T)).setReceiptHandle('x').setMessageId(newMessageId())
      .setInvisibleDuration(duration(0).setSeconds(seconds)), pb.ChangeInvisibleDurationResponse),
    Code.ILLEGAL_INVISIBLE_TIME, `change invisible ${seconds} s`);
  }
});

test('long polling timeouts and offset timestamps that overflow are saturated, not wrapped', async () => {
  // A huge long poll is bounded by the call's deadline: the answer comes
  // before it (MESSAGE_NOT_FOUND), not at once with a wrapped timeout.
  const req = receiveRequest({ group: G, topic: T });
  req.setLongPollingTimeout(duration(0).setSeconds(-WRAPS_TO_0));
  let r = await raw.serverStream('ReceiveMessage', req, pb.ReceiveMessageResponse);
  assert.equal(r.err, null);
  expectStatus(splitReceive(r.resps).status, Code.MESSAGE_NOT_FOUND, 'negative huge long poll');
  // Without a deadline, a long poll over the store's bound (a day) waits
  // (up to that bound) instead of failing: the message sent meanwhile
  // arrives.
  const lreq = receiveRequest({ group: G, topic: T_LP });
  lreq.setLongPollingTimeout(duration(0).setSeconds(WRAPS_TO_0));
  const parked = raw.serverStream('ReceiveMessage', lreq, pb.ReceiveMessageResponse, { timeoutMs: Infinity });
  const sent = await send([wireMessage({ topic: T_LP })]);
  expectStatus(sent.getStatus(), Code.OK, 'send to the long-polled topic');
  r = await parked;
  assert.equal(r.err, null);
  const got = splitReceive(r.resps);
  expectStatus(got.status, Code.OK, 'huge long poll without a deadline');
  assert.equal(got.messages.length, 1);
  const q = new pb.QueryOffsetRequest().setMessageQueue(mq(T))
    .setQueryOffsetPolicy(defPb.QueryOffsetPolicy.TIMESTAMP)
    .setTimestamp(new Timestamp().setSeconds(WRAPS_TO_0));
  r = await raw.unary('QueryOffset', q, pb.QueryOffsetResponse);
  assert.equal(r.err, null);
  expectStatus(r.resp.getStatus(), Code.OK, 'QueryOffset far future');
});

// ---- leaks ---------------------------------------------------------------

test('a valid SQL filter with an out-of-range invisible duration: ILLEGAL_INVISIBLE_TIME, nothing leaked', async () => {
  // The leak shows as a LeakSanitizer report at teardown (ASan build).
  for (const ms of [1000, 13 * 3600e3]) {
    const req = receiveRequest({ group: G, topic: T, longPollMs: 0, invisibleMs: ms });
    req.setFilterExpression(new defPb.FilterExpression().setType(defPb.FilterType.SQL).setExpression('a = 1'));
    const r = await raw.serverStream('ReceiveMessage', req, pb.ReceiveMessageResponse);
    assert.equal(r.err, null);
    expectStatus(splitReceive(r.resps).status, Code.ILLEGAL_INVISIBLE_TIME, `invisible ${ms} ms with SQL`);
  }
});

// ---- strings that are not UTF-8 or hold a NUL -----------------------------

// The SDK's classes only build valid strings: serialize with a 4-byte
// marker in one string and overwrite the marker with the bytes under test
// (same length, so every length prefix stays right).
const MARK = 'QZQZ';
function patched(msg, bytes) {
  const buf = Buffer.from(msg.serializeBinary());
  const at = buf.indexOf(MARK);
  assert.ok(at >= 0 && buf.indexOf(MARK, at + 1) < 0, 'one marker in the request');
  Buffer.from(bytes).copy(buf, at);
  return buf;
}
const BAD_STRINGS = {
  'a NUL': [0x61, 0x00, 0x62, 0x63], // "a\0bc": used to come back as "a"
  'a 0xff byte': [0x61, 0xff, 0x62, 0x63],
  'an overlong form': [0x61, 0xc0, 0xaf, 0x63],
  'a UTF-16 surrogate': [0x61, 0xed, 0xa0, 0x80],
};

test('SendMessage: tag, keys, property key and value, message group and id that are not UTF-8 or hold a NUL are refused with their codes', async () => {
  const cases = [
    ['tag', Code.ILLEGAL_MESSAGE_TAG, () => wireMessage({ topic: T_STR, tag: `t${MARK}` })],
    ['key', Code.ILLEGAL_MESSAGE_KEY, () => wireMessage({ topic: T_STR, keys: ['k1', `k${MARK}`] })],
    ['property key', Code.ILLEGAL_MESSAGE_PROPERTY_KEY, () => wireMessage({ topic: T_STR, props: { [`p${MARK}`]: 'v' } })],
    ['property value', Code.ILLEGAL_MESSAGE_PROPERTY_KEY, () => wireMessage({ topic: T_STR, props: { p: `v${MARK}` } })],
    ['message group', Code.ILLEGAL_MESSAGE_GROUP, () => wireMessage({ topic: T_FIFO, type: defPb.MessageType.FIFO, group: `g${MARK}` })],
    ['message id', Code.ILLEGAL_MESSAGE_ID, () => wireMessage({ topic: T_STR, id: `01${MARK}0000000000000000000000000` })],
    ['topic', Code.ILLEGAL_TOPIC, () => wireMessage({ topic: `T${MARK}` })],
  ];
  const wrong = [];
  for (const [field, code, build] of cases) {
    for (const [what, bytes] of Object.entries(BAD_STRINGS)) {
      const r = await raw.unary('SendMessage', patched(sendRequest([build()]), bytes), pb.SendMessageResponse);
      assert.equal(r.err, null, `${field} with ${what}: transport error ${r.err?.message}`);
      const got = r.resp.getStatus().getCode();
      if (got !== code) wrong.push(`${field} with ${what}: ${codeName(got)} ${r.resp.getStatus().getMessage()}`);
    }
  }
  assert.deepEqual(wrong, [], 'wrong answers');
  // Nothing was stored.
  for (const [topic, group] of [[T_STR, G], [T_FIFO, G]]) {
    const rcv = await receive({ group, topic, longPollMs: 0 });
    assert.equal(rcv.messages.length, 0, `${topic}: a refused message was stored`);
  }
});

test('other requests: topic, group, receipt handle, filter expression and transaction id that are not UTF-8 are refused in-band', async () => {
  const wrong = [];
  const check = async (what, code, method, req, Resp, stream = false) => {
    for (const [how, bytes] of Object.entries(BAD_STRINGS)) {
      const buf = patched(req, bytes);
      let status;
      if (stream) {
        const r = await raw.serverStream(method, buf, Resp);
        assert.equal(r.err, null, `${what}: transport error ${r.err?.message}`);
        status = r.resps[0]?.getStatus();
      } else {
        const r = await raw.unary(method, buf, Resp);
        assert.equal(r.err, null, `${what}: transport error ${r.err?.message}`);
        status = r.resp.getStatus();
      }
      if (status?.getCode() !== code) wrong.push(`${what} with ${how}: ${status ? codeName(status.getCode()) : 'no status'}`);
    }
  };
  await check('receive topic', Code.ILLEGAL_TOPIC, 'ReceiveMessage',
    receiveRequest({ group: G, topic: `T${MARK}`, longPollMs: 0 }), pb.ReceiveMessageResponse, true);
  await check('receive group', Code.ILLEGAL_CONSUMER_GROUP, 'ReceiveMessage',
    receiveRequest({ group: `G${MARK}`, topic: T, longPollMs: 0 }), pb.ReceiveMessageResponse, true);
  await check('receive tag expression', Code.ILLEGAL_FILTER_EXPRESSION, 'ReceiveMessage',
    receiveRequest({ group: G, topic: T, tag: `a${MARK}`, longPollMs: 0 }), pb.ReceiveMessageResponse, true);
  await check('ack receipt handle', Code.INVALID_RECEIPT_HANDLE, 'AckMessage',
    ackRequest(G, T, [{ id: newMessageId(), handle: `h${MARK}` }]), pb.AckMessageResponse);
  await check('end transaction id', Code.INVALID_TRANSACTION_ID, 'EndTransaction',
    new pb.EndTransactionRequest().setTopic(resource(T_TX)).setMessageId(newMessageId())
      .setTransactionId(`x${MARK}`).setResolution(defPb.TransactionResolution.COMMIT), pb.EndTransactionResponse);
  await check('query route namespace', Code.BAD_REQUEST, 'QueryRoute',
    new pb.QueryRouteRequest().setTopic(resource(T).setResourceNamespace(`n${MARK}`)), pb.QueryRouteResponse);
  assert.deepEqual(wrong, [], 'wrong answers');
});

test('Telemetry: settings with a topic that is not UTF-8 end the stream with INVALID_ARGUMENT', async () => {
  const pubs = new defPb.Publishing();
  pubs.addTopics(resource(`T${MARK}`));
  const settings = new defPb.Settings().setClientType(defPb.ClientType.PRODUCER).setPublishing(pubs);
  const cmd = patched(new pb.TelemetryCommand().setSettings(settings), BAD_STRINGS['a 0xff byte']);
  const status = await new Promise((resolve) => {
    const call = raw.client.makeBidiStreamRequest('/apache.rocketmq.v2.MessagingService/Telemetry',
      (x) => x, (x) => x, raw.md(), { deadline: Date.now() + 10000 });
    call.on('data', () => {});
    call.on('error', () => {});
    call.on('status', (s) => resolve(s));
    call.write(cmd);
  });
  assert.equal(status.code, 3, `Telemetry status ${status.code} ${status.details}`);
  assert.match(status.details, /UTF-8/);
});

// ---- client ids ----------------------------------------------------------

test('client ids that the registry cannot hold (over 127 bytes) are refused, not truncated into another client\'s id', async () => {
  // Two ids that share their first 127 bytes would have been one client.
  const base = 'c'.repeat(127);
  for (const id of [`${base}A`, 'x'.repeat(1000)]) {
    const r = await raw.unary('QueryRoute', new pb.QueryRouteRequest().setTopic(resource(T)),
      pb.QueryRouteResponse, { clientId: id });
    assert.equal(r.err, null);
    expectStatus(r.resp.getStatus(), Code.CLIENT_ID_REQUIRED, `client id of ${id.length} bytes`);
  }
  const r = await raw.unary('QueryRoute', new pb.QueryRouteRequest().setTopic(resource(T)),
    pb.QueryRouteResponse, { clientId: base });
  expectStatus(r.resp.getStatus(), Code.OK, 'client id of 127 bytes');
});

// ---- the :authority a client sends -----------------------------------------

// A raw HTTP/2 gRPC call with a chosen :authority (grpc-js only sends valid
// ones).  Resolves the concatenated response messages' bytes.
function h2call(method, reqBytes, authority) {
  return new Promise((resolve, reject) => {
    const client = http2.connect(`http://127.0.0.1:${g.grpcPort}`);
    client.on('error', reject);
    const frame = Buffer.alloc(5 + reqBytes.length);
    frame.writeUInt32BE(reqBytes.length, 1);
    Buffer.from(reqBytes).copy(frame, 5);
    const s = client.request({
      ':method': 'POST', ':path': `/apache.rocketmq.v2.MessagingService/${method}`,
      ':authority': authority, 'content-type': 'application/grpc', te: 'trailers',
      'x-mq-client-id': 'h2-raw-client', 'grpc-timeout': '5S',
    });
    const chunks = [];
    s.on('data', (d) => chunks.push(d));
    s.on('error', reject);
    s.on('close', () => { client.close(); resolve(Buffer.concat(chunks)); });
    s.end(frame);
  });
}

// The messages of a gRPC response body (5-byte length prefixes).
function grpcFrames(buf) {
  const out = [];
  for (let off = 0; off + 5 <= buf.length;) {
    const n = buf.readUInt32BE(off + 1);
    out.push(new Uint8Array(buf.subarray(off + 5, off + 5 + n)));
    off += 5 + n;
  }
  return out;
}

test('an :authority that is not UTF-8 is not echoed in route endpoints or messages\' store host', async () => {
  const authority = Buffer.from([0x61, 0xff, 0x62, 0x3a, 0x38, 0x30, 0x38, 0x31]).toString('latin1');
  // The authority as sent, found anywhere in a reply, was echoed.
  const echoed = Buffer.from(authority, 'latin1');
  const route = await h2call('QueryRoute',
    new pb.QueryRouteRequest().setTopic(resource(T)).serializeBinary(), authority);
  assert.equal(grpcFrames(route).length, 1, 'a QueryRoute answer');
  assert.equal(route.indexOf(echoed.subarray(0, 3)), -1, 'QueryRoute echoed the invalid authority');
  const sent = await send([wireMessage({ topic: T_AUTH })]);
  expectStatus(sent.getStatus(), Code.OK, 'send');
  const rcv = await h2call('ReceiveMessage',
    receiveRequest({ group: G, topic: T_AUTH, longPollMs: 2000 }).serializeBinary(), authority);
  assert.equal(grpcFrames(rcv).length, 3, 'status, one message, delivery timestamp');
  assert.equal(rcv.indexOf(echoed), -1, 'ReceiveMessage echoed the invalid authority as store host');
});

test('a long resource namespace of multi-byte characters is not cut inside a character in replies', async () => {
  const ns = 'é'.repeat(200); // 400 bytes: more than the 127 kept
  const sent = await send([wireMessage({ topic: T_AUTH })]);
  expectStatus(sent.getStatus(), Code.OK, 'send');
  const req = receiveRequest({ group: G, topic: T_AUTH, longPollMs: 2000 });
  req.getMessageQueue().getTopic().setResourceNamespace(ns);
  const r = await raw.serverStream('ReceiveMessage', req, null);
  assert.equal(r.err, null);
  assert.equal(r.resps.length, 3, 'status, one message, delivery timestamp');
  const msg = Buffer.from(r.resps[1]);
  // The echoed namespace is a run of "é" (c3 a9); cut inside a character
  // it would end with a lone c3.
  let j = msg.indexOf(Buffer.from('éé'));
  assert.ok(j >= 0, 'the namespace is echoed');
  while (msg[j] === 0xc3 && msg[j + 1] === 0xa9) j += 2;
  assert.notEqual(msg[j], 0xc3, `a cut character at byte ${j} of the message`);
});

// ---- filter expressions ----------------------------------------------------

test('PullMessage refuses the tag expressions ReceiveMessage refuses: ILLEGAL_FILTER_EXPRESSION', async () => {
  for (const expr of ['a||', 'a|| ||b', 'a\u0001b']) {
    for (const method of ['PullMessage', 'ReceiveMessage']) {
      const filter = new defPb.FilterExpression().setType(defPb.FilterType.TAG).setExpression(expr);
      const req = method === 'PullMessage'
        ? new pb.PullMessageRequest().setGroup(resource(G)).setMessageQueue(mq(T)).setOffset(0)
          .setBatchSize(32).setFilterExpression(filter)
        : receiveRequest({ group: G, topic: T, longPollMs: 0 }).setFilterExpression(filter);
      const Resp = method === 'PullMessage' ? pb.PullMessageResponse : pb.ReceiveMessageResponse;
      const r = await raw.serverStream(method, req, Resp);
      assert.equal(r.err, null);
      expectStatus(r.resps[0]?.getStatus(), Code.ILLEGAL_FILTER_EXPRESSION, `${method} ${JSON.stringify(expr)}`);
    }
  }
});

// ---- amplification -------------------------------------------------------

test('AckMessage with more than 1024 entries is refused (each entry costs the server far more than its bytes)', async () => {
  const entries = (n) => Array.from({ length: n }, (_, i) => ({ id: `m${i}`, handle: `h${i}` }));
  let st = await unaryStatus('AckMessage', ackRequest(G, T, entries(1025)), pb.AckMessageResponse);
  expectStatus(st, Code.BAD_REQUEST, '1025 entries');
  st = await unaryStatus('AckMessage', ackRequest(G, T, entries(1024)), pb.AckMessageResponse);
  expectStatus(st, Code.INVALID_RECEIPT_HANDLE, '1024 unknown handles');
});
