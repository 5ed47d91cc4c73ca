// A private etcd for integration tests (Debian etcd-server 3.4): one member
// on two free loopback ports, its data in a temp dir, stopped by PID.  Keys
// are read and written through etcd's JSON gateway on the client port
// (POST /v3/kv/put, /v3/kv/range, /v3/kv/deleterange; keys and values in
// base64), so the tests need no etcd client package.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { freePort, scaled, sleep } from './harness.mjs';

function post(port, p, body) {
  return new Promise((resolve) => {
    const data = JSON.stringify(body);
    const req = http.request({
      host: '127.0.0.1', port, path: p, method: 'POST', timeout: scaled(5000),
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
    }, (res) => {
      let text = '';
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, json, text });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, json: null, text: String(e) }));
    req.end(data);
  });
}

const b64 = (s) => Buffer.from(s).toString('base64');

// Starts etcd and waits (scaled 20 s) until it answers a read.  Returns a
// handle: { endpoint, port, pid, put(key, value), del(key), get(key),
// log() }; stop it with stopEtcd().
export async function startEtcd() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-etcd-'));
  const port = await freePort();
  const peer = await freePort();
  const cu = `http://127.0.0.1:${port}`;
  const pu = `http://127.0.0.1:${peer}`;
  const logPath = path.join(dir, 'etcd.log');
  const logFd = fs.openSync(logPath, 'a');
  const proc = spawn('etcd', ['--data-dir', path.join(dir, 'data'),
    '--listen-client-urls', cu, '--advertise-client-urls', cu,
    '--listen-peer-urls', pu, '--initial-advertise-peer-urls', pu,
    '--initial-cluster', `default=${pu}`], { stdio: ['ignore', logFd, logFd] });
  fs.closeSync(logFd);
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  let gone = null;
  exited.then((e) => { gone = e; });
  const e = {
    proc, pid: proc.pid, dir, port, endpoint: `127.0.0.1:${port}`, exited,
    log() { return fs.readFileSync(logPath, 'utf8'); },
    async put(key, value) {
      const r = await post(port, '/v3/kv/put', { key: b64(key), value: b64(value) });
      if (r.status !== 200) throw new Error(`etcd put ${key}: ${r.status} ${r.text}`);
    },
    async del(key) {
      const r = await post(port, '/v3/kv/deleterange', { key: b64(key) });
      if (r.status !== 200) throw new Error(`etcd delete ${key}: ${r.status} ${r.text}`);
    },
    async get(key) {
      const r = await post(port, '/v3/kv/range', { key: b64(key) });
      if (r.status !== 200) throw new Error(`etcd get ${key}: ${r.status} ${r.text}`);
      const kv = r.json?.kvs?.[0];
      return kv ? Buffer.from(kv.value ?? '', 'base64').toString() : null;
    },
  };
  const deadline = Date.now() + scaled(20000);
  for (;;) {
    if (gone) throw new Error(`etcd exited (${JSON.stringify(gone)}):\n${e.log()}`);
    const r = await post(port, '/v3/kv/range', { key: b64('/') });
    if (r.status === 200) return e;
    if (Date.now() > deadline) {
      await stopEtcd(e);
      throw new Error(`etcd not ready:\n${e.log()}`);
    }
    await sleep(50);
  }
}

export async function stopEtcd(e) {
  if (!e) return;
  if (e.proc.exitCode === null && e.proc.signalCode === null) {
    try { process.kill(e.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  await e.exited;
  if (!process.env.GANTRY_KEEP_TMP) fs.rmSync(e.dir, { recursive: true, force: true });
}
