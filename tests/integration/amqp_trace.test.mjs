// Message trace of the AMQP gateway (gateway-amqp/gw_trace.c, issue 13): a
// queue named in trace.topics has its messages' publish, deliveries
// (basic.deliver and basic.get-ok, with the attempt), ack, nack, reject
// and dead-lettering in GET /api/v1/messages/ID/trace, found by the
// message-id property as well as by the store's message id; the events
// name the vhost, the queue and the connection as the client list does;
// an untraced queue records nothing; a message dead-lettered by TTL
// expiry or max-length overflow (or dropped for want of a dead-letter
// exchange) shows a dlq event with RabbitMQ's reason.  Driven with amqplib.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, require, httpGet } from './harness.mjs';

const amqp = require('amqplib');

let g;
let conn;
let ch;

async function trace(id) {
  const r = await httpGet(g.httpPort, `/api/v1/messages/${encodeURIComponent(id)}/trace`);
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body);
}

async function traceOf(id, n, what) {
  let last;
  await waitFor(async () => {
    last = await trace(id);
    return last.events.length >= n;
  }, 20000, what);
  return last.events;
}

before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: 'trace:\n  topics: ["tr.q", "tr.ttl", "tr.max"]\n  flush_ms: 20\n',
  });
  conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}`);
  conn.on('error', () => {});
  ch = await conn.createConfirmChannel();
  await ch.assertExchange('tr.dlx', 'fanout', { durable: false });
  await ch.assertQueue('tr.dead', { durable: false });
  await ch.bindQueue('tr.dead', 'tr.dlx', '');
  await ch.assertQueue('tr.q', { durable: false, deadLetterExchange: 'tr.dlx' });
  await ch.assertQueue('tr.other', { durable: false });
});

after(async () => {
  await conn?.close().catch(() => {});
  if (g) {
    const info = await stopGantry(g);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});

function publish(q, body, props) {
  return new Promise((resolve, reject) => ch.sendToQueue(q, Buffer.from(body), props,
    (e) => (e ? reject(e) : resolve())));
}

test('publish, deliveries, nack, reject to the DLX; get and ack; by message-id property and by id', async () => {
  await publish('tr.q', 'poison', { messageId: 'amqp-m1' });
  await publish('tr.q', 'fine', { messageId: 'amqp-m2' });
  await publish('tr.other', 'not traced', { messageId: 'amqp-u' });

  // amqp-m1: delivered, nacked (requeued), delivered again, rejected -> DLX
  const c2 = await conn.createChannel();
  await c2.prefetch(1);
  const seen = [];
  const done = new Promise((resolve) => {
    c2.consume('tr.q', (m) => {
      seen.push(m.properties.messageId);
      if (m.properties.messageId !== 'amqp-m1') { c2.nack(m, false, true); return; }
      if (!m.fields.redelivered) { c2.nack(m, false, true); return; }
      c2.reject(m, false);
      resolve();
    }, { consumerTag: 'tr-consumer' });
  });
  await done;
  await c2.close();
  // amqp-m2 through basic.get, acked
  let got;
  await waitFor(async () => {
    got = await ch.get('tr.q', { noAck: false });
    return got && got.properties.messageId === 'amqp-m2' ? got : (got && ch.nack(got, false, true), false);
  }, 20000, 'amqp-m2 by basic.get');
  ch.ack(got);
  // the dead letter arrived
  await waitFor(async () => (await ch.checkQueue('tr.dead')).messageCount === 1, 20000, 'dead-lettered');

  const clients = JSON.parse((await httpGet(g.httpPort, '/api/v1/clients')).body).clients;
  const me = clients.find((c) => c.type === 'AMQP' && c.remote.endsWith(`:${conn.connection.stream.localPort}`));
  assert.ok(me, JSON.stringify(clients));

  const e1 = await traceOf('amqp-m1', 6, 'amqp-m1: 6 events');
  const kinds = e1.map((e) => e.kind);
  // m1 may have been nacked back more than once while m2 was taken ahead
  // of it; its own story starts and ends the same way
  assert.equal(kinds[0], 'publish', JSON.stringify(e1));
  assert.deepEqual(kinds.slice(-3), ['deliver', 'reject', 'dlq'], JSON.stringify(e1));
  assert.ok(kinds.includes('nack'));
  const storeId = e1[0].msg_id;
  assert.match(storeId, /^[0-9A-Z]{20,}$/);
  for (const e of e1) {
    assert.equal(e.msg_id, storeId);
    assert.equal(e.amqp_message_id, 'amqp-m1');
    assert.equal(e.topic, 'tr.q');
    assert.equal(e.vhost, '/');
    assert.equal(e.addr, me.remote);
  }
  // the publisher's connection, and the consumer's (the same connection)
  assert.equal(e1[0].client_id, me.client_id);
  assert.equal(e1[0].body_size, 6);
  assert.equal(typeof e1[0].offset, 'number');
  const dl = e1.filter((e) => e.kind === 'deliver');
  assert.equal(dl[0].attempt, 1);
  assert.ok(dl[dl.length - 1].attempt >= 2, JSON.stringify(dl));
  const nack = e1.find((e) => e.kind === 'nack');
  assert.equal(nack.result, 'OK: requeued');
  assert.equal(e1[e1.length - 2].result, 'OK: dead-lettered');
  assert.equal(e1[e1.length - 1].result, "OK: to dead-letter exchange 'tr.dlx'");
  assert.equal(e1[e1.length - 1].attempt, dl[dl.length - 1].attempt);
  // by the store's id: the same events
  assert.deepEqual((await trace(storeId)).events, e1);

  const e2 = await traceOf('amqp-m2', 3, 'amqp-m2');
  const last3 = e2.slice(-2).map((e) => [e.kind, e.result]);
  assert.equal(e2[0].kind, 'publish');
  assert.deepEqual(last3, [['deliver', 'OK: basic.get'], ['ack', 'OK']], JSON.stringify(e2));

  // the untraced queue: nothing
  assert.deepEqual((await trace('amqp-u')).events, []);
  assert.ok(seen.includes('amqp-m1'));
});

test('dead-lettered by TTL expiry and by max-length overflow: a dlq event with the reason', async () => {
  await ch.assertExchange('tr.dlx2', 'fanout', { durable: false });
  await ch.assertQueue('tr.dead2', { durable: false });
  await ch.bindQueue('tr.dead2', 'tr.dlx2', '');
  await ch.assertQueue('tr.ttl', { durable: false, deadLetterExchange: 'tr.dlx2', messageTtl: 50 });
  await ch.assertQueue('tr.max', { durable: false, maxLength: 1 }); // drop-head, no DLX

  // nobody consumes tr.ttl: the message expires at its head, to tr.dlx2
  await publish('tr.ttl', 'short-lived', { messageId: 'amqp-ttl' });
  await waitFor(async () => (await ch.checkQueue('tr.dead2')).messageCount === 1, 20000,
    'expired to tr.dead2');
  const et = await traceOf('amqp-ttl', 2, 'amqp-ttl: publish and dlq');
  assert.deepEqual(et.map((e) => [e.kind, e.result]),
    [['publish', 'OK'], ['dlq', "OK: expired, to dead-letter exchange 'tr.dlx2'"]],
    JSON.stringify(et));
  assert.equal(et[1].msg_id, et[0].msg_id);
  assert.equal(et[1].topic, 'tr.ttl');
  assert.equal(et[1].vhost, '/');

  // tr.max holds one: the older message goes from the head, dropped
  await publish('tr.max', 'first', { messageId: 'amqp-max1' });
  await publish('tr.max', 'second', { messageId: 'amqp-max2' });
  await waitFor(async () => (await ch.checkQueue('tr.max')).messageCount === 1, 20000,
    'tr.max down to one');
  const em = await traceOf('amqp-max1', 2, 'amqp-max1: publish and dlq');
  assert.deepEqual(em.map((e) => [e.kind, e.result]),
    [['publish', 'OK'], ['dlq', 'OK: maxlen, dropped (no dead-letter exchange)']],
    JSON.stringify(em));
  const got = await ch.get('tr.max', { noAck: true });
  assert.equal(got.properties.messageId, 'amqp-max2');
  assert.deepEqual((await traceOf('amqp-max2', 2, 'amqp-max2')).map((e) => e.kind),
    ['publish', 'deliver']);
});
