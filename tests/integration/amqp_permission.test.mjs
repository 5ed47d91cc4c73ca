// Permissions in the AMQP model (issue 9): the configured configure / write
// / read regexes are checked where RabbitMQ checks them (declare and
// delete: configure; publish: write on the exchange, the default one as
// amq.default; consume, get, purge: read; bind: write on the destination
// and read on the source), each refusal a channel error 403 with RabbitMQ's
// text.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, waitFor, require } from './harness.mjs';

const amqp = require('amqplib');

const AMQP_YAML = `  users:
    - {name: dev, password: devpw}
    - {name: lim, password: limpw}
  permissions:
    - {user: dev, vhost: "/", configure: ".*", write: ".*", read: ".*"}
    - {user: lim, vhost: "/", configure: "^own\\\\.", write: "^own\\\\.|^amq\\\\.default$", read: "^own\\\\."}
`;

let g;
before(async () => { g = await startGantry({ logLevel: 'info', amqpYaml: AMQP_YAML }); });
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

async function open(user, pass) {
  const conn = await amqp.connect(`amqp://${user}:${pass}@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

// The channel closes with 403 and text (the channel's 'error' event; the
// refused call's own rejection varies with the amqplib call).
async function refused(conn, fn, text) {
  const ch = await conn.createChannel();
  let err = null;
  ch.on('error', (e) => { err = e; });
  await fn(ch).then(() => {}, () => {});
  await waitFor(() => err !== null, 5000, `403 for ${text}`);
  assert.equal(err.code, 403, err.message);
  assert.ok(err.message.includes(`ACCESS_REFUSED - ${text}`), err.message);
}

test('configure, write and read permissions are enforced with 403', async () => {
  const dev = await open('dev', 'devpw');
  const lim = await open('lim', 'limpw');
  const dch = await dev.createChannel();
  await dch.assertQueue('other.q', { durable: false });
  const lch = await lim.createChannel();
  await lch.assertQueue('own.q', { durable: false });
  lch.sendToQueue('own.q', Buffer.from('mine')); // default exchange: write on amq.default
  const m = await lch.get('own.q', { noAck: true });
  assert.equal(m.content.toString(), 'mine');
  await refused(lim, (c) => c.assertQueue('other.q2'),
    "access to queue 'other.q2' in vhost '/' refused for user 'lim'");
  await refused(lim, (c) => c.deleteQueue('other.q'),
    "access to queue 'other.q' in vhost '/' refused for user 'lim'");
  await refused(lim, (c) => c.get('other.q'),
    "access to queue 'other.q' in vhost '/' refused for user 'lim'");
  await refused(lim, (c) => c.consume('other.q', () => {}),
    "access to queue 'other.q' in vhost '/' refused for user 'lim'");
  await refused(lim, (c) => c.purgeQueue('other.q'),
    "access to queue 'other.q' in vhost '/' refused for user 'lim'");
  await refused(lim, (c) => c.assertExchange('x.lim', 'direct'),
    "access to exchange 'x.lim' in vhost '/' refused for user 'lim'");
  await refused(lim, (c) => c.bindQueue('own.q', 'amq.direct', 'k'),
    "access to exchange 'amq.direct' in vhost '/' refused for user 'lim'");
  await refused(lim, async (c) => {
    c.publish('amq.direct', 'k', Buffer.from('no'));
    await c.checkQueue('own.q');
  }, "access to exchange 'amq.direct' in vhost '/' refused for user 'lim'");
  await lch.deleteQueue('own.q');
  await dch.deleteQueue('other.q');
  await lim.close();
  await dev.close();
});
