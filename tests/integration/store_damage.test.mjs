// Damage below the synced part of the commitlog: gantry refuses to start,
// naming the file and offset; --repair-store truncates there and starts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startGantry, spawnGantry, stopGantry } from './harness.mjs';
import { pb, Raw, yamlOf, wireMessage, sendRequest } from './sdk_util.mjs';

const T = 'DamageTopic';
const yaml = yamlOf({ topics: [{ name: T, queues: 1 }], groups: [{ name: 'DamageGroup' }] });

test('a corrupt commitlog record below the synced position stops start-up; --repair-store starts', async () => {
  let g = await startGantry({ yaml, flush: 'sync' });
  const raw = new Raw(g.endpoint);
  for (let i = 0; i < 3; i++) {
    const r = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, body: Buffer.alloc(200, 65 + i) })]),
      pb.SendMessageResponse);
    assert.equal(r.resp.getStatus().getCode(), 20000);
  }
  raw.close();
  // SIGKILL: no clean-close snapshot, so the next start verifies the log.
  await stopGantry(g, 'SIGKILL', { keepDir: true });
  const segDir = path.join(g.dir, 'data', 'commitlog');
  const seg = path.join(segDir, fs.readdirSync(segDir).sort()[0]);
  const fd = fs.openSync(seg, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, 64 + 150); // inside the first record's body
  b[0] ^= 0xff;
  fs.writeSync(fd, b, 0, 1, 64 + 150);
  fs.closeSync(fd);

  const bad = await spawnGantry({ dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort, yaml, flush: 'sync' });
  const info = await bad.exited;
  const log = bad.log();
  assert.equal(info.code, 1, log);
  assert.ok(log.includes(path.basename(seg)), `the log names the segment file:\n${log}`);
  assert.match(log, /offset 64\b/, 'the log names the offset of the damaged record');
  assert.match(log, /--repair-store/);

  g = await startGantry({ dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort, yaml, flush: 'sync',
    args: ['--repair-store'] });
  const r = await stopGantry(g);
  assert.equal(r.code, 0);
});
