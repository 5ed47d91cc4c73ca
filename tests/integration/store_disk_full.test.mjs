// A full disk, for real: the data directory is a small tmpfs filled to the
// last byte.  Sends fail in-band; receive and ack keep working; after a
// SIGKILL gantry starts on the full disk and serves reads (the acks held in
// memory were lost: those messages come again); once space returns sends
// work again and the held acks are written, so a later restart does not
// deliver them.  Needs root (mount); skipped otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startGantry, stopGantry, waitFor, scaled } from './harness.mjs';
import { pb, Raw, yamlOf, wireMessage, sendRequest, receiveRequest, splitReceive,
  ackRequest } from './sdk_util.mjs';

const T = 'DiskFullTopic';
const G = 'DiskFullGroup';
const N = 32;
const G2 = 'DiskFullOther';
const yaml = yamlOf({ topics: [{ name: T, queues: 1 }], groups: [{ name: G }, { name: G2 }] });

function tryMount(dir) {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return 'not root';
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', dir], { stdio: 'pipe' });
    return null;
  } catch (e) {
    return `mount failed: ${e.message}`;
  }
}

// Fills the file system holding dir; returns the filler's path.
function fill(dir) {
  const p = path.join(dir, 'filler');
  const fd = fs.openSync(p, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) fs.writeSync(fd, chunk);
  } catch (e) {
    if (e.code !== 'ENOSPC') throw e;
  }
  const small = Buffer.alloc(1, 1);
  try {
    for (;;) fs.writeSync(fd, small);
  } catch (e) {
    if (e.code !== 'ENOSPC') throw e;
  }
  fs.closeSync(fd);
  return p;
}

async function send(raw, body) {
  const r = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, body })]),
    pb.SendMessageResponse);
  assert.ifError(r.err);
  return r.resp.getStatus().getCode();
}

async function receive(raw, longPollMs = 2000, group = G) {
  const r = await raw.serverStream('ReceiveMessage',
    receiveRequest({ group, topic: T, batch: 32, longPollMs }), pb.ReceiveMessageResponse,
    { timeoutMs: longPollMs + scaled(10000) });
  assert.ifError(r.err);
  return splitReceive(r.resps);
}

async function ackAll(raw, msgs, group = G) {
  const entries = msgs.map((m) => ({ id: m.getSystemProperties().getMessageId(),
    handle: m.getSystemProperties().getReceiptHandle() }));
  const r = await raw.unary('AckMessage', ackRequest(group, T, entries), pb.AckMessageResponse);
  assert.ifError(r.err);
  return r.resp.getStatus().getCode();
}

test('full disk: reads and acks keep working, start-up works, acks are saved when space returns',
  async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-it-full-'));
    const data = path.join(dir, 'data');
    fs.mkdirSync(data);
    const why = tryMount(data);
    if (why) {
      fs.rmSync(dir, { recursive: true, force: true });
      t.skip(why);
      return;
    }
    let g = null;
    let raw = null;
    try {
      g = await startGantry({ dir, yaml, flush: 'async' });
      raw = new Raw(g.endpoint);
      for (let i = 0; i < N; i++) assert.equal(await send(raw, Buffer.alloc(100, 65 + i)), 20000);
      const filler = fill(data);

      assert.notEqual(await send(raw, Buffer.alloc(64 * 1024, 1)), 20000,
        'a send on a full disk fails in-band');
      // Another group first: its 64 pop and ack records (~90 bytes each)
      // outgrow whatever is left of the state log's last allocated block.
      let got = await receive(raw, 2000, G2);
      assert.equal(got.status.getCode(), 20000, 'receive works on a full disk');
      assert.equal(got.messages.length, N);
      assert.equal(await ackAll(raw, got.messages, G2), 20000, 'ack works on a full disk');
      assert.ok(g.log().includes('consumption state is kept in memory'), 'state is held');
      got = await receive(raw);
      assert.equal(got.messages.length, N);
      assert.equal(await ackAll(raw, got.messages), 20000);

      // crash, then start on the full disk
      raw.close();
      await stopGantry(g, 'SIGKILL', { keepDir: true });
      const logFrom = fs.statSync(g.logPath).size;
      g = await startGantry({ dir, grpcPort: g.grpcPort, httpPort: g.httpPort, yaml, flush: 'async' });
      raw = new Raw(g.endpoint);
      got = await receive(raw);
      const code = got.status.getCode();
      assert.ok(code === 20000 || (code === 40401 && got.messages.length === 0),
        `receive works after a start on a full disk (${code})`);
      // G's pops and acks were held in memory and lost with the crash:
      // every message comes again, at once
      assert.equal(got.messages.length, N);
      assert.equal(await ackAll(raw, got.messages), 20000);

      // space returns: sends work again, the held acks are written
      fs.rmSync(filler);
      await waitFor(async () => await send(raw, Buffer.from('after')) === 20000, 10000,
        'sends work once space returns', 50);
      got = await receive(raw);
      assert.equal(got.messages.length, 1);
      assert.equal(await ackAll(raw, got.messages), 20000);
      // wait until the held state is on disk: a SIGKILL then loses nothing
      await waitFor(() => g.log().slice(logFrom).includes('state log written again'), 30000,
        'the held state written once space returned', 50);
      raw.close();
      await stopGantry(g, 'SIGKILL', { keepDir: true });
      g = await startGantry({ dir, grpcPort: g.grpcPort, httpPort: g.httpPort, yaml, flush: 'async' });
      raw = new Raw(g.endpoint);
      got = await receive(raw, 1000);
      assert.equal(got.messages.length, 0, 'acks made while the disk was full stay acked');
    } finally {
      if (raw) raw.close();
      if (g) await stopGantry(g, 'SIGTERM', { keepDir: true });
      try { execFileSync('umount', [data], { stdio: 'pipe' }); } catch { /* not mounted */ }
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
