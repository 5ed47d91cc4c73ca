// The x-delayed-message exchange (issue 10), with the contract of
// RabbitMQ's rabbitmq_delayed_message_exchange plugin: exchange.declare
// checks x-delayed-type (406 / 503 with the plugin's texts); a publish
// with x-delay > 0 is stored once as a store timer and routed through the
// exchange's bindings as they are when it fires (x-delay then reads
// -delay); no x-delay, 0 or negative: routed at once; mandatory gets
// basic.return at once (the plugin routes to nothing at publish time),
// the confirm comes when the timer is durable; a durable exchange's
// pending messages survive a SIGKILL and are delivered after the restart,
// not before their time.  Delays are checked as lower bounds only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, scaled, require } from './harness.mjs';

const amqp = require('amqplib');

async function open(g) {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

function confirmPublish(ch, ex, key, body, opts = {}) {
  return new Promise((res, rej) => ch.publish(ex, key, Buffer.from(body), opts,
    (e) => (e ? rej(e) : res())));
}

test('declare: x-delayed-type is required and must be a known type', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    const conn = await open(g);
    let ch = await conn.createChannel();
    let err = null;
    ch.on('error', (e) => { err = e; });
    await assert.rejects(ch.assertExchange('dx.none', 'x-delayed-message'),
      (e) => e.code === 406 && /Invalid argument, 'x-delayed-type' must be an existing exchange type/.test(e.message));
    ch = await conn.createChannel();
    ch.on('error', () => {});
    await assert.rejects(ch.assertExchange('dx.self', 'x-delayed-message',
      { arguments: { 'x-delayed-type': 'x-delayed-message' } }),
    (e) => e.code === 406 && /'x-delayed-message' can't be used for 'x-delayed-type'/.test(e.message));
    ch = await conn.createChannel();
    await ch.assertExchange('dx.ok', 'x-delayed-message', { arguments: { 'x-delayed-type': 'topic' } });
    // A redeclare does not compare x-delayed-type (as RabbitMQ); another
    // type is 406 naming x-delayed-message.
    await ch.assertExchange('dx.ok', 'x-delayed-message', { arguments: { 'x-delayed-type': 'direct' } });
    ch.on('error', () => {});
    await assert.rejects(ch.assertExchange('dx.ok', 'direct'),
      (e) => e.code === 406 && /received 'direct' but current is 'x-delayed-message'/.test(e.message));
    // An unknown x-delayed-type: 503, a connection error (rabbit_exchange:check_type).
    ch = await conn.createChannel();
    ch.on('error', () => {});
    const closed = new Promise((res) => conn.on('close', res));
    await assert.rejects(ch.assertExchange('dx.bad', 'x-delayed-message',
      { arguments: { 'x-delayed-type': 'nope' } }));
    const e = await closed;
    assert.match(String(e?.message ?? e), /503|COMMAND_INVALID - unknown exchange type 'nope'/);
    assert.ok(err);
  } finally {
    await stopGantry(g);
  }
});

test('x-delay holds a message; it routes through the bindings of the time it fires', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    const conn = await open(g);
    const ch = await conn.createConfirmChannel();
    await ch.assertExchange('dx', 'x-delayed-message', { arguments: { 'x-delayed-type': 'direct' } });
    await ch.assertQueue('dq1');
    await ch.assertQueue('dq2');
    await ch.bindQueue('dq1', 'dx', 'k');
    // No x-delay, 0 or negative: at once.
    await confirmPublish(ch, 'dx', 'k', 'now');
    await confirmPublish(ch, 'dx', 'k', 'zero', { headers: { 'x-delay': 0 } });
    await confirmPublish(ch, 'dx', 'k', 'neg', { headers: { 'x-delay': -5 } });
    assert.equal((await ch.checkQueue('dq1')).messageCount, 3);
    await ch.purgeQueue('dq1');

    // Two delays: the shorter one first; not before their time.
    const delay = 600;
    let t0 = Date.now();
    await confirmPublish(ch, 'dx', 'k', 'late', { headers: { 'x-delay': 2 * delay } });
    await confirmPublish(ch, 'dx', 'k', 'early', { headers: { 'x-delay': delay, keep: 'me' },
      messageId: 'm1' });
    assert.equal((await ch.checkQueue('dq1')).messageCount, 0, 'held');
    let got = [];
    await ch.consume('dq1', (m) => { got.push({ m, at: Date.now() }); }, { noAck: true });
    await waitFor(() => got.length === 2, 10000 + 2 * delay, 'both delayed messages');
    assert.deepEqual(got.map((x) => x.m.content.toString()), ['early', 'late']);
    assert.ok(got[0].at - t0 >= delay, `early after ${got[0].at - t0} ms`);
    assert.ok(got[1].at - t0 >= 2 * delay, `late after ${got[1].at - t0} ms`);
    // The plugin's header swap; the rest of the properties as published.
    assert.equal(got[0].m.properties.headers['x-delay'], -delay);
    assert.equal(got[0].m.properties.headers.keep, 'me');
    assert.equal(got[0].m.properties.messageId, 'm1');
    assert.equal(got[0].m.fields.exchange, 'dx');
    assert.equal(got[0].m.fields.routingKey, 'k');

    // Bindings as they are at fire time: bound after the publish counts,
    // unbound before the fire does not.
    got = [];
    t0 = Date.now();
    await confirmPublish(ch, 'dx', 'k', 'rebound', { headers: { 'x-delay': delay } });
    await ch.unbindQueue('dq1', 'dx', 'k');
    await ch.bindQueue('dq2', 'dx', 'k');
    const m2 = await waitFor(async () => ch.get('dq2', { noAck: true }), 10000 + delay,
      'the message on the queue bound after it was published');
    assert.equal(m2.content.toString(), 'rebound');
    assert.ok(Date.now() - t0 >= delay);
    assert.equal(got.length, 0, 'dq1 was unbound before the message fired');

    // mandatory: basic.return at once (nothing routed at publish time, as
    // the plugin); the message is still delivered when due.
    const returned = [];
    ch.on('return', (m) => returned.push(m));
    await confirmPublish(ch, 'dx', 'k', 'mand', { mandatory: true, headers: { 'x-delay': delay } });
    await waitFor(() => returned.length === 1, 5000, 'basic.return');
    assert.equal(returned[0].fields.replyCode, 312);
    const m3 = await waitFor(async () => ch.get('dq2', { noAck: true }), 10000 + delay,
      'the mandatory delayed message');
    assert.equal(m3.content.toString(), 'mand');

    // A timer whose exchange is deleted before it fires is dropped.
    await ch.assertExchange('dx.gone', 'x-delayed-message', { arguments: { 'x-delayed-type': 'fanout' } });
    await ch.bindQueue('dq2', 'dx.gone', '');
    await confirmPublish(ch, 'dx.gone', '', 'lost', { headers: { 'x-delay': delay } });
    await ch.deleteExchange('dx.gone');
    await confirmPublish(ch, 'dx', 'k', 'marker', { headers: { 'x-delay': 2 * delay } });
    const m4 = await waitFor(async () => ch.get('dq2', { noAck: true }), 10000 + 2 * delay,
      'the marker');
    assert.equal(m4.content.toString(), 'marker');
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});

// Reached through an exchange-to-exchange binding, a delayed exchange
// delays too (the plugin's route/2 runs wherever routing reaches its
// exchange): the message waits there and is routed through its bindings
// when due, while the other destinations of the publish get it at once
// (before: routed through at once).
test('a delayed exchange behind an exchange-to-exchange binding delays there', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    const conn = await open(g);
    const ch = await conn.createConfirmChannel();
    await ch.assertExchange('src', 'direct');
    await ch.assertExchange('dx.e2e', 'x-delayed-message', { arguments: { 'x-delayed-type': 'direct' } });
    await ch.bindExchange('dx.e2e', 'src', 'k');
    await ch.assertQueue('dq.later');
    await ch.assertQueue('dq.now');
    await ch.bindQueue('dq.later', 'dx.e2e', 'k');
    await ch.bindQueue('dq.now', 'src', 'k');
    // No x-delay: both at once.
    await confirmPublish(ch, 'src', 'k', 'plain');
    assert.equal((await ch.checkQueue('dq.later')).messageCount, 1);
    assert.equal((await ch.checkQueue('dq.now')).messageCount, 1);
    await ch.purgeQueue('dq.later');
    await ch.purgeQueue('dq.now');

    const delay = scaled(1500);
    const returned = [];
    ch.on('return', (m) => returned.push(m));
    const t0 = Date.now();
    await confirmPublish(ch, 'src', 'k', 'e2e', { mandatory: true, headers: { 'x-delay': delay } });
    assert.equal((await ch.checkQueue('dq.now')).messageCount, 1, 'the direct binding: at once');
    assert.equal((await ch.checkQueue('dq.later')).messageCount, 0, 'held behind the exchange binding');
    const m = await waitFor(async () => ch.get('dq.later', { noAck: true }), 10000 + delay,
      'the delayed message');
    assert.ok(Date.now() - t0 >= delay, `after ${Date.now() - t0} ms`);
    assert.equal(m.content.toString(), 'e2e');
    assert.equal(m.fields.exchange, 'src');
    assert.equal(m.fields.routingKey, 'k');
    assert.equal(m.properties.headers['x-delay'], -delay);
    assert.equal(returned.length, 0, 'routed to dq.now: not returned');
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});

test('pending delayed messages survive a SIGKILL and come at their time', async () => {
  let g = await startGantry({ logLevel: 'info', flush: 'sync' });
  const n = 50;
  const delay = scaled(2500);
  let conn = await open(g);
  let ch = await conn.createConfirmChannel();
  await ch.assertExchange('ddx', 'x-delayed-message',
    { durable: true, arguments: { 'x-delayed-type': 'topic' } });
  await ch.assertExchange('tdx', 'x-delayed-message',
    { durable: false, arguments: { 'x-delayed-type': 'fanout' } });
  await ch.assertQueue('ddq', { durable: true });
  await ch.bindQueue('ddq', 'ddx', 'a.#');
  await ch.bindQueue('ddq', 'tdx', '');
  const t0 = Date.now();
  const sends = [];
  for (let i = 0; i < n; i++) {
    sends.push(confirmPublish(ch, 'ddx', 'a.b', `d${i}`,
      { persistent: true, headers: { 'x-delay': delay + i, i } }));
  }
  sends.push(confirmPublish(ch, 'tdx', '', 'transient', { headers: { 'x-delay': delay } }));
  await Promise.all(sends); // confirmed: the timers are durable (sync flush)
  assert.equal((await ch.checkQueue('ddq')).messageCount, 0);
  await stopGantry(g, 'SIGKILL', { keepDir: true });

  g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
    httpPort: g.httpPort, amqpPort: g.amqpPort });
  try {
    conn = await open(g);
    ch = await conn.createChannel();
    const got = [];
    await ch.consume('ddq', (m) => got.push({ m, at: Date.now() }), { noAck: true });
    await waitFor(() => got.length >= n, 20000 + delay, `${n} delayed messages after the restart`);
    const bodies = got.map((x) => x.m.content.toString()).sort();
    assert.deepEqual(bodies, Array.from({ length: n }, (_, i) => `d${i}`).sort());
    for (const x of got) {
      const i = x.m.properties.headers.i;
      assert.ok(x.at - t0 >= delay + i, `d${i} after ${x.at - t0} ms`);
      assert.equal(x.m.properties.headers['x-delay'], -(delay + i));
      assert.equal(x.m.fields.exchange, 'ddx');
    }
    // The transient exchange is gone after the restart: its message too.
    // A marker through the durable exchange, due later, comes alone.
    const pub = await conn.createConfirmChannel();
    await confirmPublish(pub, 'ddx', 'a.z', 'marker', { headers: { 'x-delay': 300 } });
    await waitFor(() => got.length === n + 1, 10000, 'the marker');
    assert.equal(got[n].m.content.toString(), 'marker');
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});

test('dead-lettering into an x-delayed-message exchange delays the message', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    const conn = await open(g);
    const ch = await conn.createConfirmChannel();
    await ch.assertExchange('retry.dx', 'x-delayed-message',
      { arguments: { 'x-delayed-type': 'direct' } });
    await ch.assertQueue('work', { arguments: { 'x-dead-letter-exchange': 'retry.dx',
      'x-dead-letter-routing-key': 'later' } });
    await ch.assertQueue('later');
    await ch.bindQueue('later', 'retry.dx', 'later');
    // x-delay on a message published to the default exchange: not delayed
    // there; dead-lettered through the delayed exchange, it is (as with the
    // plugin, which delays whatever its exchange routes).
    const delay = 500;
    await confirmPublish(ch, '', 'work', 'job', { headers: { 'x-delay': delay } });
    const m = await waitFor(async () => ch.get('work'), 5000, 'the job');
    const t0 = Date.now();
    ch.nack(m, false, false);
    const d = await waitFor(async () => ch.get('later', { noAck: true }), 10000 + delay,
      'the dead-lettered job after its delay');
    assert.ok(Date.now() - t0 >= delay, `after ${Date.now() - t0} ms`);
    assert.equal(d.content.toString(), 'job');
    assert.equal(d.properties.headers['x-delay'], -delay);
    assert.equal(d.properties.headers['x-death'][0].reason, 'rejected');
    assert.equal(d.properties.headers['x-death'][0].queue, 'work');
    assert.equal(d.fields.exchange, 'retry.dx');
    assert.equal(d.fields.routingKey, 'later');
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});
