// Direct reply-to (issue 10): the amq.rabbitmq.reply-to pseudo-queue, with
// RabbitMQ 3.10.8's answers (checked against it: with
// GANTRY_TEST_AMQP_URL=amqp://... this file runs against that server
// instead of a gantry).  amqplib RPC round trips (the responder on another
// connection, 100 calls at once, correlation ids and properties kept), the
// rewritten reply_to, the reply delivered straight to the consumer (with
// the channel's next delivery tag, not taken, as 3.10 does; a mandatory
// reply also gets basic.return 312, as in 3.10), the 406s
// (no-ack missing, a second reply consumer, reply_to without a reply
// consumer on the publishing channel), declare of the pseudo-queue, and
// replies to a cancelled consumer or a closed channel dropped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, require } from './harness.mjs';
import { rawConnect, rawHandshake, method, frame, shortstr, u16, u32, deliveries } from './amqp_raw.mjs';

const amqp = require('amqplib');
const RT = 'amq.rabbitmq.reply-to';
const external = process.env.GANTRY_TEST_AMQP_URL;

async function server() {
  if (external) return { url: external, stop: async () => {} };
  const g = await startGantry({ logLevel: 'info' });
  return { url: `amqp://guest:guest@127.0.0.1:${g.amqpPort}/`, stop: () => stopGantry(g) };
}

async function connect(s) {
  const conn = await amqp.connect(s.url);
  conn.on('error', (e) => { if (process.env.DEBUG_RT) console.log('conn error', e.message); });
  return conn;
}

// A channel whose channel error (if any) is kept in .err.
async function channel(conn, confirm = false) {
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  ch.err = null;
  ch.on('error', (e) => { ch.err = e; });
  return ch;
}

test('RPC round trips through amq.rabbitmq.reply-to', async () => {
  const s = await server();
  try {
    const cliConn = await connect(s);
    const srvConn = await connect(s);
    const srv = await channel(srvConn, true);
    const q = (await srv.assertQueue('', { exclusive: true })).queue;
    const requests = [];
    await srv.consume(q, (m) => {
      requests.push(m);
      srv.publish('', m.properties.replyTo, Buffer.from(`re:${m.content}`),
        { correlationId: m.properties.correlationId, headers: { n: m.properties.headers.n },
          contentType: 'text/plain' });
    }, { noAck: true });

    const cli = await channel(cliConn);
    const replies = new Map();
    const ok = await cli.consume(RT, (m) => replies.set(m.properties.correlationId, m),
      { noAck: true });
    assert.match(ok.consumerTag, /^amq\.ctag-/);
    // The pseudo-queue answers a declare (active or passive) with 0 / 1.
    const d = await cli.checkQueue(RT);
    assert.deepEqual([d.queue, d.messageCount, d.consumerCount], [RT, 0, 1]);

    for (let i = 0; i < 100; i++) {
      cli.sendToQueue(q, Buffer.from(`q${i}`), { replyTo: RT, correlationId: `c${i}`, headers: { n: i } });
    }
    await waitFor(() => replies.size === 100, 10000, '100 replies');
    for (let i = 0; i < 100; i++) {
      const m = replies.get(`c${i}`);
      assert.equal(m.content.toString(), `re:q${i}`);
      assert.equal(m.properties.headers.n, i);
      assert.equal(m.properties.contentType, 'text/plain');
      assert.equal(m.fields.consumerTag, ok.consumerTag);
      assert.equal(m.fields.redelivered, false);
      assert.equal(m.fields.exchange, '');
    }
    // reply_to was rewritten to a name for this channel's consumer; the
    // replies' routing key is that name; delivery tags count on the channel.
    const name = requests[0].properties.replyTo;
    assert.ok(name.startsWith(`${RT}.`) && name.length > RT.length + 1, name);
    assert.ok(requests.every((m) => m.properties.replyTo === name));
    assert.equal(replies.get('c0').fields.routingKey, name);
    // As RabbitMQ 3.10: each reply carries the channel's next delivery tag
    // without taking it (1 here: nothing else was delivered on it).
    assert.ok([...replies.values()].every((m) => m.fields.deliveryTag === 1));
    // A passive declare of the name: 0 / 1 while its consumer lives (on
    // another channel: RabbitMQ 3.10 crashes the connection, 541, when the
    // consumer's own channel asks).
    const dn = await (await channel(cliConn)).checkQueue(name);
    assert.deepEqual([dn.messageCount, dn.consumerCount], [0, 1]);

    // mandatory reply: delivered, and (as RabbitMQ 3.10) returned 312 too,
    // then confirmed.
    const returned = [];
    srv.on('return', (m) => returned.push(m.fields));
    await new Promise((res, rej) => srv.publish('', name, Buffer.from('mand'),
      { correlationId: 'mand', mandatory: true }, (e) => (e ? rej(e) : res())));
    await waitFor(() => replies.has('mand') && returned.length === 1, 5000, 'mandatory reply');
    assert.equal(returned[0].replyCode, 312);
    assert.equal(returned[0].routingKey, name);

    // After basic.cancel the name delivers nothing and reply_to is refused.
    await cli.cancel(ok.consumerTag);
    srv.publish('', name, Buffer.from('late'), { correlationId: 'late' });
    // a later reply consumer on another channel is another name
    const cli2 = await channel(cliConn);
    await cli2.consume(RT, (m) => replies.set(m.properties.correlationId, m), { noAck: true });
    cli2.sendToQueue(q, Buffer.from('x'), { replyTo: RT, correlationId: 'second' });
    await waitFor(() => replies.has('second'), 5000, 'the reply on the second channel');
    assert.notEqual(requests.at(-1).properties.replyTo, name);
    assert.ok(!replies.has('late'), 'a reply to a cancelled consumer is dropped');
    // A reply to a closed channel is dropped; the responder is unharmed.
    const gone = requests.at(-1).properties.replyTo;
    await cli2.close();
    await new Promise((res, rej) => srv.publish('', gone, Buffer.from('void'), {},
      (e) => (e ? rej(e) : res())));
    await assert.rejects(cli.checkQueue(gone), (e) => e.code === 404);
    assert.equal(srv.err, null);
    await cliConn.close();
    await srvConn.close();
  } finally {
    await s.stop();
  }
});

test('reply consumer errors as RabbitMQ', async () => {
  const s = await server();
  try {
    const conn = await connect(s);
    let ch = await channel(conn);
    await assert.rejects(ch.consume(RT, () => {}, { noAck: false }),
      (e) => e.code === 406 && /PRECONDITION_FAILED - reply consumer cannot acknowledge/.test(e.message));
    ch = await channel(conn);
    await ch.consume(RT, () => {}, { noAck: true });
    await assert.rejects(ch.consume(RT, () => {}, { noAck: true }),
      (e) => e.code === 406 && /PRECONDITION_FAILED - reply consumer already set/.test(e.message));
    // reply_to amq.rabbitmq.reply-to on a channel without the consumer
    // (another channel of the same connection has one): 406, channel closed.
    const owner = await channel(conn);
    await owner.consume(RT, () => {}, { noAck: true });
    ch = await channel(conn);
    ch.sendToQueue('nowhere', Buffer.from('a'), { replyTo: RT });
    await waitFor(() => ch.err, 5000, 'the channel error');
    assert.match(ch.err.message, /406.*PRECONDITION_FAILED - fast reply consumer does not exist/);
    // The pseudo-queue's name as a routing key is no queue; a made-up
    // reply name neither.
    ch = await channel(conn, true);
    const returned = [];
    ch.on('return', (m) => returned.push(m.fields.routingKey));
    ch.publish('', RT, Buffer.from('a'), { mandatory: true });
    ch.publish('', `${RT}.garbage`, Buffer.from('a'), { mandatory: true });
    await ch.waitForConfirms();
    await waitFor(() => returned.length === 2, 5000, 'two returns');
    assert.deepEqual(returned, [RT, `${RT}.garbage`]);
    await assert.rejects(ch.checkQueue(`${RT}.abc`), (e) => e.code === 404);
    ch = await channel(conn);
    await assert.rejects(ch.get(RT), () => true);
    assert.equal(ch.err?.code, 404);
    // Tags: a queue consumer may take the reply consumer's tag (RabbitMQ
    // keeps them apart); a reply consumer may not take a queue consumer's:
    // 530, a connection error.
    const closed = new Promise((res) => conn.on('close', res));
    ch = await channel(conn);
    await ch.consume(RT, () => {}, { noAck: true, consumerTag: 'mine' });
    const q = (await ch.assertQueue('', { exclusive: true })).queue;
    await ch.consume(q, () => {}, { consumerTag: 'mine' });
    ch = await channel(conn);
    await ch.consume(q, () => {}, { consumerTag: 'taken' });
    await assert.rejects(ch.consume(RT, () => {}, { noAck: true, consumerTag: 'taken' }));
    const e = await closed;
    assert.match(String(e?.message), /530|NOT_ALLOWED - attempt to reuse consumer tag 'taken'/);
  } finally {
    await s.stop();
  }
});

test('replies to a requester that stops reading are dropped, not buffered without end', { skip: !!external }, async () => {
  const s = await server();
  try {
    const url = new URL(s.url);
    const resp = await connect(s);
    const rch = await channel(resp, true);
    const q = (await rch.assertQueue('', { exclusive: true })).queue;
    let replyTo = null;
    await rch.consume(q, (m) => { replyTo = m.properties.replyTo; }, { noAck: true });

    // The requester: a raw peer (it can really stop reading).
    const req = rawConnect(Number(url.port));
    await rawHandshake(req);
    req.send(method(1, 20, 10, shortstr('')));
    await req.nextMethod(); // channel.open-ok
    const got = [];
    let consumeOk = false;
    const onDelivery = deliveries(({ body }) => got.push(body.subarray(0, 8).toString()));
    req.onFrame = (f) => {
      if (f.type === 1 && f.cls === 60 && f.mid === 21) consumeOk = true;
      else onDelivery(f);
    };
    req.send(method(1, 60, 20, Buffer.concat([u16(0), shortstr(RT), shortstr('rt'),
      Buffer.from([2]) /* no-ack */, u32(0)])));
    await req.until(() => consumeOk, 5000, 'consume-ok');
    // basic.publish to the responder's queue with reply_to = the pseudo-queue
    req.send(method(1, 60, 40, Buffer.concat([u16(0), shortstr(''), shortstr(q), Buffer.from([0])])));
    req.send(frame(2, 1, Buffer.concat([u16(60), u16(0), Buffer.alloc(8), u16(1 << 9), shortstr(RT)])));
    await waitFor(() => replyTo, 5000, 'the request');
    req.sock.pause();

    // 64 MiB of replies, far over the requester's 4 MiB output bound: all
    // confirmed, the responder unharmed.
    const SIZE = 16 * 1024;
    const N = 4096;
    for (let i = 0; i < N; i++) {
      const body = Buffer.alloc(SIZE, 97);
      body.write(String(i).padStart(8, '0'));
      if (!rch.publish('', replyTo, body)) await new Promise((r) => rch.once('drain', r));
    }
    await rch.waitForConfirms();
    // Reading again: what was kept arrives, then a last reply; the rest
    // was dropped (at most about 16 MiB plus socket buffers were kept).
    // (sent again until one arrives: the first ones may find the output
    // still over its bound)
    req.sock.resume();
    await waitFor(async () => {
      rch.publish('', replyTo, Buffer.from('last....'));
      await new Promise((r) => setTimeout(r, 50));
      return got.includes('last....');
    }, 30000, 'a last reply');
    const nums = got.filter((b) => b !== 'last....').map(Number);
    assert.ok(nums.length > 0 && nums.length < N / 2, `${nums.length} of ${N} replies kept`);
    assert.ok(nums.every((v, i) => i === 0 || v > nums[i - 1]), 'in order');
    req.sock.destroy();
    await resp.close();
  } finally {
    await s.stop();
  }
});
