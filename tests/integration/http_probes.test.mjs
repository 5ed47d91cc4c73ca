// The operator HTTP endpoint (libmicrohttpd) keeps answering its probes
// while hostile clients hold connections: a slowloris client sending one
// byte of its request every 1.5 s, and 2,000 idle connections.  Before,
// one thread served one connection at a time with a 2 s read wait, so
// either took /healthz, /readyz and /metrics down.  Also: the outputs,
// HEAD, 404 and 405.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import http from 'node:http';
import { startGantry, stopGantry, scaled, sleep } from './harness.mjs';

let g;
before(async () => { g = await startGantry({ logLevel: 'info' }); });
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

// One request on a new connection; resolves {status, body} or {status: 0}
// when no answer came within `ms` (generous: this checks that probes are
// answered, not how fast).
function probe(path, method = 'GET', ms = scaled(5000)) {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port: g.httpPort, path, method, agent: false },
      (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode, body, headers: res.headers }));
      });
    req.setTimeout(ms, () => { req.destroy(); resolve({ status: 0, body: '' }); });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

async function probesAnswer(what) {
  const h = await probe('/healthz');
  assert.equal(h.status, 200, `${what}: /healthz`);
  assert.equal(h.body, 'ok\n');
  assert.equal((await probe('/readyz')).status, 200, `${what}: /readyz`);
  const m = await probe('/metrics');
  assert.equal(m.status, 200, `${what}: /metrics`);
  assert.match(m.body, /^gantry_up 1$/m);
}

test('outputs: /healthz, /readyz, /metrics (with the gRPC admission counters), HEAD, 404, 405', async () => {
  await probesAnswer('idle server');
  const m = await probe('/metrics');
  assert.match(m.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  assert.match(m.body, /^gantry_start_time_seconds \d+$/m);
  assert.match(m.body, /^gantry_grpc_overload_rejected_total \d+$/m);
  assert.match(m.body, /^gantry_grpc_inflight_request_bytes \d+$/m);
  const head = await probe('/healthz', 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  assert.equal((await probe('/nope')).status, 404);
  assert.equal((await probe('/healthz', 'POST')).status, 405);
});

test('a slowloris client (one byte every 1.5 s) does not hold up the probes', async () => {
  const sock = net.connect(g.httpPort, '127.0.0.1');
  await new Promise((r) => sock.once('connect', r));
  sock.on('error', () => {});
  const head = 'GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ';
  let i = 0;
  let stop = false;
  const trickle = (async () => {
    while (!stop && !sock.destroyed) {
      sock.write(head[i % head.length]);
      i++;
      await sleep(1500);
    }
  })();
  try {
    for (let k = 0; k < 3; k++) {
      await probesAnswer(`slowloris, round ${k}`);
      await sleep(1600);
    }
    assert.ok(i >= 3, 'the slow client kept sending');
  } finally {
    stop = true;
    sock.destroy();
    await trickle;
  }
});

test('2,000 idle connections do not take the probes down', async () => {
  const socks = [];
  try {
    for (let k = 0; k < 2000; k++) {
      const s = net.connect(g.httpPort, '127.0.0.1');
      s.on('error', () => {});
      socks.push(s);
    }
    await Promise.all(socks.map((s) => new Promise((r) => {
      if (s.readyState === 'open') r();
      else { s.once('connect', r); s.once('error', r); }
    })));
    await probesAnswer('2,000 idle connections');
    // Held a while longer: still answered.
    await sleep(1000);
    await probesAnswer('2,000 idle connections, 1 s later');
  } finally {
    for (const s of socks) s.destroy();
  }
});
