// Store-cluster harness (issue 12): a private etcd (one member, or three
// for the etcd-fault case) on loopback ports, gantry-store nodes with a
// `cluster:` section, gantry proxies with `store: {mode: cluster}`, a load
// driver on the official Node.js SDK and a checker.  Every process is
// started and stopped by PID; every wait is for a condition, bounded by
// scaled() time (harness.mjs TIME_SCALE).  tests/integration/chaos.mjs runs
// the fault set on it (scripts/chaos, CTest integration_chaos).
//
// Several replica sets: startCluster({nodes: 6, replicas: 3}) starts the
// nodes R at a time (n1..n3 form rs/0, n4..n6 rs/1) and waits for a
// leader in every complete set; node.set is each node's replica set k,
// c.sets = [{k, members: [ids]}], setsOf(c) reads rs/<k>/ for every k from
// etcd, addNodes(c, n) grows the cluster.  leaderOf/epochOf/isrOf/
// waitHealthy/waitNewLeader take the set k (default 0).
//
// The load: on each proxy a Producer sending NORMAL messages from a few
// loops and FIFO messages of its message groups (each group's sends
// awaited in order), a raw-gRPC "probe" sending one small NORMAL message
// every few ms with a short deadline (it times the write outage: the first
// probe started after a fault that succeeds), and SimpleConsumers of both
// groups receiving and acking.  It records every acknowledged send (the
// message id the proxy answered) and every delivery.  check() then gives:
//   lost  acknowledged sends never delivered
//   dup   deliveries beyond the first of a message id
//   order per FIFO message group, a message delivered for the first time
//         after one of a later sequence number of the same group
//   extra delivered messages whose send was not acknowledged (a send that
//         failed in-band or timed out may still have been stored: allowed)
//   dupUnexplained  deliveries beyond the first that nothing in flight
//         explains (must be 0: "redelivery after failover is bounded to
//         what was in flight").  Each message id is allowed, beyond its
//         first delivery: one more per ack of it that failed, and per ack
//         of it answered after its invisible time (the message was handed
//         out again meanwhile); one more if its send was in flight across
//         a disruption (its [start, answer] overlaps [fault, first write
//         acknowledged after it], or it took longer than scaled 1 s: the
//         proxy or the SDK may have stored it twice, the new leader not
//         knowing the first attempt's idempotency key); for a message
//         whose send was not acknowledged, one more, for at most as many
//         such messages as sends failed.  dupBound is the sum of these
//         allowances over the delivered messages.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  freePort, sleep, scaled, waitFor, TIME_SCALE, spawnGantry, startGantry, stopGantry, httpGet,
  sanitizerReport, GANTRY_BIN, GANTRY_STORE_BIN,
} from './harness.mjs';
import {
  Code, pb, Raw, wireMessage, sendRequest, startProducer, startSimpleConsumer, shutdownQuietly,
  withTimeout, yamlOf,
} from './sdk_util.mjs';

export { scaled, waitFor, TIME_SCALE, sleep };

// ---- processes ------------------------------------------------------------

// Every child started here, so that a crash or an interrupt of the runner
// leaves none behind (a stopped one is continued first so it can die).
const live = new Map(); // pid -> ChildProcess
function track(proc) {
  live.set(proc.pid, proc);
  proc.on('exit', () => live.delete(proc.pid));
}
function killAllSync() {
  for (const pid of live.keys()) {
    try { process.kill(pid, 'SIGCONT'); } catch { /* gone */ }
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
}
process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => { killAllSync(); process.exit(130); });
}

function alive(proc) { return proc.exitCode === null && proc.signalCode === null; }

// Waits for a process to exit, SIGKILLing it after scaled(ms).
async function reap(proc, exited, ms = 10000) {
  if (!alive(proc)) return exited;
  const killer = setTimeout(() => {
    try { process.kill(proc.pid, 'SIGKILL'); } catch { /* gone */ }
  }, scaled(ms));
  const info = await exited;
  clearTimeout(killer);
  return info;
}

// ---- etcd -----------------------------------------------------------------

function spawnEtcd(e, m) {
  const cu = `http://127.0.0.1:${m.client}`;
  const pu = `http://127.0.0.1:${m.peer}`;
  const fd = fs.openSync(path.join(e.dir, `${m.name}.log`), 'a');
  const proc = spawn('etcd', [
    '--name', m.name, '--data-dir', m.dataDir,
    '--listen-client-urls', cu, '--advertise-client-urls', cu,
    '--listen-peer-urls', pu, '--initial-advertise-peer-urls', pu,
    '--initial-cluster', e.initialCluster, '--initial-cluster-state', 'new',
    '--initial-cluster-token', e.token,
  ], { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  track(proc);
  m.proc = proc;
  m.pid = proc.pid;
  m.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
}

async function etcdHealthy(m) {
  const r = await httpGet(m.client, '/health');
  return r.status === 200 && /"health":\s*"true"/.test(r.body);
}

// Starts `members` etcd members on loopback ports and waits until each
// answers /health (a 3-member cluster: until it has a quorum and a leader).
export async function startEtcd({ members = 1 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-etcd-'));
  const ms = [];
  for (let i = 0; i < members; i++) {
    ms.push({ name: `e${i + 1}`, client: await freePort(), peer: await freePort(),
      dataDir: path.join(dir, `e${i + 1}.data`) });
  }
  const e = {
    dir, members: ms, token: path.basename(dir),
    initialCluster: ms.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(','),
    endpoints: ms.map((m) => `127.0.0.1:${m.client}`),
  };
  for (const m of ms) spawnEtcd(e, m);
  await waitFor(async () => {
    for (const m of ms) {
      if (!alive(m.proc)) throw new Error(`etcd ${m.name} exited:\n${etcdLog(e, m)}`);
    }
    return (await Promise.all(ms.map(etcdHealthy))).every(Boolean);
  }, 30000, 'etcd healthy', 100);
  return e;
}

function etcdLog(e, m) {
  try { return fs.readFileSync(path.join(e.dir, `${m.name}.log`), 'utf8').slice(-4000); } catch { return ''; }
}

export async function killEtcdMember(e, m, signal = 'SIGKILL') {
  try { process.kill(m.pid, signal); } catch { /* gone */ }
  await reap(m.proc, m.exited);
}

// Restarts a member on its data dir and ports (it rejoins the cluster).
export async function restartEtcdMember(e, m) {
  spawnEtcd(e, m);
  await waitFor(async () => etcdHealthy(m), 30000, `etcd ${m.name} healthy again`, 100);
}

export async function stopEtcd(e) {
  for (const m of e.members) {
    if (m.proc && alive(m.proc)) {
      try { process.kill(m.pid, 'SIGTERM'); } catch { /* gone */ }
      await reap(m.proc, m.exited);
    }
  }
  if (!process.env.GANTRY_KEEP_TMP) fs.rmSync(e.dir, { recursive: true, force: true });
}

const b64 = (s) => Buffer.from(s).toString('base64');

// One key's value (a string) through etcd's JSON gateway, from any member
// that answers; undefined if the key is absent or no member answers.
export async function etcdGet(e, key) {
  for (const ep of e.endpoints) {
    try {
      const r = await fetch(`http://${ep}/v3/kv/range`, {
        method: 'POST', body: JSON.stringify({ key: b64(key) }),
        signal: AbortSignal.timeout(scaled(2000)),
      });
      if (!r.ok) continue;
      const j = await r.json();
      const kv = j.kvs?.[0];
      return kv ? Buffer.from(kv.value ?? '', 'base64').toString() : undefined;
    } catch { /* next member */ }
  }
  return undefined;
}

// Puts one key (a string value) through the first member that answers;
// throws when none does.
export async function etcdPut(e, key, value) {
  for (const ep of e.endpoints) {
    try {
      const r = await fetch(`http://${ep}/v3/kv/put`, {
        method: 'POST', body: JSON.stringify({ key: b64(key), value: b64(value) }),
        signal: AbortSignal.timeout(scaled(3000)),
      });
      if (r.ok) return;
    } catch { /* next member */ }
  }
  throw new Error(`etcd put ${key}: no member answered`);
}

// Every key under `prefix` -> Map key -> value (strings); undefined if no
// member answers.
export async function etcdGetPrefix(e, prefix) {
  const end = Buffer.from(prefix);
  end[end.length - 1]++;
  for (const ep of e.endpoints) {
    try {
      const r = await fetch(`http://${ep}/v3/kv/range`, {
        method: 'POST', body: JSON.stringify({ key: b64(prefix), range_end: end.toString('base64') }),
        signal: AbortSignal.timeout(scaled(2000)),
      });
      if (!r.ok) continue;
      const j = await r.json();
      return new Map((j.kvs ?? []).map((kv) => [Buffer.from(kv.key, 'base64').toString(),
        Buffer.from(kv.value ?? '', 'base64').toString()]));
    } catch { /* next member */ }
  }
  return undefined;
}

// ---- the store cluster ------------------------------------------------------

export const T = 'ChaosTopic';
export const TF = 'ChaosFifo';
export const G = 'ChaosGroup';
export const GF = 'ChaosFifoGroup';

// Topics and groups every process of the cluster declares.  Many delivery
// attempts: a message must never go to the dead-letter queue because acks
// failed during faults (the checker would count it lost).
export const TOPICS_YAML = `topics:
  - {name: "${T}", type: NORMAL, queues: 4}
  - {name: "${TF}", type: FIFO, queues: 2}
groups:
  - {name: "${G}", max_delivery_attempts: 1000}
  - {name: "${GF}", fifo: true, max_delivery_attempts: 1000}
`;

// Cluster timings for tests: a short lease, scaled for slow builds.
export const LEASE_TTL_S = Math.max(2, Math.ceil(2 * TIME_SCALE));

function clusterYaml(c, nodeId) {
  return `cluster:
  etcd: [${c.etcd.endpoints.map((x) => `"${x}"`).join(', ')}]
  name: "${c.name}"
  node_id: "${nodeId}"
${c.leaseTtlS ? `  lease_ttl_s: ${c.leaseTtlS}\n` : ''}  replicas: ${c.replicas}
${c.minInsync ? `  min_insync: ${c.minInsync}\n` : ''}${c.replicaLagMs ? `  replica_lag_ms: ${c.replicaLagMs}\n` : ''}`;
}

function proxyStoreYaml(c) {
  return `  mode: cluster
  etcd: [${c.etcd.endpoints.map((x) => `"${x}"`).join(', ')}]
  cluster_name: "${c.name}"
  remote_timeout_ms: ${scaled(2000)}
`;
}

// Writes the two configs a cluster needs and asks the binaries whether
// they accept them (--check-config): null if both do, else the reason.
// Used before the cluster pieces exist in a build, to skip (with the
// reason) instead of failing on a config the build cannot read.
export async function clusterSupport() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-chaos-check-'));
  try {
    const c = { etcd: { endpoints: ['127.0.0.1:2379'] }, name: 'check', leaseTtlS: 2,
      replicas: 3, minInsync: 2, replicaLagMs: 2000 };
    const node = path.join(dir, 'node.yaml');
    fs.writeFileSync(node, `store: {data_dir: "${dir}/d", flush: sync}\n${clusterYaml(c, 'n1')}`);
    const proxy = path.join(dir, 'proxy.yaml');
    fs.writeFileSync(proxy, `store:\n  data_dir: "${dir}/p"\n${proxyStoreYaml(c)}`);
    for (const [bin, cfg] of [[GANTRY_STORE_BIN, node], [GANTRY_BIN, proxy]]) {
      const r = await run(bin, ['--check-config', cfg]);
      if (r.code !== 0) {
        return `${path.basename(bin)} does not accept the cluster config: ${r.out.trim().split('\n').slice(-2).join(' | ')}`;
      }
    }
    return null;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function run(bin, args) {
  return new Promise((resolve) => {
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.stderr.on('data', (d) => { out += d; });
    p.on('error', (err) => resolve({ code: -1, out: String(err) }));
    p.on('exit', (code) => resolve({ code, out }));
  });
}

// Spawns a store node (a new one, or node.h's again on its dir and ports)
// and waits until its HTTP endpoint answers /healthz (a follower or a
// standby node need not be ready: readiness is the leader's).
async function spawnNode(c, node) {
  const old = node.h;
  const h = await spawnGantry({
    storeNode: true, logLevel: c.logLevel, flush: 'sync',
    yaml: TOPICS_YAML + clusterYaml(c, node.id),
    dir: old?.dir, grpcPort: old?.grpcPort, httpPort: old?.httpPort, amqpPort: old?.amqpPort,
    amqpListen: 'off',
  });
  track(h.proc);
  node.h = h;
  node.pid = h.pid;
  await waitFor(async () => {
    if (!alive(h.proc)) throw new Error(`store node ${node.id} exited at start:\n${h.log().slice(-4000)}`);
    return (await httpGet(h.httpPort, '/healthz')).status === 200;
  }, 30000, `store node ${node.id} healthy`, 50);
  return node;
}

// Starts etcd (etcdMembers), `nodes` store nodes n1.. and `proxies`
// proxies in cluster mode; waits for a leader in every complete replica
// set and for a write through each proxy.  More nodes than `replicas` start
// R at a time, each group listed in its set before the next starts (n1..nR
// in rs/0, the next R in rs/1...).  Returns the cluster handle.
export async function startCluster(opts = {}) {
  const c = {
    name: opts.name ?? 'chaos',
    // null: the build's default lease TTL (the bench's failover figures)
    leaseTtlS: opts.leaseTtlS === undefined ? LEASE_TTL_S : opts.leaseTtlS,
    replicas: opts.replicas ?? 3,
    // null: the build's default
    minInsync: opts.minInsync === undefined ? 2 : opts.minInsync,
    replicaLagMs: opts.replicaLagMs === undefined ? scaled(2000) : opts.replicaLagMs,
    logLevel: opts.logLevel ?? 'info',
    nodes: [], proxies: [], etcd: null, sets: [],
  };
  try {
    c.etcd = await startEtcd({ members: opts.etcdMembers ?? 1 });
    await addNodes(c, opts.nodes ?? 3, { waitLeaders: false, together: opts.together });
    await waitLeaders(c);
    for (let i = 0; i < (opts.proxies ?? 2); i++) {
      const p = await startGantry({ logLevel: c.logLevel, yaml: TOPICS_YAML,
        storeYaml: proxyStoreYaml(c), amqpListen: 'off', readyTimeoutMs: 60000 });
      track(p.proc);
      c.proxies.push(p);
    }
    for (const p of c.proxies) await waitWritable(p);
    return c;
  } catch (e) {
    await stopCluster(c).catch(() => {});
    throw e;
  }
}

// Starts `n` more store nodes (ids following the last), R at a time, each
// group listed in a replica set before the next starts (together: all at
// once, racing for the sets); fills node.set and c.sets; then
// (waitLeaders, default true) waits for a leader in every complete set.
// Returns the new nodes.
export async function addNodes(c, n, { waitLeaders: wl = true, together = false } = {}) {
  const added = [];
  for (let i = 0; i < n; i++) added.push({ id: `n${c.nodes.length + added.length + 1}` });
  c.nodes.push(...added);
  const step = together ? added.length : c.replicas;
  for (let i = 0; i < added.length; i += step) {
    const group = added.slice(i, i + step);
    await Promise.all(group.map((node) => spawnNode(c, node)));
    await waitFor(async () => {
      await refreshSets(c);
      return group.every((node) => node.set !== undefined);
    }, 30000, `nodes ${group.map((x) => x.id)} listed in a replica set`, 50);
  }
  if (wl) await waitLeaders(c);
  return added;
}

// Reads every rs/<k>/ from etcd: [{k, members, leader, epoch, isr: {epoch,
// ids}}] by k (members listed, leader id or undefined).
export async function setsOf(c) {
  const kv = await etcdGetPrefix(c.etcd, `/gantry/${c.name}/rs/`);
  const byK = new Map();
  for (const [key, v] of kv ?? []) {
    const m = key.match(/\/rs\/(\d+)\/(members|leader|epoch|isr|history)$/);
    if (!m) continue;
    const k = Number(m[1]);
    if (!byK.has(k)) byK.set(k, { k, members: [], leader: undefined, epoch: 0, isr: { epoch: NaN, ids: [] } });
    const s = byK.get(k);
    if (m[2] === 'members') s.members = v.split(',').filter(Boolean);
    else if (m[2] === 'leader') s.leader = v;
    else if (m[2] === 'epoch') s.epoch = Number(v);
    else if (m[2] === 'isr') s.isr = parseIsr(v);
    else s.history = v;
  }
  return [...byK.values()].sort((a, b) => a.k - b.k);
}

// node.set from the member lists in etcd (and c.sets).
export async function refreshSets(c) {
  const sets = await setsOf(c);
  c.sets = sets.map((s) => ({ k: s.k, members: s.members }));
  for (const node of c.nodes) {
    const s = sets.find((x) => x.members.includes(node.id));
    node.set = s?.k;
  }
  return sets;
}

// Waits until every complete replica set (R members) has a running leader.
export async function waitLeaders(c, ms = 60000) {
  await waitFor(async () => {
    const sets = await refreshSets(c);
    const full = sets.filter((s) => s.members.length >= c.replicas);
    if (full.length === 0) return false;
    for (const s of full) {
      if (!(await leaderOf(c, s.k))) return false;
    }
    return true;
  }, ms, 'a store leader elected in every replica set', 100);
}

// The store leader's node of replica set k (from etcd's leader key, when
// that node runs).
export async function leaderOf(c, k = 0) {
  const id = await etcdGet(c.etcd, `/gantry/${c.name}/rs/${k}/leader`);
  return c.nodes.find((n) => n.id === id && n.h && alive(n.h.proc));
}

export async function epochOf(c, k = 0) {
  return Number(await etcdGet(c.etcd, `/gantry/${c.name}/rs/${k}/epoch`) ?? NaN);
}

function parseIsr(v) {
  if (!v) return { epoch: NaN, ids: [] };
  const [e, ids] = v.split(':');
  return { epoch: Number(e), ids: ids ? ids.split(',').filter(Boolean) : [] };
}

// The in-sync set of replica set k from etcd: {epoch, ids}.
export async function isrOf(c, k = 0) {
  return parseIsr(await etcdGet(c.etcd, `/gantry/${c.name}/rs/${k}/isr`));
}

// A healthy replica set k: a running leader and every replica in the
// in-sync set.
export async function waitHealthy(c, ms = 120000, k = 0) {
  await waitFor(async () => {
    const l = await leaderOf(c, k);
    if (!l) return false;
    const isr = await isrOf(c, k);
    return isr.ids.length >= c.replicas;
  }, ms, `a leader and a full in-sync set in rs/${k}`, 100);
}

export async function waitNewLeader(c, old, ms = 120000, k = old.set ?? 0) {
  return waitFor(async () => {
    const l = await leaderOf(c, k);
    return l && l !== old ? l : null;
  }, ms, `a leader of rs/${k} other than ${old.id}`, 50);
}

// {role (0 standby, 1 leader, 2 follower), epoch, set (replica set k, -1
// unknown)} from a node's /metrics; null if it does not answer.
export async function roleOf(node) {
  const r = await httpGet(node.h.httpPort, '/metrics');
  if (r.status !== 200) return null;
  const num = (name) => Number(r.body.match(new RegExp(`^${name} (-?\\d+)`, 'm'))?.[1] ?? NaN);
  return { role: num('gantry_store_role'), epoch: num('gantry_store_epoch'),
    set: num('gantry_store_replica_set') };
}

// The other nodes of the leader's replica set.
export function followersOf(c, leader) {
  return c.nodes.filter((n) => n !== leader && n.set === leader.set);
}

// Sends raw NORMAL messages through proxy p until one succeeds.
export async function waitWritable(p, ms = 60000) {
  const raw = new Raw(p.endpoint);
  try {
    await waitFor(async () => {
      const r = await rawSend(raw, 'ready', scaled(2000));
      return r.ok;
    }, ms, `a write through proxy ${p.endpoint}`, 100);
  } finally {
    raw.close();
  }
}

async function rawSend(raw, body, timeoutMs) {
  const m = wireMessage({ topic: T, body: Buffer.from(body), props: { kind: 'probe' } });
  const r = await raw.unary('SendMessage', sendRequest([m]), pb.SendMessageResponse, { timeoutMs });
  const ok = r.err === null && r.resp.getStatus().getCode() === Code.OK;
  return { ok, id: ok ? r.resp.getEntriesList()[0].getMessageId() : undefined };
}

// Signals a node: SIGKILL (reaped, state kept for restartNode), SIGSTOP,
// SIGCONT.  Returns the time the signal was sent.
export async function signalNode(node, signal) {
  const at = Date.now();
  try { process.kill(node.pid, signal); } catch { /* gone */ }
  if (signal === 'SIGKILL') await reap(node.h.proc, node.h.exited);
  return at;
}

export async function restartNode(c, node) {
  checkLog(node.h);
  return spawnNode(c, node);
}

// When leaders stood down at or after `since` (ms since the epoch, from
// the nodes' own log lines), earliest first.
export function standDowns(c, since = 0) {
  const at = [];
  for (const n of c.nodes) {
    if (!n.h) continue;
    for (const m of n.h.log().matchAll(/^(\S+Z) warn\s+\[cluster\] [^\n]*standing down \(was leader\)/gm)) {
      const t = Date.parse(m[1]);
      if (t >= since) at.push(t);
    }
  }
  return at.sort((a, b) => a - b);
}

function checkLog(h) {
  const log = h.log();
  if (sanitizerReport(log)) throw new Error(`sanitizer report in ${h.dir}/gantry.log:\n${log.slice(-6000)}`);
}

// Drops the page cache (clean pages of every file; needs root).  Returns
// null if done, else why not.
export function dropCaches() {
  try {
    fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
    return null;
  } catch (e) {
    return `cannot drop the page cache: ${e.code ?? e.message}`;
  }
}

export async function stopCluster(c) {
  const errs = [];
  for (const p of c.proxies) {
    try { await stopGantry(p); } catch (e) { errs.push(e); }
  }
  for (const n of c.nodes) {
    if (!n.h) continue;
    try { process.kill(n.pid, 'SIGCONT'); } catch { /* gone */ }
    try { await stopGantry(n.h); } catch (e) { errs.push(e); }
  }
  if (c.etcd) await stopEtcd(c.etcd);
  if (errs.length) throw errs[0];
}

// ---- load -------------------------------------------------------------------

// opts: {normalLoops (per proxy, 2), fifoGroups (per proxy, 2), paceMs
// (between one loop's sends, 5), probeEveryMs (20), probeDeadlineMs
// (scaled 2 s), invisibleMs (10 s), consumers (true)}.
export class Load {
  constructor(proxies, opts = {}) {
    this.proxies = proxies;
    this.o = { normalLoops: 2, fifoGroups: 2, paceMs: 5, probeEveryMs: 20,
      invisibleMs: scaled(10000), ...opts };
    this.acked = new Map();      // id -> {kind, mg, seq}
    this.deliveries = [];        // {id, mg, seq, at}
    this.writes = [];            // acked writes: {start, end}
    this.disruptions = [];       // {start: fault, end: first write after}
    this.ackFailed = new Map();  // id -> acks of it that failed
    this.lateAcks = new Map();   // id -> acks answered after its invisible time
    this.failedSends = 0;
    this.failedProbes = 0;
    this.recvErrors = 0;
    this.ackErrors = 0;
    this.sending = false;
    this.consuming = false;
    this.loops = [];
    this.consumerLoops = [];
    this.clients = [];
    this.raws = [];
    this.seq = 0;
  }

  async start() {
    this.consuming = true;
    for (const p of this.o.consumers === false ? [] : this.proxies) {
      const cn = await startSimpleConsumer(p, G, T);
      const cf = await startSimpleConsumer(p, GF, TF);
      this.clients.push(cn, cf);
      this.consumerLoops.push(this.consume(cn), this.consume(cf));
    }
    this.sending = true;
    let mgN = 0;
    for (const p of this.proxies) {
      if (this.o.normalLoops + this.o.fifoGroups > 0) {
        const producer = await startProducer(p, [T, TF]);
        this.clients.push(producer);
        for (let i = 0; i < this.o.normalLoops; i++) this.loops.push(this.sendNormal(producer));
        for (let i = 0; i < this.o.fifoGroups; i++) this.loops.push(this.sendFifo(producer, `mg${mgN++}`));
      }
      const raw = new Raw(p.endpoint);
      this.raws.push(raw);
    }
    this.loops.push(this.probe());
  }

  record(id, meta, start) {
    const end = Date.now();
    this.acked.set(id, { ...meta, start, end });
    this.writes.push({ start, end });
  }

  async sendNormal(producer) {
    while (this.sending) {
      const start = Date.now();
      const n = this.seq++;
      try {
        const r = await producer.send({ topic: T, tag: 'n', body: Buffer.from(`n${n}`),
          properties: new Map([['kind', 'normal']]) });
        this.record(r.messageId, { kind: 'normal' }, start);
      } catch {
        this.failedSends++;
        await sleep(50); // back off a little: do not spin on a failed store
      }
      await sleep(this.o.paceMs);
    }
  }

  // One message group's sends, each awaited before the next: the order the
  // group's messages were stored in is their seq order.  A failed send is
  // not retried (its seq may or may not be stored); the next seq follows.
  async sendFifo(producer, mg) {
    for (let seq = 0; this.sending; seq++) {
      const start = Date.now();
      try {
        const r = await producer.send({ topic: TF, tag: 'f', messageGroup: mg,
          body: Buffer.from(`${mg}:${seq}`),
          properties: new Map([['kind', 'fifo'], ['mg', mg], ['seq', String(seq)]]) });
        this.record(r.messageId, { kind: 'fifo', mg, seq }, start);
      } catch {
        this.failedSends++;
        await sleep(50);
      }
      await sleep(this.o.paceMs);
    }
  }

  // Small raw sends started every probeEveryMs whatever the others do
  // (each with a deadline of probeDeadlineMs, so at most deadline / every
  // of them in flight): their successes time a write outage to within
  // probeEveryMs.
  async probe() {
    const inflight = new Set();
    const deadline = this.o.probeDeadlineMs ?? scaled(2000);
    const cap = Math.ceil(deadline / this.o.probeEveryMs) + 1;
    let i = 0;
    while (this.sending) {
      if (inflight.size < cap) {
        const raw = this.raws[i++ % this.raws.length];
        const start = Date.now();
        const p = rawSend(raw, `p${i}`, deadline).then((r) => {
          if (r.ok && r.id) this.record(r.id, { kind: 'probe' }, start);
          else this.failedProbes++;
        }, () => { this.failedProbes++; }).finally(() => inflight.delete(p));
        inflight.add(p);
      }
      await sleep(this.o.probeEveryMs);
    }
    await Promise.all(inflight);
  }

  async consume(consumer) {
    while (this.consuming) {
      if (this.paused) {
        await sleep(50);
        continue;
      }
      let msgs;
      try {
        msgs = await consumer.receive(16, this.o.invisibleMs);
      } catch {
        this.recvErrors++;
        await sleep(100);
        continue;
      }
      const got = Date.now();
      const bump = (map, id) => map.set(id, (map.get(id) ?? 0) + 1);
      for (const m of msgs) {
        const seq = m.properties.get('seq');
        this.deliveries.push({ id: m.messageId, mg: m.properties.get('mg'),
          seq: seq === undefined ? undefined : Number(seq), at: Date.now() });
        try {
          await consumer.ack(m);
          if (Date.now() - got > this.o.invisibleMs) bump(this.lateAcks, m.messageId);
        } catch {
          this.ackErrors++; // delivered again after its invisible time
          bump(this.ackFailed, m.messageId);
        }
      }
    }
  }

  // Stops receiving (receives in flight finish) until resume().
  pause() { this.paused = true; }
  resume() { this.paused = false; }

  // Acknowledged sends not delivered yet.
  undelivered() {
    const got = new Set(this.deliveries.map((d) => d.id));
    let n = 0;
    for (const id of this.acked.keys()) if (!got.has(id)) n++;
    return n;
  }

  // The first acknowledged write started at or after `t`: ms from t to its
  // answer; undefined if none yet.
  writeAfter(t) {
    let best;
    for (const w of this.writes) {
      if (w.start >= t && (best === undefined || w.end < best)) best = w.end;
    }
    return best === undefined ? undefined : best - t;
  }

  // Also records [t, that answer] as a disruption (check(): dupUnexplained).
  async waitWriteAfter(t, ms = 60000) {
    await waitFor(() => this.writeAfter(t) !== undefined, ms, 'a write acknowledged after the fault', 20);
    const after = this.writeAfter(t);
    this.disruptions.push({ start: t, end: t + after });
    return after;
  }

  async waitAcked(n, ms = 60000) {
    const base = this.acked.size;
    await waitFor(() => this.acked.size >= base + n, ms, `${n} more acknowledged sends`, 20);
  }

  async stopSending() {
    this.sending = false;
    await withTimeout(Promise.all(this.loops), scaled(60000), 'producer loops to end');
  }

  // Waits until every acknowledged send (started at or after `since`, if
  // given) was delivered (bounded), then stops the consumers.
  async drain(ms = 60000, since = undefined) {
    const done = () => {
      if (since === undefined) return check(this).lost === 0;
      const got = new Set(this.deliveries.map((d) => d.id));
      for (const [id, m] of this.acked) if (m.start >= since && !got.has(id)) return false;
      return true;
    };
    try {
      await waitFor(done, ms, 'every acknowledged send delivered', 100);
    } catch { /* check() reports what is missing */ }
    this.consuming = false;
    await withTimeout(Promise.all(this.consumerLoops), scaled(60000), 'consumer loops to end')
      .catch(() => {});
  }

  async close() {
    this.sending = false;
    this.consuming = false;
    for (const r of this.raws) r.close();
    await shutdownQuietly(...this.clients);
  }
}

// A send in flight across a disruption (check(): dupUnexplained).
export const SLOW_SEND_MS = scaled(1000);
function inFlight(a, disruptions) {
  if (a.start === undefined || a.end === undefined) return false;
  if (a.end - a.start > SLOW_SEND_MS) return true;
  return disruptions.some((d) => a.start <= d.end && a.end >= d.start);
}

// The checker (see the header).  rec: {acked: Map id -> {kind, mg, seq,
// start, end}, deliveries: [{id, mg, seq}], and optionally disruptions,
// ackFailed, lateAcks, failedSends, failedProbes (Load's)}.
export function check(rec) {
  const count = new Map();
  for (const d of rec.deliveries) count.set(d.id, (count.get(d.id) ?? 0) + 1);
  const lostIds = [];
  for (const id of rec.acked.keys()) if (!count.has(id)) lostIds.push(id);
  let dup = 0;
  let extra = 0;
  let dupBound = 0;
  let dupUnexplained = 0;
  let extraDoubled = 0;
  const dupSamples = [];
  const failedWrites = (rec.failedSends ?? 0) + (rec.failedProbes ?? 0);
  for (const [id, n] of count) {
    dup += n - 1;
    const a = rec.acked.get(id);
    if (!a) extra++;
    let allow = (rec.ackFailed?.get(id) ?? 0) + (rec.lateAcks?.get(id) ?? 0);
    if (a ? inFlight(a, rec.disruptions ?? []) : n - 1 > allow) {
      allow++;
      if (!a) extraDoubled++;
    }
    dupBound += allow;
    if (n - 1 > allow) {
      dupUnexplained += n - 1 - allow;
      if (dupSamples.length < 5) dupSamples.push(`${id} x${n}`);
    }
  }
  // The unacknowledged sends stored twice: at most one per failed send.
  if (extraDoubled > failedWrites) {
    dupUnexplained += extraDoubled - failedWrites;
    dupBound -= extraDoubled - failedWrites;
  }
  // Per group, first deliveries of each seq in delivery order must rise.
  const seen = new Map(); // mg -> {max, seqs: Set}
  let order = 0;
  const orderSamples = [];
  for (const d of rec.deliveries) {
    if (d.mg === undefined || d.seq === undefined) continue;
    let s = seen.get(d.mg);
    if (!s) { s = { max: -1, seqs: new Set() }; seen.set(d.mg, s); }
    if (s.seqs.has(d.seq)) continue;
    s.seqs.add(d.seq);
    if (d.seq < s.max) {
      order++;
      if (orderSamples.length < 5) orderSamples.push(`${d.mg}: ${d.seq} after ${s.max}`);
    }
    s.max = Math.max(s.max, d.seq);
  }
  return { acked: rec.acked.size, delivered: count.size, lost: lostIds.length,
    lostIds: lostIds.slice(0, 10), dup, extra, order, orderSamples, dupBound, dupUnexplained,
    dupSamples };
}
