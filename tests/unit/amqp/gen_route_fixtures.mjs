// Writes tests/data/amqp/route_fixtures.txt: what a real RabbitMQ routes,
// which test_route.c replays against gw_route.h.  Run by hand against a
// local RabbitMQ 3.10 (the reference), output committed:
//   URL=amqp://guest:guest@127.0.0.1:5672 \
//     node gen_route_fixtures.mjs ../../integration/node_modules/amqplib \
//     > ../../data/amqp/route_fixtures.txt
//
// Each scenario declares fresh exchanges (x of the scenario's type, and
// others it names) and queues q0..qN, binds, unbinds and publishes (with
// confirms), then reads every queue's message count to see where the
// message went.  Lines (exchanges by their short names):
//   scenario
//   exchange <name> <type> <alternate exchange|->
//   bind <exchange> <q> <key> <args>      binding to queue q
//   unbind <exchange> <q> <key> <args>
//   bindfail <exchange> <q> <key> <args> <code> <reply text>  (refused)
//   xbind <source> <destination> <key> <args>   exchange to exchange
//   publish <exchange> <key> <headers> -> <q,q,...|->
// keys and tables in hex ("-" when empty; tables without their length
// word).  Tables are written by amqplib's encoder.
import { createRequire } from 'module';
import path from 'path';

const require = createRequire(import.meta.url);
const dir = path.resolve(process.argv[2] || 'node_modules/amqplib');
const amqp = require(path.join(dir, 'channel_api.js'));
const codec = require(path.join(dir, 'lib/codec.js'));
const URL = process.env.URL || 'amqp://guest:guest@127.0.0.1:5672';

const hex = (b) => (b.length ? b.toString('hex') : '-');
const khex = (k) => hex(Buffer.from(k, 'utf8'));
function thex(t) {
  if (!t || Object.keys(t).length === 0) return '-';
  const buf = Buffer.alloc(65536);
  const n = codec.encodeTable(buf, t, 0);
  return hex(buf.subarray(4, n));
}
const typed = (t, value) => ({ '!': t, value });

const out = [];
let conn, ch, serverVersion;
let seq = 0;

// steps: {exchange: [name, type, ae]}, {bind|unbind|bindfail: [q, key,
// args, source = 'x']}, {xbind: [src, dst, key, args]}, {publish: [key,
// headers, exchange = 'x']}.  Exchange x of `type` (alternate exchange
// `ae`, by short name) is declared first.
async function scenario(type, steps, ae = null) {
  const run = `rt.${process.pid}.${seq++}`;
  const queues = new Set();
  const exchanges = [];
  const qname = (i) => `${run}.q${i}`;
  const xname = (n) => `${run}.${n}`;
  out.push('scenario');
  for (const s of [{ exchange: ['x', type, ae] }, ...steps]) {
    if (s.exchange) {
      const [n, t, ae] = s.exchange;
      await ch.assertExchange(xname(n), t, {
        durable: false, autoDelete: false,
        arguments: ae ? { 'alternate-exchange': xname(ae) } : {},
      });
      exchanges.push(n);
      out.push(`exchange ${n} ${t} ${ae || '-'}`);
    } else if (s.bind || s.unbind || s.bindfail) {
      const [q, key, args, src = 'x'] = s.bind || s.unbind || s.bindfail;
      if (!queues.has(q)) {
        await ch.assertQueue(qname(q), { durable: false, autoDelete: false });
        queues.add(q);
      }
      const line = `${src} ${q} ${khex(key)} ${thex(args)}`;
      if (s.bind) {
        await ch.bindQueue(qname(q), xname(src), key, args);
        out.push(`bind ${line}`);
      } else if (s.unbind) {
        await ch.unbindQueue(qname(q), xname(src), key, args);
        out.push(`unbind ${line}`);
      } else {
        let err = null;
        try {
          await ch.bindQueue(qname(q), xname(src), key, args);
        } catch (e) {
          err = e;
        }
        if (err === null) throw new Error('bind was expected to fail');
        const m = /with message "(.*)"$/s.exec(err.message);
        out.push(`bindfail ${line} ${err.code} ${m ? m[1] : err.message}`);
        ch = await openChannel();
      }
    } else if (s.xbind) {
      const [src, dst, key, args] = s.xbind;
      await ch.bindExchange(xname(dst), xname(src), key, args);
      out.push(`xbind ${src} ${dst} ${khex(key)} ${thex(args)}`);
    } else {
      const [key, headers, x = 'x'] = s.publish;
      ch.publish(xname(x), key, Buffer.from('m'), { headers });
      await ch.waitForConfirms();
      const got = [];
      for (const q of [...queues].sort((a, b) => a - b)) {
        const { messageCount } = await ch.checkQueue(qname(q));
        if (messageCount > 0) got.push(q);
        if (messageCount > 1) throw new Error('a queue got a message twice');
        await ch.purgeQueue(qname(q));
      }
      out.push(`publish ${x} ${khex(key)} ${thex(headers)} -> ${got.length ? got.join(',') : '-'}`);
    }
  }
  for (const q of queues) await ch.deleteQueue(qname(q));
  for (const n of exchanges) await ch.deleteExchange(xname(n));
}

const TOPIC_BINDS = ['#', '*', '', 'a', 'a.b', 'a.*', 'a.#', '#.b', 'a.#.b', 'a..b', '#.#', '*.*',
  '.', 'a.', '*.#', '#.*', 'a.*.#.b', '#.a.#', '*.b.*', '#.#.#', '*.#.*', 'a.#.#', 'b.*.#'];
const TOPIC_KEYS = ['', 'a', 'b', 'a.b', 'a..b', '.', '..', 'a.', '.a', 'a.x.y.b', 'x.b.y', 'x.a.y',
  '*', '#', 'a.*', 'a.#', '#.b', 'a.b.c', 'b.a', 'a.b.b', 'b.b.b.b', 'a.a.a.a.a.b', 'A.B',
  'caf\u00e9.b'];

const HEADER_BINDS = [
  {},
  { 'x-match': 'any' },
  { a: 1 },
  { a: typed('double', 1) },
  { a: typed('long', 1) },
  { a: '1' },
  { a: Buffer.from('1') },
  { a: null },
  { a: true },
  { a: typed('timestamp', 1) },
  { a: typed('float', 1.5) },
  { a: typed('double', 1.5) },
  { a: {} },
  { a: [] },
  { a: { k: 1 } },
  { a: [1] },
  { 'x-match': 'any', a: 1, b: 2 },
  { 'x-match': 'all', a: 1, b: 2 },
  { 'x-match': 'all-with-x', 'x-a': 1 },
  { 'x-match': 'any-with-x', 'x-a': 1, a: 5 },
  { 'x-a': 1 },
  { a: typed('decimal', { places: 2, digits: 150 }) },
  { a: typed('unsignedint', 4294967295) },
  { a: typed('double', 4294967295) },
  { a: typed('float', 0.1) },
  { a: typed('double', 0.1) },
  { 'x-match': 'any', a: null, b: 'x' },
  { b: 2, a: 1 },
  { ab: 1, a: 2 },
  { a: false },
  { a: typed('double', -0) },
  { a: 0 },
  { 'x-match': 'any' , 'x-a': 1 },
  { 'x-match': 'all-with-x' },
  { 'x-match': 'any-with-x', 'x-match2': 'y' },
];
const HEADER_PUBS = [
  {}, { a: 1 }, { a: typed('double', 1) }, { a: typed('long', 1) }, { a: '1' },
  { a: Buffer.from('1') }, { a: null }, { a: true }, { a: false }, { a: typed('timestamp', 1) },
  { a: typed('float', 1.5) }, { a: 1.5 }, { a: {} }, { a: [] }, { a: { k: 1 } },
  { a: { k: typed('int', 1) } }, { a: [1] }, { a: [typed('long', 1)] }, { a: 1, b: 2 },
  { b: 2 }, { 'x-a': 1 }, { 'x-a': 1, a: 5 }, { a: typed('unsignedbyte', 1) },
  { a: typed('decimal', { places: 2, digits: 150 }) }, { a: typed('decimal', { places: 1, digits: 15 }) },
  { a: typed('unsignedint', 4294967295) }, { a: typed('long', 4294967295) },
  { a: typed('float', 0.1) }, { a: 0.1 }, { a: 2, ab: 1 }, { a: 0 }, { a: typed('double', 0) },
  { a: typed('double', -0) }, { 'x-match': 'any' }, { 'x-match2': 'y' }, { a: 5 },
  { b: 'x' }, { c: 1 },
];

// A channel error (the refused binds) closes the channel; the promise
// reports it, the 'error' event is expected.
async function openChannel() {
  const c = await conn.createConfirmChannel();
  c.on('error', () => {});
  return c;
}

async function main() {
  conn = await amqp.connect(URL);
  serverVersion = conn.connection.serverProperties.version;
  ch = await openChannel();
  out.push(`# generated by tests/unit/amqp/gen_route_fixtures.mjs against RabbitMQ ${serverVersion}`);

  // direct: equality, several bindings per key, args ignored but distinct
  await scenario('direct', [
    { bind: [0, 'a', {}] }, { bind: [1, 'a', {}] }, { bind: [2, 'b', {}] }, { bind: [2, '', {}] },
    { bind: [0, 'a.b', {}] }, { bind: [3, 'a', { x: 1 }] }, { bind: [3, 'a', { x: 2 }] },
    ...['a', 'b', '', 'a.b', 'A', '*', '#', 'a.*'].map((k) => ({ publish: [k, {}] })),
    { unbind: [3, 'a', { x: 1 }] }, { publish: ['a', {}] },
    { unbind: [3, 'a', { x: 2 }] }, { publish: ['a', {}] },
    { unbind: [9, 'nope', {}] }, { publish: ['a', {}] },
  ]);
  await scenario('fanout', [
    { publish: ['x', {}] }, { bind: [0, 'k1', {}] }, { bind: [1, '', {}] }, { bind: [1, 'k3', {}] },
    { publish: ['x', {}] }, { publish: ['', {}] }, { unbind: [1, '', {}] }, { publish: ['', {}] },
  ]);
  await scenario('topic', [
    ...TOPIC_BINDS.map((k, i) => ({ bind: [i, k, {}] })),
    ...TOPIC_KEYS.map((k) => ({ publish: [k, {}] })),
    { unbind: [0, '#', {}] }, { unbind: [10, '#.#', {}] }, { unbind: [4, 'a.b', {}] },
    ...['a.b', '', 'x'].map((k) => ({ publish: [k, {}] })),
  ]);
  await scenario('headers', [
    ...HEADER_BINDS.map((a, i) => ({ bind: [i, 'ignored', a] })),
    ...HEADER_PUBS.map((h) => ({ publish: ['k', h] })),
  ]);
  // binding identity: sorted arguments, types
  await scenario('headers', [
    { bind: [0, 'k', { a: 1, b: 2 }] }, { bind: [0, 'k', { b: 2, a: 1 }] },
    { publish: ['k', { a: 1, b: 2 }] },
    { unbind: [0, 'k', { b: 2, a: 1 }] }, { publish: ['k', { a: 1, b: 2 }] },
    { bind: [1, 'k', { a: 1 }] }, { unbind: [1, 'k', { a: typed('long', 1) }] },
    { publish: ['k', { a: 1 }] },
    { unbind: [1, 'k', { a: 1 }] }, { publish: ['k', { a: 1 }] },
    { bind: [2, 'k', { a: 1 }] }, { unbind: [2, 'other', { a: 1 }] }, { publish: ['k', { a: 1 }] },
    { bindfail: [3, 'k', { 'x-match': 'foo' }] },
    { bindfail: [3, 'k', { 'x-match': 'ALL' }] },
    { bindfail: [3, 'k', { 'x-match': '' }] },
    { bindfail: [3, 'k', { 'x-match': 1 }] },
    { bindfail: [3, 'k', { 'x-match': Buffer.from('any') }] },
    { bindfail: [3, 'k', { 'x-match': true }] },
    { bindfail: [3, 'k', { 'x-match': null }] },
    { bindfail: [3, 'k', { 'x-match': typed('double', 1.5) }] },
    { bindfail: [3, 'k', { 'x-match': typed('long', -7) }] },
    { bindfail: [3, 'k', { 'x-match': 'a"b\\c' }] },
    { bindfail: [3, 'k', { 'x-match': 'caf\u00e9' }] },
    { publish: ['k', { a: 1 }] },
  ]);
  // exchange to exchange: a cycle a -> b -> c -> a, a self loop, a queue
  // reached twice, a diamond
  await scenario('fanout', [
    { exchange: ['b', 'direct'] }, { exchange: ['c', 'topic'] },
    { xbind: ['x', 'b', '', {}] }, { xbind: ['b', 'c', 'k.x', {}] }, { xbind: ['c', 'x', '#', {}] },
    { xbind: ['c', 'c', '#', {}] },
    { bind: [0, '', {}, 'x'] }, { bind: [1, 'k.x', {}, 'b'] }, { bind: [2, 'k.*', {}, 'c'] },
    { bind: [0, '#', {}, 'c'] },
    ...[['k.x', 'x'], ['k.y', 'x'], ['k.x', 'b'], ['k.x', 'c'], ['z', 'c'], ['z', 'b']]
      .map(([k, x]) => ({ publish: [k, {}, x] })),
    { exchange: ['d1', 'fanout'] }, { exchange: ['d2', 'fanout'] }, { exchange: ['d3', 'headers'] },
    { xbind: ['x', 'd1', '', {}] }, { xbind: ['x', 'd2', '', {}] }, { xbind: ['d1', 'd3', '', {}] },
    { xbind: ['d2', 'd3', '', {}] }, { bind: [3, '', {}, 'd3'] }, { bind: [3, '', {}, 'd1'] },
    { publish: ['q', {}, 'x'] }, { publish: ['q', {}, 'd2'] },
  ]);
  // alternate exchanges: used when the exchange's own bindings matched
  // nothing (an exchange destination counts), chained, cycles end, a
  // missing one is skipped
  await scenario('direct', [
    { exchange: ['ae', 'fanout', 'x'] }, { exchange: ['ae2', 'fanout', null] },
    { exchange: ['sink', 'direct', 'ae2'] }, { exchange: ['hx', 'headers', 'missing'] },
    { exchange: ['y', 'direct', 'ae'] },
    { bind: [0, 'k', {}] }, { xbind: ['x', 'sink', 's', {}] },
    { publish: ['k', {}] }, { publish: ['other', {}] }, { publish: ['s', {}] },
    { bind: [1, '', {}, 'ae'] }, { publish: ['other', {}] }, { publish: ['k', {}] },
    { publish: ['other', {}, 'y'] }, { bind: [2, '', {}, 'ae2'] }, { publish: ['s', {}] },
    { publish: ['s', {}, 'y'] }, { publish: ['any', {}, 'hx'] },
    { bind: [3, 'nomatch', { a: 1 }, 'hx'] }, { publish: ['any', {}, 'hx'] },
  ], 'ae');
  await conn.close();
  process.stdout.write(out.join('\n') + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e.stack || e) + '\n');
  process.exit(1);
});
