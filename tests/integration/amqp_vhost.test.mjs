// Vhosts are namespaces of their own (issue 9), as in RabbitMQ: the same
// queue and exchange names in two vhosts are independent objects (their
// own default and amq.* exchanges, bindings, exclusive owners, server-named
// queues, consumers); durable objects of each vhost come back into their
// own vhost after a SIGKILL, with their messages; permissions are per
// vhost.  The tests run in order on one data dir.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, require } from './harness.mjs';

const amqp = require('amqplib');

const B = 'tenant-b';
const AMQP_YAML = (vhosts) => `  vhosts: ${JSON.stringify(vhosts)}
  users:
    - {name: u, password: upw}
    - {name: lim, password: limpw}
  permissions:
${vhosts.map((v) => `    - {user: u, vhost: "${v}", configure: ".*", write: ".*", read: ".*"}`).join('\n')}
    - {user: lim, vhost: "/", configure: ".*", write: ".*", read: ".*"}
${vhosts.includes(B) ? `    - {user: lim, vhost: "${B}", configure: "^lim\\\\.", write: "^lim\\\\.|^amq\\\\.default$", read: "^lim\\\\."}` : ''}
`;

let g = null;
after(async () => { if (g) await stopGantry(g, 'SIGKILL'); });

function start(vhosts, prev) {
  return startGantry({ logLevel: 'debug', flush: 'sync', amqpYaml: AMQP_YAML(vhosts),
    dir: prev?.dir, grpcPort: prev?.grpcPort, httpPort: prev?.httpPort,
    amqpPort: prev?.amqpPort, readyTimeoutMs: 30000 });
}

async function open(vhost, user = 'u', pass = 'upw') {
  const conn = await amqp.connect(
    `amqp://${user}:${pass}@127.0.0.1:${g.amqpPort}/${encodeURIComponent(vhost)}`);
  conn.on('error', () => {});
  return conn;
}

// A channel whose errors are collected rather than thrown.
async function chan(conn, confirm = false) {
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  ch.errors = [];
  ch.on('error', (e) => ch.errors.push(e));
  return ch;
}

// fn's call closes a fresh channel with code and a text that contains text.
async function channelError(conn, fn, code, text) {
  const ch = await chan(conn);
  await fn(ch).then(() => {}, () => {});
  await waitFor(() => ch.errors.length > 0, 5000, `${code} for ${text}`);
  assert.equal(ch.errors[0].code, code, ch.errors[0].message);
  assert.ok(ch.errors[0].message.includes(text), ch.errors[0].message);
}

async function getBody(ch, q) {
  const m = await ch.get(q, { noAck: true });
  return m === false ? null : m.content.toString();
}

test('the same queue and exchange names in two vhosts are independent', async () => {
  g = await start(['/', B]);
  const ra = await open('/');
  const rb = await open(B);
  const a = await chan(ra);
  const b = await chan(rb);

  // Declared with other flags in the other vhost: no 406.
  await a.assertQueue('same.q', { durable: false });
  await b.assertQueue('same.q', { durable: true });
  await a.assertExchange('same.x', 'fanout', { durable: false });
  await b.assertExchange('same.x', 'direct', { durable: true });
  await a.bindQueue('same.q', 'same.x', '');
  await b.bindQueue('same.q', 'same.x', 'kb');

  // The default exchange and a user exchange publish within their vhost.
  a.sendToQueue('same.q', Buffer.from('a-default'));
  a.publish('same.x', 'any', Buffer.from('a-fanout'));
  assert.equal((await a.checkQueue('same.q')).messageCount, 2);
  assert.equal((await b.checkQueue('same.q')).messageCount, 0, 'nothing seen in the other vhost');
  b.publish('same.x', 'kb', Buffer.from('b-direct'));
  assert.equal(await getBody(b, 'same.q'), 'b-direct');
  assert.equal(await getBody(b, 'same.q'), null);
  assert.equal(await getBody(a, 'same.q'), 'a-default');
  assert.equal(await getBody(a, 'same.q'), 'a-fanout');

  // amq.* exchanges are per vhost: a binding on "/"'s amq.direct routes
  // nothing published to tenant-b's (mandatory: returned).
  await a.bindQueue('same.q', 'amq.direct', 'k');
  const returned = [];
  b.on('return', (m) => returned.push(m.content.toString()));
  b.publish('amq.direct', 'k', Buffer.from('b-amq'), { mandatory: true });
  await waitFor(() => returned.length === 1, 5000, 'basic.return in tenant-b');
  assert.deepEqual(returned, ['b-amq']);
  a.publish('amq.direct', 'k', Buffer.from('a-amq'));
  assert.equal(await getBody(a, 'same.q'), 'a-amq');
  assert.equal(await getBody(b, 'same.q'), null);

  // Consumers: one on "/"'s same.q is not one on tenant-b's.
  const got = [];
  await a.consume('same.q', (m) => { if (m !== null) got.push(m.content.toString()); },
    { noAck: true }); // null: the server's basic.cancel when same.q goes
  assert.equal((await a.checkQueue('same.q')).consumerCount, 1);
  assert.equal((await b.checkQueue('same.q')).consumerCount, 0);
  b.sendToQueue('same.q', Buffer.from('b-stays'));
  a.sendToQueue('same.q', Buffer.from('a-consumed'));
  await waitFor(() => got.length === 1, 5000, 'the consumer in /');
  assert.deepEqual(got, ['a-consumed']);
  assert.equal((await b.checkQueue('same.q')).messageCount, 1);

  // Exclusive in one vhost does not lock the other; within a vhost it does.
  await a.assertQueue('excl.q', { exclusive: true });
  await b.assertQueue('excl.q', { exclusive: true });
  await b.deleteQueue('excl.q');
  const ra2 = await open('/');
  await channelError(ra2, (c) => c.checkQueue('excl.q'), 405,
    "cannot obtain exclusive access to locked queue 'excl.q' in vhost '/'");
  await ra2.close();

  // Server-named queues belong to the vhost that declared them.
  const ga = (await a.assertQueue('', { exclusive: true })).queue;
  assert.match(ga, /^amq\.gen-/);
  await channelError(rb, (c) => c.checkQueue(ga), 404, `no queue '${ga}' in vhost '${B}'`);

  // Deleting in one vhost leaves the other's queue and exchange.
  await a.deleteQueue('same.q');
  await a.deleteExchange('same.x');
  await channelError(ra, (c) => c.checkQueue('same.q'), 404, "no queue 'same.q' in vhost '/'");
  await channelError(ra, (c) => c.checkExchange('same.x'), 404,
    "no exchange 'same.x' in vhost '/'");
  assert.equal((await b.checkQueue('same.q')).messageCount, 1);
  await b.checkExchange('same.x');
  b.publish('same.x', 'kb', Buffer.from('b-after'));
  assert.equal(await getBody(b, 'same.q'), 'b-stays');
  assert.equal(await getBody(b, 'same.q'), 'b-after');
  await b.deleteQueue('same.q');
  await b.deleteExchange('same.x');
  assert.deepEqual([...a.errors, ...b.errors], []);
  await ra.close();
  await rb.close();
});

test('permissions are per vhost', async () => {
  const la = await open('/', 'lim', 'limpw');
  const lb = await open(B, 'lim', 'limpw');
  const a = await chan(la);
  await a.assertQueue('free.q');
  await a.deleteQueue('free.q');
  await channelError(lb, (c) => c.assertQueue('free.q'), 403,
    `access to queue 'free.q' in vhost '${B}' refused for user 'lim'`);
  const b = await chan(lb);
  await b.assertQueue('lim.q', { durable: false });
  b.sendToQueue('lim.q', Buffer.from('ok'));
  assert.equal(await getBody(b, 'lim.q'), 'ok');
  await channelError(lb, (c) => c.bindQueue('lim.q', 'amq.direct', 'k'), 403,
    `access to exchange 'amq.direct' in vhost '${B}' refused for user 'lim'`);
  await b.deleteQueue('lim.q');
  await la.close();
  await lb.close();
});

// Durable objects of each vhost: a queue and an exchange of the same
// names, bound, with persistent confirmed messages (and a transient queue
// in tenant-b that must go).
const DUR = { '/': { type: 'fanout', n: 7 }, [B]: { type: 'topic', n: 5 } };
const tag = (v) => (v === '/' ? 'root' : 'b');

test('durable objects of two vhosts survive a SIGKILL, each in its own vhost', async () => {
  for (const v of Object.keys(DUR)) {
    const conn = await open(v);
    const ch = await chan(conn, true);
    await ch.assertQueue('dur.q', { durable: true });
    await ch.assertExchange('dur.x', DUR[v].type, { durable: true });
    await ch.bindQueue('dur.q', 'dur.x', 'k.#');
    if (v === B)
      await ch.assertQueue('transient.q', { durable: false });
    for (let i = 0; i < DUR[v].n; i++)
      ch.publish('dur.x', 'k.1', Buffer.from(`${tag(v)}-${i}`), { persistent: true });
    await ch.waitForConfirms();
    await conn.close();
  }
  // Two different store ids for the two 'dur.q' (the store topic of each).
  const ids = [...g.log().matchAll(/queue 'dur\.q' declared as (AMQP-q-[0-9a-f]{16})/g)]
    .map((m) => m[1]);
  assert.equal(ids.length, 2, g.log());
  assert.notEqual(ids[0], ids[1]);

  await stopGantry(g, 'SIGKILL', { keepDir: true });
  const prev = g;
  g = null;
  g = await start(['/', B], prev);
  for (const v of Object.keys(DUR)) {
    const conn = await open(v);
    const ch = await chan(conn);
    assert.equal((await ch.checkQueue('dur.q')).messageCount, DUR[v].n, v);
    // The exchange came back with its type and binding, in its vhost.
    await ch.assertExchange('dur.x', DUR[v].type, { durable: true });
    ch.publish('dur.x', 'k.2', Buffer.from(`${tag(v)}-again`), { persistent: true });
    const bodies = [];
    for (let i = 0; i <= DUR[v].n; i++)
      bodies.push(await getBody(ch, 'dur.q'));
    assert.deepEqual(bodies, [...Array(DUR[v].n).keys()].map((i) => `${tag(v)}-${i}`)
      .concat([`${tag(v)}-again`]), v);
    // Leave one message for the next test.
    ch.publish('dur.x', 'k.3', Buffer.from(`${tag(v)}-kept`), { persistent: true });
    assert.equal((await ch.checkQueue('dur.q')).messageCount, 1, v);
    if (v === B)
      await channelError(conn, (c) => c.checkQueue('transient.q'), 404,
        `no queue 'transient.q' in vhost '${B}'`);
    assert.deepEqual(ch.errors, []);
    await conn.close();
  }
});

test('a vhost left out of the config keeps its queues for when it is back', async () => {
  await stopGantry(g, 'SIGTERM', { keepDir: true });
  let prev = g;
  g = null;
  g = await start(['/'], prev);
  {
    const conn = await open('/');
    const ch = await chan(conn);
    assert.equal(await getBody(ch, 'dur.q'), 'root-kept');
    await conn.close();
  }
  await stopGantry(g, 'SIGTERM', { keepDir: true });
  prev = g;
  g = null;
  g = await start(['/', B], prev);
  const conn = await open(B);
  const ch = await chan(conn);
  assert.equal(await getBody(ch, 'dur.q'), 'b-kept');
  await ch.deleteQueue('dur.q');
  await ch.deleteExchange('dur.x');
  await conn.close();
  const info = await stopGantry(g);
  g = null;
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

// The start-up sweep deletes the store topics of queues no longer declared;
// when the metadata could not all be read (here the queues' namespace,
// failed through GANTRY_TEST_AMQP_META_FAIL), no queue is known to be gone
// and every topic stays: after a normal restart the queue has its message.
test('a failed metadata read deletes no queue', async () => {
  g = await start(['/', B]);
  {
    const conn = await open(B);
    const ch = await chan(conn, true);
    await ch.assertQueue('kept.q', { durable: true });
    ch.sendToQueue('kept.q', Buffer.from('still here'), { persistent: true });
    await ch.waitForConfirms();
    await conn.close();
  }
  await stopGantry(g, 'SIGKILL', { keepDir: true });
  let prev = g;
  g = null;
  g = await startGantry({ logLevel: 'info', flush: 'sync', amqpYaml: AMQP_YAML(['/', B]),
    dir: prev.dir, grpcPort: prev.grpcPort, httpPort: prev.httpPort, amqpPort: prev.amqpPort,
    env: { GANTRY_TEST_AMQP_META_FAIL: 'amqp.queue' }, readyTimeoutMs: 30000 });
  await waitFor(() => g.log().includes('store topics of undeclared queues are kept'), 10000,
    'the sweep skipped');
  await stopGantry(g, 'SIGKILL', { keepDir: true });
  prev = g;
  g = null;
  g = await start(['/', B], prev);
  const conn = await open(B);
  const ch = await chan(conn);
  assert.equal(await getBody(ch, 'kept.q'), 'still here');
  await ch.deleteQueue('kept.q');
  await conn.close();
});
