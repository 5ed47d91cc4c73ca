// Driver of scripts/bench-overload (see there).
import { startGantry, stopGantry, sleep } from '../tests/integration/harness.mjs';
import { runOverload, memOf } from '../tests/integration/overload_load.mjs';

const MiB = 1024 * 1024;
const bound = Number(process.env.BENCH_BOUND_MIB ?? 128) * MiB;
const secs = Number(process.env.BENCH_SECONDS ?? 15);
const want = (process.env.BENCH_SCENARIOS ?? 'A,B,C').split(',');
const scenarios = [
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
console.log(`bound (server.max_inflight_bytes): ${mib(bound)} MiB; target peak <= ${mib(bound + 128 * MiB)} MiB, control p99 <= 100 ms`);
for (const s of scenarios) {
  const g = await startGantry({
    yaml, logLevel: 'info', flush: process.env.BENCH_FLUSH ?? 'sync',
    serverYaml: `  max_inflight_bytes: ${bound}`,
  });
  try {
    await sleep(300);
    const idle0 = memOf(g.pid).rss;
    const r = await runOverload({
      endpoint: g.endpoint, pid: g.pid, topic: 'Load', senders: s.senders, batch: s.batch,
      minBody: s.minBody, maxBody: s.maxBody, durationMs: secs * 1000,
      controlTopic: 'Control', controlGroup: 'ControlGroup',
    });
    await sleep(1500);
    const idle1 = memOf(g.pid).rss;
    const peak = Math.max(r.peakRss, r.peakHwm);
    const pass = (ok) => (ok ? 'PASS' : 'MISS');
    console.log(`\n${s.name}: ${s.what}, ${secs} s`);
    console.log(`  RSS before ${mib(idle0)} MiB, peak ${mib(peak)} MiB (sampled ${mib(r.peakRss)}, VmHWM ${mib(r.peakHwm)}), idle after ${mib(idle1)} MiB   [${pass(peak <= bound + 128 * MiB)}]`);
    console.log(`  sends ok ${r.ok}, refused 42900 ${r.refused}, other ${r.other} ${JSON.stringify(r.otherCodes)}; sender p50 ${r.sendP50} ms`);
    if (r.control) {
      console.log(`  control: ${r.control.n} round trips, send p99 ${r.control.sendP99} ms, receive p99 ${r.control.recvP99} ms   [${pass(Math.max(r.control.sendP99, r.control.recvP99) <= 100)}]`);
    }
  } finally {
    await stopGantry(g);
  }
}
