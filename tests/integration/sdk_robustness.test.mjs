// The server stays healthy after a barrage of malformed requests: garbage
// bytes inside valid gRPC frames, requests with missing fields, and 10,000
// concurrent ReceiveMessage long polls cancelled by their clients.  Then
// /healthz answers, a normal send and receive work and the process is the
// same one (no crash, no restart), and it still stops cleanly.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  Code, codeName, defPb, pb, grpc, Raw, SVC, yamlOf, resource, consumerSettings, receiveRequest,
  wireMessage, sendRequest, ackRequest, startProducer, startSimpleConsumer, shutdownQuietly, receiveAll,
  healthy, patternBytes, withTimeout, sleep, scaled, waitFor,
} from './sdk_util.mjs';

const T = 'RobustTopic';
const G = 'RobustGroup';
const T_CHECK = 'RobustCheckTopic';
const G_CHECK = 'RobustCheckGroup';
const POLLS = 10000;
const CHANNELS = 8;
// Longer than parking POLLS polls takes even on a slow machine under a
// sanitizer; the test cancels the polls once it has checked them.
const POLL_MS = 30 * 60 * 1000;

let g;
let pid;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [{ name: T, queues: 2 }, { name: T_CHECK, queues: 2 }],
      groups: [{ name: G }, { name: G_CHECK }],
    }),
  });
  pid = g.pid;
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code} signal ${info.signal}`);
});

async function assertAlive(what) {
  assert.equal(g.proc.exitCode, null, `${what}: gantry exited (${g.proc.exitCode})`);
  assert.equal(g.proc.signalCode, null, `${what}: gantry killed by ${g.proc.signalCode}`);
  assert.equal(g.pid, pid);
  assert.ok(await healthy(g), `${what}: /healthz not 200`);
}

// A normal send and receive, on a topic and group of their own: whether
// messages of the barrage's own group survive the cancelled polls is
// sdk_dropped_polls' subject.
async function sendAndReceive(what) {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_CHECK]);
    consumer = await startSimpleConsumer(g, G_CHECK, T_CHECK, { awaitDuration: 2000 });
    const body = patternBytes(1000, Date.now() % 1000);
    const r = await producer.send({ topic: T_CHECK, body, tag: 'check' });
    const got = await receiveAll(consumer, 1, 10000, { invisible: 30000 });
    assert.deepEqual(got.map((m) => m.messageId), [r.messageId], `${what}: message sent afterwards not received`);
    assert.ok(got[0].body.equals(body), `${what}: body`);
  } finally {
    await shutdownQuietly(producer, consumer);
  }
}

const UNARY = [
  ['QueryRoute', pb.QueryRouteResponse], ['Heartbeat', pb.HeartbeatResponse],
  ['SendMessage', pb.SendMessageResponse], ['QueryAssignment', pb.QueryAssignmentResponse],
  ['AckMessage', pb.AckMessageResponse], ['ChangeInvisibleDuration', pb.ChangeInvisibleDurationResponse],
  ['ForwardMessageToDeadLetterQueue', pb.ForwardMessageToDeadLetterQueueResponse],
  ['NotifyClientTermination', pb.NotifyClientTerminationResponse],
];

// Payloads that are not valid protobuf whatever the message type.
const INVALID = [
  [0x0a, 0xff, 0xff, 0x01], // length-delimited field longer than the payload
  [0x08], // varint field without its value
  [0x0f, 0x01], // wire type 7
  [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], // 11-byte varint
  [0x0b, 0x10, 0x01], // group start never ended
];

test('garbage bytes in valid gRPC frames: BAD_REQUEST in-band, the server survives', async () => {
  const raw = new Raw(g.endpoint);
  try {
    for (const [method, Resp] of UNARY) {
      for (const bytes of INVALID) {
        const r = await raw.unary(method, Uint8Array.from(bytes), Resp);
        assert.equal(r.err, null, `${method} ${bytes}: ${r.err?.message}`);
        assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.BAD_REQUEST), `${method} [${bytes}]`);
      }
    }
    for (const bytes of INVALID) {
      const s = await raw.serverStream('ReceiveMessage', Uint8Array.from(bytes), pb.ReceiveMessageResponse);
      assert.equal(s.err, null, `ReceiveMessage ${bytes}: ${s.err?.message}`);
      assert.equal(s.resps.length, 1, 'ReceiveMessage: one status response');
      assert.equal(codeName(s.resps[0].getStatus().getCode()), codeName(Code.BAD_REQUEST), `ReceiveMessage [${bytes}]`);
    }
    // Random payloads (some may even parse): every call must be answered.
    const jobs = [];
    for (let i = 0; i < 400; i++) {
      const [method, Resp] = UNARY[i % UNARY.length];
      jobs.push(raw.unary(method, patternBytes(1 + (i * 7919) % 700, i + 1), Resp).then((r) => {
        assert.equal(r.err, null, `${method} random #${i}: ${r.err?.message}`);
      }));
      if (i % 50 === 0) {
        jobs.push(raw.serverStream('ReceiveMessage', patternBytes(1 + i, i + 99), pb.ReceiveMessageResponse,
          { timeoutMs: 30000 }).then((s) => {
          assert.ok(s.err === null || s.err.code === grpc.status.DEADLINE_EXCEEDED, `ReceiveMessage random #${i}: ${s.err?.message}`);
        }));
      }
    }
    await Promise.all(jobs);
    // Garbage on the Telemetry stream ends that stream, nothing else.
    for (const bytes of INVALID) {
      const done = new Promise((resolve) => {
        const call = raw.client.makeBidiStreamRequest(`${SVC}Telemetry`, (x) => x, (x) => x, raw.md(), {});
        const t = setTimeout(() => { call.cancel(); resolve('open'); }, 3000);
        call.on('data', () => {});
        call.on('error', () => { clearTimeout(t); resolve('error'); });
        call.on('status', () => { clearTimeout(t); resolve('status'); });
        call.write(Buffer.from(bytes));
      });
      await done;
    }
    await assertAlive('after garbage frames');
  } finally {
    raw.close();
  }
});

test('requests with missing fields are refused in-band with a 4xxxx code', async () => {
  const raw = new Raw(g.endpoint);
  const cases = [
    ['QueryRoute', new pb.QueryRouteRequest(), pb.QueryRouteResponse],
    ['SendMessage', new pb.SendMessageRequest().addMessages(new defPb.Message()), pb.SendMessageResponse],
    ['SendMessage', sendRequest([new defPb.Message().setTopic(resource(T)).setBody(Buffer.from('x'))]),
      pb.SendMessageResponse],
    ['SendMessage', sendRequest([(() => { const m = wireMessage({ topic: T }); m.clearTopic(); return m; })()]),
      pb.SendMessageResponse],
    ['QueryAssignment', new pb.QueryAssignmentRequest(), pb.QueryAssignmentResponse],
    ['QueryAssignment', new pb.QueryAssignmentRequest().setTopic(resource(T)), pb.QueryAssignmentResponse],
    ['AckMessage', new pb.AckMessageRequest(), pb.AckMessageResponse],
    ['AckMessage', new pb.AckMessageRequest().setGroup(resource(G)).setTopic(resource(T))
      .addEntries(new pb.AckMessageEntry().setMessageId('x')), pb.AckMessageResponse],
    ['ChangeInvisibleDuration', new pb.ChangeInvisibleDurationRequest(), pb.ChangeInvisibleDurationResponse],
    ['ChangeInvisibleDuration', new pb.ChangeInvisibleDurationRequest().setGroup(resource(G)).setTopic(resource(T)),
      pb.ChangeInvisibleDurationResponse],
    ['ForwardMessageToDeadLetterQueue', new pb.ForwardMessageToDeadLetterQueueRequest(),
      pb.ForwardMessageToDeadLetterQueueResponse],
  ];
  try {
    for (const [method, req, Resp] of cases) {
      const r = await raw.unary(method, req, Resp);
      assert.equal(r.err, null, `${method}: ${r.err?.message}`);
      const c = r.resp.getStatus().getCode();
      assert.ok(c >= 40000 && c < 50000, `${method} ${JSON.stringify(req.toObject()).slice(0, 120)}: got ${codeName(c)} ${r.resp.getStatus().getMessage()}`);
    }
    for (const req of [new pb.ReceiveMessageRequest(),
      (() => { const q = receiveRequest({ group: G, topic: T }); q.clearMessageQueue(); return q; })(),
      (() => { const q = receiveRequest({ group: G, topic: T }); q.clearGroup(); return q; })()]) {
      const s = await raw.serverStream('ReceiveMessage', req, pb.ReceiveMessageResponse);
      assert.equal(s.err, null, s.err?.message);
      const c = s.resps[0]?.getStatus()?.getCode();
      assert.ok(c >= 40000 && c < 50000, `ReceiveMessage ${JSON.stringify(req.toObject()).slice(0, 160)}: got ${codeName(c)}`);
    }
    // A request that is cut off mid-stream: half-close without a message.
    await new Promise((resolve) => {
      const call = raw.client.makeServerStreamRequest(`${SVC}ReceiveMessage`, (x) => x, (x) => x,
        Buffer.alloc(0), raw.md(), { deadline: Date.now() + 5000 });
      call.on('data', () => {});
      call.on('error', resolve);
      call.on('end', resolve);
      call.on('status', resolve);
    });
    await assertAlive('after missing fields');
  } finally {
    raw.close();
  }
});

test(`${POLLS} concurrent long polls cancelled by their clients`, async () => {
  const raws = Array.from({ length: CHANNELS }, () => new Raw(g.endpoint));
  const tels = [];
  const calls = [];
  let ended = 0;
  let withMessage = 0;
  const early = [];
  try {
    for (const r of raws) {
      const t = await r.telemetry(consumerSettings(G, T));
      assert.equal(t.err, null, `telemetry: ${t.err?.message}`);
      tels.push(t.call);
    }
    // The polls last far longer than parking 10,000 of them can take on
    // any machine; the test ends them itself by cancelling.
    const req = Buffer.from(receiveRequest({
      group: G, topic: T, batch: 1, invisibleMs: 60000, longPollMs: POLL_MS,
    }).serializeBinary());
    for (let i = 0; i < POLLS; i++) {
      const r = raws[i % CHANNELS];
      const call = r.client.makeServerStreamRequest(`${SVC}ReceiveMessage`, (x) => x, (x) => x, req, r.md(),
        { deadline: Date.now() + 2 * POLL_MS });
      const rec = { call, done: false, cancelled: false, got: 0 };
      call.on('data', (d) => {
        const resp = pb.ReceiveMessageResponse.deserializeBinary(new Uint8Array(d));
        if (resp.hasMessage()) {
          withMessage++;
          rec.got = Date.now();
          rec.msg = resp.getMessage().getSystemProperties();
        }
        if (resp.hasStatus() && !rec.cancelled && early.length < 5) {
          const c = resp.getStatus().getCode();
          if (c !== Code.OK) early.push(`${codeName(c)} ${resp.getStatus().getMessage()}`);
        }
      });
      call.on('error', (e) => {
        if (!rec.cancelled && early.length < 5) early.push(`error ${e.code} ${e.message}`);
      });
      call.on('status', (st) => { if (!rec.done) { rec.done = true; rec.status = st; rec.end = Date.now(); ended++; } });
      calls.push(rec);
      if (i % 500 === 499) await new Promise((res) => setImmediate(res));
    }
    // A unary call behind the polls on every connection: once it is
    // answered the server has read the polls before it.
    await withTimeout(Promise.all(raws.map((r) => r.unary('Heartbeat',
      new pb.HeartbeatRequest().setClientType(defPb.ClientType.SIMPLE_CONSUMER).setGroup(resource(G)),
      pb.HeartbeatResponse, { timeoutMs: scaled(60000) }))), scaled(65000), 'heartbeats behind the long polls');
    // A poll answered early (wrongly) would show up within this grace.
    await sleep(1000);
    assert.equal(ended, 0, `long polls ended early: ${early.join('; ')}`);
    await assertAlive(`with ${POLLS} long polls parked`);

    // One message wakes exactly one poll.
    const raw = raws[0];
    const s = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, body: Buffer.from('wake') })]),
      pb.SendMessageResponse, { timeoutMs: scaled(10000) });
    assert.equal(s.err, null, s.err?.message);
    assert.equal(codeName(s.resp.getStatus().getCode()), codeName(Code.OK));
    await waitFor(() => withMessage > 0, 15000, 'a parked poll receives the message');
    // A second delivery (wrong) would show up within this grace.
    await sleep(500);
    assert.equal(withMessage, 1, 'messages delivered to the parked polls');
    // The poll that got it completes on its own (the SDKs never cancel a
    // receive that is under way; cancelling one that carries messages
    // would rightly make the server release them).
    const woken = calls.find((c) => c.got);
    await waitFor(() => woken.done, 10000, 'the receive that carried the message completes');
    assert.equal(woken.status.code, grpc.status.OK, `woken receive status ${woken.status.details}`);
    assert.equal(woken.msg.getMessageId(), s.resp.getEntriesList()[0].getMessageId());
    const ack = await raw.unary('AckMessage', ackRequest(G, T,
      [{ id: woken.msg.getMessageId(), handle: woken.msg.getReceiptHandle() }]), pb.AckMessageResponse,
    { timeoutMs: scaled(10000) });
    assert.equal(ack.err, null, ack.err?.message);
    assert.equal(codeName(ack.resp.getStatus().getCode()), codeName(Code.OK), 'ack of the woken message');

    // Cancel every poll that is still open.
    for (const c of calls) if (!c.done) { c.cancelled = true; c.call.cancel(); }
    await waitFor(() => ended === POLLS, 30000, `calls still open after cancellation (${POLLS} polls)`, 50);
    await assertAlive('after cancelling the long polls');
  } finally {
    for (const c of calls) if (!c.done) c.call.cancel();
    for (const t of tels) t.end();
    for (const r of raws) r.close();
  }
  await sendAndReceive('after the long-poll barrage');
});

test('after the barrage: healthy, same process, normal send and receive', async () => {
  await assertAlive('final');
  await sendAndReceive('final');
});
