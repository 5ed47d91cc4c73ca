// Overload load generator shared by tests/integration/overload.test.mjs and
// scripts/bench-overload: many raw gRPC senders of large SendMessage
// requests (each on its own connection), a control client doing small
// send + receive round trips on another connection, and a sampler of the
// server's resident memory (/proc/PID/status VmRSS, VmHWM).
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { sanitizerEnv } from './harness.mjs';
import {
  Raw, Code, wireMessage, sendRequest, receiveRequest, splitReceive, ackRequest, pb,
  consumerSettings, sleep,
} from './sdk_util.mjs';

// Resident memory of `pid` in bytes: {rss, hwm}.
export function memOf(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((s.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm')) || [0, 0])[1]) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

function pct(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
}

// Pre-serialized SendMessage requests: `count` variants of `batch`
// messages each with bodies between minBody and maxBody bytes.
function makeRequests(topic, count, batch, minBody, maxBody) {
  const out = [];
  for (let v = 0; v < count; v++) {
    const msgs = [];
    for (let i = 0; i < batch; i++) {
      const n = minBody + Math.floor(((v * batch + i) * 7919) % (maxBody - minBody + 1));
      msgs.push(wireMessage({ topic, body: Buffer.alloc(n, 0x61 + (i % 26)) }));
    }
    out.push(Buffer.from(sendRequest(msgs).serializeBinary()));
  }
  return out;
}

// A control client: small send + receive + ack round trips until o.durationMs
// has passed.  A send not answered OK (refused) is timed, counted in
// `refused` and followed by another send instead of a receive.  Resolves
// {sendP50, sendP99, recvP50, recvP99, n, refused}.
async function control(o) {
  const stopAt = Date.now() + o.durationMs;
  const raw = new Raw(o.endpoint);
  const send = [];
  const recv = [];
  let refused = 0;
  const cg = o.controlGroup;
  const ct = o.controlTopic;
  const { call } = await raw.telemetry(consumerSettings(cg, ct));
  try {
    while (Date.now() < stopAt) {
      let t0 = Date.now();
      const s = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: ct, body: Buffer.from('ping') })]),
        pb.SendMessageResponse, { timeoutMs: 30000 });
      send.push(Date.now() - t0);
      if (s.err || s.resp.getStatus().getCode() !== Code.OK) {
        refused++;
        continue;
      }
      t0 = Date.now();
      const r = await raw.serverStream('ReceiveMessage',
        receiveRequest({ group: cg, topic: ct, batch: 32, longPollMs: 5000 }), pb.ReceiveMessageResponse,
        { timeoutMs: 30000 });
      recv.push(Date.now() - t0);
      const msgs = r.err ? [] : splitReceive(r.resps).messages;
      if (msgs.length > 0) {
        await raw.unary('AckMessage', ackRequest(cg, ct, msgs.map((m) => ({
          id: m.getSystemProperties().getMessageId(),
          handle: m.getSystemProperties().getReceiptHandle(),
        }))), pb.AckMessageResponse);
      }
      await sleep(10);
    }
  } finally {
    call.end();
    raw.close();
  }
  send.sort((a, b) => a - b);
  recv.sort((a, b) => a - b);
  return {
    sendP50: pct(send, 0.5), sendP99: pct(send, 0.99), recvP50: pct(recv, 0.5),
    recvP99: pct(recv, 0.99), n: send.length, refused,
  };
}

// Senders of one thread: o.senders raw connections sending pre-serialized
// requests until o.durationMs has passed; 42900 and other refusals back
// off o.backoffMs.  Resolves {ok, refused, other, otherCodes, lat}.
async function senders(o) {
  const reqs = makeRequests(o.topic, Math.min(8, o.senders), o.batch ?? 1,
    o.minBody, o.maxBody);
  const stats = { ok: 0, refused: 0, other: 0, otherCodes: {}, lat: [] };
  const stopAt = Date.now() + o.durationMs;
  const one = async (k) => {
    const raw = new Raw(o.endpoint);
    try {
      for (let i = 0; Date.now() < stopAt; i++) {
        const r = await raw.unary('SendMessage', reqs[(k + i) % reqs.length],
          pb.SendMessageResponse, { timeoutMs: 60000 });
        stats.lat.push(r.ms);
        const code = r.err ? `grpc:${r.err.code}` : r.resp.getStatus().getCode();
        if (code === Code.OK) {
          stats.ok++;
          continue;
        }
        if (code === Code.TOO_MANY_REQUESTS) stats.refused++;
        else {
          stats.other++;
          stats.otherCodes[code] = (stats.otherCodes[code] ?? 0) + 1;
        }
        await sleep(o.backoffMs ?? 20);
      }
    } finally {
      raw.close();
    }
  };
  await Promise.all([...Array(o.senders).keys()].map((k) => one(k)));
  return stats;
}

function inWorker(data) {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), { workerData: data });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

// o: {endpoint, pid, topic, senders, threads, batch, minBody, maxBody,
//     durationMs, backoffMs, controlTopic, controlGroup}
// Senders run on o.threads worker threads (default 4) and the control
// client on another, so that one event loop does not hold up the rest.
// Resolves {ok, refused, other, otherCodes, sendP50, peakRss, peakHwm,
// control: {sendP50, sendP99, recvP50, recvP99, n, refused} | null}.
export async function runOverload(o) {
  let peakRss = 0;
  const sampler = setInterval(() => {
    try { peakRss = Math.max(peakRss, memOf(o.pid).rss); } catch { /* gone */ }
  }, 20);
  const threads = Math.min(o.threads ?? 4, o.senders);
  const jobs = [];
  for (let t = 0; t < threads; t++) {
    const n = Math.floor(o.senders / threads) + (t < o.senders % threads ? 1 : 0);
    jobs.push(inWorker({ senders: { ...o, senders: n } }));
  }
  const ctl = o.controlTopic ? inWorker({ control: {
    endpoint: o.endpoint, controlTopic: o.controlTopic, controlGroup: o.controlGroup,
    durationMs: o.durationMs,
  } }) : Promise.resolve(null);
  const parts = await Promise.all(jobs);
  const controlStats = await ctl;
  clearInterval(sampler);
  const out = { ok: 0, refused: 0, other: 0, otherCodes: {}, lat: [] };
  for (const p of parts) {
    out.ok += p.ok;
    out.refused += p.refused;
    out.other += p.other;
    for (const [k, v] of Object.entries(p.otherCodes)) out.otherCodes[k] = (out.otherCodes[k] ?? 0) + v;
    out.lat.push(...p.lat);
  }
  out.lat.sort((a, b) => a - b);
  let hwm = 0;
  try { hwm = memOf(o.pid).hwm; } catch { /* gone */ }
  return {
    ok: out.ok, refused: out.refused, other: out.other, otherCodes: out.otherCodes,
    sendP50: pct(out.lat, 0.5), peakRss, peakHwm: hwm, control: controlStats,
  };
}

// The same load and control client in C: bench/gt_bench_overload (the
// grpc C core: it keeps up a far heavier load than node's client on the
// same cores), at o.bin or BENCH_OVERLOAD_BIN.  Resolves what runOverload
// resolves, plus cpu: the client's CPU seconds (it reports its own).
export function runNative(o) {
  const args = ['--target', o.endpoint, '--pid', String(o.pid), '--senders', String(o.senders),
    '--batch', String(o.batch), '--min-body', String(o.minBody), '--max-body', String(o.maxBody),
    '--duration', String(o.durationMs / 1000), '--topic', o.topic,
    '--control-topic', o.controlTopic, '--control-group', o.controlGroup];
  return new Promise((resolve, reject) => {
    // Built with ASan (a sanitizer build's tests), the client itself
    // exits 1 on LeakSanitizer's report of ~100 KB of grpc slices it still
    // holds at exit (seen under scenario B; the client, not gantry, and
    // not looked into): its leaks are not what it is run for.
    const san = sanitizerEnv();
    const p = spawn(o.bin ?? process.env.BENCH_OVERLOAD_BIN, args, {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, ...san, ASAN_OPTIONS: `${san.ASAN_OPTIONS}:detect_leaks=0` },
    });
    let out = '';
    p.once('error', (e) => reject(new Error(`gt_bench_overload: ${e.message}`)));
    p.stdout.on('data', (d) => { out += d; });
    p.once('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('gt_bench_overload: '));
      if (code !== 0 || !line) {
        reject(new Error(`gt_bench_overload exited ${code}: ${out}`));
        return;
      }
      const kv = Object.fromEntries(line.slice(19).trim().split(' ').map((f) => f.split('=')));
      const n = (k) => Number(kv[k]);
      const codesOf = (v) => (v === undefined || v === 'none' ? {} : Object.fromEntries(
        v.split(',').map((f) => [f.replace(/:\d+$/, ''), Number(f.replace(/^.*:/, ''))])));
      const otherCodes = codesOf(kv.other_codes);
      resolve({
        ok: n('ok'), refused: n('refused'), other: n('other'), otherCodes,
        sendP50: n('send_p50_ms'), peakRss: n('peak_rss'), peakHwm: n('peak_hwm'), cpu: n('cpu_s'),
        control: kv.ctl_n === undefined ? null : {
          n: n('ctl_n'), refused: n('ctl_refused'), failCodes: codesOf(kv.ctl_fail_codes),
          sendP50: n('ctl_send_p50_ms'), sendP90: n('ctl_send_p90_ms'), sendP99: n('ctl_send_p99_ms'),
          sendMax: n('ctl_send_max_ms'), recvP50: n('ctl_recv_p50_ms'), recvP90: n('ctl_recv_p90_ms'),
          recvP99: n('ctl_recv_p99_ms'), recvMax: n('ctl_recv_max_ms'),
        },
      });
    });
  });
}

if (!isMainThread && workerData?.control) {
  control(workerData.control).then((r) => parentPort.postMessage(r));
}
if (!isMainThread && workerData?.senders) {
  senders(workerData.senders).then((r) => parentPort.postMessage(r));
}
