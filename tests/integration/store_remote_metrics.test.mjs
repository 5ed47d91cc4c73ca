// /metrics of a proxy in store.mode remote: rocketmq_storage_size is the
// disk space of the gantry-store node's data directory (asked with
// GetInfo), not the proxy's own data dir, which holds no messages.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startGantry, startStore, stopGantry, httpGet } from './harness.mjs';
import { startProducer, shutdownQuietly, yamlOf } from './sdk_util.mjs';

const T = 'RemoteSizeT';
const YAML = yamlOf({ topics: [{ name: T, queues: 1 }], groups: [{ name: 'RemoteSizeG' }] });

async function storageSize(g) {
  const r = await httpGet(g.httpPort, '/metrics');
  assert.equal(r.status, 200);
  const m = /^rocketmq_storage_size (\d+)$/m.exec(r.body);
  assert.ok(m, 'no rocketmq_storage_size line');
  return Number(m[1]);
}

// Bytes the files under dir take on disk (as du counts blocks).
function du(dir) {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) n += du(p);
    else if (e.isFile()) n += fs.statSync(p).blocks * 512;
  }
  return n;
}

test('remote mode: rocketmq_storage_size is the store node\'s disk usage', async () => {
  const s = await startStore({ logLevel: 'info', yaml: YAML });
  let g; let p;
  try {
    g = await startGantry({ logLevel: 'info', yaml: YAML, remoteStore: s.endpoint });
    p = await startProducer(g, [T]);
    const body = Buffer.alloc(64 * 1024, 'x');
    for (let i = 0; i < 8; i++) await p.send({ topic: T, body });
    const size = await storageSize(g);
    const node = du(path.join(s.dir, 'data'));
    assert.ok(size >= 8 * body.length, `rocketmq_storage_size ${size} < the ${8 * body.length} bytes of bodies stored`);
    // Same measure as the node's directory (files may grow between the two reads).
    assert.ok(size <= node * 2 + 1024 * 1024 && node <= size * 2 + 1024 * 1024,
      `rocketmq_storage_size ${size}, node data dir ${node}`);
  } finally {
    await shutdownQuietly(p);
    await stopGantry(g);
    await stopGantry(s);
  }
});
