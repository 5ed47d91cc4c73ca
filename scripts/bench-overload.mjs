// Driver of scripts/bench-overload (see there).
import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { startGantry, stopGantry, sleep } from '../tests/integration/harness.mjs';
import { runOverload, runNative, memOf } from '../tests/integration/overload_load.mjs';

const MiB = 1024 * 1024;
const bound = Number(process.env.BENCH_BOUND_MIB ?? 128) * MiB;
const secs = Number(process.env.BENCH_SECONDS ?? 15);
const want = (process.env.BENCH_SCENARIOS ?? '0,A,B,C').split(',');
const servers = (process.env.BENCH_SERVER ?? 'gantry').split(',');
const client = process.env.BENCH_CLIENT ?? 'native';
const scenarios = [
  { name: '0', what: 'no load (the control client alone)', senders: 0, batch: 1, minBody: 1, maxBody: 1 },
  { name: 'A', what: '200 senders x 1 msg of 1-4 MiB', senders: 200, batch: 1, minBody: MiB, maxBody: 4 * MiB },
  { name: 'B', what: '8 senders x 128 MiB batches (32 x 4 MiB)', senders: 8, batch: 32, minBody: 4 * MiB, maxBody: 4 * MiB },
  { name: 'C', what: '8 senders x 32 MiB batches (8 x 4 MiB)', senders: 8, batch: 8, minBody: 4 * MiB - 1024, maxBody: 4 * MiB - 1024 },
].filter((s) => want.includes(s.name));

const yaml = `
topics:
  - {name: Load, type: NORMAL, queues: 8}
  - {name: Control, type: NORMAL, queues: 1}
groups:
  - {name: ControlGroup}
`;
const mib = (n) => (n / MiB).toFixed(0);

// CPU seconds used so far: a process (utime + stime of /proc/PID/stat),
// and the whole machine (every CPU's busy time, /proc/stat).
function cpuOf(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15, USER_HZ 100
}
function machineCpu() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100; // user nice system irq softirq steal
}
const selfCpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

// gt_bench_empty on the same runtime and bound: what the load costs
// without a store.  Resolves {pid, endpoint, stop()}.
async function startEmpty() {
  const bin = process.env.BENCH_EMPTY_BIN;
  const p = spawn(bin, ['--threads', '0', '--max-inflight-bytes', String(bound),
    '--max-conn-inflight-bytes', String(64 * MiB)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/listening on port (\d+)/);
      if (m) resolve(m[1]);
    });
    p.once('exit', () => reject(new Error(`gt_bench_empty exited: ${out}`)));
  });
  return {
    pid: p.pid, endpoint: `127.0.0.1:${port}`,
    stop: () => new Promise((resolve) => { p.once('exit', resolve); p.kill('SIGTERM'); }),
  };
}

console.log(`bound (server.max_inflight_bytes): ${mib(bound)} MiB; target peak <= ${mib(bound + 128 * MiB)} MiB, control p99 <= 100 ms`);
console.log(`client: ${client === 'node' ? 'node (overload_load.mjs)' : 'gt_bench_overload'}; load average ${(await import('node:os')).loadavg().map((x) => x.toFixed(2)).join(' ')}`);
console.log(`machine: ${(await import('node:os')).cpus().length} CPUs; CPU figures are seconds of CPU over the scenario (server, this client, everything else on the machine)`);
for (const server of servers) for (const s of scenarios) {
  const g = server === 'empty' ? await startEmpty() : await startGantry({
    yaml, logLevel: 'info', flush: process.env.BENCH_FLUSH ?? 'sync',
    serverYaml: `  max_inflight_bytes: ${bound}` +
      (process.env.BENCH_THREADS ? `\n  threads: ${Number(process.env.BENCH_THREADS)}` : ''),
  });
  try {
    await sleep(300);
    const idle0 = memOf(g.pid).rss;
    const c0 = { srv: cpuOf(g.pid), me: selfCpu(), all: machineCpu(), t: Date.now() };
    const run = client === 'node' ? runOverload : runNative;
    const r = await run({
      endpoint: g.endpoint, pid: g.pid, topic: 'Load', senders: s.senders, batch: s.batch,
      minBody: s.minBody, maxBody: s.maxBody, durationMs: secs * 1000,
      controlTopic: 'Control', controlGroup: 'ControlGroup',
    });
    if (server !== 'empty' && (g.proc.exitCode !== null || g.proc.signalCode !== null)) {
      console.log(`\n${s.name}: ${s.what}: gantry DIED during the scenario (exit code ${g.proc.exitCode}, signal ${g.proc.signalCode})`);
      process.exitCode = 1;
      continue;
    }
    const c1 = { srv: cpuOf(g.pid), me: selfCpu(), all: machineCpu(), t: Date.now() };
    await sleep(1500);
    const idle1 = memOf(g.pid).rss;
    const peak = Math.max(r.peakRss, r.peakHwm);
    const pass = (ok) => (ok ? 'PASS' : 'MISS');
    const me = (c1.me - c0.me) + (r.cpu ?? 0); // the driver, plus a native client
    const cs = { srv: c1.srv - c0.srv, me, all: c1.all - c0.all, wall: (c1.t - c0.t) / 1000 };
    console.log(`\n${s.name}: ${s.what}, ${secs} s, server ${server === 'empty' ? 'gt_bench_empty' : 'gantry'}; load average ${(await import('node:os')).loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    console.log(`  CPU over ${cs.wall.toFixed(1)} s: server ${cs.srv.toFixed(1)} s, client ${cs.me.toFixed(1)} s, others ${Math.max(0, cs.all - cs.srv - cs.me).toFixed(1)} s (of ${(cs.wall * (await import('node:os')).cpus().length).toFixed(1)})`);
    console.log(`  RSS before ${mib(idle0)} MiB, peak ${mib(peak)} MiB (sampled ${mib(r.peakRss)}, VmHWM ${mib(r.peakHwm)}), idle after ${mib(idle1)} MiB   [${pass(peak <= bound + 128 * MiB)}]`);
    console.log(`  sends ok ${r.ok}, refused 42900 ${r.refused}, other ${r.other} ${JSON.stringify(r.otherCodes)}; sender p50 ${r.sendP50} ms`);
    if (r.control) {
      const c = r.control;
      console.log(`  control: ${c.n} sends (${c.refused} not OK${c.refused && c.failCodes ? ' ' + JSON.stringify(c.failCodes) : ''}), send p50/p99 ${c.sendP50}/${c.sendP99} ms, receive p50/p99 ${c.recvP50}/${c.recvP99} ms   [${pass(Math.max(c.sendP99, c.recvP99) <= 100)}]`);
      if (c.sendMax !== undefined) console.log(`    send p90/max ${c.sendP90}/${c.sendMax} ms, receive p90/max ${c.recvP90}/${c.recvMax} ms`);
    }
  } finally {
    if (server === 'empty') await g.stop();
    else await stopGantry(g);
  }
}
