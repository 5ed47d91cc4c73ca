// The AMQP gateway's queues on the store (issue 9), with amqplib 0.10.9:
// queue.declare (counts, passive, server-named, redeclare checks,
// exclusive), publish through the default exchange, basic.get, consume
// with prefetch, ack / nack / reject, redelivery, release on channel
// close, queue.purge / delete, publisher confirms, properties and headers
// round-tripped.  RabbitMQ 3.10's answers (codes and texts) are the
// reference.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, require } from './harness.mjs';

const amqp = require('amqplib');

let g;
before(async () => { g = await startGantry({ logLevel: 'info' }); });
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

const url = () => `amqp://guest:guest@127.0.0.1:${g.amqpPort}/`;

async function open() {
  const conn = await amqp.connect(url());
  conn.on('error', () => {});
  return conn;
}

// A channel error: the promise rejects with RabbitMQ's code and text.
async function channelError(conn, fn, code, text) {
  const ch = await conn.createChannel();
  ch.on('error', () => {});
  const closed = new Promise((r) => ch.on('close', r));
  await assert.rejects(fn(ch), (e) => {
    assert.equal(e.code, code, e.message);
    if (text) assert.ok(e.message.includes(text), `${e.message} has ${text}`);
    return true;
  });
  await closed;
}

test('declare, publish to the default exchange, get; counts in declare-ok', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const q = 'celery@host.celery.pidbox:é/1'; // dots, colons, UTF-8
  let ok = await ch.assertQueue(q, { durable: true });
  assert.deepEqual(ok, { queue: q, messageCount: 0, consumerCount: 0 });
  for (let i = 0; i < 3; i++) ch.sendToQueue(q, Buffer.from(`m${i}`));
  ok = await ch.checkQueue(q);
  assert.equal(ok.messageCount, 3);
  const got = [];
  for (let i = 0; i < 3; i++) {
    const m = await ch.get(q);
    assert.ok(m, `message ${i}`);
    assert.equal(m.fields.exchange, '');
    assert.equal(m.fields.routingKey, q);
    assert.equal(m.fields.redelivered, false);
    assert.equal(m.fields.messageCount, 2 - i, 'get-ok: messages left');
    got.push(m.content.toString());
    ch.ack(m);
  }
  assert.deepEqual(got, ['m0', 'm1', 'm2']); // publish order kept
  assert.equal(await ch.get(q), false); // get-empty
  await ch.deleteQueue(q);
  await conn.close();
});

test('properties and headers round-trip exactly', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  assert.match(queue, /^amq\.gen-[A-Za-z0-9_-]{22}$/);
  const props = {
    contentType: 'application/json', contentEncoding: 'utf8', deliveryMode: 2, priority: 3,
    correlationId: 'c-1', replyTo: 'r.q', expiration: '60000', messageId: 'id-9',
    timestamp: 1700000000, type: 't', userId: 'guest', appId: 'app',
    headers: { a: 1, b: 'two', c: { nested: true }, d: [1, 'x'], e: -5, f: 1.5 },
  };
  ch.sendToQueue(queue, Buffer.alloc(300000, 7), props); // several body frames
  let m;
  await waitFor(async () => (m = await ch.get(queue, { noAck: true })), 5000, 'the message');
  assert.equal(m.content.length, 300000);
  assert.ok(m.content.every((b) => b === 7));
  for (const [k, v] of Object.entries(props)) assert.deepEqual(m.properties[k], v, k);
  await conn.close();
});

test('passive declare of a missing queue: 404 with RabbitMQ\'s text', async () => {
  const conn = await open();
  await channelError(conn, (ch) => ch.checkQueue('no-such-q'), 404,
    "NOT_FOUND - no queue 'no-such-q' in vhost '/'");
  await conn.close();
});

test('redeclare with other flags: 406; amq.* names: 403; exclusive: 405 for others', async () => {
  const conn = await open();
  const other = await open();
  const ch = await conn.createChannel();
  await ch.assertQueue('rq', { durable: true });
  await channelError(conn, (c) => c.assertQueue('rq', { durable: false }), 406,
    "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'rq' in vhost '/': received 'false' but current is 'true'");
  await channelError(conn, (c) => c.assertQueue('amq.mine'), 403,
    "ACCESS_REFUSED - queue name 'amq.mine' contains reserved prefix 'amq.*'");
  await ch.assertQueue('xq', { exclusive: true });
  await channelError(other, (c) => c.assertQueue('xq', { exclusive: true }), 405,
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'xq' in vhost '/'");
  await channelError(other, (c) => c.checkQueue('xq'), 405);
  // The exclusive queue goes with its connection.
  await conn.close();
  await channelError(other, (c) => c.checkQueue('xq'), 404);
  const och = await other.createChannel();
  await och.deleteQueue('rq');
  await other.close();
});

test('consume with prefetch: never more unacked than prefetch; ack pulls more', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  for (let i = 0; i < 20; i++) ch.sendToQueue(queue, Buffer.from(String(i)));
  await waitFor(async () => (await ch.checkQueue(queue)).messageCount === 20, 5000, '20 ready');
  await ch.prefetch(5);
  const held = [];
  const seen = [];
  const { consumerTag } = await ch.consume(queue, (m) => { held.push(m); seen.push(m.content.toString()); });
  assert.match(consumerTag, /^amq\.ctag-/);
  await waitFor(() => held.length === 5, 5000, '5 deliveries');
  // No sixth while five are unacked (it would come at once after an ack).
  ch.ack(held.shift());
  await waitFor(() => held.length === 5, 5000, 'one more after an ack');
  assert.equal(seen.length, 6);
  // ack multiple
  ch.ack(held[held.length - 1], true);
  held.length = 0;
  await waitFor(() => seen.length === 11, 5000, 'five more');
  assert.deepEqual(seen, Array.from({ length: 11 }, (_, i) => String(i)));
  await ch.cancel(consumerTag);
  await conn.close();
});

test('nack/reject requeue redelivers with redelivered=true; without requeue drops', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  ch.sendToQueue(queue, Buffer.from('a'));
  ch.sendToQueue(queue, Buffer.from('b'));
  let m;
  await waitFor(async () => (m = await ch.get(queue)), 5000, 'a');
  assert.equal(m.fields.redelivered, false);
  ch.nack(m, false, true);
  // The requeued message comes back first, ahead of the newer 'b'.
  m = await ch.get(queue);
  assert.equal(m.content.toString(), 'a');
  assert.equal(m.fields.redelivered, true);
  ch.reject(m, false); // dropped
  m = await ch.get(queue, { noAck: true });
  assert.equal(m.content.toString(), 'b');
  assert.equal(await ch.get(queue), false);
  await conn.close();
});

test('unknown delivery tag: 406 PRECONDITION_FAILED', async () => {
  const conn = await open();
  await channelError(conn, async (ch) => {
    ch.ack({ fields: { deliveryTag: 42 } });
    await ch.assertQueue('', { exclusive: true }); // waits for the close
  }, 406, 'PRECONDITION_FAILED - unknown delivery tag 42');
  await conn.close();
});

test('a closed channel gives its unacked messages back at once (redelivered)', async () => {
  const conn = await open();
  const ch1 = await conn.createChannel();
  const ch2 = await conn.createChannel();
  await ch1.assertQueue('relq');
  await ch1.purgeQueue('relq');
  ch1.sendToQueue('relq', Buffer.from('x'));
  let m;
  await waitFor(async () => (m = await ch1.get('relq')), 5000, 'x');
  await ch1.close();
  const got = [];
  await ch2.consume('relq', (d) => got.push(d));
  await waitFor(() => got.length === 1, 5000, 'x redelivered');
  assert.equal(got[0].fields.redelivered, true);
  ch2.ack(got[0]);
  await ch2.deleteQueue('relq');
  await conn.close();
});

test('queue.purge and queue.delete (if-unused, if-empty) with counts', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  await ch.assertQueue('pq');
  for (let i = 0; i < 5; i++) ch.sendToQueue('pq', Buffer.from('p'));
  const held = await ch.get('pq'); // in flight: purge leaves it, as RabbitMQ
  assert.equal((await ch.purgeQueue('pq')).messageCount, 4);
  assert.equal((await ch.checkQueue('pq')).messageCount, 0);
  ch.ack(held); // still ackable
  assert.equal((await ch.checkQueue('pq')).messageCount, 0);
  ch.sendToQueue('pq', Buffer.from('p'));
  await channelError(conn, (c) => c.deleteQueue('pq', { ifEmpty: true }), 406,
    "PRECONDITION_FAILED - queue 'pq' in vhost '/' not empty");
  const c2 = await conn.createChannel();
  let cancelled = false;
  await c2.consume('pq', (m) => { if (m === null) cancelled = true; else c2.ack(m); });
  await channelError(conn, (c) => c.deleteQueue('pq', { ifUnused: true }), 406,
    "PRECONDITION_FAILED - queue 'pq' in vhost '/' in use");
  await ch.deleteQueue('pq');
  // The consumer hears basic.cancel from the server (consumer_cancel_notify).
  await waitFor(() => cancelled, 5000, 'server-sent basic.cancel');
  await channelError(conn, (c) => c.checkQueue('pq'), 404);
  await conn.close();
});

test('publisher confirms: every publish acked after the append; unroutable mandatory returned first', async () => {
  const conn = await open();
  const ch = await conn.createConfirmChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  const acks = [];
  for (let i = 0; i < 50; i++) {
    acks.push(new Promise((res, rej) => ch.sendToQueue(queue, Buffer.from(String(i)), {},
      (err) => (err ? rej(err) : res()))));
  }
  await Promise.all(acks);
  assert.equal((await ch.checkQueue(queue)).messageCount, 50);
  const returned = new Promise((r) => ch.on('return', r));
  await new Promise((res, rej) => ch.publish('', 'nowhere', Buffer.from('r'), { mandatory: true },
    (err) => (err ? rej(err) : res())));
  const ret = await returned;
  assert.equal(ret.fields.replyCode, 312);
  assert.equal(ret.fields.replyText, 'NO_ROUTE');
  assert.equal(ret.content.toString(), 'r');
  await conn.close();
});

test('tx: publishes and acks take effect at commit, rollback discards; 406 outside a transaction', async () => {
  const defs = require('amqplib/lib/defs');
  const conn = await open();
  const ch = await conn.createChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  ch.sendToQueue(queue, Buffer.from('pre'));
  let m;
  await waitFor(async () => (m = await ch.get(queue)), 5000, 'pre');
  await ch.rpc(defs.TxSelect, {}, defs.TxSelectOk);
  ch.sendToQueue(queue, Buffer.from('t1'));
  ch.ack(m);
  assert.equal((await ch.checkQueue(queue)).messageCount, 0, 'nothing before the commit');
  await ch.rpc(defs.TxRollback, {}, defs.TxRollbackOk);
  await ch.rpc(defs.TxCommit, {}, defs.TxCommitOk);
  assert.equal((await ch.checkQueue(queue)).messageCount, 0, 'rolled back');
  ch.sendToQueue(queue, Buffer.from('t2'));
  ch.sendToQueue(queue, Buffer.from('t3'), { headers: { BCC: [queue] } }); // stripped at commit
  ch.ack(m); // still unacked after the rollback
  await ch.rpc(defs.TxCommit, {}, defs.TxCommitOk);
  assert.equal((await ch.checkQueue(queue)).messageCount, 2, 'committed');
  assert.deepEqual([(await ch.get(queue, { noAck: true })).content.toString(),
    (await ch.get(queue, { noAck: true })).content.toString()], ['t2', 't3']);
  assert.equal(await ch.get(queue), false, "'pre' was acked by the commit");
  // confirm.select on a tx channel, tx.commit on a plain one: 406.
  await channelError(conn, async (c) => {
    await c.rpc(defs.TxSelect, {}, defs.TxSelectOk);
    await c.rpc(defs.ConfirmSelect, { nowait: false }, defs.ConfirmSelectOk);
  }, 406, 'PRECONDITION_FAILED - cannot switch from tx to confirm mode');
  await channelError(conn, (c) => c.rpc(defs.TxCommit, {}, defs.TxCommitOk), 406,
    'PRECONDITION_FAILED - channel is not transactional');
  await conn.close();
});

test('bodies over 4 MiB (a RocketMQ body\'s limit) are stored: the limit is amqp.max_message_size (amqp_flow tests its 406)', async () => {
  const conn = await open();
  const ch = await conn.createConfirmChannel();
  const { queue } = await ch.assertQueue('', { exclusive: true });
  const size = 4 * 1024 * 1024 + 1;
  await new Promise((res, rej) => ch.sendToQueue(queue, Buffer.alloc(size, 1), {},
    (e) => (e ? rej(e) : res())));
  const m = await ch.get(queue, { noAck: true });
  assert.equal(m.content.length, size);
  await conn.close();
});
