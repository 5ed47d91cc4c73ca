// RocketMQ 5 authentication and ACLs (config section auth) with the
// official Node.js SDK's sessionCredentials: the right key works, a wrong
// secret, an unknown key, no credentials and a skewed clock get
// UNAUTHORIZED (40100); a topic the ACLs deny, or leave out, gets FORBIDDEN
// (40300) while a prefix ACL allows its topics; an admin user needs no
// ACL; the AMQP gateway logs the same users in.  With auth off (the
// default) clients with or without credentials are unaffected.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import { startGantry, stopGantry, require, GANTRY_BIN } from './harness.mjs';
import {
  Code, pb, Raw, startProducer, startSimpleConsumer, shutdownQuietly, receiveAll,
  expectCode, yamlOf, resource, receiveRequest, splitReceive,
} from './sdk_util.mjs';

const amqp = require('amqplib');

const T_ORDERS = 'orders-1';      // Topic:orders* allows Pub and Sub
const T_AUDIT = 'orders-audit';   // Topic:orders-audit denies All
const T_READONLY = 'readonly';    // Sub only
const T_SECRET = 'secret-topic';  // no entry
const G = 'AuthGroup';            // Sub
const G_OTHER = 'OtherGroup';     // no entry

const APP = { accessKey: 'app', accessSecret: 'app-secret' };
const BOSS = { accessKey: 'boss', accessSecret: 'boss-secret' };

const AUTH_YAML = `auth:
  enabled: true
  max_clock_skew_s: 300
  users:
    - {access_key: app, secret_key: "app-secret"}
    - {access_key: boss, secret_key: "boss-secret", admin: true}
  acls:
    - {user: app, resource: "Topic:orders*", actions: [Pub, Sub]}
    - {user: app, resource: "Topic:orders-audit", actions: [All], decision: Deny}
    - {user: app, resource: "Topic:readonly", actions: [Sub]}
    - {user: app, resource: "Group:AuthGroup", actions: [Sub]}
`;

const TOPICS = [T_ORDERS, T_AUDIT, T_READONLY, T_SECRET].map((name) => ({ name, queues: 2 }));
const GROUPS = [{ name: G }, { name: G_OTHER }];

let g; // auth on
let plain; // auth off (the default)
before(async () => {
  [g, plain] = await Promise.all([
    startGantry({ logLevel: 'info', yaml: yamlOf({ topics: TOPICS, groups: GROUPS }) + AUTH_YAML }),
    startGantry({ logLevel: 'info', yaml: yamlOf({ topics: TOPICS, groups: GROUPS }) }),
  ]);
});
after(async () => {
  for (const s of [g, plain]) {
    if (!s) continue;
    const log = s.log();
    // Secrets never reach the log.
    assert.ok(!log.includes('app-secret') && !log.includes('boss-secret'), 'no secret in the log');
    const info = await stopGantry(s);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});

// The SDK's signature: HMAC-SHA1 of x-mq-date-time keyed with the secret.
function dateTime(ms = Date.now()) {
  return `${new Date(ms).toISOString().split('.')[0].replace(/[-:]/g, '')}Z`;
}
function authorization(ak, secret, dt) {
  const sig = crypto.createHmac('sha1', secret).update(dt).digest('hex').toUpperCase();
  return `MQv2-HMAC-SHA1 Credential=${ak}, SignedHeaders=x-mq-date-time, Signature=${sig}`;
}

// A raw client whose every call is signed as ak/secret at `at` (ms).
function signedRaw(endpoint, ak, secret, at) {
  const raw = new Raw(endpoint);
  const base = raw.md.bind(raw);
  raw.md = (opts) => {
    const m = base(opts);
    const dt = dateTime(at ?? Date.now());
    m.set('x-mq-date-time', dt);
    m.set('authorization', authorization(ak, secret, dt));
    return m;
  };
  return raw;
}

test('the HMAC of the test vector (as the SDK computes it)', () => {
  assert.equal(authorization('RocketMQ', '12345678', '20231227T194619Z'),
    'MQv2-HMAC-SHA1 Credential=RocketMQ, SignedHeaders=x-mq-date-time, '
    + 'Signature=B78A646B41B898E9A4B565927A888B247EA32E86');
});

test('right key: a prefix ACL lets app send to and consume orders-1', async () => {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_ORDERS], { sessionCredentials: APP });
    consumer = await startSimpleConsumer(g, G, T_ORDERS, { sessionCredentials: APP });
    const r = await producer.send({ topic: T_ORDERS, body: Buffer.from('signed'), tag: 'a' });
    assert.match(r.messageId, /^01/);
    const got = await receiveAll(consumer, 1, 15000);
    assert.equal(got.length, 1);
    assert.equal(got[0].body.toString(), 'signed');
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});

test('wrong secret, unknown key, no credentials: UNAUTHORIZED', async () => {
  await Promise.all([
    expectCode(startProducer(g, [T_ORDERS], { sessionCredentials: { accessKey: 'app', accessSecret: 'nope' } }),
      Code.UNAUTHORIZED, 'wrong secret'),
    expectCode(startProducer(g, [T_ORDERS], { sessionCredentials: { accessKey: 'mallory', accessSecret: 'app-secret' } }),
      Code.UNAUTHORIZED, 'unknown key'),
    expectCode(startProducer(g, [T_ORDERS]), Code.UNAUTHORIZED, 'no credentials'),
  ]);
  const log = g.log();
  assert.match(log, /check signature failed for user "app"/);
  assert.match(log, /user "mallory" is not found/);
  assert.match(log, /authorization metadata is required/);
});

test('a skewed clock: UNAUTHORIZED, with the SDK and on a raw call', async () => {
  // The SDK signs new Date().toISOString(): an hour behind.
  const iso = Date.prototype.toISOString;
  // eslint-disable-next-line no-extend-native
  Date.prototype.toISOString = function skewed() { return iso.call(new Date(this.getTime() - 3600e3)); };
  try {
    await expectCode(startProducer(g, [T_ORDERS], { sessionCredentials: APP }),
      Code.UNAUTHORIZED, 'date an hour old');
  } finally {
    // eslint-disable-next-line no-extend-native
    Date.prototype.toISOString = iso;
  }
  const ahead = signedRaw(g.endpoint, 'app', 'app-secret', Date.now() + 3600e3);
  try {
    const { err, resp } = await ahead.unary('QueryRoute',
      new pb.QueryRouteRequest().setTopic(resource(T_ORDERS)), pb.QueryRouteResponse);
    assert.ifError(err);
    assert.equal(resp.getStatus().getCode(), Code.UNAUTHORIZED);
    assert.match(resp.getStatus().getMessage(), /more than 300 s away from the server's clock/);
  } finally {
    ahead.close();
  }
});

test('denied and unlisted topics: FORBIDDEN; Sub-only topic: route yes, send no', async () => {
  await expectCode(startProducer(g, [T_AUDIT], { sessionCredentials: APP }), Code.FORBIDDEN,
    'Deny on orders-audit beats the orders* prefix');
  let producer;
  try {
    producer = await startProducer(g, [T_ORDERS], { sessionCredentials: APP });
    await expectCode(producer.send({ topic: T_SECRET, body: Buffer.from('x') }), Code.FORBIDDEN,
      'no ACL entry for secret-topic');
    // QueryRoute needs Pub or Sub (granted), SendMessage needs Pub.
    const err = await expectCode(producer.send({ topic: T_READONLY, body: Buffer.from('x') }),
      Code.FORBIDDEN, 'send to a Sub-only topic');
    assert.match(String(err.cause?.message ?? err.message), /readonly/);
  } finally {
    await shutdownQuietly(producer);
  }
  // A consumer call on a group without an entry, signed right.
  const raw = signedRaw(g.endpoint, 'app', 'app-secret');
  try {
    const { resps } = await raw.serverStream('ReceiveMessage',
      receiveRequest({ group: G_OTHER, topic: T_ORDERS, batch: 1, longPollMs: 1000 }),
      pb.ReceiveMessageResponse);
    const { status } = splitReceive(resps);
    assert.equal(status?.getCode(), Code.FORBIDDEN);
    assert.match(status.getMessage(), /Group:OtherGroup/);
  } finally {
    raw.close();
  }
});

test('a consumer of a group without an entry: FORBIDDEN at startup (Telemetry settings)', async () => {
  await expectCode(startSimpleConsumer(g, G_OTHER, T_ORDERS, { sessionCredentials: APP }),
    Code.FORBIDDEN, 'SimpleConsumer of OtherGroup');
  assert.match(g.log(), /Telemetry from .* refused: user "app" has no permission to access Group:OtherGroup/);
});

test('an admin user passes without ACL entries', async () => {
  let producer; let consumer;
  try {
    producer = await startProducer(g, [T_SECRET], { sessionCredentials: BOSS });
    consumer = await startSimpleConsumer(g, G_OTHER, T_SECRET, { sessionCredentials: BOSS });
    await producer.send({ topic: T_SECRET, body: Buffer.from('boss') });
    const got = await receiveAll(consumer, 1, 15000);
    assert.equal(got.length, 1);
  } finally {
    await shutdownQuietly(producer, consumer);
  }
});

test('the AMQP gateway logs in the same users', async () => {
  const url = (u, p) => `amqp://${encodeURIComponent(u)}:${encodeURIComponent(p)}@127.0.0.1:${g.amqpPort}/`;
  const conn = await amqp.connect(url('boss', 'boss-secret'));
  const ch = await conn.createChannel();
  await ch.assertQueue('auth-q', { durable: false });
  await conn.close();
  await assert.rejects(amqp.connect(url('boss', 'wrong')), /ACCESS_REFUSED|403/);
  // guest is gone once users are configured.
  await assert.rejects(amqp.connect(url('guest', 'guest')), /ACCESS_REFUSED|403/);
});

test('auth off (default): clients with or without credentials are unaffected', async () => {
  let p1; let p2; let consumer;
  try {
    p1 = await startProducer(plain, [T_SECRET]);
    p2 = await startProducer(plain, [T_AUDIT], { sessionCredentials: { accessKey: 'x', accessSecret: 'y' } });
    consumer = await startSimpleConsumer(plain, G_OTHER, T_SECRET);
    await p1.send({ topic: T_SECRET, body: Buffer.from('open') });
    await p2.send({ topic: T_AUDIT, body: Buffer.from('open') });
    const got = await receiveAll(consumer, 1, 15000);
    assert.equal(got.length, 1);
  } finally {
    await shutdownQuietly(p1, p2, consumer);
  }
});

test('--print-config masks the secret keys', () => {
  const out = execFileSync(GANTRY_BIN, ['--config', g.cfgPath, '--print-config'], { encoding: 'utf8' });
  assert.match(out, /access_key: "app", secret_key: "\*{8}"/);
  assert.ok(!out.includes('app-secret') && !out.includes('boss-secret'), out);
});
