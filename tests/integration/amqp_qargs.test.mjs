// queue.declare arguments (issue 10, gateway-amqp/gw_qargs.c): every case
// of amqp_qargs_cases.mjs must get RabbitMQ 3.10.8's answer as recorded in
// tests/data/amqp/qargs_fixtures.json (406 texts, what is accepted, what a
// redeclare compares); the few places where Gantry answers otherwise on
// purpose are tested on their own below.  Durable queues keep their
// arguments across a SIGKILL (the durable queue record).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGantry, stopGantry, require } from './harness.mjs';
import { cases, runCases } from './amqp_qargs_cases.mjs';

const amqp = require('amqplib');
const here = path.dirname(fileURLToPath(import.meta.url));
const fixture = JSON.parse(fs.readFileSync(path.join(here, '../data/amqp/qargs_fixtures.json')));

// RabbitMQ 3.10 accepts x-queue-type stream (Gantry has no streams) and
// fails a bad x-queue-master-locator with 541 INTERNAL_ERROR (a crash of
// its channel); Gantry answers both with a 406.
const DIFFERENT = {
  '{"arguments":{"x-queue-type":"stream"}}':
    "406 PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue 'Q' in vhost '/': \"unsupported queue type 'stream'\"",
  '{"arguments":{"x-queue-master-locator":"bogus"}}':
    "406 PRECONDITION_FAILED - invalid arg 'x-queue-master-locator' for queue 'Q' in vhost '/': \"'bogus' invalid queue-master-locator value\"",
};

async function open(g) {
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`);
  conn.on('error', () => {});
  return conn;
}

test("queue.declare arguments get RabbitMQ 3.10's answers (fixture)", async () => {
  assert.equal(fixture.results.length, cases.length, 'fixture out of date: regenerate it');
  const g = await startGantry({ logLevel: 'info' });
  try {
    const got = await runCases(`amqp://guest:guest@127.0.0.1:${g.amqpPort}/`, amqp);
    const diffs = [];
    for (let i = 0; i < cases.length; i++) {
      assert.deepEqual(fixture.results[i].case, JSON.parse(JSON.stringify(cases[i])));
      if (got[i] !== fixture.results[i].result) {
        diffs.push(`${JSON.stringify(cases[i])}\n  rabbitmq: ${fixture.results[i].result}\n  gantry:   ${got[i]}`);
      }
    }
    assert.equal(diffs.length, 0, diffs.join('\n'));
  } finally {
    await stopGantry(g);
  }
});

test('Gantry refuses x-queue-type stream and a bad x-queue-master-locator with a 406', async () => {
  const g = await startGantry({ logLevel: 'info' });
  try {
    for (const [opts, want] of Object.entries(DIFFERENT)) {
      const conn = await open(g);
      const ch = await conn.createChannel();
      ch.on('error', () => {});
      await assert.rejects(ch.assertQueue('Q', JSON.parse(opts)),
        (e) => `${e.code} ${e.message.replace(/^.*with message "/, '').replace(/"$/, '')}` === want);
      // the connection stays usable (a channel error, not a connection one)
      const ch2 = await conn.createChannel();
      await ch2.checkExchange('amq.direct');
      await conn.close();
    }
  } finally {
    await stopGantry(g);
  }
});

// Checked against RabbitMQ 3.10.8 with the same users and permissions.
test('a DLX needs write permission on the exchange and read on the queue', async () => {
  const g = await startGantry({ logLevel: 'info', amqpYaml: `  users:
    - {name: lim, password: limpw}
    - {name: nor, password: norpw}
  permissions:
    - {user: lim, vhost: "/", configure: "^own\\\\.", write: "^own\\\\.", read: "^own\\\\."}
    - {user: nor, vhost: "/", configure: "^own\\\\.", write: ".*", read: ""}
` });
  try {
    const want = {
      lim: ["access to exchange 'dlx' in vhost '/' refused for user 'lim'", 'ok',
        "access to exchange 'amq.default' in vhost '/' refused for user 'lim'"],
      nor: Array(3).fill("access to queue 'own.q' in vhost '/' refused for user 'nor'"),
    };
    for (const [u, p] of [['lim', 'limpw'], ['nor', 'norpw']]) {
      const conn = await amqp.connect(`amqp://${u}:${p}@127.0.0.1:${g.amqpPort}/`);
      conn.on('error', () => {});
      const got = [];
      for (const dlx of ['dlx', 'own.dlx', '']) {
        const ch = await conn.createChannel();
        ch.on('error', () => {});
        try {
          await ch.assertQueue('own.q', { arguments: { 'x-dead-letter-exchange': dlx } });
          got.push('ok');
          await ch.deleteQueue('own.q');
        } catch (e) {
          assert.equal(e.code, 403);
          got.push(e.message.replace(/^.*ACCESS_REFUSED - /, '').replace(/"$/, ''));
        }
      }
      assert.deepEqual(got, want[u]);
      await conn.close();
    }
  } finally {
    await stopGantry(g);
  }
});

test('durable queues keep their arguments across a SIGKILL; the redeclare compares them', async () => {
  const args = {
    'x-message-ttl': 60000, 'x-dead-letter-exchange': 'dlx', 'x-dead-letter-routing-key': 'dead',
    'x-max-length': 1000, 'x-overflow': 'reject-publish', 'x-foo': 'kept',
  };
  let g = await startGantry({ logLevel: 'info', flush: 'sync' });
  let conn = await open(g);
  let ch = await conn.createChannel();
  await ch.assertQueue('qa.classic', { durable: true, arguments: args });
  await ch.assertQueue('qa.quorum', { durable: true,
    arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': 3 } });
  await ch.assertQueue('qa.none', { durable: true });
  await stopGantry(g, 'SIGKILL', { keepDir: true });

  g = await startGantry({ logLevel: 'info', flush: 'sync', dir: g.dir, grpcPort: g.grpcPort,
    httpPort: g.httpPort, amqpPort: g.amqpPort });
  try {
    conn = await open(g);
    ch = await conn.createChannel();
    ch.on('error', () => {});
    // the same arguments: ok (integers compare by value, whatever their type)
    await ch.assertQueue('qa.classic', { durable: true,
      arguments: { ...args, 'x-message-ttl': { '!': 'long', value: 60000 } } });
    await ch.assertQueue('qa.quorum', { durable: true,
      arguments: { 'x-queue-type': 'quorum', 'x-delivery-limit': 3 } });
    await ch.assertQueue('qa.none', { durable: true, arguments: { 'x-queue-type': 'classic' } });
    const refused = async (name, a, text) => {
      const c = await conn.createChannel();
      c.on('error', () => {});
      await assert.rejects(c.assertQueue(name, { durable: true, arguments: a }),
        (e) => e.code === 406 && e.message.includes(text));
    };
    await refused('qa.classic', { ...args, 'x-message-ttl': 1000 },
      "inequivalent arg 'x-message-ttl' for queue 'qa.classic' in vhost '/': received '1000' but current is '60000'");
    await refused('qa.classic', { ...args, 'x-dead-letter-routing-key': undefined },
      "inequivalent arg 'x-dead-letter-routing-key' for queue 'qa.classic' in vhost '/': received none but current is the value 'dead' of type 'longstr'");
    await refused('qa.quorum', {},
      "inequivalent arg 'x-queue-type' for queue 'qa.quorum' in vhost '/': received none but current is the value 'quorum' of type 'longstr'");
    await refused('qa.quorum', { 'x-queue-type': 'quorum', 'x-delivery-limit': 4 },
      "inequivalent arg 'x-delivery-limit' for queue 'qa.quorum' in vhost '/': received '4' but current is '3'");
    await refused('qa.none', { 'x-queue-type': 'quorum' },
      "inequivalent arg 'x-queue-type' for queue 'qa.none' in vhost '/': received the value 'quorum' of type 'longstr' but current is none");
    await conn.close();
  } finally {
    await stopGantry(g);
  }
});
