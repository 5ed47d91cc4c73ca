// Failover time of the store cluster (issue 12), for scripts/bench's
// cluster scenario: a private etcd, 3 store nodes (R=3, min_insync=2, the
// build's default lease TTL unless BENCH_CLUSTER_LEASE_TTL_S says) and one
// proxy in cluster mode (tests/integration/cluster_harness.mjs).  Small
// writes are started through the proxy every 5 ms (each with a 1 s
// deadline); BENCH_FAILOVER_KILLS times (default 10)
// the leader is SIGKILLed once the in-sync set is full, and the failover
// time is from the SIGKILL to the answer of the first write started after
// it that succeeds; the node is then restarted.  Prints
//   failover_ms: kills=N median=N max=N all=a,b,...
// or `failover_ms: failed <reason>`.
import {
  Load, startCluster, stopCluster, leaderOf, signalNode, restartNode, waitHealthy,
  clusterSupport,
} from '../tests/integration/cluster_harness.mjs';

const kills = Number(process.env.BENCH_FAILOVER_KILLS ?? 10);
const ttl = process.env.BENCH_CLUSTER_LEASE_TTL_S ? Number(process.env.BENCH_CLUSTER_LEASE_TTL_S) : null;

async function main() {
  const why = await clusterSupport();
  if (why) {
    console.log(`failover_ms: failed ${why}`);
    return;
  }
  const c = await startCluster({ proxies: 1, leaseTtlS: ttl, logLevel: 'warn' });
  const load = new Load(c.proxies, { normalLoops: 0, fifoGroups: 0, consumers: false,
    probeEveryMs: 5, probeDeadlineMs: 1000 });
  const times = [];
  try {
    await load.start();
    for (let i = 0; i < kills; i++) {
      await waitHealthy(c);
      const l = await leaderOf(c);
      const t = await signalNode(l, 'SIGKILL');
      times.push(await load.waitWriteAfter(t, 120000));
      console.error(`  kill ${i + 1}: leader ${l.id}, ${times.at(-1)} ms`);
      await restartNode(c, l);
    }
  } finally {
    await load.close();
    await stopCluster(c);
  }
  const s = [...times].sort((a, b) => a - b);
  const median = s.length % 2 ? s[(s.length - 1) / 2] : Math.round((s[s.length / 2 - 1] + s[s.length / 2]) / 2);
  console.log(`failover_ms: kills=${s.length} median=${median} max=${s.at(-1)} all=${times.join(',')}` +
    ` lease_ttl_s=${ttl ?? 'default'}`);
}

main().then(() => process.exit(0), (e) => {
  console.log(`failover_ms: failed ${e.message.split('\n')[0]}`);
  process.exit(0);
});
