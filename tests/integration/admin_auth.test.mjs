// The admin API with auth.enabled: every /api/ request needs a bearer
// token from auth.admin_tokens or HTTP Basic of an admin user (401 with
// WWW-Authenticate otherwise, 403 for a non-admin user); /healthz, /readyz
// and /metrics stay open; gantry-admin's exit codes with and without
// GANTRY_ADMIN_TOKEN and with --user; --print-config masks the tokens;
// auth off: the API is open.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { execFile, execFileSync } from 'node:child_process';
import { startGantry, stopGantry, GANTRY_BIN, scaled } from './harness.mjs';
import { yamlOf } from './sdk_util.mjs';

const ADMIN_BIN = process.env.GANTRY_ADMIN_BIN || path.join(path.dirname(GANTRY_BIN), 'gantry-admin');
const TOKEN = 'tok-0123456789abcdef-admin';
const TOKEN2 = 'tok-second-0123456789abcdef';
const T = 'AaTopic';

const AUTH_YAML = `auth:
  enabled: true
  admin_tokens: ["${TOKEN}", "${TOKEN2}"]
  users:
    - {access_key: app, secret_key: "app-secret-1"}
    - {access_key: boss, secret_key: "boss-secret-1", admin: true}
`;

let g; // auth on
let plain; // auth off

before(async () => {
  [g, plain] = await Promise.all([
    startGantry({ logLevel: 'debug', yaml: yamlOf({ topics: [{ name: T, queues: 1 }] }) + AUTH_YAML }),
    startGantry({ logLevel: 'info', yaml: yamlOf({ topics: [{ name: T, queues: 1 }] }) }),
  ]);
});

after(async () => {
  for (const s of [g, plain]) {
    if (!s) continue;
    const log = s.log();
    for (const secret of [TOKEN, TOKEN2, 'app-secret-1', 'boss-secret-1'])
      assert.ok(!log.includes(secret), 'no secret in the log');
    const info = await stopGantry(s);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});

function api(s, method, p, { auth, body } = {}) {
  return new Promise((resolve) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const headers = {};
    if (auth !== undefined) headers.authorization = auth;
    if (data !== undefined) headers['content-length'] = Buffer.byteLength(data);
    const req = http.request({ host: '127.0.0.1', port: s.httpPort, path: p, method, headers, agent: false },
      (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode, text, headers: res.headers }));
      });
    req.setTimeout(scaled(20000), () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, text: String(e), headers: {} }));
    if (data !== undefined) req.write(data);
    req.end();
  });
}

const basic = (ak, sk) => `Basic ${Buffer.from(`${ak}:${sk}`).toString('base64')}`;

function cli(s, args, env = {}) {
  const e = { ...process.env, ...env };
  if (!('GANTRY_ADMIN_TOKEN' in env)) delete e.GANTRY_ADMIN_TOKEN;
  return new Promise((resolve) => {
    execFile(ADMIN_BIN, ['--server', `http://127.0.0.1:${s.httpPort}`, ...args],
      { env: e, timeout: scaled(30000) },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? -1) : 0, stdout, stderr }));
  });
}

test('auth on: no credentials or a bad token get 401 with WWW-Authenticate, reads and writes alike', async () => {
  for (const [method, p, body] of [['GET', '/api/v1/topics'], ['GET', '/api/v1/config'],
    ['POST', '/api/v1/topics', { name: 'AaNope' }], ['GET', '/api/v1/no-such-path'],
    ['GET', '/api/v1/amqp/queues']]) {
    for (const auth of [undefined, 'Bearer wrong-token-0123456789', `Bearer ${TOKEN}x`,
      `Bearer ${TOKEN.slice(0, -1)}`, `Token ${TOKEN}`, 'Bearer', basic('boss', 'wrong'),
      basic('nobody', 'boss-secret-1'), 'Basic !!!notbase64', 'Basic ']) {
      const r = await api(g, method, p, { auth, body });
      assert.equal(r.status, 401, `${method} ${p} with ${auth}: ${r.text}`);
      assert.equal(r.headers['www-authenticate'], 'Bearer realm="gantry"');
    }
  }
  // the write did not happen
  const r = await api(g, 'GET', '/api/v1/topics/AaNope', { auth: `Bearer ${TOKEN}` });
  assert.equal(r.status, 404);
});

test('auth on: a good token serves reads and writes; Basic admin 200, Basic non-admin 403', async () => {
  for (const tok of [TOKEN, TOKEN2]) {
    const r = await api(g, 'GET', '/api/v1/topics', { auth: `Bearer ${tok}` });
    assert.equal(r.status, 200, r.text);
    assert.ok(JSON.parse(r.text).topics.some((t) => t.name === T));
  }
  let r = await api(g, 'POST', '/api/v1/topics', { auth: `bearer ${TOKEN}`, body: { name: 'AaNew', queues: 2 } });
  assert.equal(r.status, 201, r.text);
  r = await api(g, 'DELETE', '/api/v1/topics/AaNew', { auth: `Bearer ${TOKEN2}` });
  assert.equal(r.status, 200, r.text);
  r = await api(g, 'GET', `/api/v1/topics/${T}`, { auth: basic('boss', 'boss-secret-1') });
  assert.equal(r.status, 200, r.text);
  r = await api(g, 'PUT', '/api/v1/config/log-level', { auth: basic('boss', 'boss-secret-1'), body: { level: 'debug' } });
  assert.equal(r.status, 200, r.text);
  for (const [method, p, body] of [['GET', '/api/v1/topics'], ['POST', '/api/v1/topics', { name: 'AaApp' }]]) {
    r = await api(g, method, p, { auth: basic('app', 'app-secret-1'), body });
    assert.equal(r.status, 403, r.text);
    assert.equal(r.headers['www-authenticate'], undefined);
  }
  // the admin API's config: tokens and secret keys masked
  r = await api(g, 'GET', '/api/v1/config', { auth: `Bearer ${TOKEN}` });
  assert.equal(r.status, 200);
  for (const secret of [TOKEN, TOKEN2, 'app-secret-1', 'boss-secret-1']) assert.ok(!r.text.includes(secret));
});

test('auth on: /healthz, /readyz and /metrics stay open', async () => {
  for (const p of ['/healthz', '/readyz', '/metrics']) {
    const r = await api(g, 'GET', p);
    assert.equal(r.status, 200, `${p}: ${r.text}`);
  }
  const m = await api(g, 'GET', '/metrics');
  for (const secret of [TOKEN, TOKEN2, 'app-secret-1', 'boss-secret-1']) assert.ok(!m.text.includes(secret));
});

test('gantry-admin: exit 1 without a token, 0 with GANTRY_ADMIN_TOKEN, --token or an admin --user', async () => {
  let r = await cli(g, ['topic', 'list']);
  assert.equal(r.code, 1, r.stderr);
  r = await cli(g, ['topic', 'list'], { GANTRY_ADMIN_TOKEN: 'wrong-token-0123456789' });
  assert.equal(r.code, 1, r.stderr);
  r = await cli(g, ['topic', 'list'], { GANTRY_ADMIN_TOKEN: TOKEN });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(T));
  r = await cli(g, ['--token', TOKEN2, 'topic', 'create', 'AaCli']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(g, ['--user', 'boss:boss-secret-1', 'topic', 'delete', 'AaCli']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(g, ['--user', 'app:app-secret-1', 'topic', 'list']);
  assert.equal(r.code, 1, r.stderr);
  r = await cli(g, ['--user', 'no-colon', 'topic', 'list']);
  assert.equal(r.code, 2, r.stderr);
});

test('--print-config masks the admin tokens', () => {
  const out = execFileSync(GANTRY_BIN, ['--config', g.cfgPath, '--print-config'], { encoding: 'utf8' });
  assert.match(out, /admin_tokens: \["\*+", "\*+"\]/);
  for (const secret of [TOKEN, TOKEN2, 'app-secret-1', 'boss-secret-1']) assert.ok(!out.includes(secret));
});

test('auth off: the API is open (no credentials needed, credentials ignored)', async () => {
  let r = await api(plain, 'GET', '/api/v1/topics');
  assert.equal(r.status, 200, r.text);
  r = await api(plain, 'POST', '/api/v1/topics', { body: { name: 'AaOpen' } });
  assert.equal(r.status, 201, r.text);
  r = await api(plain, 'GET', '/api/v1/topics', { auth: 'Bearer whatever' });
  assert.equal(r.status, 200, r.text);
  r = await cli(plain, ['topic', 'list']);
  assert.equal(r.code, 0, r.stderr);
});
