// rabbitmq-c's command-line tools (Debian amqp-tools) against the AMQP
// gateway (issue 9): amqp-declare-queue (named, server-named, durable),
// amqp-publish (-b, a binary body from stdin, -l one message per line, with
// content-type, content-encoding, reply-to, persistent and -H headers), then
// amqp-get and amqp-consume take them back with their exact bodies, in
// order; the properties amqp-publish set are checked from amqplib (the
// tools print bodies only).  Skipped when the tools are not installed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGantry, stopGantry, scaled, waitFor, require } from './harness.mjs';

const amqp = require('amqplib');
const haveTools = spawnSync('sh', ['-c', 'command -v amqp-publish && command -v amqp-consume'],
  { stdio: 'ignore' }).status === 0;
const skip = !haveTools && 'no amqp-tools (scripts/install-deps.sh)';

let g;
let url;
let conn;
let work;
before(async () => {
  if (skip) return;
  g = await startGantry({ logLevel: 'info' });
  url = `amqp://guest:guest@127.0.0.1:${g.amqpPort}`; // no path: vhost /
  conn = await amqp.connect(url);
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-amqp-tools-'));
});
after(async () => {
  if (!g) return;
  await conn?.close();
  fs.rmSync(work, { recursive: true, force: true });
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

// Runs one of the tools with --url and `args`; resolves {stdout (a
// Buffer), stderr}; rejects when it fails or outlives 20 s (scaled).
function tool(name, args, input) {
  return new Promise((resolve, reject) => {
    const p = execFile(name, [`--url=${url}`, ...args],
      { encoding: 'buffer', timeout: scaled(20000), killSignal: 'SIGKILL' },
      (err, stdout, stderr) => {
        if (err) reject(new Error(`${name} ${args.join(' ')}: ${err.message}\n${stderr}`));
        else resolve({ stdout, stderr: stderr.toString() });
      });
    p.stdin.on('error', () => {}); // a tool that never reads stdin: EPIPE
    p.stdin.end(input ?? '');
  });
}

async function ready(queue, n) {
  const ch = await conn.createChannel();
  await waitFor(async () => (await ch.checkQueue(queue)).messageCount === n, 10000,
    `${n} messages ready in ${queue}`);
  await ch.close();
}

test('amqp-declare-queue: a named durable queue and a server-named one', { skip }, async () => {
  const named = await tool('amqp-declare-queue', ['-q', 'tools.q', '-d']);
  assert.equal(named.stdout.toString().trim(), 'tools.q');
  const gen = await tool('amqp-declare-queue', ['-q', '']);
  assert.match(gen.stdout.toString().trim(), /^amq\.gen-[A-Za-z0-9_-]{22}$/);
  // Redeclared as transient: 406, the tool fails.
  await assert.rejects(tool('amqp-declare-queue', ['-q', 'tools.q']), /PRECONDITION_FAILED|406/);
  const ch = await conn.createChannel();
  const ok = await ch.checkQueue('tools.q');
  assert.equal(ok.messageCount, 0);
  await ch.deleteQueue('tools.q');
  await ch.close();
});

test('amqp-publish then amqp-get and amqp-consume: exact bodies, in order', { skip }, async () => {
  await tool('amqp-declare-queue', ['-q', 'tools.rt']);
  const binary = Buffer.alloc(4096);
  for (let i = 0; i < binary.length; i++) binary[i] = (i * 7 + 3) & 0xff; // every byte value, NULs too
  const big = Buffer.alloc(300000, 'xyz'); // several frames at frame_max 131072
  const want = [];
  await tool('amqp-publish', ['-r', 'tools.rt', '-b', 'first message']);
  want.push(Buffer.from('first message'));
  await tool('amqp-publish', ['-r', 'tools.rt', '-C', 'application/octet-stream'], binary);
  want.push(binary);
  await tool('amqp-publish', ['-r', 'tools.rt', '-l'], 'line one\nline two\n\nline four\n');
  // -l: one message per line, the line's newline kept (fgets).
  want.push(...['line one\n', 'line two\n', '\n', 'line four\n'].map((s) => Buffer.from(s)));
  await tool('amqp-publish', ['-r', 'tools.rt', '-p'], big);
  want.push(big);
  await tool('amqp-publish', ['-r', 'tools.rt', '-b', 'last']);
  want.push(Buffer.from('last'));
  await ready('tools.rt', want.length);

  // amqp-get: one message (the first), its body on stdout.
  const first = await tool('amqp-get', ['-q', 'tools.rt']);
  assert.deepEqual(first.stdout, want.shift());

  // amqp-consume -c N: each body on the stdin of one run of the command,
  // which stores it under its sequence number; acked after the command.
  const dir = path.join(work, 'consumed');
  fs.mkdirSync(dir);
  const store = path.join(work, 'store.sh');
  fs.writeFileSync(store, `#!/bin/sh\nn=$(ls "${dir}" | wc -l)\nexec cat > "${dir}/$(printf %05d "$n")"\n`,
    { mode: 0o755 });
  await tool('amqp-consume', ['-q', 'tools.rt', '-c', String(want.length), '-p', '2', store]);
  const got = fs.readdirSync(dir).sort().map((f) => fs.readFileSync(path.join(dir, f)));
  assert.equal(got.length, want.length);
  got.forEach((b, i) => assert.ok(b.equals(want[i]), `message ${i + 1}: ${b.length} bytes, ` +
    `want ${want[i].length}: ${b.subarray(0, 40).toString('latin1')}`));
  // All acked: nothing left, nothing unacked coming back.
  const ch = await conn.createChannel();
  assert.equal((await ch.checkQueue('tools.rt')).messageCount, 0);
  await ch.deleteQueue('tools.rt');
  await ch.close();

  // amqp-get on an empty queue fails (no message), as the tool does with RabbitMQ.
  await tool('amqp-declare-queue', ['-q', 'tools.empty']);
  await assert.rejects(tool('amqp-get', ['-q', 'tools.empty']));
});

test('amqp-publish properties (content type, encoding, reply-to, persistent, headers) as amqplib sees them', { skip }, async () => {
  await tool('amqp-declare-queue', ['-q', 'tools.props']);
  await tool('amqp-publish', ['-r', 'tools.props', '-b', 'with properties', '-C', 'text/plain',
    '-E', 'utf-8', '-t', 'reply.here', '-p', '-H', 'x-trace: abc-123', '-H', 'n: 7']);
  await tool('amqp-publish', ['-r', 'tools.props', '-b', 'plain']);
  await ready('tools.props', 2);
  const ch = await conn.createChannel();
  const m = await ch.get('tools.props', { noAck: true });
  assert.equal(m.content.toString(), 'with properties');
  assert.equal(m.properties.contentType, 'text/plain');
  assert.equal(m.properties.contentEncoding, 'utf-8');
  assert.equal(m.properties.replyTo, 'reply.here');
  assert.equal(m.properties.deliveryMode, 2);
  assert.deepEqual(m.properties.headers, { 'x-trace': 'abc-123', n: '7' });
  assert.equal(m.fields.routingKey, 'tools.props');
  assert.equal(m.fields.exchange, '');
  const p = await ch.get('tools.props', { noAck: true });
  assert.equal(p.content.toString(), 'plain');
  assert.equal(p.properties.deliveryMode, 1); // amqp-publish without -p: transient
  assert.equal(p.properties.contentType, undefined);
  await ch.deleteQueue('tools.props');
  await ch.close();
});

test('amqp-consume takes what amqplib publishes through an exchange binding', { skip }, async () => {
  // amqp-consume -e/-r declares its own exclusive queue and binds it; the
  // publisher waits until that binding routes (a mandatory publish is
  // returned until then).
  const dir = path.join(work, 'bound');
  fs.mkdirSync(dir);
  const store = path.join(work, 'bound.sh');
  fs.writeFileSync(store, `#!/bin/sh\nn=$(ls "${dir}" | wc -l)\nexec cat > "${dir}/$(printf %05d "$n")"\n`,
    { mode: 0o755 });
  const consumed = tool('amqp-consume', ['-e', 'amq.topic', '-r', 'tools.#', '-c', '20', store]);
  const ch = await conn.createConfirmChannel();
  let returned = 0;
  ch.on('return', () => { returned++; });
  await waitFor(async () => {
    const before = returned;
    await new Promise((res, rej) => ch.publish('amq.topic', 'tools.probe', Buffer.from('probe'),
      { mandatory: true }, (e) => (e ? rej(e) : res())));
    return returned === before;
  }, 10000, "amqp-consume's binding");
  const bodies = ['probe'];
  for (let i = 1; i < 20; i++) {
    bodies.push(`m-${i}-${'.'.repeat(i * 100)}`);
    ch.publish('amq.topic', `tools.k${i}`, Buffer.from(bodies[i]), { persistent: true });
  }
  await ch.waitForConfirms();
  await consumed;
  const got = fs.readdirSync(dir).sort().map((f) => fs.readFileSync(path.join(dir, f), 'utf8'));
  assert.deepEqual(got, bodies);
  await ch.close();
});
