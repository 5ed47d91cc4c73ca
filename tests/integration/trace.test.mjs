// Message trace (proxy/service/px_trace.c, config `trace:`): a traced
// topic's messages show their publish, deliveries (group, attempt), acks,
// nacks and dead-lettering through GET /api/v1/messages/ID/trace and
// `gantry-admin message trace ID`, in time order; an untraced topic records
// nothing; the trace topic is refused to clients like other system topics;
// a full trace buffer drops (and counts) events without holding sends up;
// many messages' events share stored records, each id reads its own; a
// small buffer wraps around many times without mixing events up.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { startGantry, stopGantry, GANTRY_BIN, waitFor, scaled, httpGet } from './harness.mjs';
import {
  startProducer, startSimpleConsumer, shutdownQuietly, yamlOf, errCode, Code,
} from './sdk_util.mjs';

const ADMIN_BIN = process.env.GANTRY_ADMIN_BIN || path.join(path.dirname(GANTRY_BIN), 'gantry-admin');
const TRACE_TOPIC = 'RMQ_SYS_TRACE_TOPIC';
const TT = 'TrTraced';
const TU = 'TrUntraced';
const G = 'TrGroup';

let g;
let producer;
let consumer;

async function trace(server, id) {
  const r = await httpGet(server.httpPort, `/api/v1/messages/${encodeURIComponent(id)}/trace`);
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body);
}

// Waits until id's trace has at least n events; returns them.
async function traceOf(server, id, n, what) {
  let last;
  await waitFor(async () => {
    last = await trace(server, id);
    return last.events.length >= n;
  }, 20000, `${what}: ${n} trace events (have ${JSON.stringify(last?.events)})`);
  return last.events;
}

function cli(server, args) {
  return new Promise((resolve) => {
    execFile(ADMIN_BIN, ['--server', `http://127.0.0.1:${server.httpPort}`, ...args],
      { timeout: scaled(30000) },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? -1) : 0, stdout, stderr }));
  });
}

async function metric(server, line) {
  const r = await httpGet(server.httpPort, '/metrics');
  const m = r.body.match(new RegExp(`^${line.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : undefined;
}

before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: `${yamlOf({
      topics: [{ name: TT, queues: 1 }, { name: TU, queues: 1 }],
      groups: [{ name: G, max_delivery_attempts: 2 }],
    })}trace:\n  topics: [${TT}]\n  flush_ms: 20\n`,
  });
  producer = await startProducer(g, [TT, TU]);
  consumer = await startSimpleConsumer(g, G, new Map([[TT, '*'], [TU, '*']]));
});

after(async () => {
  await shutdownQuietly(producer, consumer);
  if (g) {
    const info = await stopGantry(g);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});

// Receives until the message with id comes; the others received meanwhile
// wait in `stash` (not acked: each test step acks or nacks its own).
const stash = new Map();
async function receiveOne(id, what) {
  await waitFor(async () => {
    if (stash.has(id)) return true;
    for (const m of await consumer.receive(8, 30000)) stash.set(m.messageId, m);
    return stash.has(id);
  }, 30000, what);
  const m = stash.get(id);
  stash.delete(id);
  return m;
}

test('publish, deliveries, nacks and dead-lettering in order; ack; API and CLI', async () => {
  const a = await producer.send({ topic: TT, body: Buffer.from('poison'), tag: 'TagA', keys: ['ka'] });
  const b = await producer.send({ topic: TT, body: Buffer.from('fine'), keys: ['kb'] });
  const u = await producer.send({ topic: TU, body: Buffer.from('not traced') });

  // a: attempt 1 nacked, attempt 2 (the group's last) nacked -> DLQ
  let m = await receiveOne(a.messageId, 'a, attempt 1');
  assert.equal(m.deliveryAttempt, 1);
  await consumer.changeInvisibleDuration(m, 0);
  m = await receiveOne(a.messageId, 'a, attempt 2');
  assert.equal(m.deliveryAttempt, 2);
  await consumer.changeInvisibleDuration(m, 0);
  // b: delivered once and acked
  m = await receiveOne(b.messageId, 'b');
  await consumer.ack(m);
  const other = await receiveOne(u.messageId, 'u');
  await consumer.ack(other);

  const ea = await traceOf(g, a.messageId, 6, 'a');
  assert.deepEqual(ea.map((e) => e.kind), ['publish', 'deliver', 'nack', 'deliver', 'nack', 'dlq']);
  assert.deepEqual(ea.map((e) => e.attempt), [null, 1, 1, 2, 2, 2]);
  for (let i = 1; i < ea.length; i++) {
    assert.ok(ea[i].time_ms >= ea[i - 1].time_ms, 'time order');
    assert.equal(ea[i].group, G);
  }
  for (const e of ea) {
    assert.equal(e.msg_id, a.messageId);
    assert.equal(e.topic, TT);
    assert.match(e.result, /^OK/);
    assert.ok(e.client_id.length > 0, 'client id');
    assert.match(e.addr, /127\.0\.0\.1/);
  }
  assert.equal(ea[0].group, '');
  assert.equal(ea[0].queue, 0);
  assert.equal(typeof ea[0].offset, 'number');
  assert.equal(ea[2].invisible_ms, 0);
  assert.deepEqual([ea[0].tag, ea[0].body_size, ea[1].tag, ea[1].body_size], ['TagA', 6, 'TagA', 6]);
  assert.equal(ea[2].body_size, null);
  assert.match(ea[5].result, /max delivery attempts \(2\)/);

  const eb = await traceOf(g, b.messageId, 3, 'b');
  assert.deepEqual(eb.map((e) => [e.kind, e.attempt, e.group]),
    [['publish', null, ''], ['deliver', 1, G], ['ack', 1, G]]);

  // the untraced topic: nothing, even once later events are written
  const r = await trace(g, u.messageId);
  assert.deepEqual(r.events, []);
  assert.equal(r.enabled, true);
  assert.equal(r.truncated, false);

  // the CLI: the same events, as JSON and as a table
  let c = await cli(g, ['--json', 'message', 'trace', b.messageId]);
  assert.equal(c.code, 0, c.stderr);
  assert.deepEqual(JSON.parse(c.stdout).events.map((e) => e.kind), ['publish', 'deliver', 'ack']);
  c = await cli(g, ['message', 'trace', a.messageId]);
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stdout, /publish[\s\S]*deliver[\s\S]*nack[\s\S]*dlq/);
  c = await cli(g, ['message', 'trace']);
  assert.equal(c.code, 2, 'usage error');

  assert.ok(await metric(g, 'gantry_trace_events_total{result="written"}') >= 9);
  assert.equal(await metric(g, 'gantry_trace_events_total{result="dropped"}'), 0);
});

test('events of many messages share stored records; each id gets its own, odd tags intact', async () => {
  // 60 sends at once: their publish events go out in records of up to 32
  // events (px_trace.c), keyed by every id they hold
  const tags = ['q"uote\\back', 'x{}[],:"a":1', 'ünï€😀', ''];
  const sent = await Promise.all(Array.from({ length: 60 }, (_, i) => producer.send({
    topic: TT, body: Buffer.alloc(i + 1, 120), ...(tags[i % 4] ? { tag: tags[i % 4] } : {}),
  })));
  for (let i = 0; i < sent.length; i += 7) {
    const ev = await traceOf(g, sent[i].messageId, 1, `message ${i}`);
    assert.equal(ev.length, 1, JSON.stringify(ev));
    assert.equal(ev[0].kind, 'publish');
    assert.equal(ev[0].msg_id, sent[i].messageId);
    assert.equal(ev[0].body_size, i + 1);
    assert.equal(ev[0].tag, tags[i % 4]);
    assert.equal(ev[0].group, '');
    assert.equal(ev[0].result, 'OK');
    assert.equal(ev[0].attempt, null);
    assert.equal(ev[0].invisible_ms, null);
  }
  // fewer stored records than events
  const st = JSON.parse((await httpGet(g.httpPort, `/api/v1/topics/${TRACE_TOPIC}`)).body);
  const written = await metric(g, 'gantry_trace_events_total{result="written"}');
  assert.ok(st.messages < written, `${st.messages} records for ${written} events`);
});

test('the trace topic is a system topic: refused to clients and to the admin API', async () => {
  let err;
  try {
    await producer.send({ topic: TRACE_TOPIC, body: Buffer.from('x') });
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'send to the trace topic refused');
  assert.equal(errCode(err), Code.ILLEGAL_TOPIC, String(err));
  err = undefined;
  try {
    const c = await startSimpleConsumer(g, 'TrSpy', TRACE_TOPIC);
    await shutdownQuietly(c);
  } catch (e) {
    err = e;
  }
  assert.ok(err, 'subscribing to the trace topic refused');
  const list = JSON.parse((await httpGet(g.httpPort, '/api/v1/topics')).body);
  assert.equal(list.topics.find((t) => t.name === TRACE_TOPIC)?.system, true);
  const del = await new Promise((resolve) => {
    execFile(ADMIN_BIN, ['--server', `http://127.0.0.1:${g.httpPort}`, 'topic', 'delete', TRACE_TOPIC],
      (e, stdout, stderr) => resolve({ code: e ? e.code : 0, stderr }));
  });
  assert.equal(del.code, 1, `delete refused: ${del.stderr}`);
});

test('a full trace buffer drops and counts events; sends are not held up', async () => {
  const g2 = await startGantry({
    logLevel: 'info',
    env: { GANTRY_TEST_TRACE_HOLD: '1' }, // the flusher writes only when stopping
    yaml: `${yamlOf({ topics: [{ name: TT, queues: 1 }] })}trace:\n  topics: ["*"]\n  buffer_events: 2\n`,
  });
  let p2;
  try {
    p2 = await startProducer(g2, [TT]);
    const N = 20;
    for (let i = 0; i < N; i++) await p2.send({ topic: TT, body: Buffer.from(`m${i}`) });
    assert.equal(await metric(g2, 'gantry_trace_events_total{result="dropped"}'), N - 2);
    assert.equal(await metric(g2, 'gantry_trace_events_total{result="written"}'), 0);
  } finally {
    await shutdownQuietly(p2);
    const info = await stopGantry(g2);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
    // the two buffered events are written when it stops
    assert.match(info.log, /trace events: 2 written, 18 dropped/);
  }
});

test('a small buffer wraps around many times; every event written reads back whole', async () => {
  // buffer_events 24: a ring of 6 KiB (px_trace.c), events of ~200-500
  // bytes (tags of 0..199 bytes, some multibyte), so events wrap around it
  // at many different places; one send at a time, the flusher every 1 ms
  const g2 = await startGantry({
    yaml: `${yamlOf({ topics: [{ name: TT, queues: 1 }] })}trace:\n  topics: ["*"]\n  buffer_events: 24\n  flush_ms: 1\n`,
  });
  let p2;
  try {
    p2 = await startProducer(g2, [TT]);
    const N = 200;
    const sent = [];
    for (let i = 0; i < N; i++) {
      const tag = (i % 3 === 0 ? 'é' : 't').repeat((i * 37) % 100);
      const r = await p2.send({ topic: TT, body: Buffer.alloc(1 + (i % 50), 97), ...(tag ? { tag } : {}) });
      sent.push({ id: r.messageId, tag, size: 1 + (i % 50) });
    }
    let written;
    let dropped;
    await waitFor(async () => {
      written = await metric(g2, 'gantry_trace_events_total{result="written"}');
      dropped = await metric(g2, 'gantry_trace_events_total{result="dropped"}');
      return written + dropped === N;
    }, 20000, `every event written or dropped (written ${written}, dropped ${dropped})`);
    let found = 0;
    for (const s of sent) {
      const t = await trace(g2, s.id);
      if (t.events.length === 0) continue; // dropped (counted above)
      found++;
      assert.equal(t.events.length, 1, JSON.stringify(t.events));
      const [ev] = t.events;
      assert.equal(ev.kind, 'publish');
      assert.equal(ev.msg_id, s.id);
      assert.equal(ev.topic, TT);
      // tags longer than 127 bytes are cut there, at a character's start
      let cut = s.tag;
      while (Buffer.byteLength(cut) > 127) cut = cut.slice(0, -1);
      assert.equal(ev.tag, cut);
      assert.equal(ev.body_size, s.size);
      assert.equal(ev.queue, 0);
      assert.equal(ev.result, 'OK');
    }
    assert.equal(found, written, `${found} messages with their event, ${written} written`);
  } finally {
    await shutdownQuietly(p2);
    const info = await stopGantry(g2);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});
