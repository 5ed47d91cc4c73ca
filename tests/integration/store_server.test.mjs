// gantry-store over the wire: every RPC of gantry.store.v1 (the .proto
// loaded at run time with @grpc/proto-loader), long-poll pops woken by an
// append, cancellation (gRPC cancel and PopCancel, before and after the
// pop), idempotent append retries, bad requests (malformed protobuf, bad
// enum values, too many keys) answered without harm, the metadata watch
// stream, SIGTERM with a parked pop, and SIGKILL + restart keeping data.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  require, startStore, stopGantry, scaled, waitFor, httpGet, GANTRY_STORE_BIN,
} from './harness.mjs';

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const here = path.dirname(fileURLToPath(import.meta.url));
const PROTO = path.resolve(here, '../../apis/gantry/store/v1/store.proto');
const def = protoLoader.loadSync(PROTO, {
  keepCase: true, longs: Number, enums: String, defaults: true,
});
const Store = grpc.loadPackageDefinition(def).gantry.store.v1.Store;

let node;
let client;

function connect(g) {
  // pop answers may hold 32 messages of up to 4 MiB each
  return new Store(g.endpoint, grpc.credentials.createInsecure(),
    { 'grpc.max_receive_message_length': 256 << 20 });
}

// Unary call -> Promise of the response (rejects on a gRPC error).
function call(c, method, req, deadlineMs = 10000) {
  return new Promise((resolve, reject) => {
    c[method](req, { deadline: Date.now() + scaled(deadlineMs) }, (err, resp) => {
      if (err) reject(err); else resolve(resp);
    });
  });
}

// A unary call that can be cancelled: { done, call }.
function startCall(c, method, req, deadlineMs = 30000) {
  let h;
  const done = new Promise((resolve, reject) => {
    h = c[method](req, { deadline: Date.now() + scaled(deadlineMs) }, (err, resp) => {
      if (err) reject(err); else resolve(resp);
    });
  });
  return { done, call: h };
}

async function metric(name, g = node) {
  const r = await httpGet(g.httpPort, '/metrics');
  const m = r.body.match(new RegExp(`^${name} (\\d+)`, 'm'));
  return m ? Number(m[1]) : NaN;
}

const msg = (body, extra = {}) => ({
  body: Buffer.from(body), queue_id: -1, born_ts_ms: Date.now(), ...extra,
});

before(async () => {
  node = await startStore({ yaml: '' });
  client = connect(node);
  const t = (name, type, queues = 2) => call(client, 'PutTopic',
    { topic: { name, type, queue_count: queues, perm: 6 } });
  for (const [n, ty, q] of [['T', 'TOPIC_NORMAL', 2], ['P', 'TOPIC_NORMAL', 1],
    ['Q', 'TOPIC_NORMAL', 1], ['TX', 'TOPIC_TRANSACTION', 1], ['D', 'TOPIC_DELAY', 1],
    ['M1', 'TOPIC_NORMAL', 1], ['M2', 'TOPIC_NORMAL', 1]]) {
    assert.equal((await t(n, ty, q)).err, 'OK');
  }
  assert.equal((await call(client, 'PutGroup',
    { group: { name: 'G', max_delivery_attempts: 3 } })).err, 'OK');
});

after(async () => {
  client?.close();
  if (node) await stopGantry(node);
});

test('GetInfo names the protocol version and the engine', async () => {
  const r = await call(client, 'GetInfo', {});
  assert.equal(r.err, 'OK');
  assert.equal(r.protocol_version, 1);
  assert.ok(r.engine.length > 0);
});

test('topics and groups: put, get, list, delete, errors in-band', async () => {
  let r = await call(client, 'GetTopics', { name: 'T' });
  assert.equal(r.err, 'OK');
  assert.deepEqual(r.topics.map((x) => [x.name, x.queue_count, x.type]),
    [['T', 2, 'TOPIC_NORMAL']]);
  r = await call(client, 'GetTopics', {});
  assert.ok(r.topics.some((x) => x.name === 'TX' && x.type === 'TOPIC_TRANSACTION'));
  assert.equal((await call(client, 'GetTopics', { name: 'Nope' })).err, 'ENOTFOUND');
  assert.equal((await call(client, 'PutTopic', { topic: { name: '', queue_count: 1 } })).err, 'EINVAL');
  assert.equal((await call(client, 'PutTopic', { topic: { name: 'Tmp', queue_count: 1, perm: 6 } })).err, 'OK');
  assert.equal((await call(client, 'DeleteTopic', { name: 'Tmp' })).err, 'OK');
  assert.equal((await call(client, 'DeleteTopic', { name: 'Tmp' })).err, 'ENOTFOUND');

  assert.equal((await call(client, 'PutGroup', { group: {
    name: 'G2', max_delivery_attempts: 5, fifo: true, consume_from: 'CONSUME_FROM_LAST',
    retry: { initial_ms: 100, max_ms: 1000, multiplier: 200 } } })).err, 'OK');
  r = await call(client, 'GetGroups', { name: 'G2' });
  assert.equal(r.err, 'OK');
  assert.equal(r.groups[0].max_delivery_attempts, 5);
  assert.equal(r.groups[0].fifo, true);
  assert.equal(r.groups[0].consume_from, 'CONSUME_FROM_LAST');
  assert.equal(r.groups[0].retry.multiplier, 200);
  assert.equal((await call(client, 'DeleteGroup', { name: 'G2' })).err, 'OK');
  assert.equal((await call(client, 'GetGroups', { name: 'G2' })).err, 'ENOTFOUND');
});

test('append, lookups, stats, offsets and pull', async () => {
  const r = await call(client, 'Append', { topic: 'Q', messages: [
    msg('one', { tag: 'a', keys: ['k1'], props: [{ key: 'p', value: 'v' }] }),
    msg('two', { tag: 'b', keys: ['k2'] }),
    msg('three', { tag: 'a' }),
  ] });
  assert.equal(r.err, 'OK');
  assert.equal(r.items.length, 3);
  assert.deepEqual(r.items.map((i) => i.queue_offset), [0, 1, 2]);
  assert.equal(r.deduplicated, false);

  let l = await call(client, 'LookupId', { topic: '', msg_id: r.items[1].msg_id });
  assert.equal(l.err, 'OK');
  assert.equal(l.messages.length, 1);
  assert.equal(l.messages[0].body.toString(), 'two');
  assert.equal(l.messages[0].topic, 'Q');
  l = await call(client, 'LookupKey', { topic: 'Q', key: 'k1', max: 4 });
  assert.equal(l.messages[0].body.toString(), 'one');
  assert.deepEqual(l.messages[0].props.filter((p) => p.key === 'p'), [{ key: 'p', value: 'v' }]);

  const s = await call(client, 'Stats', { topic: 'Q', group: '' });
  assert.equal(s.err, 'OK');
  assert.equal(s.messages, 3);
  assert.deepEqual(s.queues.map((q) => [q.min_offset, q.max_offset]), [[0, 3]]);
  // A group consuming from the last offset with no position yet: nothing
  // is ready for it, unless it counts from the first retained message
  // (new_from_first: a set a topic was moved to, docs/store-protocol.md).
  assert.equal((await call(client, 'PutGroup', { group: {
    name: 'GLast', max_delivery_attempts: 5, consume_from: 'CONSUME_FROM_LAST' } })).err, 'OK');
  const sl = await call(client, 'Stats', { topic: 'Q', group: 'GLast' });
  assert.deepEqual([sl.err, sl.ready, sl.lag], ['OK', 0, 0]);
  const sf = await call(client, 'Stats', { topic: 'Q', group: 'GLast', new_from_first: true });
  assert.deepEqual([sf.err, sf.ready, sf.lag], ['OK', 3, 3]);
  assert.equal((await call(client, 'DeleteGroup', { name: 'GLast' })).err, 'OK');

  const end = await call(client, 'QueryOffset', { topic: 'Q', queue: 0, kind: 'OFFSET_END' });
  assert.deepEqual([end.err, end.offset], ['OK', 3]);
  const p = await call(client, 'Pull', { topic: 'Q', queue: 0, offset: 0, max: 8,
    filter_kind: 'FILTER_TAG', filter_expr: 'a' });
  assert.equal(p.err, 'OK');
  assert.deepEqual(p.messages.map((m) => m.body.toString()), ['one', 'three']);
  assert.equal(p.next_offset, 3);
  assert.equal((await call(client, 'Pull', { topic: 'Q', queue: 0, offset: 9, max: 1 })).err, 'ERANGE');

  assert.equal((await call(client, 'UpdateOffset', { group: 'G', topic: 'Q', queue: 0, offset: 2 })).err, 'OK');
  const o = await call(client, 'GetOffset', { group: 'G', topic: 'Q', queue: 0 });
  assert.deepEqual([o.err, o.offset], ['OK', 2]);
});

test('pop, ack, ack batch, change invisible, release, requeue, purge', async () => {
  const a = await call(client, 'Append', { topic: 'P', messages: [msg('p1'), msg('p2'), msg('p3')] });
  assert.equal(a.err, 'OK');
  let r = await call(client, 'Pop', { group: 'G', topic: 'P', queue_id: -1, max: 2,
    invisible_ms: 60000, poll_timeout_ms: 0 });
  assert.equal(r.err, 'OK');
  assert.deepEqual(r.messages.map((m) => [m.message.body.toString(), m.attempt]), [['p1', 1], ['p2', 1]]);
  assert.ok(r.messages[0].invisible_until_ms > Date.now());
  const [h1, h2] = r.messages.map((m) => m.handle);
  assert.equal((await call(client, 'Ack', { group: 'G', topic: 'P', handle: h1 })).err, 'OK');
  assert.equal((await call(client, 'Ack', { group: 'G', topic: 'P', handle: h1 })).err, 'EINVAL');
  const c = await call(client, 'ChangeInvisible', { group: 'G', topic: 'P', handle: h2, invisible_ms: 60000 });
  assert.equal(c.err, 'OK');
  assert.ok(c.handle.length > 0 && c.handle !== h2);
  const b = await call(client, 'AckBatch', { group: 'G', topic: 'P', handles: [c.handle, 'bogus'] });
  assert.equal(b.err, 'OK');
  assert.deepEqual(b.results, ['OK', 'EINVAL']);
  assert.equal((await call(client, 'AckBatch', { group: 'G', topic: 'P', handles: [] })).err, 'EINVAL');

  r = await call(client, 'Pop', { group: 'G', topic: 'P', queue_id: -1, max: 1, invisible_ms: 60000 });
  assert.equal(r.messages[0].message.body.toString(), 'p3');
  assert.equal((await call(client, 'Release', { group: 'G', topic: 'P', handle: r.messages[0].handle })).err, 'OK');
  r = await call(client, 'Pop', { group: 'G', topic: 'P', queue_id: -1, max: 1, invisible_ms: 60000 });
  assert.deepEqual([r.messages[0].message.body.toString(), r.messages[0].attempt], ['p3', 1]);
  const rq = await call(client, 'Requeue', { group: 'G', topic: 'P' });
  assert.deepEqual([rq.err, rq.count], ['OK', 1]);
  const pg = await call(client, 'Purge', { group: 'G', topic: 'P' });
  assert.deepEqual([pg.err, pg.count], ['OK', 1]);
  r = await call(client, 'Pop', { group: 'G', topic: 'P', queue_id: -1, max: 1, invisible_ms: 60000 });
  assert.deepEqual([r.err, r.messages.length], ['OK', 0]);
  assert.equal((await call(client, 'Pop', { group: 'G', topic: 'Nope', queue_id: -1, max: 1,
    invisible_ms: 1000 })).err, 'ENOTFOUND');
});

test('a parked pop is woken by an append', async () => {
  const p = startCall(client, 'Pop', { group: 'G', topic: 'T', queue_id: -1, max: 4,
    invisible_ms: 60000, poll_timeout_ms: scaled(20000) });
  await waitFor(async () => (await metric('gantry_store_parked_polls')) === 1, 5000, 'pop parked');
  const t0 = Date.now();
  assert.equal((await call(client, 'Append', { topic: 'T', messages: [msg('wake')] })).err, 'OK');
  const r = await p.done;
  assert.equal(r.err, 'OK');
  assert.deepEqual(r.messages.map((m) => m.message.body.toString()), ['wake']);
  // answered by the append, not by the poll's end
  assert.ok(Date.now() - t0 < scaled(20000));
  assert.equal((await call(client, 'Ack', { group: 'G', topic: 'T', handle: r.messages[0].handle })).err, 'OK');
  await waitFor(async () => (await metric('gantry_store_parked_polls')) === 0, 5000, 'unparked');
});

test('a cancelled pop takes no message', async () => {
  const p = startCall(client, 'Pop', { group: 'G', topic: 'T', queue_id: -1, max: 4,
    invisible_ms: 60000, poll_timeout_ms: scaled(20000) });
  await waitFor(async () => (await metric('gantry_store_parked_polls')) === 1, 5000, 'pop parked');
  p.call.cancel();
  await assert.rejects(p.done, (e) => e.code === grpc.status.CANCELLED);
  await waitFor(async () => (await metric('gantry_store_parked_polls')) === 0, 5000, 'cancel reached the node');
  assert.equal((await call(client, 'Append', { topic: 'T', messages: [msg('after-cancel')] })).err, 'OK');
  const r = await call(client, 'Pop', { group: 'G', topic: 'T', queue_id: -1, max: 4, invisible_ms: 60000 });
  assert.deepEqual(r.messages.map((m) => [m.message.body.toString(), m.attempt]), [['after-cancel', 1]]);
  await call(client, 'Ack', { group: 'G', topic: 'T', handle: r.messages[0].handle });
});

test('a pop answer the client never took is given back at once', async () => {
  // 4 x 1 MiB: far more than the HTTP/2 windows of a client that reads
  // nothing, so the answer cannot be delivered; the client then resets the
  // call.  The messages must be visible again at once (same attempt), not
  // after their 10-minute invisible time.
  assert.equal((await call(client, 'PutTopic', { topic: { name: 'U', queue_count: 1, perm: 6 } })).err, 'OK');
  const big = Buffer.alloc(1 << 20, 0x75);
  assert.equal((await call(client, 'Append', { topic: 'U',
    messages: [0, 1, 2, 3].map(() => ({ body: big, queue_id: -1 })) })).err, 'OK');
  const s = http2.connect(`http://${node.endpoint}`);
  s.on('error', () => {});
  const body = Store.service.Pop.requestSerialize({ group: 'G', topic: 'U', queue_id: -1, max: 4,
    invisible_ms: 600000 });
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  const st = s.request({ ':method': 'POST', ':path': '/gantry.store.v1.Store/Pop',
    'content-type': 'application/grpc', te: 'trailers' });
  st.on('error', () => {});
  st.end(Buffer.concat([head, body])); // and never read the answer
  await waitFor(async () => (await call(client, 'Stats', { topic: 'U', group: 'G' })).inflight === 4,
    5000, 'the raw pop took the messages');
  st.close(http2.constants.NGHTTP2_CANCEL);
  s.destroy();
  const got = await waitFor(async () => {
    const r = await call(client, 'Pop', { group: 'G', topic: 'U', queue_id: -1, max: 4, invisible_ms: 60000 });
    return r.messages.length > 0 ? r : null;
  }, 5000, 'messages given back');
  assert.deepEqual(got.messages.map((m) => m.attempt), [1, 1, 1, 1]);
  assert.equal((await call(client, 'AckBatch', { group: 'G', topic: 'U',
    handles: got.messages.map((m) => m.handle) })).err, 'OK');
});

test('PopCancel ends a parked pop, and one that comes before its pop', async () => {
  const p = startCall(client, 'Pop', { group: 'G', topic: 'T', queue_id: -1, max: 4,
    invisible_ms: 60000, poll_timeout_ms: scaled(20000), cancel_key: 7, client_id: 'proxy-a' });
  await waitFor(async () => (await metric('gantry_store_parked_polls')) === 1, 5000, 'pop parked');
  // the same key of another client cancels nothing
  assert.equal((await call(client, 'PopCancel', { cancel_key: 7, client_id: 'proxy-b' })).err, 'OK');
  assert.equal(await metric('gantry_store_parked_polls'), 1);
  assert.equal((await call(client, 'PopCancel', { cancel_key: 7, client_id: 'proxy-a' })).err, 'OK');
  const r = await p.done;
  assert.deepEqual([r.err, r.messages.length], ['OK', 0]);

  assert.equal((await call(client, 'PopCancel', { cancel_key: 8, client_id: 'proxy-a' })).err, 'OK');
  const t0 = Date.now();
  const r2 = await call(client, 'Pop', { group: 'G', topic: 'T', queue_id: -1, max: 4,
    invisible_ms: 60000, poll_timeout_ms: scaled(20000), cancel_key: 8, client_id: 'proxy-a' });
  assert.deepEqual([r2.err, r2.messages.length], ['OK', 0]);
  assert.ok(Date.now() - t0 < scaled(20000));
  assert.equal((await call(client, 'PopCancel', { cancel_key: 0, client_id: 'x' })).err, 'EINVAL');
});

test('a retried append is answered from the de-dup window, not stored twice', async () => {
  const before_ = (await call(client, 'Stats', { topic: 'M1', group: '' })).messages;
  const req = { topic: 'M1', idempotency_key: 'id-1', messages: [msg('once', { msg_id: 'id-1' }), msg('twice')] };
  const a = await call(client, 'Append', req);
  assert.equal(a.err, 'OK');
  assert.equal(a.items[0].msg_id, 'id-1');
  const b = await call(client, 'Append', req);
  assert.equal(b.err, 'OK');
  assert.equal(b.deduplicated, true);
  assert.deepEqual(b.items, a.items);
  // concurrent duplicates: one is written, the others wait for it
  const req2 = { ...req, idempotency_key: 'id-2', messages: [msg('c', { msg_id: 'id-2' })] };
  const rs = await Promise.all([1, 2, 3].map(() => call(client, 'Append', req2)));
  assert.ok(rs.every((r) => r.err === 'OK'));
  assert.equal(rs.filter((r) => !r.deduplicated).length, 1);
  assert.ok(rs.every((r) => r.items[0].queue_offset === rs[0].items[0].queue_offset));
  const s = await call(client, 'Stats', { topic: 'M1', group: '' });
  assert.equal(s.messages, before_ + 3);
  assert.ok((await metric('gantry_store_dedup_hits_total')) >= 3);
  // the same key on another topic is another append
  const o = await call(client, 'Append', { ...req, topic: 'M2' });
  assert.equal(o.deduplicated, false);
});

test('append multi: one message in two topics', async () => {
  const r = await call(client, 'AppendMulti', { message: msg('both'),
    dests: [{ topic: 'M1', queue_id: -1 }, { topic: 'M2', queue_id: 0 }] });
  assert.equal(r.err, 'OK');
  assert.equal(r.items.length, 2);
  assert.equal(r.items[0].msg_id, r.items[1].msg_id);
  assert.equal((await call(client, 'AppendMulti', { message: msg('x'), dests: [] })).err, 'EINVAL');
  assert.equal((await call(client, 'AppendMulti', { message: msg('x'),
    dests: [{ topic: 'Nope', queue_id: -1 }] })).err, 'ENOTFOUND');
});

test('transactions and recall', async () => {
  const a = await call(client, 'Append', { topic: 'TX', messages: [msg('half', { tx_half: true })] });
  assert.equal(a.err, 'OK');
  const id = a.items[0].msg_id;
  const pend = await call(client, 'TxPending', { unresolved_for_ms: 0, max: 10 });
  assert.equal(pend.err, 'OK');
  assert.ok(pend.messages.some((m) => m.msg_id === id && m.topic === 'TX'));
  assert.equal((await call(client, 'TxChecked', { topic: 'TX', msg_id: id, max_checks: 0 })).err, 'OK');
  assert.equal((await call(client, 'TxEnd', { topic: 'TX', msg_id: id, commit: true })).err, 'OK');
  assert.equal((await call(client, 'TxEnd', { topic: 'TX', msg_id: id, commit: true })).err, 'ENOTFOUND');
  const r = await call(client, 'Pop', { group: 'G', topic: 'TX', queue_id: -1, max: 1,
    invisible_ms: 60000, poll_timeout_ms: scaled(5000) });
  assert.equal(r.messages[0].message.body.toString(), 'half');

  const d = await call(client, 'Append', { topic: 'D', messages: [msg('later',
    { delivery_ts_ms: Date.now() + 3600000 })] });
  assert.equal(d.err, 'OK');
  assert.equal((await call(client, 'Recall', { topic: 'D', msg_id: d.items[0].msg_id })).err, 'OK');
  assert.equal((await call(client, 'Recall', { topic: 'D', msg_id: d.items[0].msg_id })).err, 'ENOTFOUND');
});

test('durable metadata records', async () => {
  const k = (s) => Buffer.from(s);
  assert.equal((await call(client, 'MetaPut', { ns: 'it', key: k('a/1'), value: k('x') })).err, 'OK');
  assert.equal((await call(client, 'MetaPut', { ns: 'it', key: k('a/2'), value: k('y') })).err, 'OK');
  assert.equal((await call(client, 'MetaPut', { ns: 'it', key: k('b/1'), value: k('z') })).err, 'OK');
  let l = await call(client, 'MetaList', { ns: 'it', prefix: k('a/'), max: 1 });
  assert.equal(l.err, 'OK');
  assert.deepEqual(l.records.map((r) => r.key.toString()), ['a/1']);
  assert.equal(l.more, true);
  l = await call(client, 'MetaList', { ns: 'it', prefix: k('a/'), after: k('a/1') });
  assert.deepEqual(l.records.map((r) => [r.key.toString(), r.value.toString()]), [['a/2', 'y']]);
  assert.equal((await call(client, 'MetaDel', { ns: 'it', key: k('a/1') })).err, 'OK');
  assert.equal((await call(client, 'MetaDel', { ns: 'it', key: k('a/1') })).err, 'ENOTFOUND');
  assert.equal((await call(client, 'MetaPut', { ns: 'bad ns', key: k('a'), value: k('') })).err, 'EINVAL');
});

test('MetaWatch: a snapshot, then changes', async () => {
  const got = [];
  const stream = client.MetaWatch({}, { deadline: Date.now() + scaled(30000) });
  stream.on('data', (r) => got.push(r));
  stream.on('error', () => {});
  await waitFor(() => got.length >= 1, 5000, 'snapshot');
  assert.equal(got[0].snapshot, true);
  assert.ok(got[0].events.some((e) => e.kind === 'META_TOPIC' && e.topic.name === 'T'));
  assert.ok(got[0].events.some((e) => e.kind === 'META_GROUP' && e.group.name === 'G'));
  assert.equal((await call(client, 'PutTopic', { topic: { name: 'W', queue_count: 3, perm: 6 } })).err, 'OK');
  await waitFor(() => got.slice(1).some((r) => r.events.some((e) => e.topic?.name === 'W')), 5000, 'change event');
  const ev = got.slice(1).flatMap((r) => r.events).find((e) => e.topic?.name === 'W');
  assert.equal(ev.topic.queue_count, 3);
  assert.equal(ev.deleted, false);
  assert.ok(ev.version > 0);
  assert.equal((await call(client, 'DeleteTopic', { name: 'W' })).err, 'OK');
  await waitFor(() => got.slice(1).some((r) => r.events.some((e) => e.topic?.name === 'W' && e.deleted)),
    5000, 'delete event');
  stream.cancel();
  await waitFor(async () => (await metric('gantry_store_meta_watchers')) === 0, 5000, 'watcher gone');
});

test('a MetaWatch stream that does not read is ended, others go on', async () => {
  const g = await startStore({ yaml: '', flush: 'async' });
  const c = connect(g);
  const got = [];
  const reader = c.MetaWatch({});
  reader.on('data', (r) => got.push(r));
  reader.on('error', () => {});
  const s = http2.connect(`http://${g.endpoint}`);
  s.on('error', () => {});
  const st = s.request({ ':method': 'POST', ':path': '/gantry.store.v1.Store/MetaWatch',
    'content-type': 'application/grpc', te: 'trailers' });
  st.on('error', () => {});
  st.end(Buffer.alloc(5)); // an empty MetaWatchRequest; the answers are never read
  try {
    await waitFor(async () => (await metric('gantry_store_meta_watchers', g)) === 2, 5000, 'two watchers');
    const pad = 'x'.repeat(240);
    let i = 0;
    await waitFor(async () => {
      for (let j = 0; j < 50; j++, i++) {
        const r = await call(c, 'PutTopic', { topic: { name: `L${i}${pad}`, queue_count: 1, perm: 6 } });
        assert.equal(r.err, 'OK');
      }
      return (await metric('gantry_store_meta_watchers', g)) === 1;
    }, 60000, 'the non-reading watcher ended', 0);
    // the reading one saw every change
    await waitFor(() => got.slice(1).flatMap((r) => r.events).length >= i, 5000, 'reader caught up');
    assert.match(g.log(), /MetaWatch from .* ended: 256 changes unread/);
  } finally {
    st.close(http2.constants.NGHTTP2_CANCEL);
    s.destroy();
    reader.cancel();
    c.close();
    await stopGantry(g);
  }
});

test('bad requests: malformed protobuf, bad enums, too many keys, unknown method', async () => {
  const ident = (x) => x;
  const raw = (method, bytes) => new Promise((resolve) => {
    client.makeUnaryRequest(`/gantry.store.v1.Store/${method}`, ident, ident, bytes,
      { deadline: Date.now() + scaled(5000) }, (err, resp) => resolve({ err, resp }));
  });
  // field 1 (topic) as a length-delimited string running past the end
  let r = await raw('Append', Buffer.from([0x0a, 0x7f, 0x41]));
  assert.equal(r.err?.code, grpc.status.INVALID_ARGUMENT);
  r = await raw('Pop', Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
  assert.equal(r.err?.code, grpc.status.INVALID_ARGUMENT);
  r = await raw('NoSuchMethod', Buffer.alloc(0));
  assert.equal(r.err?.code, grpc.status.UNIMPLEMENTED);
  // an empty request is a valid one: errors in-band
  r = await raw('Ack', Buffer.alloc(0));
  assert.equal(r.err, null);
  assert.deepEqual([...r.resp], [0x08, 6]); // err = ENOTFOUND
  // enum values the node does not know
  const bt = Buffer.from([0x0a, 0x07, 0x0a, 0x01, 0x58, 0x10, 0x63, 0x18, 0x01]); // Topic{name:"X", type:99, queue_count:1}
  r = await raw('PutTopic', bt);
  assert.deepEqual([...r.resp], [0x08, 2]); // EINVAL
  assert.equal((await call(client, 'QueryOffset', { topic: 'Q', queue: 0, kind: 7 })).err, 'EINVAL');
  const keys = Array.from({ length: 33 }, (_, i) => `k${i}`);
  assert.equal((await call(client, 'Append', { topic: 'Q', messages: [msg('k', { keys })] })).err, 'EINVAL');
  assert.equal((await call(client, 'Append', { topic: 'Q', messages: [] })).err, 'EINVAL');
  assert.equal((await call(client, 'Append', { topic: 'Q', messages: [msg('q', { queue_id: 5 })] })).err, 'EINVAL');
  assert.equal((await call(client, 'GetInfo', {})).err, 'OK'); // still serving
});

test('random request bytes to every method: answered, never a crash', async () => {
  const ident = (x) => x;
  let seed = 12345;
  const rnd = () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed >>> 8; };
  const methods = Object.keys(Store.service).filter((m) => m !== 'MetaWatch');
  const statuses = new Set();
  for (const m of methods) {
    for (let i = 0; i < 30; i++) {
      // mostly well-formed-looking: small varint / length-delimited fields
      const b = Buffer.alloc(rnd() % 48);
      for (let j = 0; j < b.length; j++) b[j] = rnd() & 0xff;
      if (i % 2 === 0 && b.length > 2) { b[0] = ((rnd() % 12 + 1) << 3) | (rnd() % 2 ? 2 : 0); }
      const r = await new Promise((resolve) => {
        client.makeUnaryRequest(`/gantry.store.v1.Store/${m}`, ident, ident, b,
          { deadline: Date.now() + scaled(5000) }, (err, resp) => resolve({ err, resp }));
      });
      // ReplicaFetch/ReplicaStream on a node that replicates nothing:
      // UNAVAILABLE "not leader"
      if (!((m === 'ReplicaFetch' || m === 'ReplicaStream') &&
            r.err?.code === grpc.status.UNAVAILABLE)) {
        statuses.add(r.err ? r.err.code : 0);
      }
    }
  }
  assert.ok([...statuses].every((c) => c === 0 || c === grpc.status.INVALID_ARGUMENT),
    `statuses: ${[...statuses]}`);
  assert.equal((await call(client, 'GetInfo', {})).err, 'OK');
});

test('a string holding a NUL is refused, not cut short', async () => {
  // Append {topic: "Q\0x", messages: [{body: "n"}]}: decoded into a C
  // string the topic would be "Q", another topic.
  const before_ = (await call(client, 'Stats', { topic: 'Q', group: '' })).messages;
  const r = await call(client, 'Append', { topic: 'Q\u0000x', messages: [msg('n')] });
  assert.equal(r.err, 'EINVAL');
  // ... and inside a message: a key
  const k = await call(client, 'Append', { topic: 'Q', messages: [msg('n', { keys: ['a\u0000b'] })] });
  assert.equal(k.err, 'EINVAL');
  assert.equal((await call(client, 'Ack', { group: 'G', topic: 'Q', handle: 'h\u0000' })).err, 'EINVAL');
  assert.equal((await call(client, 'Stats', { topic: 'Q', group: '' })).messages, before_);
});

test('conventions: probes, --check-config, --version, bad usage', async () => {
  assert.equal((await httpGet(node.httpPort, '/healthz')).status, 200);
  assert.equal((await httpGet(node.httpPort, '/readyz')).status, 200);
  const m = await httpGet(node.httpPort, '/metrics');
  assert.match(m.body, /^gantry_store_grpc_calls_total \d+$/m);
  // the engine's I/O figures (sync mode, nothing in flight): appends so far
  // were synced, none left behind, none failed; promtool accepts the page
  assert.match(m.body, /^rocketmq_storage_flush_behind_bytes 0$/m);
  const syncs = /^rocketmq_storage_fsync_latency_count\{file="commitlog"\} (\d+)$/m.exec(m.body);
  assert.ok(syncs && Number(syncs[1]) > 0, 'commitlog fdatasyncs counted');
  assert.match(m.body, /^rocketmq_storage_fsync_latency_bucket\{file="state",le="\+Inf"\} \d+$/m);
  assert.match(m.body, /^rocketmq_storage_fsync_failures_total\{file="commitlog"\} 0$/m);
  const pt = spawnSync('promtool', ['check', 'metrics'], { input: m.body, encoding: 'utf8' });
  assert.equal(pt.status, 0, `promtool check metrics:\n${pt.stdout}${pt.stderr}`);
  const good = path.join(node.dir, 'good.yaml');
  const bad = path.join(node.dir, 'bad.yaml');
  fs.writeFileSync(good, 'store_server:\n  listen: "127.0.0.1:10911"\n  dedup_entries: 10\n');
  fs.writeFileSync(bad, 'store_server:\n  listen: "nonsense"\n');
  assert.equal(spawnSync(GANTRY_STORE_BIN, ['--check-config', good]).status, 0);
  const b = spawnSync(GANTRY_STORE_BIN, ['--check-config', bad], { encoding: 'utf8' });
  assert.equal(b.status, 1);
  assert.match(b.stderr, /store_server\.listen/);
  assert.match(spawnSync(GANTRY_STORE_BIN, ['--version'], { encoding: 'utf8' }).stdout, /^gantry-store /);
  assert.equal(spawnSync(GANTRY_STORE_BIN, ['--no-such-flag']).status, 2);
  const pc = spawnSync(GANTRY_STORE_BIN, ['--config', good, '--listen', '127.0.0.1:1234', '--print-config'],
    { encoding: 'utf8' });
  assert.match(pc.stdout, /listen: "?127\.0\.0\.1:1234"?/);
});

test('the de-dup window is bounded by entries and by time', async () => {
  const g = await startStore({ yaml: '', storeServerYaml: '  dedup_entries: 2\n  dedup_window_ms: 1000\n' });
  const c = connect(g);
  try {
    assert.equal((await call(c, 'PutTopic', { topic: { name: 'B', queue_count: 1, perm: 6 } })).err, 'OK');
    const app = (key) => call(c, 'Append', { topic: 'B', idempotency_key: key, messages: [msg(key, { msg_id: key })] });
    assert.equal((await app('a')).deduplicated, false);
    assert.equal((await app('a')).deduplicated, true);
    assert.equal((await app('b')).deduplicated, false);
    assert.equal((await app('c')).deduplicated, false); // 'a' is forgotten: room for 2
    assert.equal((await app('c')).deduplicated, true);
    assert.equal((await app('a')).deduplicated, false);
    // a batch larger than the window is appended without de-dup
    const big = await call(c, 'Append', { topic: 'B', idempotency_key: 'big',
      messages: [msg('1'), msg('2'), msg('3')] });
    assert.equal(big.err, 'OK');
    assert.equal((await call(c, 'Append', { topic: 'B', idempotency_key: 'big',
      messages: [msg('1'), msg('2'), msg('3')] })).deduplicated, false);
    assert.equal((await app('c')).deduplicated, true); // that did not evict the others
    // and an entry is kept dedup_window_ms, no longer
    await waitFor(async () => !(await app('c')).deduplicated, 5000, 'c forgotten after the window');
    const s = await call(c, 'Stats', { topic: 'B', group: '' });
    assert.equal(s.messages, 1 + 1 + 2 + 1 + 6);
  } finally {
    c.close();
    await stopGantry(g);
  }
});

test('dedup_entries 0: de-duplication off, said at start', async () => {
  const g = await startStore({ yaml: '', storeServerYaml: '  dedup_entries: 0\n' });
  const c = connect(g);
  try {
    assert.equal((await call(c, 'PutTopic', { topic: { name: 'O', queue_count: 1, perm: 6 } })).err, 'OK');
    const app = () => call(c, 'Append', { topic: 'O', idempotency_key: 'same', messages: [msg('o', { msg_id: 'same' })] });
    assert.equal((await app()).deduplicated, false);
    assert.equal((await app()).deduplicated, false);
    assert.equal((await call(c, 'Stats', { topic: 'O', group: '' })).messages, 2);
    assert.match(g.log(), /de-duplication of retried appends is off/);
  } finally {
    c.close();
    await stopGantry(g);
  }
});

test('appends in flight count against the de-dup bound from the start', async () => {
  const g = await startStore({ yaml: '', flush: 'sync',
    storeServerYaml: '  dedup_entries: 4\n  dedup_window_ms: 600000\n' });
  const c = connect(g);
  try {
    assert.equal((await call(c, 'PutTopic', { topic: { name: 'P', queue_count: 1, perm: 6 } })).err, 'OK');
    // Many appends at once, each one message under its own key: while some
    // are still being written, the others must not be remembered beyond
    // the bound (entries in flight used to count only once done).
    const keys = Array.from({ length: 64 }, (_, i) => `k${i}`);
    const rs = await Promise.all(keys.map((k) => call(c, 'Append',
      { topic: 'P', idempotency_key: k, messages: [msg(k, { msg_id: k })] })));
    assert.deepEqual(rs.filter((r) => r.err !== 'OK'), []);
    const remembered = await metric('gantry_store_dedup_entries', g);
    assert.ok(remembered <= 4, `${remembered} appends remembered, dedup_entries 4`);
  } finally {
    c.close();
    await stopGantry(g);
  }
});

test('a pop cancelled, or the node stopped, before the poll was attached ends at once', async () => {
  // GANTRY_TEST_LATE_ATTACH: a poll attaches only after its call's
  // interrupt came and found nothing to end; the re-check after attaching
  // must end it, not leave it parked for its 60 s poll.
  const g = await startStore({ yaml: '', env: { GANTRY_TEST_LATE_ATTACH: '1' },
    shutdownTimeoutMs: 30000 });
  const c = connect(g);
  try {
    assert.equal((await call(c, 'PutTopic', { topic: { name: 'R', queue_count: 1, perm: 6 } })).err, 'OK');
    const pop = () => startCall(c, 'Pop', { group: 'G', topic: 'R', queue_id: -1, max: 1,
      invisible_ms: 60000, poll_timeout_ms: 60000 }, 120000);
    const p = pop();
    await waitFor(() => g.log().includes('a poll waits for its call'), 5000, 'the pop in the hook');
    p.call.cancel();
    await assert.rejects(p.done, (e) => e.code === grpc.status.CANCELLED);
    await waitFor(() => g.log().includes('attaches after its call'), 5000, 'the pop attached');
    await waitFor(async () => (await metric('gantry_store_parked_polls', g)) === 0, 5000,
      'the cancelled pop ended');
    // and a message appended now is there for the next pop, first attempt
    assert.equal((await call(c, 'Append', { topic: 'R', messages: [msg('r')] })).err, 'OK');
    const stats = await call(c, 'Stats', { topic: 'R', group: 'G' });
    assert.equal(stats.inflight, 0);

    const p2 = pop();
    await waitFor(() => g.log().split('a poll waits for its call').length === 3, 5000, 'second pop in the hook');
    const t0 = Date.now();
    process.kill(g.pid, 'SIGTERM');
    const r = await p2.done.catch((e) => ({ grpcError: e.code }));
    assert.ok(r.err === 'ESHUTDOWN' || r.grpcError === grpc.status.UNAVAILABLE, JSON.stringify(r));
    assert.equal((await stopGantry(g)).code, 0);
    assert.ok(Date.now() - t0 < scaled(20000), 'stopped without waiting out its 30 s bound');
  } finally {
    c.close();
    await stopGantry(g).catch(() => {});
  }
});

test('SIGTERM: a parked pop is answered, the node stops cleanly', async () => {
  const g = await startStore({ yaml: '' });
  const c = connect(g);
  try {
    assert.equal((await call(c, 'PutTopic', { topic: { name: 'S', queue_count: 1, perm: 6 } })).err, 'OK');
    const p = startCall(c, 'Pop', { group: 'G', topic: 'S', queue_id: -1, max: 1,
      invisible_ms: 1000, poll_timeout_ms: scaled(60000) });
    const watch = c.MetaWatch({});
    watch.on('error', () => {});
    await waitFor(async () => {
      const r = await httpGet(g.httpPort, '/metrics');
      return /^gantry_store_parked_polls 1$/m.test(r.body) && /^gantry_store_meta_watchers 1$/m.test(r.body);
    }, 5000, 'pop parked, watch open');
    const t0 = Date.now();
    process.kill(g.pid, 'SIGTERM');
    const r = await p.done.catch((e) => ({ grpcError: e.code }));
    assert.ok(r.err === 'ESHUTDOWN' || r.grpcError === grpc.status.UNAVAILABLE, JSON.stringify(r));
    const info = await stopGantry(g);
    assert.equal(info.code, 0);
    assert.ok(Date.now() - t0 < scaled(10000));
  } finally {
    c.close();
  }
});

test('SIGKILL and restart: appended messages and offsets are kept', async () => {
  let g = await startStore({ yaml: '' });
  let c = connect(g);
  let id;
  try {
    assert.equal((await call(c, 'PutTopic', { topic: { name: 'K', queue_count: 1, perm: 6 } })).err, 'OK');
    assert.equal((await call(c, 'PutGroup', { group: { name: 'KG', max_delivery_attempts: 3 } })).err, 'OK');
    const a = await call(c, 'Append', { topic: 'K', messages: [msg('k1'), msg('k2')] });
    id = a.items[1].msg_id;
    const r = await call(c, 'Pop', { group: 'KG', topic: 'K', queue_id: -1, max: 1, invisible_ms: 60000 });
    assert.equal((await call(c, 'Ack', { group: 'KG', topic: 'K', handle: r.messages[0].handle })).err, 'OK');
  } finally {
    c.close();
  }
  await stopGantry(g, 'SIGKILL', { keepDir: true });
  g = await startStore({ yaml: '', dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort });
  c = connect(g);
  try {
    const l = await call(c, 'LookupId', { topic: 'K', msg_id: id });
    assert.equal(l.messages[0].body.toString(), 'k2');
    const r = await call(c, 'Pop', { group: 'KG', topic: 'K', queue_id: -1, max: 4, invisible_ms: 60000 });
    assert.deepEqual(r.messages.map((m) => m.message.body.toString()), ['k2']); // k1 stays acked
  } finally {
    c.close();
    await stopGantry(g);
  }
});
