// Admin API requests run on worker threads with their connections
// suspended (px_http.c), so requests that wait (here: each waits 3 s
// first, GANTRY_TEST_ADMIN_STALL_MS, as behind a slow store) never hold
// the HTTP daemon's threads: /healthz, /readyz and /metrics are answered
// while four of them are pending.  Before, the handlers ran on the two
// daemon threads and the probes waited for them.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startGantry, stopGantry, scaled, waitFor } from './harness.mjs';

let g;
before(async () => {
  g = await startGantry({ logLevel: 'info', env: { GANTRY_TEST_ADMIN_STALL_MS: String(scaled(3000)) } });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

function get(p) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: g.httpPort, path: p, agent: false }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(scaled(30000), () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
  });
}

test('probes are answered while admin requests wait', async () => {
  let adminDone = 0;
  const admin = [1, 2, 3, 4].map(() => get('/api/v1/topics').then((r) => { adminDone++; return r; }));
  // the admin requests are in (waiting) before the probes go
  await waitFor(() => (g.log().match(/test stall: GET \/api\/v1\/topics/g) ?? []).length >= 2,
    10000, 'two admin requests waiting');
  for (const p of ['/healthz', '/readyz', '/metrics', '/healthz', '/healthz']) {
    const r = await get(p);
    assert.equal(r.status, 200, p);
    assert.equal(adminDone, 0, `${p} was answered only after an admin request (the daemon threads were held)`);
  }
  const done = await Promise.all(admin);
  for (const r of done) {
    assert.equal(r.status, 200);
    assert.ok(JSON.parse(r.body).topics.some((t) => t.name === 'TopicTest'));
  }
});

test('stopping with admin requests pending: they are answered, exit 0', async () => {
  const pending = get('/api/v1/groups');
  await waitFor(() => /test stall: GET \/api\/v1\/groups/.test(g.log()), 10000, 'admin request waiting');
  const info = await stopGantry(g, 'SIGTERM', { keepDir: true });
  assert.equal(info.code, 0);
  const r = await pending;
  assert.ok(r.status === 200 || r.status === 0, `status ${r.status}`);
  g = await startGantry({ logLevel: 'info', dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort, amqpPort: g.amqpPort });
});
