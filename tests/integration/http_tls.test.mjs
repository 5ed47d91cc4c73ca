// HTTPS on the operator port (tls.http: true): probes, /metrics, the admin
// API and gantry-admin over TLS with the certificate verified, plaintext
// HTTP refused, and the certificate reloaded on SIGHUP (a bad file keeps
// the old one), on gantry and on gantry-store.  Clients: node's https
// module, curl, `openssl s_client` and gantry-admin (libcurl).  A CA and
// two server certificates (serials A1, B2) are made with the openssl CLI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import {
  startGantry, startStore, stopGantry, GANTRY_BIN, scaled, waitFor,
} from './harness.mjs';

const ADMIN_BIN = process.env.GANTRY_ADMIN_BIN || path.join(path.dirname(GANTRY_BIN), 'gantry-admin');
let dir;

const fpath = (f) => path.join(dir, f);
const ossl = (args) => execFileSync('openssl', args, { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });

function issue(name, serial) {
  fs.writeFileSync(fpath(`${name}.ext`), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=localhost']);
  ossl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-set_serial', serial, '-days', '2', '-out', `${name}.pem`, '-extfile', `${name}.ext`]);
}

// Certificate `name` becomes the live files (renamed into place).
function install(name) {
  for (const [from, to] of [[`${name}.pem`, 'live.pem'], [`${name}.key`, 'live.key']]) {
    fs.copyFileSync(fpath(from), fpath(`${to}.tmp`));
    fs.renameSync(fpath(`${to}.tmp`), fpath(to));
  }
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-https-'));
  ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=Gantry HTTPS Test CA', '-days', '2']);
  issue('srv-a', '0xA1');
  issue('srv-b', '0xB2');
});
after(() => {
  if (dir && !process.env.GANTRY_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
});

const tlsYaml = (http) => `
topics:
  - {name: TopicTest, type: NORMAL, queues: 2}
tls:
  http: ${http}
  cert_file: "${fpath('live.pem')}"
  key_file: "${fpath('live.key')}"
`;

// One request with node's https module, the CA trusted (or `ca` given):
// {status, body} or {error}.
// trust false: the system's roots only.
function httpsReq(port, p, { trust = true, method = 'GET', body } = {}) {
  const ca = trust ? { ca: fs.readFileSync(fpath('ca.pem')) } : {};
  return new Promise((resolve) => {
    const req = https.request({
      host: '127.0.0.1', port, path: p, method, ...ca, servername: 'localhost', agent: false,
      timeout: scaled(5000), headers: body ? { 'content-type': 'application/json' } : {},
    }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve({ status: res.statusCode, body: b }));
    });
    req.on('error', (error) => resolve({ error }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end(body);
  });
}

// A plaintext HTTP request to the same port: {status} or {error}.
function plainReq(port, p) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: p, agent: false, timeout: scaled(5000) },
      (res) => { res.resume(); resolve({ status: res.statusCode }); });
    req.on('error', (error) => resolve({ error }));
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

// The serial number of the certificate the port serves, or null.
function servedSerial(port) {
  const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${port}`,
    '-servername', 'localhost', '-CAfile', fpath('ca.pem'), '-verify_return_error'],
  { input: '', timeout: scaled(10000) });
  const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout.toString());
  if (r.status !== 0 || !m) return null;
  const out = execFileSync('openssl', ['x509', '-noout', '-serial'], { input: m[0] }).toString();
  return /serial=([0-9A-F]+)/i.exec(out)[1].toUpperCase();
}

function curl(args) {
  return spawnSync('curl', ['-sS', '--max-time', String(Math.ceil(scaled(10000) / 1000)), ...args],
    { encoding: 'utf8' });
}

function admin(port, args, env = {}) {
  return new Promise((resolve) => {
    execFile(ADMIN_BIN, ['--server', `https://localhost:${port}`, ...args],
      { env: { ...process.env, ...env }, timeout: scaled(20000) },
      (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
  });
}

test('gantry: probes, /metrics, the admin API and gantry-admin over HTTPS; plaintext refused; SIGHUP reload', async () => {
  install('srv-a');
  const ca = fs.readFileSync(fpath('ca.pem'));
  const g = await startGantry({ yaml: tlsYaml(true), httpsCa: ca });
  try {
    const port = g.httpPort;
    assert.deepEqual(await httpsReq(port, '/healthz'), { status: 200, body: 'ok\n' });
    assert.deepEqual(await httpsReq(port, '/readyz'), { status: 200, body: 'ready\n' });
    const m = await httpsReq(port, '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.body, /^rocketmq_proxy_up\{proxy_mode="local"\} 1$/m);
    const t = await httpsReq(port, '/api/v1/topics');
    assert.equal(t.status, 200);
    assert.ok(JSON.parse(t.body).topics.some((x) => x.name === 'TopicTest'));
    const created = await httpsReq(port, '/api/v1/topics', {
      method: 'POST', body: JSON.stringify({ name: 'HttpsTopic', queues: 3 }),
    });
    assert.equal(created.status, 201, created.body);
    const d = await httpsReq(port, '/dashboard/');
    assert.equal(d.status, 200);
    assert.match(d.body, /<html/i);

    // The certificate is checked: without the CA the handshake fails.
    const untrusted = await httpsReq(port, '/healthz', { trust: false });
    assert.equal(untrusted.error?.code, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      `no CA: ${untrusted.error?.code ?? untrusted.status}`);

    // curl verifies it too; plaintext HTTP on the port gets no HTTP answer.
    const c = curl(['--cacert', fpath('ca.pem'), `https://localhost:${port}/readyz`]);
    assert.equal(c.status, 0, c.stderr);
    assert.equal(c.stdout, 'ready\n');
    const cp = curl([`http://127.0.0.1:${port}/readyz`]);
    assert.notEqual(cp.status, 0, 'plaintext HTTP must fail');
    assert.equal(cp.stdout, '');
    const p = await plainReq(port, '/healthz');
    assert.ok(p.error, `plaintext answered with status ${p.status}`);
    const pm = await plainReq(port, '/metrics');
    assert.ok(pm.error, `plaintext /metrics answered with status ${pm.status}`);

    // gantry-admin with --cacert (and $GANTRY_ADMIN_CACERT); without it
    // (system trust store only) the server is unreachable.
    const a = await admin(port, ['--cacert', fpath('ca.pem'), 'topic', 'list']);
    assert.equal(a.code, 0, a.stderr);
    assert.match(a.stdout, /HttpsTopic/);
    const ae = await admin(port, ['topic', 'show', 'HttpsTopic'], { GANTRY_ADMIN_CACERT: fpath('ca.pem') });
    assert.equal(ae.code, 0, ae.stderr);
    assert.match(ae.stdout, /queues: 3/);
    const an = await admin(port, ['topic', 'list'], { GANTRY_ADMIN_CACERT: '' });
    assert.equal(an.code, 3, `untrusted server: exit ${an.code} ${an.stderr}`);

    // Reload: B2 after SIGHUP; a bad key file is refused and B2 stays.
    assert.equal(servedSerial(port), 'A1');
    install('srv-b');
    process.kill(g.pid, 'SIGHUP');
    await waitFor(() => servedSerial(port) === 'B2', 10000, 'the reloaded certificate (B2)');
    assert.deepEqual(await httpsReq(port, '/readyz'), { status: 200, body: 'ready\n' });
    fs.writeFileSync(fpath('live.key'), 'not a key\n');
    process.kill(g.pid, 'SIGHUP');
    await waitFor(() => /HTTPS reload refused, the old certificate stays/.test(g.log()), 10000,
      'the refused reload in the log');
    assert.equal(servedSerial(port), 'B2');
    assert.deepEqual(await httpsReq(port, '/healthz'), { status: 200, body: 'ok\n' });
  } finally {
    await stopGantry(g);
  }
});

test('tls.http false (the default): the port stays plaintext even with certificate files', async () => {
  install('srv-a');
  const g = await startGantry({ yaml: tlsYaml(false) });
  try {
    assert.equal((await plainReq(g.httpPort, '/readyz')).status, 200);
    assert.ok((await httpsReq(g.httpPort, '/readyz')).error, 'no TLS on a plaintext port');
  } finally {
    await stopGantry(g);
  }
});

test('gantry-store: its /metrics over HTTPS, plaintext refused, SIGHUP reload', async () => {
  install('srv-a');
  const ca = fs.readFileSync(fpath('ca.pem'));
  const s = await startStore({ yaml: tlsYaml(true), httpsCa: ca });
  try {
    const m = await httpsReq(s.httpPort, '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.body, /^gantry_up 1$/m);
    assert.ok((await plainReq(s.httpPort, '/metrics')).error, 'plaintext refused');
    assert.equal(servedSerial(s.httpPort), 'A1');
    install('srv-b');
    process.kill(s.pid, 'SIGHUP');
    await waitFor(() => servedSerial(s.httpPort) === 'B2', 10000, 'the reloaded certificate (B2)');
  } finally {
    await stopGantry(s);
  }
});

test('tls.http without cert_file is refused at start', async () => {
  fs.writeFileSync(fpath('nocert.yaml'), 'tls:\n  http: true\n');
  const r = spawnSync(GANTRY_BIN, ['--check-config', fpath('nocert.yaml')], { encoding: 'utf8' });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /cert_file and key_file are needed \(tls\.mode is disabled, tls\.http true/);
});
