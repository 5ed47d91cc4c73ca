// store.mode remote: the gantry-store node killed, its data dir wiped, and
// restarted empty on the same port while a proxy serves.  The node's data
// identity (GetInfo.data_id) is new, so the proxy declares its config's
// topics and groups again by itself: sends and receives work again
// without restarting the proxy (before, the topic stayed unknown until
// every proxy restarted).  A node restarted on its kept data keeps its
// identity.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startGantry, startStore, stopGantry } from './harness.mjs';
import {
  Code, codeName, pb, Raw, startSimpleConsumer, shutdownQuietly, receiveAll, yamlOf,
  wireMessage, sendRequest, scaled, waitFor,
} from './sdk_util.mjs';

const T = 'WipeTopic';
const G = 'WipeGroup';
const YAML = yamlOf({ topics: [{ name: T, queues: 2 }], groups: [{ name: G }] });

async function send(raw, body) {
  return raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, body: Buffer.from(body) })]),
    pb.SendMessageResponse);
}

function dataId(s) {
  return fs.readFileSync(path.join(s.dir, 'data', 'data-id'), 'utf8');
}

test('a store node restarted on a wiped data dir gets the proxy\'s topics and groups again', async () => {
  // A node declares no topics of its own config: only the proxy does.
  let s = await startStore({ logLevel: 'info' });
  let a; let consumer; let raw;
  try {
    a = await startGantry({ logLevel: 'info', yaml: YAML, remoteStore: s.endpoint,
      remoteYaml: `  remote_timeout_ms: ${scaled(2000)}\n` });
    raw = new Raw(a.endpoint);
    const r0 = await send(raw, 'before');
    assert.equal(r0.err, null);
    assert.equal(r0.resp.getStatus().getCode(), Code.OK, codeName(r0.resp.getStatus().getCode()));
    const id0 = dataId(s);
    assert.match(id0, /^gantry-data-id 1 [0-9a-f]{32}\n$/);

    // Restarted on its data: the same identity.
    await stopGantry(s, 'SIGKILL', { keepDir: true });
    s = await startStore({ dir: s.dir, grpcPort: s.grpcPort, httpPort: s.httpPort,
      amqpPort: s.amqpPort, logLevel: 'info' });
    assert.equal(dataId(s), id0);

    // Killed, wiped, restarted empty.
    await stopGantry(s, 'SIGKILL', { keepDir: true });
    fs.rmSync(path.join(s.dir, 'data'), { recursive: true, force: true });
    s = await startStore({ dir: s.dir, grpcPort: s.grpcPort, httpPort: s.httpPort,
      amqpPort: s.amqpPort, logLevel: 'info' });
    assert.notEqual(dataId(s), id0);

    let last;
    await waitFor(async () => {
      last = await send(raw, 'after');
      return last.err === null && last.resp.getStatus().getCode() === Code.OK;
    }, 30000, 'a send to the config\'s topic on the wiped node', 200);
    assert.match(a.log(), /data identity changed .*declaring the config's topics and groups again/);
    consumer = await startSimpleConsumer(a, G, T);
    const got = await receiveAll(consumer, 1, 30000, { invisible: 30000 });
    assert.ok(got.length >= 1, 'received the send made after the wipe');
    assert.deepEqual([...new Set(got.map((m) => m.body.toString()))], ['after'],
      'only what was sent after the wipe');
  } finally {
    raw?.close();
    await shutdownQuietly(consumer);
    for (const h of [a, s].filter(Boolean)) await stopGantry(h);
  }
});
