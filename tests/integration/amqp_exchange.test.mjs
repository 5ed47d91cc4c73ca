// The AMQP gateway's exchanges and bindings (issue 9), with amqplib
// 0.10.9: declare (types, passive, redeclare 406, amq.* 403, unknown type
// 503), the predeclared amq.* exchanges, direct / fanout / topic / headers
// routing at publish time (a later binding does not see older messages;
// unbinding keeps the backlog), exchange-to-exchange bindings, delete with
// if-unused, internal exchanges, the default exchange's 403s, and
// mandatory publishes that route nowhere.  RabbitMQ 3.10's answers are the
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

async function open() {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

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

// Every message now in q (get until empty), as strings.
async function drain(ch, q) {
  const out = [];
  for (;;) {
    const m = await ch.get(q, { noAck: true });
    if (!m) return out;
    out.push(m.content.toString());
  }
}

async function queues(ch, n) {
  const qs = [];
  for (let i = 0; i < n; i++) qs.push((await ch.assertQueue('', { exclusive: true })).queue);
  return qs;
}

test('declare: passive, redeclare 406, amq.* 403, unknown type 503, default exchange 403', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  await ch.assertExchange('x.direct', 'direct', { durable: false });
  await ch.assertExchange('x.direct', 'direct', { durable: false }); // same: ok
  await ch.checkExchange('x.direct');
  await ch.checkExchange('amq.topic');
  await ch.assertExchange('amq.direct', 'direct', { durable: true }); // predeclared, same: ok
  await channelError(conn, (c) => c.checkExchange('no.such.x'), 404,
    "NOT_FOUND - no exchange 'no.such.x' in vhost '/'");
  await channelError(conn, (c) => c.assertExchange('x.direct', 'fanout', { durable: false }), 406,
    "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'x.direct' in vhost '/': received 'fanout' but current is 'direct'");
  await channelError(conn, (c) => c.assertExchange('x.direct', 'direct', { durable: true }), 406,
    "inequivalent arg 'durable' for exchange 'x.direct'");
  await channelError(conn, (c) => c.assertExchange('amq.mine', 'direct'), 403,
    "ACCESS_REFUSED - exchange name 'amq.mine' contains reserved prefix 'amq.*'");
  await channelError(conn, (c) => c.bindQueue('whatever', '', 'k'), 403,
    'ACCESS_REFUSED - operation not permitted on the default exchange');
  await ch.deleteExchange('x.direct');
  await channelError(conn, (c) => c.checkExchange('x.direct'), 404);
  await conn.close();
  // An unknown type is a connection error (503), as RabbitMQ.
  const c2 = await open();
  const closed = new Promise((r) => c2.on('close', r));
  const ch2 = await c2.createChannel();
  ch2.on('error', () => {});
  await assert.rejects(ch2.assertExchange('x.weird', 'no-such-type'));
  const err = await closed;
  assert.match(String(err?.message ?? err), /503/);
});

test('direct, fanout and topic routing; routing happens at publish time', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const [a, b, c] = await queues(ch, 3);
  await ch.assertExchange('r.topic', 'topic', { autoDelete: false, durable: false });
  await ch.bindQueue(a, 'r.topic', 'stock.*.nyse');
  await ch.bindQueue(b, 'r.topic', 'stock.#');
  ch.publish('r.topic', 'stock.ibm.nyse', Buffer.from('1'));
  ch.publish('r.topic', 'stock.ibm', Buffer.from('2'));
  ch.publish('r.topic', 'bond.x', Buffer.from('3'));
  // A binding added later does not see the older messages.
  await ch.bindQueue(c, 'r.topic', '#');
  ch.publish('r.topic', 'late', Buffer.from('4'));
  await waitFor(async () => (await ch.checkQueue(c)).messageCount === 1, 5000, 'c has 1');
  assert.deepEqual(await drain(ch, a), ['1']);
  assert.deepEqual(await drain(ch, b), ['1', '2']);
  assert.deepEqual(await drain(ch, c), ['4']);

  await ch.bindQueue(a, 'amq.direct', 'k1');
  await ch.bindQueue(b, 'amq.fanout', 'ignored');
  await ch.bindQueue(c, 'amq.fanout', '');
  ch.publish('amq.direct', 'k1', Buffer.from('d'));
  ch.publish('amq.direct', 'k2', Buffer.from('nobody'));
  ch.publish('amq.fanout', 'any', Buffer.from('f'));
  await waitFor(async () => (await ch.checkQueue(c)).messageCount === 1, 5000, 'fanout');
  assert.deepEqual(await drain(ch, a), ['d']);
  assert.deepEqual(await drain(ch, b), ['f']);
  assert.deepEqual(await drain(ch, c), ['f']);

  // Unbinding keeps the queue's backlog.
  ch.publish('amq.direct', 'k1', Buffer.from('kept'));
  await waitFor(async () => (await ch.checkQueue(a)).messageCount === 1, 5000, 'kept');
  await ch.unbindQueue(a, 'amq.direct', 'k1');
  ch.publish('amq.direct', 'k1', Buffer.from('gone'));
  assert.deepEqual(await drain(ch, a), ['kept']);
  await ch.deleteExchange('r.topic');
  await conn.close();
});

test('a message routed to several queues by several bindings reaches each once', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const [a] = await queues(ch, 1);
  await ch.assertExchange('r.multi', 'topic', { durable: false });
  await ch.bindQueue(a, 'r.multi', 'a.*');
  await ch.bindQueue(a, 'r.multi', '#');
  await ch.bindQueue(a, 'r.multi', 'a.b');
  ch.publish('r.multi', 'a.b', Buffer.from('once'));
  await waitFor(async () => (await ch.checkQueue(a)).messageCount >= 1, 5000, 'routed');
  assert.deepEqual(await drain(ch, a), ['once']);
  await ch.deleteExchange('r.multi');
  await conn.close();
});

test('headers exchange: x-match all / any', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const [all, any] = await queues(ch, 2);
  await ch.bindQueue(all, 'amq.headers', '', { 'x-match': 'all', format: 'pdf', type: 'report' });
  await ch.bindQueue(any, 'amq.match', '', { 'x-match': 'any', format: 'pdf', type: 'report' });
  ch.publish('amq.headers', '', Buffer.from('both'), { headers: { format: 'pdf', type: 'report' } });
  ch.publish('amq.headers', '', Buffer.from('one'), { headers: { format: 'pdf' } });
  ch.publish('amq.match', '', Buffer.from('m-one'), { headers: { type: 'report' } });
  await waitFor(async () => (await ch.checkQueue(any)).messageCount === 1, 5000, 'any');
  assert.deepEqual(await drain(ch, all), ['both']);
  assert.deepEqual(await drain(ch, any), ['m-one']);
  await channelError(conn, (c) => c.bindQueue(all, 'amq.headers', '', { 'x-match': 'foo' }), 406,
    'PRECONDITION_FAILED - Invalid x-match field value');
  await conn.close();
});

test('exchange-to-exchange bindings; exchange.unbind-ok; delete if-unused', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const [q] = await queues(ch, 1);
  await ch.assertExchange('e.src', 'fanout', { durable: false });
  await ch.assertExchange('e.dst', 'direct', { durable: false });
  await ch.bindExchange('e.dst', 'e.src', '');
  await ch.bindQueue(q, 'e.dst', 'k');
  ch.publish('e.src', 'k', Buffer.from('via'));
  ch.publish('e.src', 'other', Buffer.from('dropped'));
  await waitFor(async () => (await ch.checkQueue(q)).messageCount === 1, 5000, 'via e2e');
  assert.deepEqual(await drain(ch, q), ['via']);
  await channelError(conn, (c) => c.deleteExchange('e.src', { ifUnused: true }), 406,
    "PRECONDITION_FAILED - exchange 'e.src' in vhost '/' in use");
  await ch.unbindExchange('e.dst', 'e.src', ''); // exchange.unbind-ok is method 51
  ch.publish('e.src', 'k', Buffer.from('after'));
  await ch.deleteExchange('e.src', { ifUnused: true });
  await ch.deleteExchange('e.dst');
  assert.deepEqual(await drain(ch, q), []);
  await channelError(conn, (c) => c.bindExchange('e.dst', 'e.src', ''), 404,
    "NOT_FOUND - no exchange");
  await conn.close();
});

test('publishing to a missing exchange: 404; to an internal one: 403; mandatory unroutable returned', async () => {
  const conn = await open();
  await channelError(conn, async (c) => {
    c.publish('no.such.exchange', 'k', Buffer.from('x'));
    await c.checkQueue('amq.gen-none'); // the close arrives first
  }, 404, "NOT_FOUND - no exchange 'no.such.exchange' in vhost '/'");
  const ch = await conn.createChannel();
  await ch.assertExchange('e.internal', 'fanout', { internal: true, durable: false });
  await channelError(conn, async (c) => {
    c.publish('e.internal', '', Buffer.from('x'));
    await c.checkExchange('e.internal');
  }, 403, "ACCESS_REFUSED - cannot publish to internal exchange 'e.internal' in vhost '/'");
  const returned = new Promise((r) => ch.on('return', r));
  ch.publish('amq.direct', 'no-binding', Buffer.from('back'), { mandatory: true });
  const ret = await returned;
  assert.equal(ret.fields.replyCode, 312);
  assert.equal(ret.fields.exchange, 'amq.direct');
  assert.equal(ret.fields.routingKey, 'no-binding');
  assert.equal(ret.content.toString(), 'back');
  await conn.close();
});

test('auto-delete exchange goes with its last binding; deleting a queue removes its bindings', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const [q1] = await queues(ch, 1);
  await ch.assertExchange('e.auto', 'direct', { autoDelete: true, durable: false });
  await ch.bindQueue(q1, 'e.auto', 'k');
  await ch.unbindQueue(q1, 'e.auto', 'k');
  await channelError(conn, (c) => c.checkExchange('e.auto'), 404);
  await ch.assertQueue('bq', { durable: false });
  await ch.bindQueue('bq', 'amq.direct', 'bq-key');
  await ch.deleteQueue('bq');
  await ch.assertQueue('bq', { durable: false });
  ch.publish('amq.direct', 'bq-key', Buffer.from('x'));
  ch.sendToQueue('bq', Buffer.from('direct'));
  await waitFor(async () => (await ch.checkQueue('bq')).messageCount === 1, 5000, 'one');
  assert.deepEqual(await drain(ch, 'bq'), ['direct']);
  await ch.deleteQueue('bq');
  await conn.close();
});

test('CC and BCC headers route to more keys; BCC is removed from the stored message', async () => {
  const conn = await open();
  const ch = await conn.createChannel();
  const [a, b, c] = await queues(ch, 3);
  await ch.bindQueue(b, 'amq.direct', 'kb');
  await ch.bindQueue(c, 'amq.direct', 'kc');
  // Default exchange: each key names a queue; a queue reached twice gets it once.
  ch.sendToQueue(a, Buffer.from('cc'), { headers: { CC: [b, a], x: 1 } });
  ch.publish('amq.direct', 'nothing', Buffer.from('bcc'), { headers: { CC: ['kb'], BCC: ['kc'], y: 'z' } });
  const ma = await ch.get(a, { noAck: true });
  assert.equal(ma.content.toString(), 'cc');
  assert.deepEqual(ma.properties.headers, { CC: [b, a], x: 1 });
  assert.equal(await ch.get(a), false, 'once');
  const mb1 = await ch.get(b, { noAck: true });
  const mb2 = await ch.get(b, { noAck: true });
  assert.deepEqual([mb1.content.toString(), mb2.content.toString()], ['cc', 'bcc']);
  assert.deepEqual(mb2.properties.headers, { CC: ['kb'], y: 'z' }, 'BCC stripped');
  const mc = await ch.get(c, { noAck: true });
  assert.equal(mc.content.toString(), 'bcc');
  assert.equal(mc.properties.headers.BCC, undefined);
  // CC that is not an array: 406 as RabbitMQ.
  await channelError(conn, async (x) => {
    x.publish('amq.direct', 'k', Buffer.from('bad'), { headers: { CC: 'notalist' } });
    await x.checkQueue(a);
  }, 406, 'PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,"CC",longstr}');
  await conn.close();
});
