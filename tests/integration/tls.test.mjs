// TLS on the gRPC port (tls.mode disabled | permissive | enforcing, client
// certificates, SIGHUP reload) and AMQPS (amqp.tls_listen).  A CA, two
// server certificates (serials A1 and B2, for the reload) and a client
// certificate are made with the openssl CLI into a temp dir at test time.
// Clients: the official Node.js SDK with sslEnabled (tls_sdk_client.mjs,
// in a child node with GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: see there), the SDK in plaintext, grpc-js
// with explicit credentials, `openssl s_client` for the served certificate,
// amqplib over amqps://, and raw sockets for bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGantry, stopGantry, freePort, require, scaled, waitFor } from './harness.mjs';
import {
  grpc, pb, SVC, resource, yamlOf, uniq, startProducer, startSimpleConsumer, shutdownQuietly,
  receiveAll,
} from './sdk_util.mjs';

const amqplib = require('amqplib');
const here = path.dirname(fileURLToPath(import.meta.url));
const T = 'TlsTopic';
const G = 'TlsGroup';
let dir;

function ossl(args, input) {
  return execFileSync('openssl', args, { cwd: dir, input, stdio: ['pipe', 'pipe', 'pipe'] });
}

// A certificate signed by the test CA: <name>.pem / <name>.key.
function issue(name, cn, serial, ext) {
  fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
  ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
  ossl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key',
    '-set_serial', serial, '-days', '2', '-out', `${name}.pem`, '-extfile', `${name}.ext`]);
}

const read = (f) => fs.readFileSync(path.join(dir, f));
const fpath = (f) => path.join(dir, f);

// Puts certificate `name` in place as the server's live files (rename:
// a reader never sees half a file).
function install(name) {
  for (const [from, to] of [[`${name}.pem`, 'live.pem'], [`${name}.key`, 'live.key']]) {
    fs.copyFileSync(fpath(from), fpath(`${to}.tmp`));
    fs.renameSync(fpath(`${to}.tmp`), fpath(to));
  }
}

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-tls-'));
  ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-subj', '/CN=Gantry Test CA', '-days', '2']);
  const san = 'subjectAltName=IP:127.0.0.1,DNS:localhost\n';
  issue('srv-a', 'localhost', '0xA1', san);
  issue('srv-b', 'localhost', '0xB2', san);
  issue('client', 'test-client', '0xC3', 'extendedKeyUsage=clientAuth\n');
  install('srv-a');
});
after(() => {
  if (dir && !process.env.GANTRY_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
});

function yaml(tls, extra = '') {
  return `${yamlOf({ topics: [{ name: T, queues: 2 }], groups: [{ name: G }] })}
tls:
  cert_file: "${fpath('live.pem')}"
  key_file: "${fpath('live.key')}"
${tls}
${extra}`;
}

async function start(tls, opts = {}) {
  return startGantry({ logLevel: 'debug', yaml: yaml(tls), ...opts });
}

// One QueryRoute over a grpc-js channel with `creds`: {err, code} where
// code is the in-band status (transport errors in err).
function queryRoute(port, creds) {
  const client = new grpc.Client(`127.0.0.1:${port}`, creds, {
    'grpc.use_local_subchannel_pool': 1,
  });
  const md = new grpc.Metadata();
  md.set('x-mq-client-id', uniq('tls-raw'));
  md.set('x-mq-language', 'HTTP');
  md.set('x-mq-protocol', 'v2');
  const req = Buffer.from(new pb.QueryRouteRequest().setTopic(resource(T)).serializeBinary());
  const id = (x) => x;
  return new Promise((resolve) => {
    client.makeUnaryRequest(`${SVC}QueryRoute`, id, id, req, md,
      { deadline: Date.now() + scaled(5000) }, (err, out) => {
        client.close();
        if (err) resolve({ err });
        else resolve({ code: pb.QueryRouteResponse.deserializeBinary(new Uint8Array(out)).getStatus().getCode() });
      });
  });
}

const plain = () => grpc.credentials.createInsecure();
const trusting = () => grpc.credentials.createSsl(read('ca.pem'));

// The certificate a TLS listener serves: {serial, fingerprint} or null when
// the handshake fails.  extra: more s_client arguments.
function servedCert(port, extra = []) {
  const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${port}`,
    '-servername', 'localhost', ...extra], { input: '', timeout: scaled(10000) });
  const m = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(r.stdout.toString());
  if (!m) return null;
  const out = execFileSync('openssl', ['x509', '-noout', '-serial', '-fingerprint', '-sha256'],
    { input: m[0] }).toString();
  return {
    serial: /serial=([0-9A-F]+)/i.exec(out)[1].toUpperCase(),
    fingerprint: /Fingerprint=([0-9A-F:]+)/i.exec(out)[1],
  };
}

// Fails when the handshake itself fails (s_client exits non-zero).
function handshakeOk(port, extra = []) {
  const r = spawnSync('openssl', ['s_client', '-connect', `127.0.0.1:${port}`,
    '-servername', 'localhost', '-CAfile', fpath('ca.pem'), '-verify_return_error', ...extra],
  { input: '', timeout: scaled(10000) });
  return r.status === 0 && /Verify return code: 0 \(ok\)/.test(r.stdout.toString());
}

// The SDK with sslEnabled in a child node that trusts the test CA (or not,
// with env {GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: ''}).
function sdkOverTls(endpoint, topic, group, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'tls_sdk_client.mjs'), endpoint, topic, group], {
      env: { ...process.env, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH: fpath('ca.pem'), ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), scaled(60000));
    child.on('exit', () => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop();
      try { resolve(JSON.parse(line)); } catch { reject(new Error(`SDK child said: ${out}`)); }
    });
  });
}

// A raw socket: sends `bytes`, resolves 'closed' when the server closes it
// or 'open' if it is still open after ms.
function sendRaw(port, bytes, ms) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    const timer = setTimeout(() => { s.destroy(); resolve('open'); }, ms);
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => { clearTimeout(timer); resolve('closed'); });
  });
}

test('permissive: the SDK over TLS and the SDK in plaintext on the same port', async () => {
  const g = await start('  mode: permissive', { logLevel: 'trace' });
  let producer; let consumer;
  try {
    const r = await sdkOverTls(g.endpoint, T, G);
    assert.equal(r.error, undefined, `SDK over TLS: ${r.error}`);
    assert.deepEqual(r.received, [r.sent], 'the message sent over TLS comes back over TLS');
    assert.equal(r.body, 'over tls');

    producer = await startProducer(g, [T]);
    consumer = await startSimpleConsumer(g, G, T);
    const sent = await producer.send({ topic: T, body: Buffer.from('plain'), tag: 'p' });
    const got = await receiveAll(consumer, 1, 15000);
    assert.deepEqual(got.map((m) => m.messageId), [sent.messageId]);

    // The SDK's TLS does check the certificate: without the CA it fails.
    const untrusted = await queryRoute(g.grpcPort, grpc.credentials.createSsl());
    assert.equal(untrusted.err?.code, grpc.status.UNAVAILABLE, 'a client without the CA is refused');
    assert.equal((await queryRoute(g.grpcPort, trusting())).code, 20000);
    assert.equal((await queryRoute(g.grpcPort, plain())).code, 20000);
    assert.ok(handshakeOk(g.grpcPort, ['-alpn', 'h2']), 'openssl s_client verifies the chain');

    // Calls see the client's own address, not the hand-over's names.
    const log = g.log();
    assert.match(log, /call \/apache\.rocketmq\.v2\.MessagingService\/QueryRoute from ipv4:127\.0\.0\.1:\d+/);
    assert.doesNotMatch(log, / from fd:\d+/);
  } finally {
    await shutdownQuietly(producer, consumer);
    await stopGantry(g);
  }
});

test('enforcing: TLS is served, plaintext is refused', async () => {
  const g = await start('  mode: enforcing');
  try {
    assert.equal((await queryRoute(g.grpcPort, trusting())).code, 20000);
    const r = await queryRoute(g.grpcPort, plain());
    assert.equal(r.err?.code, grpc.status.UNAVAILABLE, `plaintext: ${r.err?.message ?? r.code}`);
    assert.equal(servedCert(g.grpcPort)?.serial, 'A1');
  } finally {
    await stopGantry(g);
  }
});

test('disabled (the default): plaintext is served, TLS is refused', async () => {
  const g = await startGantry({
    logLevel: 'debug', yaml: yamlOf({ topics: [{ name: T, queues: 2 }], groups: [{ name: G }] }),
  });
  try {
    assert.equal((await queryRoute(g.grpcPort, plain())).code, 20000);
    const r = await queryRoute(g.grpcPort, trusting());
    assert.equal(r.err?.code, grpc.status.UNAVAILABLE);
    assert.equal(handshakeOk(g.grpcPort), false);
  } finally {
    await stopGantry(g);
  }
});

test('SIGHUP: new connections get the new certificate (gRPC and AMQPS); bad files keep the old', async () => {
  install('srv-a');
  const amqpsPort = await freePort();
  const g = await startGantry({
    logLevel: 'debug', yaml: yaml('  mode: permissive'),
    amqpYaml: `  tls_listen: "127.0.0.1:${amqpsPort}"`,
  });
  try {
    assert.equal(servedCert(g.grpcPort).serial, 'A1');
    assert.equal(servedCert(amqpsPort).serial, 'A1');
    // A connection made before the reload keeps working after it.
    const before = new grpc.Client(g.endpoint, trusting(), { 'grpc.use_local_subchannel_pool': 1 });
    await new Promise((res, rej) => before.waitForReady(Date.now() + scaled(5000), (e) => (e ? rej(e) : res())));

    install('srv-b');
    process.kill(g.pid, 'SIGHUP');
    await waitFor(() => servedCert(g.grpcPort)?.serial === 'B2', 10000, 'gRPC serves B2');
    await waitFor(() => servedCert(amqpsPort)?.serial === 'B2', 10000, 'AMQPS serves B2');
    assert.equal((await queryRoute(g.grpcPort, trusting())).code, 20000);
    assert.equal(before.getChannel().getConnectivityState(false), grpc.connectivityState.READY);
    before.close();

    // A key that does not match: refused, B2 stays.
    fs.copyFileSync(fpath('srv-a.key'), fpath('live.key'));
    process.kill(g.pid, 'SIGHUP');
    await waitFor(() => /gRPC TLS reload refused/.test(g.log()) && /AMQPS reload refused/.test(g.log()),
      10000, 'the reload is refused');
    assert.equal(servedCert(g.grpcPort).serial, 'B2');
    assert.equal(servedCert(amqpsPort).serial, 'B2');
    assert.equal((await queryRoute(g.grpcPort, trusting())).code, 20000);
    assert.equal((await queryRoute(g.grpcPort, plain())).code, 20000);
  } finally {
    install('srv-a');
    await stopGantry(g);
  }
});

test('client_auth require: a CA-signed client certificate is needed', async () => {
  const g = await start(`  mode: enforcing\n  ca_file: "${fpath('ca.pem')}"\n  client_auth: require`);
  try {
    const without = await queryRoute(g.grpcPort, trusting());
    assert.equal(without.err?.code, grpc.status.UNAVAILABLE, 'no client certificate');
    const withCert = grpc.credentials.createSsl(read('ca.pem'), read('client.key'), read('client.pem'));
    assert.equal((await queryRoute(g.grpcPort, withCert)).code, 20000);
    // A server certificate of the CA is not a client certificate... but it
    // chains to the CA; a self-signed one does not.
    ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', 'self.key', '-out', 'self.pem', '-subj', '/CN=stranger', '-days', '1']);
    const stranger = grpc.credentials.createSsl(read('ca.pem'), read('self.key'), read('self.pem'));
    assert.equal((await queryRoute(g.grpcPort, stranger)).err?.code, grpc.status.UNAVAILABLE);
  } finally {
    await stopGantry(g);
  }
});

test('AMQPS: amqplib over amqps:// with the CA; plaintext AMQP alongside', async () => {
  const amqpsPort = await freePort();
  const g = await startGantry({
    logLevel: 'debug', yaml: yaml('  mode: disabled'),
    amqpYaml: `  tls_listen: "127.0.0.1:${amqpsPort}"`,
  });
  let conn; let plainConn;
  try {
    conn = await amqplib.connect(`amqps://guest:guest@127.0.0.1:${amqpsPort}`, { ca: [read('ca.pem')] });
    const ch = await conn.createChannel();
    const q = (await ch.assertQueue('', { exclusive: true })).queue;
    ch.sendToQueue(q, Buffer.from('secret payload'));
    const m = await waitFor(async () => (await ch.get(q, { noAck: true })) || null, 10000, 'the message');
    assert.equal(m.content.toString(), 'secret payload');
    await conn.close();
    conn = null;

    await assert.rejects(amqplib.connect(`amqps://guest:guest@127.0.0.1:${amqpsPort}`),
      /self[- ]signed|unable to verify|certificate/i, 'an untrusting client fails the handshake');
    plainConn = await amqplib.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}`);
    await plainConn.close();
    plainConn = null;
  } finally {
    if (conn) await conn.close().catch(() => {});
    if (plainConn) await plainConn.close().catch(() => {});
    await stopGantry(g);
  }
});

test('bad input: garbage after 0x16, a stalled ClientHello and plaintext garbage do not stop the listeners', async () => {
  const amqpsPort = await freePort();
  const g = await startGantry({
    logLevel: 'debug', yaml: yaml('  mode: permissive'),
    amqpYaml: `  tls_listen: "127.0.0.1:${amqpsPort}"`,
  });
  const stalled = [];
  try {
    const garbage = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), Buffer.alloc(4096, 0x41)]);
    // A ClientHello's first bytes and then nothing: held open, served by no one.
    for (const port of [g.grpcPort, amqpsPort]) {
      const s = net.connect(port, '127.0.0.1', () => s.write(Buffer.from([0x16, 0x03])));
      s.on('error', () => {});
      stalled.push(s);
      assert.equal(await sendRaw(port, garbage, scaled(10000)), 'closed', `garbage TLS on ${port} is closed`);
      assert.equal(await sendRaw(port, Buffer.from([0x16]), 300), 'open', 'a partial record waits');
    }
    assert.equal(await sendRaw(g.grpcPort, Buffer.alloc(1024, 0x00), scaled(10000)), 'closed',
      'plaintext garbage is closed by the HTTP/2 layer');
    assert.equal(await sendRaw(g.grpcPort, Buffer.alloc(0), 300), 'open', 'a silent connection waits');
    // Everything else is still served.
    assert.equal((await queryRoute(g.grpcPort, trusting())).code, 20000);
    assert.equal((await queryRoute(g.grpcPort, plain())).code, 20000);
    assert.equal(servedCert(amqpsPort)?.serial, 'A1');
    assert.equal(g.proc.exitCode, null, 'gantry is still running');
  } finally {
    for (const s of stalled) s.destroy();
    await stopGantry(g);
  }
});

test('config: TLS without certificate files, or client_auth without ca_file, is refused', async () => {
  const bin = process.env.GANTRY_BIN;
  const cfg = path.join(dir, 'bad.yaml');
  fs.writeFileSync(cfg, 'tls:\n  mode: permissive\n');
  let r = spawnSync(bin, ['--check-config', cfg], { timeout: scaled(10000) });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.toString() + r.stdout.toString(), /cert_file and key_file are needed/);
  fs.writeFileSync(cfg, `tls:\n  mode: enforcing\n  cert_file: "${fpath('srv-a.pem')}"\n  key_file: "${fpath('srv-a.key')}"\n  client_auth: optional\n`);
  r = spawnSync(bin, ['--check-config', cfg], { timeout: scaled(10000) });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.toString() + r.stdout.toString(), /needs tls\.ca_file/);
  // Files that do not match: gantry says so at start.
  fs.writeFileSync(cfg, `server:\n  grpc_listen: "127.0.0.1:${await freePort()}"\n  http_listen: "127.0.0.1:${await freePort()}"\namqp:\n  listen: "off"\nstore:\n  data_dir: "${path.join(dir, 'bad-data')}"\ntls:\n  mode: enforcing\n  cert_file: "${fpath('srv-a.pem')}"\n  key_file: "${fpath('srv-b.key')}"\n`);
  r = spawnSync(bin, ['--config', cfg], { timeout: scaled(20000) });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr.toString() + r.stdout.toString(), /does not match the certificate/);
});
