// The OCI image (scripts/build-image, $GANTRY_IMAGE) run from its own root
// filesystem: the archive is unpacked with umoci, and the image's
// entrypoint and arguments (from the image config) run under chroot, as
// the image's user, in a private mount namespace that gets /dev and /proc
// as a container runtime gives them.  Nothing from the host is on the
// library path: gantry starting, answering /readyz, QueryRoute and an SDK
// send/receive proves that every library it loads is in the image.
// Also checks the image config (user, ports, volume, entrypoint) and that
// the root holds nothing but the binaries, their libraries and a few /etc
// files (no shell).  Needs root: skipped otherwise.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, httpGet, waitFor, scaled } from '../integration/harness.mjs';
import {
  Raw, pb, resource, codeName, Code, startProducer, startSimpleConsumer, receiveAll,
  shutdownQuietly,
} from '../integration/sdk_util.mjs';

const IMAGE = process.env.GANTRY_IMAGE;
const isRoot = process.getuid?.() === 0;
const skip = !isRoot ? 'needs root (umoci unpack, chroot)' : false;

let dir;
let bundle;
let imageConfig;
let runtimeConfig;

function readBlob(layout, digest) {
  const [alg, hex] = digest.split(':');
  return JSON.parse(fs.readFileSync(path.join(layout, 'blobs', alg, hex), 'utf8'));
}

before(() => {
  if (skip) return;
  assert.ok(IMAGE && fs.existsSync(IMAGE), `no image archive ${IMAGE} (scripts/build-image)`);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-image-'));
  const layout = path.join(dir, 'layout');
  fs.mkdirSync(layout);
  execFileSync('tar', ['-C', layout, '-xf', IMAGE]);
  const index = JSON.parse(fs.readFileSync(path.join(layout, 'index.json'), 'utf8'));
  assert.equal(index.manifests.length, 1);
  const tag = index.manifests[0].annotations['org.opencontainers.image.ref.name'];
  imageConfig = readBlob(layout, readBlob(layout, index.manifests[0].digest).config.digest);
  bundle = path.join(dir, 'bundle');
  execFileSync('umoci', ['unpack', '--image', `${layout}:${tag}`, bundle], { stdio: 'pipe' });
  runtimeConfig = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8'));
});

after(() => {
  if (dir && !process.env.GANTRY_KEEP_TMP) fs.rmSync(dir, { recursive: true, force: true });
});

function walk(root, rel = '') {
  const out = [];
  for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
    const p = path.join(rel, e.name);
    if (e.isDirectory()) out.push(...walk(root, p));
    else out.push(`/${p}`);
  }
  return out;
}

test('image config: non-root user, ports, data volume, entrypoint', { skip }, () => {
  const c = imageConfig.config;
  assert.match(c.User, /^[1-9][0-9]*:[1-9][0-9]*$/, `user ${c.User}`);
  assert.deepEqual(Object.keys(c.ExposedPorts).sort(),
    ['10911/tcp', '5557/tcp', '5671/tcp', '5672/tcp', '8081/tcp']);
  assert.deepEqual(Object.keys(c.Volumes), ['/data']);
  assert.deepEqual(c.Entrypoint, ['/usr/local/bin/gantry']);
  assert.equal(imageConfig.os, 'linux');
  const [uid] = c.User.split(':').map(Number);
  assert.equal(runtimeConfig.process.user.uid, uid);
  assert.equal(fs.statSync(path.join(bundle, 'rootfs/data')).uid, uid, '/data owned by the user');
});

test('the root holds the binaries, their libraries and /etc basics only', { skip }, () => {
  const files = walk(path.join(bundle, 'rootfs'));
  const allowed = [
    /^\/usr\/local\/bin\/gantry(-store|-admin)?$/,
    /^\/(usr\/)?lib(64|\/x86_64-linux-gnu|\/aarch64-linux-gnu)?\/[^/]+\.so(\.[0-9.]+)?$/,
    /^\/etc\/(passwd|group|nsswitch\.conf|gantry\/gantry\.yaml)$/,
  ];
  const extra = files.filter((f) => !allowed.some((re) => re.test(f)));
  assert.deepEqual(extra, [], 'unexpected files in the image');
  assert.ok(files.includes('/usr/local/bin/gantry'));
  for (const sh of ['/bin/sh', '/usr/bin/sh', '/bin/bash', '/bin/busybox']) {
    assert.ok(!files.includes(sh), `${sh} in the image`);
  }
});

test('the entrypoint starts from the image root and serves gRPC and /readyz', { skip }, async () => {
  const rootfs = path.join(bundle, 'rootfs');
  for (const d of ['dev', 'proc']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const amqpPort = await freePort();
  const { uid, gid } = runtimeConfig.process.user;
  // The image's own args; listen flags override the config file's.
  const args = [...runtimeConfig.process.args,
    '--grpc-listen', `127.0.0.1:${grpcPort}`, '--http-listen', `127.0.0.1:${httpPort}`,
    '--amqp-listen', `127.0.0.1:${amqpPort}`];
  const quote = (s) => `'${s.replace(/'/g, "'\\''")}'`;
  // One process all along (sh and chroot exec): its PID is gantry's.
  const script = 'set -e; mount --rbind /dev "$1/dev"; mount -t proc proc "$1/proc"; ' +
    `exec chroot --userspec=${uid}:${gid} "$1" ${args.map(quote).join(' ')}`;
  const logPath = path.join(dir, 'gantry.log');
  const logFd = fs.openSync(logPath, 'a');
  const proc = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', rootfs], {
    stdio: ['ignore', logFd, logFd],
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...runtimeConfig.process.env.reduce((o, kv) => {
      const i = kv.indexOf('=');
      o[kv.slice(0, i)] = kv.slice(i + 1);
      return o;
    }, {}) },
  });
  fs.closeSync(logFd);
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  let exitInfo = null;
  exited.then((e) => { exitInfo = e; });
  const log = () => fs.readFileSync(logPath, 'utf8');
  let producer;
  let consumer;
  let raw;
  try {
    await waitFor(async () => {
      if (exitInfo) throw new Error(`gantry exited ${JSON.stringify(exitInfo)}:\n${log()}`);
      return (await httpGet(httpPort, '/readyz')).status === 200;
    }, 30000, 'the image\'s gantry ready');
    assert.equal((await httpGet(httpPort, '/healthz')).status, 200);
    const status = fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'), 'runs as the image user');
    assert.equal(fs.readlinkSync(`/proc/${proc.pid}/exe`).startsWith(rootfs), true,
      'the binary is the image\'s');

    raw = new Raw(`127.0.0.1:${grpcPort}`);
    const r = await raw.unary('QueryRoute', new pb.QueryRouteRequest().setTopic(resource('TopicTest')),
      pb.QueryRouteResponse);
    assert.ifError(r.err);
    assert.equal(codeName(r.resp.getStatus().getCode()), codeName(Code.OK));
    assert.ok(r.resp.getMessageQueuesList().length > 0, 'QueryRoute gives queues');

    // The image's default config declares TopicTest and GroupTest.
    const g = { endpoint: `127.0.0.1:${grpcPort}` };
    consumer = await startSimpleConsumer(g, 'GroupTest', 'TopicTest');
    producer = await startProducer(g, ['TopicTest']);
    const body = Buffer.from(`from the image ${Date.now()}`);
    const sent = await producer.send({ topic: 'TopicTest', body, tag: 'img' });
    const got = await receiveAll(consumer, 1, 20000,
      { filter: (m) => m.messageId === sent.messageId });
    assert.ok(got.some((m) => m.messageId === sent.messageId && Buffer.compare(m.body, body) === 0),
      'the message sent through the image comes back');
  } finally {
    raw?.client.close();
    await shutdownQuietly(producer, consumer);
    if (!exitInfo) proc.kill('SIGTERM');
    const killer = setTimeout(() => proc.kill('SIGKILL'), scaled(15000));
    const info = await exited;
    clearTimeout(killer);
    assert.deepEqual(info, { code: 0, signal: null }, `gantry's exit:\n${log()}`);
  }
  // The store wrote into the volume, as the image user.
  const data = path.join(rootfs, 'data');
  assert.ok(fs.readdirSync(data).length > 0, 'data in /data');
  assert.equal(fs.statSync(path.join(data, 'commitlog')).uid, uid);
});
