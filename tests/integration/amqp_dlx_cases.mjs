// Dead-lettering scenarios shared by amqp_dlx.test.mjs and the fixture it
// compares with, tests/data/amqp/dlx_fixtures.json: what a real RabbitMQ
// 3.10 delivers after each reject / nack / delivery limit, with every
// header's type (x-death, x-first-death-*, x-delivery-count...).  Written
// by hand against a local RabbitMQ 3.10.8, output committed:
//   node tests/integration/amqp_dlx_cases.mjs amqp://127.0.0.1:PORT \
//     > tests/data/amqp/dlx_fixtures.json
// Times (x-death's `time`) are checked to lie within the run and written
// as "<time>".
import { pathToFileURL } from 'node:url';
import amqp from './amqp_typed.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A delivery as recorded: the fields and properties that dead-lettering
// sets, headers typed.
function seen(m, t0) {
  if (!m) return null;
  const norm = (v) => {
    if (v.t === 'T') {
      const now = Math.ceil(Date.now() / 1000);
      if (v.v < t0 || v.v > now) throw new Error(`time ${v.v} outside ${t0}..${now}`);
      return { t: 'T', v: '<time>' };
    }
    if (v.t === 'F') return { t: 'F', v: Object.fromEntries(Object.entries(v.v).map(([k, x]) => [k, norm(x)])) };
    if (v.t === 'A') return { t: 'A', v: v.v.map(norm) };
    return v;
  };
  const p = m.properties;
  const h = p.typedHeaders;
  return {
    exchange: m.fields.exchange, routingKey: m.fields.routingKey,
    redelivered: m.fields.redelivered, body: m.content.toString(),
    expiration: p.expiration ?? null, messageId: p.messageId ?? null,
    headers: h ? Object.fromEntries(Object.entries(h).map(([k, v]) => [k, norm(v)])) : null,
  };
}

// basic.get until a message comes (dead-lettering is asynchronous).
async function getOne(ch, q, ms = 5000) {
  const end = Date.now() + ms;
  for (;;) {
    const m = await ch.get(q, { noAck: false });
    if (m) return m;
    if (Date.now() > end) return null;
    await sleep(20);
  }
}

const count = async (ch, q) => (await ch.checkQueue(q)).messageCount;

export const scenarios = {
  // basic.reject requeue=false; the DLX routes on the original keys (CC too)
  async reject(ch, p, t0) {
    await ch.assertExchange(`${p}in`, 'direct', { durable: false });
    await ch.assertExchange(`${p}x`, 'direct', { durable: false });
    await ch.assertQueue(`${p}src`, { durable: false, arguments: { 'x-dead-letter-exchange': `${p}x` } });
    await ch.assertQueue(`${p}dlq`, { durable: false });
    await ch.bindQueue(`${p}src`, `${p}in`, 'k1');
    await ch.bindQueue(`${p}dlq`, `${p}x`, 'cc1');
    ch.publish(`${p}in`, 'k1', Buffer.from('m1'), { messageId: 'id1', headers: { h: 'v', CC: ['cc1'] } });
    const m = await getOne(ch, `${p}src`);
    ch.reject(m, false);
    return [seen(await getOne(ch, `${p}dlq`), t0), await count(ch, `${p}src`)];
  },
  // basic.nack requeue=false with a dead-letter routing key; a per-message
  // expiration becomes original-expiration, CC goes
  async nack(ch, p, t0) {
    await ch.assertExchange(`${p}x`, 'direct', { durable: false });
    await ch.assertQueue(`${p}src`, { durable: false,
      arguments: { 'x-dead-letter-exchange': `${p}x`, 'x-dead-letter-routing-key': 'dk' } });
    await ch.assertQueue(`${p}dlq`, { durable: false });
    await ch.assertQueue(`${p}cc`, { durable: false });
    await ch.bindQueue(`${p}dlq`, `${p}x`, 'dk');
    await ch.bindQueue(`${p}cc`, `${p}x`, 'cc2');
    ch.sendToQueue(`${p}src`, Buffer.from('m2'), { expiration: '60000', headers: { CC: ['cc2'] } });
    const m = await getOne(ch, `${p}src`);
    ch.nack(m, false, false);
    return [seen(await getOne(ch, `${p}dlq`), t0), await count(ch, `${p}cc`)];
  },
  // a -> b -> a -> b, all rejected: x-death entries updated in place
  async repeated(ch, p, t0) {
    await ch.assertQueue(`${p}a`, { durable: false,
      arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${p}b` } });
    await ch.assertQueue(`${p}b`, { durable: false,
      arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${p}a` } });
    ch.sendToQueue(`${p}a`, Buffer.from('m3'), { headers: { keep: { '!': 'long', value: 7 } } });
    const out = [];
    for (const q of ['a', 'b', 'a']) {
      const m = await getOne(ch, `${p}${q}`);
      ch.reject(m, false);
      const next = q === 'a' ? 'b' : 'a';
      const d = await getOne(ch, `${p}${next}`);
      out.push(seen(d, t0));
      ch.nack(d, false, true); // back for the next round (requeued, not dead)
    }
    return out;
  },
  // a queue dead-lettering into itself by rejection (no cycle: rejected)
  async self(ch, p, t0) {
    await ch.assertQueue(`${p}self`, { durable: false, arguments: { 'x-dead-letter-exchange': '' } });
    ch.sendToQueue(`${p}self`, Buffer.from('m4'));
    const out = [];
    for (let i = 0; i < 2; i++) {
      const m = await getOne(ch, `${p}self`);
      ch.reject(m, false);
      const d = await getOne(ch, `${p}self`);
      out.push(seen(d, t0));
      ch.nack(d, false, true);
    }
    return out;
  },
  // a quorum queue's x-delivery-limit: requeues until it is dead-lettered
  async delivery_limit(ch, p, t0) {
    await ch.assertQueue(`${p}qq`, { durable: true, arguments: { 'x-queue-type': 'quorum',
      'x-delivery-limit': 2, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${p}dl` } });
    await ch.assertQueue(`${p}dl`, { durable: false });
    ch.sendToQueue(`${p}qq`, Buffer.from('m5'));
    const deliveries = [];
    for (let i = 0; i < 10; i++) {
      const m = await getOne(ch, `${p}qq`, 1000);
      if (!m) break;
      deliveries.push(seen(m, t0));
      ch.nack(m, false, true);
    }
    return [deliveries, seen(await getOne(ch, `${p}dl`), t0)];
  },
  // delivery_limit both ways between two quorum queues: dead in c1 again
  // with no rejection in the cycle, so dropped
  async cycle(ch, p, t0, settle) {
    for (const [q, to] of [['c1', 'c2'], ['c2', 'c1']]) {
      await ch.assertQueue(`${p}${q}`, { durable: true, arguments: { 'x-queue-type': 'quorum',
        'x-delivery-limit': 0, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${p}${to}` } });
    }
    ch.sendToQueue(`${p}c1`, Buffer.from('m6'));
    const m1 = await getOne(ch, `${p}c1`);
    ch.nack(m1, false, true);
    const m2 = await getOne(ch, `${p}c2`);
    const first = seen(m2, t0);
    ch.nack(m2, false, true);
    await settle('cycle');
    return [first, await count(ch, `${p}c1`), await count(ch, `${p}c2`)];
  },
  // x-delivery-limit -1: the first return goes past it; "5" (not an
  // integer) is no limit
  async limit_values(ch, p, t0) {
    const out = [];
    await ch.assertQueue(`${p}dl`, { durable: false });
    for (const [q, lim] of [['qq', -1], ['b', '5']]) {
      await ch.assertQueue(`${p}${q}`, { durable: true, arguments: { 'x-queue-type': 'quorum',
        'x-delivery-limit': lim, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${p}dl` } });
      ch.sendToQueue(`${p}${q}`, Buffer.from(`m-${q}`));
      let n = 0;
      for (; n < 4; n++) {
        const m = await getOne(ch, `${p}${q}`, 1000);
        if (!m) break;
        ch.nack(m, false, true);
      }
      out.push(n);
    }
    const d = await getOne(ch, `${p}dl`);
    out.push(d && d.content.toString(), await count(ch, `${p}dl`));
    return out;
  },
  // a return by a closed channel counts too (x-delivery-limit 0)
  async closed_channel(ch, p, t0, settle, conn) {
    await ch.assertQueue(`${p}qq`, { durable: true, arguments: { 'x-queue-type': 'quorum',
      'x-delivery-limit': 0, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${p}dl` } });
    await ch.assertQueue(`${p}dl`, { durable: false });
    ch.sendToQueue(`${p}qq`, Buffer.from('m9'));
    const c2 = await conn.createChannel();
    const m = await getOne(c2, `${p}qq`);
    const first = seen(m, t0);
    await c2.close(); // unacked: returned
    return [first, seen(await getOne(ch, `${p}dl`), t0), await count(ch, `${p}qq`)];
  },
  // no DLX, or a DLX that does not exist: the message is dropped
  async no_dlx(ch, p, t0, settle) {
    await ch.assertQueue(`${p}plain`, { durable: false });
    await ch.assertQueue(`${p}lost`, { durable: false,
      arguments: { 'x-dead-letter-exchange': `${p}missing` } });
    ch.sendToQueue(`${p}plain`, Buffer.from('m7'));
    ch.sendToQueue(`${p}lost`, Buffer.from('m8'));
    ch.reject(await getOne(ch, `${p}plain`), false);
    ch.reject(await getOne(ch, `${p}lost`), false);
    await settle('no_dlx');
    return [await count(ch, `${p}plain`), await count(ch, `${p}lost`)];
  },
};

const QUEUES = ['src', 'dlq', 'cc', 'a', 'b', 'self', 'qq', 'dl', 'c1', 'c2', 'plain', 'lost'];

// Runs the scenarios against url; settle(name) waits until what a scenario
// leaves behind has happened (RabbitMQ: a pause; Gantry: its log).
export async function runScenarios(url, settle = () => sleep(1000)) {
  const conn = await amqp.connect(url);
  conn.on('error', () => {});
  const out = {};
  for (const [name, fn] of Object.entries(scenarios)) {
    const ch = await conn.createChannel();
    const p = `dlx.${name}.`;
    for (const q of QUEUES) await ch.deleteQueue(`${p}${q}`); // an earlier run's
    const t0 = Math.floor(Date.now() / 1000);
    out[name] = await fn(ch, p, t0, settle, conn);
    await ch.close();
  }
  await conn.close();
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const res = await runScenarios(process.argv[2] || 'amqp://127.0.0.1:5672');
  console.log(JSON.stringify({ generator: 'tests/integration/amqp_dlx_cases.mjs',
    server: process.argv[3] || 'RabbitMQ 3.10.8', results: res }, null, 1));
}
