// Integration harness: starts the real gantry binary on free loopback ports
// with a generated config and a temporary data dir, waits until /readyz
// answers, and stops it by PID.  At teardown it fails the test if the
// server's log holds a sanitizer report (ASan, LSan, UBSan, TSan).  It
// builds nothing itself: the binary comes from GANTRY_BIN (set by CTest)
// or build/gantry.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import https from 'node:https';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = path.dirname(fileURLToPath(import.meta.url));
export const require = createRequire(path.join(here, 'package.json'));
export const GANTRY_BIN = process.env.GANTRY_BIN ||
  path.resolve(here, '../../build/gantry');
// The store node (store-server/); startStore() runs it.
export const GANTRY_STORE_BIN = process.env.GANTRY_STORE_BIN ||
  path.resolve(here, '../../build/gantry-store');

// TSan: Debian's grpc/abseil are not instrumented, so accesses made by
// their code are ignored (ignore_noninstrumented_modules) and reports that
// still land inside them are suppressed (tests/tsan.supp).  Project code
// is never suppressed.
const TSAN_SUPP = path.resolve(here, '../tsan.supp');

const SANITIZER_MARKERS = [
  'ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:',
  'ERROR: ThreadSanitizer', 'WARNING: ThreadSanitizer',
];

// Temporary directories go to os.tmpdir(): CTest's TMPDIR is a directory
// of the build tree (tests/CMakeLists.txt), made here if it is gone.
fs.mkdirSync(os.tmpdir(), { recursive: true });

// Server ports.  freePort() cannot reserve a port, so it takes them below
// the kernel's ephemeral range (ip_local_port_range), at random: there no
// client connection's local port (any program's, another test run's) can
// take one between the check here and the server's bind, or while a
// restart test's server is down.  A port is handed out once per process.
const EPHEMERAL_LOW = (() => {
  try {
    return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
  } catch {
    return 32768;
  }
})();
const PORT_LOW = 10000;
const portsGiven = new Set();

function canListen(port) {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function ephemeralPort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function freePort() {
  for (let i = 0; EPHEMERAL_LOW - PORT_LOW >= 1000 && i < 100; i++) {
    const port = PORT_LOW + Math.floor(Math.random() * (EPHEMERAL_LOW - PORT_LOW));
    if (portsGiven.has(port) || !(await canListen(port))) continue;
    portsGiven.add(port);
    return port;
  }
  return ephemeralPort();
}

// Servers spawned and not yet exited.  A test that times out is
// abandoned where it waits, its finally blocks never run, so its servers
// are still here when the runner exits: for a failed run their log tails
// go to stderr (they show what the server was doing when the test hung),
// and they are killed rather than left behind.
const running = new Set();
process.on('exit', (code) => {
  for (const g of running) {
    if (code !== 0) {
      let tail = '';
      try { tail = g.log().split('\n').slice(-120).join('\n'); } catch { /* gone */ }
      process.stderr.write(`\n--- ${path.basename(g.proc.spawnfile)} pid ${g.pid} still running at exit; `
        + `the end of ${g.logPath}:\n${tail}\n---\n`);
    }
    try { process.kill(g.pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

// The sanitizer options gantry runs with (a sanitizer build), for other
// programs of the build a test starts too (a load client).
export function sanitizerEnv() {
  return {
    ASAN_OPTIONS: process.env.ASAN_OPTIONS ?? 'detect_leaks=1',
    TSAN_OPTIONS: process.env.TSAN_OPTIONS ?? `suppressions=${TSAN_SUPP}:ignore_noninstrumented_modules=1:second_deadlock_stack=1`,
  };
}

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// Time scale for the machine and build under test.  Tests wait for
// conditions; where a test bounds a wait ("the message arrives within
// 10 s") or gives the server time (a long poll, a call deadline), it
// multiplies that time by TIME_SCALE.  GANTRY_TEST_TIME_SCALE sets it
// (a slow machine: 2 or more); otherwise sanitizer builds (CTest sets
// GANTRY_TEST_SANITIZER) get a default that covers their slowdown.
const SANITIZER_SCALE = { address: 3, thread: 6 };
export const TIME_SCALE = Number(process.env.GANTRY_TEST_TIME_SCALE) ||
  SANITIZER_SCALE[process.env.GANTRY_TEST_SANITIZER] || 1;

// `ms` scaled by TIME_SCALE: for bounds and budgets, never for sleeps.
export function scaled(ms) { return Math.round(ms * TIME_SCALE); }

// Polls `cond` (sync or async) every `everyMs` until it returns truthy;
// resolves to that value.  Rejects naming `what` after scaled(ms).
export async function waitFor(cond, ms, what, everyMs = 20) {
  const deadline = Date.now() + scaled(ms);
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() >= deadline) throw new Error(`timeout after ${scaled(ms)} ms: ${what}`);
    await sleep(everyMs);
  }
}

// ca: a PEM CA (Buffer or string) to speak HTTPS (tls.http) and verify
// the server's certificate for the name localhost.
function httpGet(port, p, ca) {
  return new Promise((resolve) => {
    const o = { host: '127.0.0.1', port, path: p, timeout: scaled(2000) };
    const get = ca ? (cb) => https.get({ ...o, ca, servername: 'localhost' }, cb)
      : (cb) => http.get(o, cb);
    const req = get((res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.on('timeout', () => { req.destroy(); });
  });
}

// Default topics and groups every test server declares.
const DEFAULT_YAML = `
topics:
  - {name: TopicTest, type: NORMAL, queues: 4}
groups:
  - {name: GroupTest, max_delivery_attempts: 4}
`;

// Writes the config and spawns gantry (opts.storeNode: gantry-store, its
// gRPC and HTTP ports in the store_server section).  Returns a handle;
// does not wait.
export async function spawnGantry(opts = {}) {
  // opts.dir reuses an earlier server's directory (data and ports are
  // kept), for restart tests.  Every server gets its own free AMQP port
  // (opts.amqpListen: 'off' or another address instead), so no test binds
  // the default 5672; opts.amqpYaml adds users, vhosts, permissions...
  // opts.remoteStore ("HOST:PORT" of a gantry-store node) sets store.mode
  // remote; opts.remoteYaml adds store keys (indented two spaces).
  // opts.storeYaml: more keys of the store section, indented two spaces
  // (a proxy of a store cluster: `  mode: cluster` and its etcd list).
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-it-'));
  const grpcPort = opts.grpcPort ?? await freePort();
  const httpPort = opts.httpPort ?? await freePort();
  const amqpPort = opts.amqpPort ?? await freePort();
  const cfgPath = path.join(dir, 'gantry.yaml');
  // opts.amqpYaml: more keys of the amqp section, indented two spaces.
  const yaml = `server:
  grpc_listen: "127.0.0.1:${grpcPort}"
  http_listen: "127.0.0.1:${httpPort}"
  shutdown_timeout_ms: ${opts.shutdownTimeoutMs ?? 3000}
${opts.serverYaml ?? ''}
${opts.storeNode ? `store_server:
  listen: "127.0.0.1:${grpcPort}"
  http_listen: "127.0.0.1:${httpPort}"
${opts.storeServerYaml ?? ''}` : ''}
amqp:
  listen: "${opts.amqpListen ?? `127.0.0.1:${amqpPort}`}"
${opts.amqpYaml ?? ''}
log:
  level: ${opts.logLevel ?? 'debug'}
store:
  data_dir: "${path.join(dir, 'data')}"
  flush: ${opts.flush ?? 'sync'}
${opts.remoteStore ? `  mode: remote
  endpoints: ["${opts.remoteStore}"]
${opts.remoteYaml ?? ''}` : ''}
${opts.storeYaml ?? ''}
${opts.yaml ?? DEFAULT_YAML}`;
  fs.writeFileSync(cfgPath, yaml);
  const logPath = path.join(dir, 'gantry.log');
  const logFd = fs.openSync(logPath, 'a');
  const bin = opts.storeNode ? GANTRY_STORE_BIN : GANTRY_BIN;
  const proc = spawn(bin, ['--config', cfgPath, ...(opts.args ?? [])], {
    stdio: ['ignore', logFd, logFd],
    env: {
      ...process.env,
      ...(opts.env ?? {}),
      ...sanitizerEnv(),
    },
  });
  fs.closeSync(logFd);
  const g = {
    proc, pid: proc.pid, dir, cfgPath, logPath, grpcPort, httpPort, amqpPort,
    endpoint: `127.0.0.1:${grpcPort}`,
    log() { return fs.readFileSync(logPath, 'utf8'); },
  };
  running.add(g);
  g.exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      running.delete(g);
      resolve({ code, signal, at: Date.now() });
    });
  });
  return g;
}

// Spawns gantry and waits for /readyz (15 s, scaled).  Throws with the log if it
// exits or never becomes ready.  freePort() cannot reserve a port: another
// process (a second test run picking at random too) may bind it before
// gantry does, so when the ports were picked here and the server could not
// listen, it tries again with new ones.
export async function startGantry(opts = {}) {
  if (REMOTE_STORE && !opts.storeNode && !opts.remoteStore && !opts.storeYaml) {
    return startWithStore(opts);
  }
  const own = opts.grpcPort === undefined && opts.httpPort === undefined && opts.amqpPort === undefined;
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts);
    } catch (e) {
      if (!own || attempt >= 5 || !/cannot listen on .*(in use|Address already)/i.test(e.message)) throw e;
    }
  }
}

async function startOnce(opts) {
  const g = await spawnGantry(opts);
  let exitInfo = null;
  g.exited.then((e) => { exitInfo = e; });
  const deadline = Date.now() + scaled(opts.readyTimeoutMs ?? 15000);
  while (Date.now() < deadline) {
    if (exitInfo) {
      const log = g.log();
      if (!opts.dir && !process.env.GANTRY_KEEP_TMP) fs.rmSync(g.dir, { recursive: true, force: true });
      throw new Error(`gantry exited early (${JSON.stringify(exitInfo)}):\n${log}`);
    }
    // opts.httpsCa: the operator port is HTTPS (tls.http), trusted by this CA
    const r = await httpGet(g.httpPort, '/readyz', opts.httpsCa);
    if (r.status === 200) return g;
    await sleep(50);
  }
  g.proc.kill('SIGKILL');
  throw new Error(`gantry not ready within timeout:\n${g.log()}`);
}

// GANTRY_TEST_STORE=remote runs a test against the remote store: every
// gantry it starts gets its own gantry-store node (started first, with the
// same topics, groups and flush mode) and store.mode remote pointing there.
// A restart (opts.dir of an earlier server) keeps that node, so state
// survives it as it does in a local data dir; stopGantry() without keepDir
// stops the node too.
const REMOTE_STORE = process.env.GANTRY_TEST_STORE === 'remote';
const storeOf = new Map(); // a gantry's dir -> its store node

async function startWithStore(opts) {
  let s = opts.dir ? storeOf.get(opts.dir) : undefined;
  const own = !s;
  if (own) {
    s = await startStore({ logLevel: opts.logLevel, yaml: opts.yaml, flush: opts.flush,
      httpsCa: opts.httpsCa });
  }
  let g;
  try {
    g = await startGantry({ ...opts, remoteStore: s.endpoint });
  } catch (e) {
    if (own) await stopGantry(s).catch(() => {});
    throw e;
  }
  g.store = s;
  storeOf.set(g.dir, s);
  return g;
}

// A gantry-store node (same options and handle as startGantry; its gRPC
// endpoint serves gantry.store.v1).  Stop it with stopGantry().
export function startStore(opts = {}) {
  return startGantry({ ...opts, storeNode: true });
}

export function sanitizerReport(text) {
  return SANITIZER_MARKERS.some((m) => text.includes(m));
}

// Stops gantry with `signal` (SIGTERM by default), waits for it to exit
// (SIGKILL after 10 s, scaled), removes its temp dir unless opts.keepDir, and
// throws if the log holds a sanitizer report.  Returns the exit info.
// Restart: `await stopGantry(g, 'SIGKILL', {keepDir: true})`, then
// `startGantry({dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort})`.
export async function stopGantry(g, signal = 'SIGTERM', opts = {}) {
  if (g.proc.exitCode === null && g.proc.signalCode === null) {
    process.kill(g.pid, signal);
  }
  const killer = setTimeout(() => {
    try { process.kill(g.pid, 'SIGKILL'); } catch { /* gone */ }
  }, scaled(10000));
  const info = await g.exited;
  clearTimeout(killer);
  const log = g.log();
  if (g.store && !opts.keepDir) {
    storeOf.delete(g.dir);
    await stopGantry(g.store);
  }
  if (!opts.keepDir && !process.env.GANTRY_KEEP_TMP) {
    fs.rmSync(g.dir, { recursive: true, force: true });
  }
  if (sanitizerReport(log)) {
    throw new Error(`sanitizer report in gantry log:\n${log}`);
  }
  return { ...info, log };
}

export { httpGet };
