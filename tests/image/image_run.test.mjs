// The OCI image (scripts/build-image, $GANTRY_IMAGE) run from its own root
// filesystem (rootfs.mjs: umoci unpack, chroot in a private mount
// namespace with /dev and /proc): the image's entrypoint and arguments, as
// the image's user, with the root read-only and /data and /tmp mounted
// writable as the chart's pods have them.  Nothing from the host is on the
// library path: gantry starting, answering /readyz, QueryRoute and an SDK
// send/receive proves that every library it loads is in the image.  Also
// checks the image config (user, ports, volume, entrypoint) and that the
// root holds nothing but the binaries, their libraries and a few /etc
// files (no shell).  Needs root: skipped otherwise.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, httpGet, waitFor, scaled } from '../integration/harness.mjs';
import {
  Raw, pb, resource, codeName, Code, startProducer, startSimpleConsumer, receiveAll,
  shutdownQuietly,
} from '../integration/sdk_util.mjs';
import { unpackImage, runInRoot, envOf } from './rootfs.mjs';

const IMAGE = process.env.GANTRY_IMAGE;
const isRoot = process.getuid?.() === 0;
const skip = !isRoot ? 'needs root (umoci unpack, chroot)' : false;

let dir;
let bundle;
let imageConfig;
let runtimeConfig;

before(() => {
  if (skip) return;
  assert.ok(IMAGE && fs.existsSync(IMAGE), `no image archive ${IMAGE} (scripts/build-image)`);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-image-'));
  const u = unpackImage(IMAGE, dir);
  bundle = path.dirname(u.rootfs);
  ({ imageConfig, runtimeConfig } = u);
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

test('every binary of the image loads from the image root (--help: no loader error)', { skip }, async () => {
  const rootfs = path.join(bundle, 'rootfs');
  const bins = fs.readdirSync(path.join(rootfs, 'usr/local/bin'));
  assert.ok(bins.includes('gantry'));
  const { uid, gid } = runtimeConfig.process.user;
  for (const b of bins) {
    const run = runInRoot({
      rootfs, uid, gid, argv: [`/usr/local/bin/${b}`, '--help'], logPath: path.join(dir, `${b}.help.log`),
      readOnlyRoot: true, tmpfs: ['/tmp'],
    });
    const info = await run.exited;
    assert.doesNotMatch(run.log(), /error while loading shared libraries/, `${b}: ${run.log()}`);
    // The loader's failure is exit 127; a binary's own usage error is not.
    assert.ok(info.signal === null && info.code !== 127, `${b} --help: ${JSON.stringify(info)}\n${run.log()}`);
  }
});

test('the entrypoint starts from the image root and serves gRPC and /readyz', { skip }, async () => {
  const rootfs = path.join(bundle, 'rootfs');
  const grpcPort = await freePort();
  const httpPort = await freePort();
  const amqpPort = await freePort();
  const { uid, gid } = runtimeConfig.process.user;
  const data = path.join(dir, 'data-volume');
  fs.mkdirSync(data);
  fs.chownSync(data, uid, gid);
  // The image's own args; listen flags override the config file's.
  const argv = [...runtimeConfig.process.args,
    '--grpc-listen', `127.0.0.1:${grpcPort}`, '--http-listen', `127.0.0.1:${httpPort}`,
    '--amqp-listen', `127.0.0.1:${amqpPort}`];
  const run = runInRoot({
    rootfs, uid, gid, argv, env: envOf(runtimeConfig.process.env), logPath: path.join(dir, 'gantry.log'),
    readOnlyRoot: true, binds: [{ host: data, target: '/data' }], tmpfs: ['/tmp'],
  });
  const { proc, exited, log } = run;
  let exitInfo = null;
  exited.then((x) => { exitInfo = x; });
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

    // The image's gantry-admin (when the build has it) against the admin
    // API, from the image root too.
    if (fs.existsSync(path.join(rootfs, 'usr/local/bin/gantry-admin'))) {
      const admin = runInRoot({
        rootfs, uid, gid, logPath: path.join(dir, 'gantry-admin.log'), readOnlyRoot: true, tmpfs: ['/tmp'],
        argv: ['/usr/local/bin/gantry-admin', '--server', `http://127.0.0.1:${httpPort}`, 'topic', 'list'],
      });
      assert.deepEqual(await admin.exited, { code: 0, signal: null }, admin.log());
      assert.match(admin.log(), /^TopicTest\s+NORMAL\s/m, admin.log());
    }

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
  assert.ok(fs.readdirSync(data).length > 0, 'data in /data');
  assert.equal(fs.statSync(path.join(data, 'commitlog')).uid, uid);
});
