// AMQP connections in the admin API's client list (issue 13): GET
// /api/v1/clients shows each open amqplib connection (language "AMQP",
// vhost, user, open channels, the client's product and version), and
// DELETE /api/v1/clients/amqp:N closes it with connection.close 320
// CONNECTION_FORCED as RabbitMQ's management API does; the other
// connection goes on working.  A RocketMQ client whose own id starts with
// "amqp:" is still closed as the RocketMQ client it is.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startGantry, stopGantry, waitFor, scaled, require, httpGet } from './harness.mjs';
import { sdk, quietLogger, withTimeout, shutdownQuietly } from './sdk_util.mjs';

const amqp = require('amqplib');

let g;

before(async () => {
  g = await startGantry({
    amqpYaml: `  vhosts: ["/", other]
  permissions:
    - {user: guest, vhost: "/", configure: ".*", write: ".*", read: ".*"}
    - {user: guest, vhost: other, configure: ".*", write: ".*", read: ".*"}
`,
  });
});

after(async () => {
  if (g) {
    const info = await stopGantry(g);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});

function del(p) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: g.httpPort, path: p, method: 'DELETE',
      timeout: scaled(10000) }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

async function amqpClients() {
  const r = await httpGet(g.httpPort, '/api/v1/clients');
  assert.equal(r.status, 200, r.body);
  return JSON.parse(r.body).clients.filter((c) => c.type === 'AMQP');
}

// The listed connection whose remote port is the socket's local port.
async function listed(conn) {
  const port = conn.connection.stream.localPort;
  return (await amqpClients()).find((c) => c.remote.endsWith(`:${port}`));
}

test('open connections are listed with vhost, user and channels; DELETE closes one with 320', async () => {
  const before0 = Date.now();
  const c1 = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}`);
  const c2 = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/other`);
  const closed = new Promise((resolve) => {
    c1.on('error', (e) => resolve(e));
    c1.on('close', (e) => resolve(e));
  });
  c2.on('error', () => {});
  try {
    const chans = [await c1.createChannel(), await c1.createChannel(), await c1.createChannel()];
    const ch2 = await c2.createChannel();

    let e1;
    let e2;
    await waitFor(async () => {
      e1 = await listed(c1);
      e2 = await listed(c2);
      return e1?.channels === 3 && e2?.channels === 1;
    }, 10000, 'both connections listed with their channels');
    assert.match(e1.client_id, /^amqp:\d+$/);
    assert.notEqual(e1.client_id, e2.client_id);
    assert.equal(e1.language, 'AMQP');
    assert.equal(e1.vhost, '/');
    assert.equal(e2.vhost, 'other');
    assert.equal(e1.user, 'guest');
    assert.match(e1.remote, /^127\.0\.0\.1:\d+$/);
    assert.match(e1.version, /^amqplib \d+\.\d+/);
    assert.equal(e1.connected, true);
    assert.equal(e1.tls, false);
    assert.ok(e1.since_ms >= before0 - 1000 && e1.since_ms <= Date.now() + 1000, String(e1.since_ms));

    await chans[0].close();
    await waitFor(async () => (await listed(c1))?.channels === 2, 10000, 'a closed channel is not counted');

    // refused ids: unknown number, not a number
    assert.equal((await del('/api/v1/clients/amqp:999999')).status, 404);
    assert.equal((await del('/api/v1/clients/amqp:x1')).status, 404);

    const r = await del(`/api/v1/clients/${encodeURIComponent(e1.client_id)}`);
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), { closed: e1.client_id });
    const err = await closed;
    assert.ok(err, 'the connection closed with an error');
    assert.equal(err.code, 320, String(err));
    assert.match(err.message, /CONNECTION_FORCED - Closed via management plugin/);
    await waitFor(async () => (await amqpClients()).every((c) => c.client_id !== e1.client_id),
      10000, 'the closed connection leaves the list');

    // the other connection is untouched
    await ch2.assertQueue('clients.q');
    await ch2.sendToQueue('clients.q', Buffer.from('still here'));
    const got = await waitFor(async () => ch2.get('clients.q', { noAck: true }), 10000, 'message');
    assert.equal(got.content.toString(), 'still here');
    assert.ok((await listed(c2)), 'c2 still listed');
    assert.equal((await del(`/api/v1/clients/${encodeURIComponent(e1.client_id)}`)).status, 404);
  } finally {
    await c2.close().catch(() => {});
    await c1.close().catch(() => {});
  }
  await waitFor(async () => (await amqpClients()).length === 0, 10000, 'no AMQP connection left');
});

test('a RocketMQ client whose id starts with amqp: is closed as a RocketMQ client', async () => {
  const id = 'amqp:rocketmq-producer';
  const p = new sdk.Producer({ endpoints: g.endpoint, topics: ['TopicTest'],
    requestTimeout: scaled(5000), logger: quietLogger });
  p.clientId = id; // a client picks its own id (x-mq-client-id)
  try {
    await withTimeout(p.startup(), scaled(15000), 'Producer.startup');
    await waitFor(async () => {
      const r = await httpGet(g.httpPort, '/api/v1/clients');
      return JSON.parse(r.body).clients.some((c) => c.client_id === id && c.type === 'PRODUCER');
    }, 10000, 'the producer listed under its id');
    // was routed to the AMQP close path: 404 "no client"
    const r = await del(`/api/v1/clients/${encodeURIComponent(id)}`);
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(JSON.parse(r.body), { closed: id });
    assert.match(g.log(), /client amqp:rocketmq-producer closed through the admin API/);
  } finally {
    await shutdownQuietly(p);
  }
});
