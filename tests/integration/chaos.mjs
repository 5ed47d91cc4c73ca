// The fault set of issue 12, each fault under load on a fresh set of
// processes (cluster_harness.mjs): prints one line per fault
//   FAULT <name>: acked=N lost=N dup=N failover_ms=N
// (then an indented detail line) and exits 1 on any loss, FIFO order
// violation, duplicate not explained by what was in flight
// (cluster_harness.mjs check(): dupUnexplained) or a fault that could not
// be carried out.  scripts/chaos runs
// it (short form by default, --long: ~30 s of load per fault); CTest runs
// the short form (integration_chaos).
//
//   node chaos.mjs [--long] [--only a,b] [--require-cluster]
//
// Faults on the store cluster (3 store nodes, R=3, min_insync=2, 2
// proxies in cluster mode, etcd):
//   leader-kill       SIGKILL of the leader, restarted once writes resume
//   leader-pause      SIGSTOP of the leader until another node leads (longer
//                     than its lease), then SIGCONT: it must not accept
//                     writes of its old epoch (no acknowledged write lost)
//   follower-kill     SIGKILL of a follower, restarted
//   kill-dropcache    SIGKILL of the leader, the page cache dropped
//                     (/proc/sys/vm/drop_caches, root) before its restart
//   two-faults        the leader killed and restarted; once the in-sync set
//                     is full again, the new leader (another node) killed
//   etcd-member-kill  3-member etcd: one member SIGKILLed, restarted
//   cluster-restart   every store node SIGKILLed at once, all restarted
// Until a build has the cluster (its binaries refuse the cluster config,
// or CHAOS_CLUSTER_SKIP gives a reason) these print
// `FAULT <name>: SKIPPED (<reason>)`; --require-cluster makes that a
// failure.
// Baselines, which test the harness itself against what exists without a
// cluster (sync flush; nothing acknowledged may be lost there either):
//   local-kill        one gantry with its embedded store SIGKILLed, restarted
//   remote-kill       two proxies on one gantry-store node; the node
//                     SIGKILLed and restarted
import fs from 'node:fs';
import path from 'node:path';
import { startGantry, startStore, stopGantry } from './harness.mjs';
import {
  Load, check, startCluster, stopCluster, leaderOf, followersOf, signalNode, restartNode,
  killEtcdMember, restartEtcdMember, dropCaches, clusterSupport, epochOf, waitHealthy,
  waitNewLeader, roleOf, LEASE_TTL_S, standDowns,
  TOPICS_YAML, scaled, waitFor, sleep,
} from './cluster_harness.mjs';

const args = process.argv.slice(2);
const long = args.includes('--long');
const requireCluster = args.includes('--require-cluster');
const onlyArg = args.find((a) => a.startsWith('--only'));
const only = onlyArg ? (onlyArg.includes('=') ? onlyArg.split('=')[1] : args[args.indexOf(onlyArg) + 1]).split(',') : null;

// Load before and after the fault (each half of it); not a bound.
const LOAD_MS = Number(process.env.CHAOS_LOAD_MS) || (long ? 30000 : 4000);

// ---- fault helpers ------------------------------------------------------

// ---- faults -----------------------------------------------------------------
// Each takes (c, load) and returns {failoverMs}; the load runs throughout.

const clusterFaults = {
  'leader-kill': async (c, load) => {
    await waitHealthy(c);
    const l = await leaderOf(c);
    const t = await signalNode(l, 'SIGKILL');
    const failoverMs = await load.waitWriteAfter(t, 120000);
    await restartNode(c, l);
    return { failoverMs };
  },
  'leader-pause': async (c, load) => {
    await waitHealthy(c);
    const l = await leaderOf(c);
    const e0 = await epochOf(c);
    const t = await signalNode(l, 'SIGSTOP');
    try {
      await waitNewLeader(c, l);
    } finally {
      await signalNode(l, 'SIGCONT');
    }
    const failoverMs = await load.waitWriteAfter(t, 120000);
    const e1 = await epochOf(c);
    if (!(e1 > e0)) throw new Error(`epoch did not advance (${e0} -> ${e1})`);
    // Continued, the old leader stands down (it no longer says it leads).
    await waitFor(async () => {
      const r = await roleOf(l);
      return r && r.role !== 1;
    }, 60000,
      `${l.id} standing down after SIGCONT`, 50);
    return { failoverMs };
  },
  'follower-kill': async (c, load) => {
    await waitHealthy(c);
    const l = await leaderOf(c);
    const f = followersOf(c, l)[0];
    const t = await signalNode(f, 'SIGKILL');
    const failoverMs = await load.waitWriteAfter(t, 120000);
    await restartNode(c, f);
    return { failoverMs };
  },
  'kill-dropcache': async (c, load) => {
    const why = dropCaches();
    if (why) return { skipped: why };
    await waitHealthy(c);
    const l = await leaderOf(c);
    const t = await signalNode(l, 'SIGKILL');
    const err = dropCaches();
    if (err) throw new Error(err);
    const failoverMs = await load.waitWriteAfter(t, 120000);
    await restartNode(c, l);
    return { failoverMs };
  },
  'two-faults': async (c, load) => {
    await waitHealthy(c);
    const a = await leaderOf(c);
    const t = await signalNode(a, 'SIGKILL');
    const failoverMs = await load.waitWriteAfter(t, 120000);
    await restartNode(c, a);
    await waitHealthy(c);
    const b = await leaderOf(c);
    if (b === a) throw new Error(`${a.id} leads again; wanted a second fault on another node`);
    const t2 = await signalNode(b, 'SIGKILL');
    const failover2 = await load.waitWriteAfter(t2, 120000);
    await restartNode(c, b);
    return { failoverMs: Math.max(failoverMs, failover2) };
  },
  'etcd-member-kill': async (c, load) => {
    await waitHealthy(c);
    // The member the store leader's address list names first is as good as
    // any: every client must carry on with two of three.
    // (Every client used to send every etcd call to the first member it
    // lists: this kill then stopped the leader's lease renewals and made
    // it stand down; test_etcd dead_member_passed_over.)
    const m = c.etcd.members[0];
    const epoch = await epochOf(c);
    const t = Date.now();
    await killEtcdMember(c.etcd, m);
    const failoverMs = await load.waitWriteAfter(t, 120000);
    await sleep(LOAD_MS / 4); // load with the member down
    await restartEtcdMember(c.etcd, m);
    // If the killed member was etcd's leader, etcd elects another (1-2 s
    // of election timeout) and answers no renewal meanwhile: with the
    // harness's 2 s lease TTL the store leader may then stand down, a
    // real failover.  Sends in flight across it get the allowance of any
    // failover: [stand-down, first write acknowledged after it].  A
    // stand-down comes within a TTL of the last renewal answered before
    // the kill, so the epoch is compared once two TTLs have passed.
    await sleep(t + 2 * LEASE_TTL_S * 1000 - Date.now());
    await waitHealthy(c);
    const storeFailover = (await epochOf(c)) !== epoch;
    if (storeFailover) {
      // From the moment the leader stood down (its log says when; the
      // kill if no log line says so) to the first write after it.
      const sd = standDowns(c, t)[0] ?? t;
      await load.waitWriteAfter(sd, 120000);
    }
    return { failoverMs, note: storeFailover ? 'store leader stood down during the etcd election' : '' };
  },
  'cluster-restart': async (c, load) => {
    await waitHealthy(c);
    const t = Date.now();
    await Promise.all(c.nodes.map((n) => signalNode(n, 'SIGKILL')));
    for (const n of c.nodes) await restartNode(c, n);
    const failoverMs = await load.waitWriteAfter(t, 120000);
    return { failoverMs };
  },
};
const clusterOpts = { 'etcd-member-kill': { etcdMembers: 3 } };

// ---- baselines ------------------------------------------------------------------

// Stops every process; then throws the first error (a sanitizer report in
// a log is one: harness.mjs stopGantry).
async function stopAll(procs) {
  const errs = [];
  for (const p of procs) {
    try { await stopGantry(p); } catch (e) { errs.push(e); }
  }
  if (errs.length) throw errs[0];
}

async function withLocal(body) {
  const g = await startGantry({ logLevel: 'info', yaml: TOPICS_YAML, flush: 'sync', amqpListen: 'off' });
  const env = { procs: [g], proxies: [g] };
  try {
    return await body(env);
  } finally {
    await stopAll(env.procs);
  }
}

function proxyOpts(s) {
  return { logLevel: 'info', yaml: TOPICS_YAML, amqpListen: 'off', remoteStore: s.endpoint,
    remoteYaml: `  remote_timeout_ms: ${scaled(2000)}\n` };
}

async function remoteKill(wipe) {
  let s = await startStore({ logLevel: 'info', yaml: TOPICS_YAML, flush: 'sync', amqpListen: 'off' });
  const proxies = [];
  try {
    for (let i = 0; i < 2; i++) {
      proxies.push(await startGantry(proxyOpts(s)));
    }
    return await runLoad(proxies, async (load) => {
      if (wipe) {
        // Acknowledged messages waiting on the node when it is wiped.
        load.pause();
        await waitFor(() => load.undelivered() >= 50, 60000, 'a backlog of 50', 20);
      }
      const t = Date.now();
      await stopGantry(s, 'SIGKILL', { keepDir: true });
      if (wipe) fs.rmSync(path.join(s.dir, 'data'), { recursive: true, force: true });
      s = await startStore({ dir: s.dir, grpcPort: s.grpcPort, httpPort: s.httpPort,
        amqpListen: 'off', logLevel: 'info', yaml: TOPICS_YAML, flush: 'sync' });
      // Wiped: the proxies see the node's new data identity and declare
      // their topics and groups again by themselves (proxy/px_seed.c).
      load.resume();
      // Wiped: what was acknowledged before is gone for good; the drain
      // waits for the sends made after the restart only.
      return { failoverMs: await load.waitWriteAfter(t, 120000),
        drainSince: wipe ? Date.now() : undefined };
    });
  } finally {
    await stopAll([...proxies, s]);
  }
}

const baselines = {
  'local-kill': () => withLocal(async (env) => runLoad(env.proxies, async (load) => {
    const g = env.procs[0];
    const t = Date.now();
    await stopGantry(g, 'SIGKILL', { keepDir: true });
    const g2 = await startGantry({ logLevel: 'info', yaml: TOPICS_YAML, flush: 'sync',
      amqpListen: 'off', dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort });
    env.procs[0] = g2;
    return { failoverMs: await load.waitWriteAfter(t, 120000) };
  })),
  'remote-kill': () => remoteKill(false),
  // The harness's own check: the store node's data dir wiped between the
  // kill and the restart loses acknowledged messages, and the checker must
  // say so (this line fails when lost is 0).
  'remote-wipe': async () => {
    const r = await remoteKill(true);
    return { ...r, expectLoss: true };
  },
};

// Load on `proxies`, the fault in the middle, then drain and check.
async function runLoad(proxies, fault) {
  const load = new Load(proxies);
  try {
    await load.start();
    await load.waitAcked(20, 60000);
    await sleep(LOAD_MS / 2);
    const f = await fault(load);
    if (f.skipped) return f;
    await sleep(LOAD_MS / 2);
    await load.waitAcked(20, 120000); // writes flow after the fault
    await load.stopSending();
    await load.drain(60000 + load.o.invisibleMs * 2, f.drainSince);
    return { ...f, ...check(load), failedSends: load.failedSends, recvErrors: load.recvErrors,
      ackErrors: load.ackErrors, failedProbes: load.failedProbes };
  } finally {
    await load.close();
  }
}

async function runClusterFault(name) {
  const c = await startCluster(clusterOpts[name] ?? {});
  try {
    return await runLoad(c.proxies, (load) => clusterFaults[name](c, load));
  } finally {
    await stopCluster(c);
  }
}

// ---- main -------------------------------------------------------------------------

function line(name, r) {
  if (r.skipped) return `FAULT ${name}: SKIPPED (${r.skipped})`;
  if (r.expectLoss) name += ' (data wiped: loss expected)';
  return `FAULT ${name}: acked=${r.acked} lost=${r.lost} dup=${r.dup} failover_ms=${r.failoverMs}`;
}

async function main() {
  const names = [...Object.keys(baselines), ...Object.keys(clusterFaults)]
    .filter((n) => !only || only.includes(n));
  if (only) {
    const unknown = only.filter((n) => !(n in baselines) && !(n in clusterFaults));
    if (unknown.length) {
      console.error(`chaos: unknown fault(s) ${unknown.join(', ')}`);
      process.exit(2);
    }
  }
  // CHAOS_CLUSTER_SKIP=<reason>: the cluster faults are skipped with that
  // reason (CTest sets it while the store cluster is not joined end to
  // end; scripts/chaos never does).
  const noCluster = !names.some((n) => n in clusterFaults) ? null
    : process.env.CHAOS_CLUSTER_SKIP || await clusterSupport();
  // CHAOS_KNOWN_LOSS="name,...:reason": faults known to lose acknowledged
  // messages in this build, skipped with that reason (CTest, until fixed).
  const known = process.env.CHAOS_KNOWN_LOSS ?? '';
  const knownNames = known ? known.split(':')[0].split(',') : [];
  const knownWhy = known.split(':').slice(1).join(':');
  let bad = 0;
  for (const name of names) {
    const t0 = Date.now();
    let r;
    try {
      if (name in baselines) r = await baselines[name]();
      else if (noCluster) r = { skipped: noCluster };
      else if (knownNames.includes(name)) r = { skipped: `known loss: ${knownWhy}`, known: true };
      else r = await runClusterFault(name);
    } catch (e) {
      console.log(`FAULT ${name}: ERROR ${e.message.split('\n')[0]}`);
      console.log(`  ${e.stack?.split('\n').slice(0, 6).join('\n  ')}`);
      bad++;
      continue;
    }
    console.log(line(name, r));
    if (r.skipped) {
      if (requireCluster && !r.known) bad++;
      continue;
    }
    console.log(`  order=${r.order} extra=${r.extra} delivered=${r.delivered}` +
      ` failed_sends=${r.failedSends} failed_probes=${r.failedProbes}` +
      ` recv_errors=${r.recvErrors} ack_errors=${r.ackErrors}` +
      ` dup_bound=${r.dupBound} dup_unexplained=${r.dupUnexplained}` +
      ` secs=${Math.round((Date.now() - t0) / 1000)}` +
      (r.note ? ` note="${r.note}"` : '') +
      (r.lost ? ` lost_ids=${r.lostIds.join(',')}` : '') +
      (r.order ? ` order_samples=${r.orderSamples.join('; ')}` : '') +
      (r.dupUnexplained ? ` dup_samples=${r.dupSamples.join(',')}` : ''));
    if (r.expectLoss) {
      if (!(r.lost > 0)) {
        console.log('  the checker found no loss where the data was wiped: it is broken');
        bad++;
      }
    } else if (r.lost > 0 || r.order > 0 || r.dupUnexplained > 0 || !(r.acked > 0)) {
      bad++;
    }
  }
  process.exit(bad ? 1 : 0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
