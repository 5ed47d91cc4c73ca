// Users and ACL entries through the admin API (/api/v1/users) and
// gantry-admin: a user created through the API signs SDK requests
// (MQv2-HMAC-SHA1, sessionCredentials) and logs in over AMQP at once; its
// ACL entries decide (FORBIDDEN for a topic they leave out); an update
// changes its secret; once deleted it is UNAUTHORIZED and refused by the
// AMQP gateway, and its open AMQP connections are closed with 320
// CONNECTION_FORCED as RabbitMQ closes a deleted user's (another user's,
// or one whose secret changed, stay open); API users survive a restart
// (store metadata); config users
// are listed read-only (403 to change); secrets never appear in answers
// or the log; 401 / 403 as for every admin route.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { startGantry, stopGantry, require, GANTRY_BIN, waitFor } from './harness.mjs';
import {
  Code, startProducer, shutdownQuietly, expectCode, yamlOf,
} from './sdk_util.mjs';

const amqp = require('amqplib');
const ADMIN_BIN = process.env.GANTRY_ADMIN_BIN || path.join(path.dirname(GANTRY_BIN), 'gantry-admin');
const TOKEN = 'users-test-token-0123456789';
const T_OPEN = 'users-open';
const T_CLOSED = 'users-closed';
const SECRETS = ['cfg-secret-1', 'api-secret-1', 'api-secret-2', 'ops-secret-1'];

const YAML = `${yamlOf({ topics: [{ name: T_OPEN, queues: 1 }, { name: T_CLOSED, queues: 1 }] })}
auth:
  enabled: true
  admin_tokens: ["${TOKEN}"]
  users:
    - {access_key: cfguser, secret_key: "cfg-secret-1"}
  acls:
    - {user: cfguser, resource: "Topic:${T_OPEN}", actions: [Pub]}
`;

let g;
before(async () => { g = await startGantry({ logLevel: 'info', yaml: YAML }); });
after(async () => {
  if (!g) return;
  const log = g.log();
  for (const s of SECRETS) assert.ok(!log.includes(s), `secret ${s} in the log`);
  const info = await stopGantry(g);
  assert.equal(info.code, 0);
});

function api(method, p, body, auth = `Bearer ${TOKEN}`) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers = auth ? { authorization: auth } : {};
    if (data) headers['content-type'] = 'application/json';
    const req = http.request({ host: '127.0.0.1', port: g.httpPort, path: p, method, headers, agent: false },
      (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => {
          let json = null;
          try { json = JSON.parse(b); } catch { /* not JSON */ }
          resolve({ status: res.statusCode, json, text: b });
        });
      });
    req.on('error', reject);
    req.end(data);
  });
}

function admin(args) {
  return new Promise((resolve) => {
    execFile(ADMIN_BIN, ['--server', `http://127.0.0.1:${g.httpPort}`, '--token', TOKEN, ...args],
      (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
  });
}

const amqpUrl = (u, p) => `amqp://${encodeURIComponent(u)}:${encodeURIComponent(p)}@127.0.0.1:${g.amqpPort}/`;
const creds = (accessKey, accessSecret) => ({ sessionCredentials: { accessKey, accessSecret } });

async function amqpLogin(u, p) {
  const conn = await amqp.connect(amqpUrl(u, p));
  const ch = await conn.createChannel();
  await ch.assertQueue(`users-q-${u}`, { durable: false });
  await conn.close();
}

test('list: config users read-only, no secrets; 401 without a token', async () => {
  const r = await api('GET', '/api/v1/users');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.users, [{
    access_key: 'cfguser', admin: false, source: 'config',
    acls: [{ resource: `Topic:${T_OPEN}`, actions: ['Pub'], decision: 'Allow', source_ips: [] }],
  }]);
  assert.ok(!r.text.includes('secret'), r.text);
  assert.equal((await api('GET', '/api/v1/users', undefined, null)).status, 401);
  assert.equal((await api('POST', '/api/v1/users', { access_key: 'x', secret_key: 'y' }, 'Bearer wrong-token-0123456789')).status, 401);
  // a non-admin user (HTTP Basic) is 403
  const basic = `Basic ${Buffer.from('cfguser:cfg-secret-1').toString('base64')}`;
  assert.equal((await api('GET', '/api/v1/users', undefined, basic)).status, 403);
  assert.equal((await api('PUT', '/api/v1/users/cfguser', { admin: true })).status, 403);
  assert.equal((await api('DELETE', '/api/v1/users/cfguser')).status, 403);
  assert.equal((await api('POST', '/api/v1/users', { access_key: 'cfguser', secret_key: 'z' })).status, 409);
});

test('bad input: 400 with the reason, nothing created', async () => {
  const bad = [
    [{ access_key: 'u1' }, /secret_key/],
    [{ access_key: 'u1', secret_key: 's', admin: 'yes' }, /admin/],
    [{ access_key: 'u 1', secret_key: 's' }, /access_key/],
    [{ access_key: 'u1', secret_key: 's', acls: [{ resource: 'Queue:x', actions: ['Pub'] }] }, /resource/],
    [{ access_key: 'u1', secret_key: 's', acls: [{ resource: 'Topic:x', actions: ['Fly'] }] }, /action/],
    [{ access_key: 'u1', secret_key: 's', acls: [{ resource: 'Topic:x', actions: ['Pub'], source_ips: ['1.2.3.999'] }] }, /source_ips/],
    [{ access_key: 'u1', secret_key: 's', colour: 'red' }, /unknown field/],
  ];
  for (const [body, why] of bad) {
    const r = await api('POST', '/api/v1/users', body);
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
    assert.match(r.json.error, why);
  }
  assert.equal((await api('GET', '/api/v1/users/u1')).status, 404);
});

test('an API user signs SDK requests and logs in over AMQP at once; ACLs decide; deleted: refused', async () => {
  let p;
  try {
    // unknown before
    await expectCode(startProducer(g, [T_OPEN], creds('apiuser', 'api-secret-1')), Code.UNAUTHORIZED, 'unknown user');
    const c = await api('POST', '/api/v1/users', {
      access_key: 'apiuser', secret_key: 'api-secret-1',
      acls: [{ resource: `Topic:${T_OPEN}`, actions: ['Pub'] }],
    });
    assert.equal(c.status, 201, c.text);
    assert.deepEqual(c.json, {
      access_key: 'apiuser', admin: false, source: 'api',
      acls: [{ resource: `Topic:${T_OPEN}`, actions: ['Pub'], decision: 'Allow', source_ips: [] }],
    });
    p = await startProducer(g, [T_OPEN], creds('apiuser', 'api-secret-1'));
    await p.send({ topic: T_OPEN, body: Buffer.from('signed by an API user') });
    await expectCode(p.send({ topic: T_CLOSED, body: Buffer.from('x') }), Code.FORBIDDEN, 'no ACL entry');
    await shutdownQuietly(p);
    p = undefined;
    // AMQP: a non-admin user logs in (its grants come from amqp.permissions);
    // an admin one opens the vhost.
    const ops = await api('POST', '/api/v1/users', { access_key: 'opsuser', secret_key: 'ops-secret-1', admin: true });
    assert.equal(ops.status, 201, ops.text);
    await amqpLogin('opsuser', 'ops-secret-1');
    await assert.rejects(amqpLogin('opsuser', 'wrong'), /ACCESS_REFUSED|403/);
    // ... and the admin API takes it as HTTP Basic
    const basic = `Basic ${Buffer.from('opsuser:ops-secret-1').toString('base64')}`;
    assert.equal((await api('GET', '/api/v1/users', undefined, basic)).status, 200);

    // update: a new secret; the old one no longer signs
    const u = await api('PUT', '/api/v1/users/apiuser', { secret_key: 'api-secret-2', acls: [{ resource: `Topic:${T_CLOSED}`, actions: ['Pub'] }] });
    assert.equal(u.status, 200, u.text);
    await expectCode(startProducer(g, [T_OPEN], creds('apiuser', 'api-secret-1')), Code.UNAUTHORIZED, 'old secret');
    p = await startProducer(g, [T_CLOSED], creds('apiuser', 'api-secret-2'));
    await p.send({ topic: T_CLOSED, body: Buffer.from('now allowed') });
    await shutdownQuietly(p);
    p = undefined;

    // delete: UNAUTHORIZED on gRPC, refused on AMQP and the admin API
    assert.deepEqual((await api('DELETE', '/api/v1/users/opsuser')).json, { deleted: 'opsuser' });
    await assert.rejects(amqpLogin('opsuser', 'ops-secret-1'), /ACCESS_REFUSED|403/);
    assert.equal((await api('GET', '/api/v1/users', undefined, basic)).status, 401);
    assert.equal((await api('DELETE', '/api/v1/users/opsuser')).status, 404);
  } finally {
    await shutdownQuietly(p);
  }
});

test("a deleted user's open AMQP connections are closed: 320 CONNECTION_FORCED; others stay", async () => {
  for (const u of ['goneuser', 'stayuser']) {
    const r = await api('POST', '/api/v1/users', { access_key: u, secret_key: `${u}-secret`, admin: true });
    assert.equal(r.status, 201, r.text);
  }
  const open = async (u) => {
    const conn = await amqp.connect(amqpUrl(u, `${u}-secret`));
    const st = { closed: false, err: null };
    conn.on('error', (e) => { st.err = e; });
    conn.on('close', (e) => { st.closed = true; st.err = st.err ?? e ?? null; });
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    await ch.assertQueue(`users-q-${u}`, { durable: false });
    return { conn, ch, st };
  };
  const gone = await open('goneuser');
  const gone2 = await open('goneuser');
  const stay = await open('stayuser');
  try {
    // a new secret for stayuser: its connection stays (RabbitMQ does the same)
    assert.equal((await api('PUT', '/api/v1/users/stayuser', { secret_key: 'stayuser-secret', admin: true })).status, 200);
    assert.deepEqual((await api('DELETE', '/api/v1/users/goneuser')).json, { deleted: 'goneuser' });
    await waitFor(() => gone.st.closed && gone2.st.closed, 20000, "goneuser's connections closed");
    for (const c of [gone, gone2]) {
      assert.ok(c.st.err, 'closed by the server, with an error');
      assert.equal(c.st.err.code, 320, String(c.st.err));
      assert.match(String(c.st.err.message), /CONNECTION_FORCED/);
      assert.match(String(c.st.err.message), /goneuser/);
    }
    assert.equal(stay.st.closed, false);
    await stay.ch.checkQueue('users-q-stayuser'); // still works
    assert.equal(stay.st.closed, false);
  } finally {
    await stay.conn.close().catch(() => {});
    for (const c of [gone, gone2]) await c.conn.close().catch(() => {});
    await api('DELETE', '/api/v1/users/stayuser');
  }
});

test('gantry-admin user verbs; API users survive a restart, secrets never shown', async () => {
  const c = await admin(['user', 'create', 'cliuser', '--secret-key', 'api-secret-1', '--admin']);
  assert.equal(c.code, 0, c.stderr);
  const l = await admin(['user', 'list']);
  assert.equal(l.code, 0, l.stderr);
  assert.match(l.stdout, /cliuser/);
  assert.match(l.stdout, /apiuser/);
  assert.ok(!/api-secret|cfg-secret/.test(l.stdout), l.stdout);
  const bad = await admin(['user', 'create', 'x']);
  assert.equal(bad.code, 2, 'usage: --secret-key is required');
  const acl = await admin(['user', 'update', 'apiuser', '--acl', `Topic:${T_OPEN}=Pub,Sub`]);
  assert.equal(acl.code, 0, acl.stderr);
  const shown = await api('GET', '/api/v1/users/apiuser');
  assert.deepEqual(shown.json.acls, [{ resource: `Topic:${T_OPEN}`, actions: ['Pub', 'Sub'], decision: 'Allow', source_ips: [] }]);

  await stopGantry(g, 'SIGTERM', { keepDir: true });
  g = await startGantry({ logLevel: 'info', yaml: YAML, dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort, amqpPort: g.amqpPort });
  const after = await api('GET', '/api/v1/users');
  assert.deepEqual(after.json.users.map((x) => `${x.access_key}/${x.source}`).sort(),
    ['apiuser/api', 'cfguser/config', 'cliuser/api']);
  let p;
  try {
    p = await startProducer(g, [T_OPEN], creds('apiuser', 'api-secret-2'));
    await p.send({ topic: T_OPEN, body: Buffer.from('after restart') });
  } finally {
    await shutdownQuietly(p);
  }
  await amqpLogin('cliuser', 'api-secret-1');
  const d = await admin(['user', 'delete', 'cliuser']);
  assert.equal(d.code, 0, d.stderr);
  await expectCode(startProducer(g, [T_OPEN], creds('cliuser', 'api-secret-1')), Code.UNAUTHORIZED, 'deleted');
});
