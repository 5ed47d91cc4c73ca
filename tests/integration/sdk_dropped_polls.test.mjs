// A client connection drops (TCP gone, no per-call cancel) while it has
// ReceiveMessage long polls parked.  Messages sent right afterwards must
// reach a live consumer: they must not be handed to the dead polls until
// their delivery attempts run out (dead-lettered without ever being
// delivered) nor hidden for the dead polls' invisible time.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { startGantry, stopGantry } from './harness.mjs';
import {
  pb, Raw, SVC, yamlOf, consumerSettings, receiveRequest, splitReceive, wireMessage, sendRequest,
  ackRequest, resource, codeName, scaled, waitFor,
} from './sdk_util.mjs';

const T = 'DropTopic';
const G = 'DropGroup';
const MAX_ATTEMPTS = 3;
const POLLS = 200;
const MSGS = 5;
// The dead polls' long poll and invisible time: far longer than the test
// takes on any machine, so a message handed to a dead poll stays hidden
// for the whole test and cannot pass by timing out.
const POLL_MS = 30 * 60 * 1000;
const DEAD_INVISIBLE_MS = 30 * 60 * 1000;

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [{ name: T, queues: 1 }],
      groups: [{ name: G, max_delivery_attempts: MAX_ATTEMPTS }, { name: 'DropDlqReader' }],
    }),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

function grpcFrame(bytes) {
  const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), bytes]);
  framed.writeUInt32BE(bytes.length, 1);
  return framed;
}

const H2_HEADERS = {
  ':method': 'POST', 'content-type': 'application/grpc', te: 'trailers',
  'x-mq-client-id': 'dropping-client', 'x-mq-language': 'HTTP', 'x-mq-protocol': 'v2',
};

function parkPolls(n) {
  const req = Buffer.from(receiveRequest({
    group: G, topic: T, batch: 1, invisibleMs: DEAD_INVISIBLE_MS, longPollMs: POLL_MS,
  }).serializeBinary());
  const framed = grpcFrame(req);
  const s = http2.connect(`http://${g.endpoint}`);
  s.on('error', () => {});
  let ended = 0;
  for (let i = 0; i < n; i++) {
    const st = s.request({ ...H2_HEADERS, ':path': `${SVC}ReceiveMessage`, 'grpc-timeout': `${2 * POLL_MS / 1000}S` });
    st.on('error', () => {});
    st.on('data', () => {});
    st.on('close', () => { ended++; });
    st.end(framed);
  }
  // A unary call behind the polls on the same connection: once it is
  // answered the server has read the polls before it.
  const barrier = new Promise((resolve) => {
    const st = s.request({ ...H2_HEADERS, ':path': `${SVC}Heartbeat` });
    st.on('error', () => resolve());
    st.on('data', () => {});
    st.on('close', () => resolve());
    st.end(grpcFrame(Buffer.from(new pb.HeartbeatRequest().serializeBinary())));
  });
  return { session: s, ended: () => ended, barrier };
}

async function checkDelivered(what) {
  const raw = new Raw(g.endpoint);
  const tel = await raw.telemetry(consumerSettings(G, T));
  try {
    const ids = [];
    for (let i = 0; i < MSGS; i++) {
      const r = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, body: Buffer.from(`${what}-${i}`) })]),
        pb.SendMessageResponse);
      ids.push(r.resp.getEntriesList()[0].getMessageId());
    }
    const got = new Map();
    const deadline = Date.now() + scaled(15000);
    while (got.size < MSGS && Date.now() < deadline) {
      const s = await raw.serverStream('ReceiveMessage', receiveRequest({
        group: G, topic: T, batch: 32, invisibleMs: 30000, longPollMs: 2000,
      }), pb.ReceiveMessageResponse);
      for (const m of splitReceive(s.resps).messages) {
        const sp = m.getSystemProperties();
        if (ids.includes(sp.getMessageId())) got.set(sp.getMessageId(), sp);
      }
    }
    const attempts = [...got.values()].map((sp) => sp.getDeliveryAttempt());
    // Where did the others go?
    let inDlq = [];
    const route = await raw.unary('QueryRoute', new pb.QueryRouteRequest().setTopic(resource(`%DLQ%${G}`)),
      pb.QueryRouteResponse);
    if (codeName(route.resp.getStatus().getCode()) === 'OK(20000)') {
      const d = await raw.serverStream('ReceiveMessage', receiveRequest({
        group: 'DropDlqReader', topic: `%DLQ%${G}`, batch: 32, invisibleMs: 30000, longPollMs: 1000,
      }), pb.ReceiveMessageResponse);
      inDlq = splitReceive(d.resps).messages.map((m) => Buffer.from(m.getBody_asU8()).toString())
        .filter((b) => b.startsWith(`${what}-`));
    }
    assert.deepEqual(inDlq, [], `${what}: dead-lettered (max_delivery_attempts ${MAX_ATTEMPTS}) without reaching any live client`);
    assert.equal(got.size, MSGS, `${what}: ${got.size} of ${MSGS} received by a live consumer within ${scaled(15000)} ms `
      + `(attempts of those received: ${attempts})`);
    for (const a of attempts) {
      assert.equal(a, 1, `${what}: delivery attempts counted for hand-offs to dead calls: ${attempts}`);
    }
    await raw.unary('AckMessage', ackRequest(G, T, [...got].map(([id, sp]) => ({ id, handle: sp.getReceiptHandle() }))),
      pb.AckMessageResponse);
  } finally {
    tel.call?.end();
    raw.close();
  }
}

test(`messages sent right after a connection with ${POLLS} parked polls drops reach a live consumer`, async () => {
  const p = parkPolls(POLLS);
  await p.barrier;
  assert.equal(p.ended(), 0, 'the polls should be parked');
  p.session.destroy();

  await checkDelivered('dropped connection');
});

test(`messages sent right after ${POLLS * 10} parked polls were cancelled reach a live consumer`, async () => {
  const raws = Array.from({ length: 4 }, () => new Raw(g.endpoint));
  const calls = [];
  let ended = 0;
  try {
    const req = Buffer.from(receiveRequest({
      group: G, topic: T, batch: 1, invisibleMs: DEAD_INVISIBLE_MS, longPollMs: POLL_MS,
    }).serializeBinary());
    for (let i = 0; i < POLLS * 10; i++) {
      const r = raws[i % raws.length];
      const call = r.client.makeServerStreamRequest(`${SVC}ReceiveMessage`, (x) => x, (x) => x, req, r.md(),
        { deadline: Date.now() + 2 * POLL_MS });
      call.on('data', () => {});
      call.on('error', () => {});
      call.on('status', () => { ended++; });
      calls.push(call);
    }
    await Promise.all(raws.map((r) => r.unary('Heartbeat', new pb.HeartbeatRequest(), pb.HeartbeatResponse,
      { timeoutMs: scaled(30000) })));
    assert.equal(ended, 0, 'the polls should be parked');
    for (const c of calls) c.cancel();
    await waitFor(() => ended === calls.length, 15000, 'every cancelled call ended on the client');
  } finally {
    for (const r of raws) r.close();
  }
  await checkDelivered('cancelled polls');
});
