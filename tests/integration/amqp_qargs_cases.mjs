// queue.declare argument cases shared by amqp_qargs.test.mjs and the
// fixture they compare with, tests/data/amqp/qargs_fixtures.json: what a
// real RabbitMQ 3.10 answers to each.  The fixture is written by hand
// against a local RabbitMQ 3.10.8 (scripts/amqplib-suite.sh shows how to
// start a private one), output committed:
//   node tests/integration/amqp_qargs_cases.mjs amqp://127.0.0.1:PORT \
//     > tests/data/amqp/qargs_fixtures.json
// Each case declares a fresh queue (its `pre` declarations first, then
// `opts`) and records "ok" or the channel error (code and text, the queue
// name written as Q).  Typed values use amqplib's {'!': type, value}.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);
const t = (type, value) => ({ '!': type, value });
const q = (args, more = {}) => ({ ...more, arguments: args });

export const cases = [
  // types and ranges, one argument at a time
  q({ 'x-message-ttl': -1 }), q({ 'x-message-ttl': '100' }), q({ 'x-message-ttl': 1.5 }),
  q({ 'x-message-ttl': true }), q({ 'x-message-ttl': null }), q({ 'x-message-ttl': 0 }),
  q({ 'x-message-ttl': t('float', 1) }), q({ 'x-message-ttl': t('timestamp', 1) }),
  q({ 'x-message-ttl': t('short', 1) }), q({ 'x-message-ttl': t('long', 315360000000) }),
  q({ 'x-message-ttl': t('long', 315360000001) }),
  q({ 'x-expires': 0 }), q({ 'x-expires': -5 }), q({ 'x-expires': '5' }),
  q({ 'x-expires': t('long', 315360000000) }), q({ 'x-expires': t('long', 315360000001) }),
  q({ 'x-max-length': -1 }), q({ 'x-max-length': '1' }), q({ 'x-max-length': 0 }),
  q({ 'x-max-length': t('unsignedint', 5) }), q({ 'x-max-length-bytes': -1 }),
  q({ 'x-max-length-bytes': t('long', 2 ** 40) }),
  q({ 'x-max-priority': 300 }), q({ 'x-max-priority': 256 }), q({ 'x-max-priority': 255 }),
  q({ 'x-max-priority': 0 }), q({ 'x-max-priority': -1 }), q({ 'x-max-priority': '5' }),
  q({ 'x-max-priority': true }), q({ 'x-max-priority': t('unsignedbyte', 5) }),
  q({ 'x-max-priority': t('long', 4294967296) }),
  q({ 'x-overflow': 'bogus' }), q({ 'x-overflow': 5 }), q({ 'x-overflow': 'drop-head' }),
  q({ 'x-overflow': 'reject-publish' }), q({ 'x-overflow': 'reject-publish-dlx' }),
  q({ 'x-queue-type': 'bogus' }), q({ 'x-queue-type': 5 }), q({ 'x-queue-type': '' }),
  q({ 'x-queue-type': 'classic' }), q({ 'x-queue-type': 'quorum' }),
  q({ 'x-queue-mode': 'bogus' }), q({ 'x-queue-mode': 'lazy' }), q({ 'x-queue-mode': 5 }),
  q({ 'x-single-active-consumer': 'yes' }), q({ 'x-single-active-consumer': 1 }),
  q({ 'x-single-active-consumer': true }), q({ 'x-single-active-consumer': false }),
  q({ 'x-dead-letter-exchange': 5 }), q({ 'x-dead-letter-exchange': 'nonexistent' }),
  q({ 'x-dead-letter-routing-key': 'rk' }), q({ 'x-dead-letter-routing-key': 5 }),
  q({ 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'k' }),
  q({ 'x-delivery-limit': 5 }), q({ 'x-delivery-limit': '5' }),
  q({ 'x-queue-master-locator': 'min-masters' }), q({ 'x-queue-master-locator': 'client-local' }),
  q({ 'x-queue-master-locator': 'random' }),
  q({ 'x-foo': 'bar' }), q({ 'x-max-in-memory-length': -1 }),
  q({ 'x-dead-letter-strategy': 'bogus' }), q({ 'x-queue-leader-locator': 'bogus' }),
  q({ 'x-max-age': 'bogus' }), q({ 'x-quorum-initial-group-size': 3 }),
  q({ 'x-initial-cluster-size': 3 }),
  // quorum queues: properties and the arguments they refuse
  q({ 'x-queue-type': 'quorum' }, { durable: false }),
  q({ 'x-queue-type': 'quorum' }, { exclusive: true }),
  q({ 'x-queue-type': 'quorum' }, { autoDelete: true }),
  q({ 'x-queue-type': 'quorum' }, { durable: false, exclusive: true }),
  q({ 'x-queue-type': 'quorum' }, { durable: false, exclusive: true, autoDelete: true }),
  q({ 'x-queue-type': 'quorum', 'x-delivery-limit': 5 }),
  q({ 'x-queue-type': 'quorum', 'x-delivery-limit': -1 }),
  q({ 'x-queue-type': 'quorum', 'x-delivery-limit': '5' }),
  q({ 'x-queue-type': 'quorum', 'x-delivery-limit': t('long', 5) }),
  q({ 'x-queue-type': 'quorum', 'x-max-priority': 5 }),
  q({ 'x-queue-type': 'quorum', 'x-message-ttl': 5 }),
  q({ 'x-queue-type': 'quorum', 'x-overflow': 'reject-publish-dlx' }),
  q({ 'x-queue-type': 'quorum', 'x-queue-mode': 'lazy' }),
  q({ 'x-queue-type': 'quorum', 'x-queue-master-locator': 'min-masters' }),
  q({ 'x-queue-type': 'quorum', 'x-queue-master-locator': 'bogus' }),
  q({ 'x-queue-type': 'quorum', 'x-max-age': '1D' }),
  q({ 'x-queue-type': 'quorum', 'x-expires': 1000, 'x-max-length-bytes': 1000, 'x-foo': 1 }),
  q({ 'x-queue-type': 'quorum', 'x-single-active-consumer': true }),
  q({ 'x-queue-type': 'quorum', 'x-max-priority': 1, 'x-queue-mode': 'lazy' }),
  q({ 'x-queue-type': 'quorum', 'x-queue-mode': 'lazy', 'x-max-priority': 1 }),
  q({ 'x-queue-type': 'quorum', 'x-message-ttl': -1 }, { durable: false }),
  q({ 'x-queue-type': 'quorum', 'x-max-priority': 1 }, { durable: false }),
  q({ 'x-queue-type': 'quorum', 'x-message-ttl': -1 }, { exclusive: true }),
  q({ 'x-queue-type': 'bogus' }, { exclusive: true }),
  // which error wins when several arguments are bad
  q({ 'x-queue-leader-locator': 'b', 'x-queue-type': 'bogus', 'x-single-active-consumer': 1,
    'x-queue-mode': 'b', 'x-overflow': 'b', 'x-max-priority': -1, 'x-max-length-bytes': -1,
    'x-max-length': -1, 'x-dead-letter-routing-key': 5, 'x-dead-letter-exchange': 'e',
    'x-message-ttl': -1, 'x-expires': -1 }),
  q({ 'x-single-active-consumer': 1, 'x-queue-mode': 'b', 'x-overflow': 'b',
    'x-max-priority': -1, 'x-max-length-bytes': -1, 'x-max-length': -1,
    'x-dead-letter-routing-key': 5, 'x-dead-letter-exchange': 'e', 'x-message-ttl': -1,
    'x-expires': -1 }),
  q({ 'x-single-active-consumer': 1, 'x-queue-mode': 'b', 'x-overflow': 'b',
    'x-max-priority': -1, 'x-max-length-bytes': -1, 'x-max-length': -1,
    'x-dead-letter-routing-key': 5, 'x-dead-letter-exchange': 'e', 'x-message-ttl': -1 }),
  q({ 'x-single-active-consumer': 1, 'x-queue-mode': 'b', 'x-overflow': 'b',
    'x-max-priority': -1, 'x-max-length-bytes': -1, 'x-max-length': -1,
    'x-dead-letter-routing-key': 5, 'x-dead-letter-exchange': 'e' }),
  q({ 'x-single-active-consumer': 1, 'x-queue-mode': 'b', 'x-overflow': 'b',
    'x-max-priority': -1, 'x-max-length-bytes': -1, 'x-max-length': -1 }),
  q({ 'x-single-active-consumer': 1, 'x-queue-mode': 'b', 'x-overflow': 'b',
    'x-max-priority': -1, 'x-max-length-bytes': -1 }),
  q({ 'x-single-active-consumer': 1, 'x-queue-mode': 'b', 'x-overflow': 'b',
    'x-max-priority': -1 }),
  q({ 'x-single-active-consumer': 1, 'x-queue-mode': 'b', 'x-overflow': 'b' }),
  q({ 'x-single-active-consumer': 1, 'x-queue-mode': 'b' }),
  q({ 'x-delivery-limit': 'b', 'x-message-ttl': -1 }),
  q({ 'x-delivery-limit': 'b', 'x-queue-type': 'bogus' }),
  q({ 'x-queue-type': 'bogus', 'x-dead-letter-exchange': 5 }),
  q({ 'x-dead-letter-exchange': 5, 'x-message-ttl': -1 }),
  q({ 'x-dead-letter-routing-key': 'k', 'x-message-ttl': -1 }),
  // redeclare: what is compared, and how
  ...[
    [{ 'x-message-ttl': 100 }, { 'x-message-ttl': 200 }],
    [{ 'x-message-ttl': 100 }, {}],
    [{}, { 'x-message-ttl': 100 }],
    [{ 'x-message-ttl': 100 }, { 'x-message-ttl': t('long', 100) }],
    [{ 'x-message-ttl': 1000 }, { 'x-message-ttl': t('int', 1000) }],
    [{ 'x-message-ttl': 100 }, { 'x-message-ttl': -1 }],
    [{ 'x-message-ttl': 100 }, { 'x-message-ttl': 'x' }],
    [{ 'x-queue-type': 'quorum' }, {}],
    [{}, { 'x-queue-type': 'quorum' }],
    [{}, { 'x-queue-type': 'classic' }],
    [{ 'x-queue-type': 'classic' }, {}],
    [{ 'x-queue-type': 'classic' }, { 'x-queue-type': 'quorum' }],
    [{ 'x-queue-type': 'quorum' }, { 'x-queue-type': 'classic' }],
    [{ 'x-dead-letter-exchange': 'a' }, { 'x-dead-letter-exchange': 'b' }],
    [{ 'x-dead-letter-exchange': 'a' }, {}],
    [{ 'x-dead-letter-exchange': 'a', 'x-dead-letter-routing-key': 'k' },
      { 'x-dead-letter-exchange': 'a', 'x-dead-letter-routing-key': 'j' }],
    [{ 'x-max-length': 10 }, { 'x-max-length': 11 }],
    [{ 'x-max-length-bytes': 10 }, { 'x-max-length-bytes': 11 }],
    [{ 'x-expires': 10000 }, { 'x-expires': 11000 }],
    [{ 'x-max-priority': 10 }, { 'x-max-priority': 11 }],
    [{ 'x-overflow': 'drop-head' }, { 'x-overflow': 'reject-publish' }],
    [{ 'x-overflow': 'drop-head' }, {}],
    [{ 'x-queue-mode': 'lazy' }, { 'x-queue-mode': 'default' }],
    [{ 'x-single-active-consumer': true }, { 'x-single-active-consumer': false }],
    [{ 'x-single-active-consumer': true }, {}],
    [{ 'x-queue-master-locator': 'min-masters' }, { 'x-queue-master-locator': 'random' }],
    [{ 'x-queue-type': 'quorum', 'x-delivery-limit': 5 },
      { 'x-queue-type': 'quorum', 'x-delivery-limit': 6 }],
    [{ 'x-queue-type': 'quorum', 'x-delivery-limit': 5 }, { 'x-queue-type': 'quorum' }],
    [{ 'x-foo': 5 }, { 'x-foo': 6 }],
    [{ 'x-message-ttl': 100, 'x-expires': 1000 }, { 'x-message-ttl': 200, 'x-expires': 2000 }],
  ].map(([a, b]) => ({ pre: [q(a)], ...q(b) })),
  { pre: [q({ 'x-message-ttl': 100 })], ...q({ 'x-message-ttl': 200 }, { durable: false }) },
  { pre: [q({ 'x-message-ttl': 100 })], ...q({ 'x-message-ttl': 200 }, { exclusive: true }) },
  { pre: [q({ 'x-queue-type': 'quorum' })], ...q({}, { durable: false }) },
];

// Runs every case against url; returns one result string per case.
export async function runCases(url, amqp = require('amqplib')) {
  let conn;
  const connect = async () => { conn = await amqp.connect(url); conn.on('error', () => {}); };
  await connect();
  const out = [];
  for (let i = 0; i < cases.length; i++) {
    const c = cases[i];
    const name = `qargs-case-${i}`;
    const { pre, arguments: args, ...flags } = c;
    let ch;
    try {
      ch = await conn.createChannel();
      ch.on('error', () => {});
      for (const p of pre ?? []) {
        const { arguments: pa, ...pf } = p;
        await ch.assertQueue(name, { ...pf, arguments: pa });
      }
      await ch.assertQueue(name, { ...flags, arguments: args });
      out.push('ok');
      await ch.close();
    } catch (e) {
      out.push(e.code ? `${e.code} ${String(e.message).replace(/^.*with message "/, '')
        .replace(/"$/, '').split(`'${name}'`).join("'Q'")}` : `error ${e.message}`);
    }
    try {
      ch = await conn.createChannel();
      await ch.deleteQueue(name);
      await ch.close();
    } catch {
      await connect();
    }
  }
  await conn.close();
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const res = await runCases(process.argv[2] || 'amqp://127.0.0.1:5672');
  const version = process.argv[3] || 'RabbitMQ 3.10.8';
  console.log(JSON.stringify({ generator: 'tests/integration/amqp_qargs_cases.mjs', server: version,
    results: cases.map((c, i) => ({ case: c, result: res[i] })) }, null, 1));
}
