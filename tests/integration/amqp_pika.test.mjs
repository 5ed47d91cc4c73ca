// pika (Debian python3-pika, under /usr/bin/python3) against the AMQP
// gateway (issue 9): each scenario of amqp_pika.py runs as its own
// python process against one gantry: publish/consume with confirms (and a
// mandatory return), basic.qos prefetch per consumer and per channel,
// nack/reject with requeue (redelivered=True), an exclusive queue (405 for
// another connection), heartbeats kept across an idle connection, and
// connection.blocked / unblocked (a second gantry with a 1-byte flow-control
// mark).  The scenarios pass against RabbitMQ 3.10 as well (the blocked one
// needs its memory alarm instead).  Skipped when /usr/bin/python3 has no pika.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGantry, stopGantry, scaled, TIME_SCALE } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PYTHON = '/usr/bin/python3';
const havePika = spawnSync(PYTHON, ['-c', 'import pika'], { stdio: 'ignore' }).status === 0;
const skip = !havePika && 'no python3-pika for /usr/bin/python3 (scripts/install-deps.sh)';

let g;
before(async () => { if (!skip) g = await startGantry({ logLevel: 'info' }); });
after(async () => {
  if (!g) return;
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

// Runs one scenario; resolves with its output, rejects with it (and the
// traceback) when it fails or outlives its bound.
function scenario(name, server = g, ms = 60000) {
  return new Promise((resolve, reject) => {
    const p = spawn(PYTHON, [path.join(here, 'amqp_pika.py'), String(server.amqpPort), name], {
      env: { ...process.env, GANTRY_TEST_TIME_SCALE: String(TIME_SCALE) },
    });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), scaled(ms));
    p.on('exit', (code, signal) => {
      clearTimeout(t);
      if (code === 0) resolve(out);
      else reject(new Error(`pika scenario ${name} exited ${code ?? signal}:\n${out}`));
    });
  });
}

for (const name of ['confirms', 'qos', 'nack_requeue', 'exclusive', 'heartbeats',
  'xdeath_count_max']) {
  test(`pika: ${name}`, { skip }, async () => {
    const out = await scenario(name);
    assert.match(out, new RegExp(`^ok ${name}$`, 'm'));
  });
}

test('pika: blocked', { skip }, async () => {
  const g2 = await startGantry({ logLevel: 'info', env: { GANTRY_TEST_AMQP_BLOCK_BYTES: '1' } });
  try {
    assert.match(await scenario('blocked', g2), /^ok blocked$/m);
  } finally {
    const info = await stopGantry(g2);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});

test('pika: the server logged no missed heartbeats', { skip }, () => {
  assert.doesNotMatch(g.log(), /missed heartbeats/);
});
