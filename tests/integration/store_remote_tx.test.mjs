// Orphaned-transaction checks with two proxies in front of one gantry-store
// node (store.mode remote), driven by the official SDK: both proxies see the
// node's list of unresolved half messages, and each check must reach the
// producer through the proxy holding its Telemetry stream exactly once per
// period -- neither lost (counted by the proxy without a producer) nor
// doubled (asked by both) -- until tx_max_checks, then the message is
// discarded; a half message whose producer is gone from every proxy is
// still discarded after tx_max_checks periods (counted by a proxy
// without a producer once nobody claimed a check for a whole period).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, startStore, stopGantry, httpGet } from './harness.mjs';
import { defPb, startProducer, startSimpleConsumer, shutdownQuietly, scaled, waitFor } from './sdk_util.mjs';

const { TransactionResolution: Res } = defPb;
const T = 'RemoteTxT';
const G = 'RemoteTxG';
const CHECK_AFTER_MS = 1500;
const CHECK_INTERVAL_MS = 400;
const MAX_CHECKS = 4;
const YAML = `topics:
  - {name: "${T}", type: TRANSACTION, queues: 2}
groups:
  - {name: "${G}"}
message:
  tx_check_after_ms: ${CHECK_AFTER_MS}
  tx_check_interval_ms: ${CHECK_INTERVAL_MS}
  tx_max_checks: ${MAX_CHECKS}
`;

// a holds the producers; b, c and d have none (each ticks at its own phase,
// so a check that falls due is seen first by one of them more often than
// not: the old counting without a producer lost those checks).
let s; let a; let b; let c; let d;
before(async () => {
  s = await startStore({ logLevel: 'info', yaml: YAML });
  const proxy = () => startGantry({ logLevel: 'info', yaml: YAML, remoteStore: s.endpoint });
  a = await proxy();
  b = await proxy();
  c = await proxy();
  d = await proxy();
});
after(async () => {
  for (const h of [a, b, c, d, s].filter(Boolean)) await stopGantry(h);
});

function recordingChecker() {
  const calls = [];
  return {
    calls,
    async check(mv) {
      calls.push({ id: mv.messageId, at: Date.now() });
      return Res.TRANSACTION_RESOLUTION_UNSPECIFIED; // unknown yet: ask again
    },
  };
}

async function sendHalf(producer, body) {
  const tx = producer.beginTransaction();
  const r = await producer.send({ topic: T, body: Buffer.from(body) }, tx);
  return { tx, r };
}

// Time for n checks: the first after CHECK_AFTER_MS, then one per
// CHECK_AFTER_MS (each within a check interval), with slack.
const checksDueMs = (n) => n * (CHECK_AFTER_MS + 2 * CHECK_INTERVAL_MS) + scaled(5000);

test(`a producer on proxy A is asked once per period through A, ${MAX_CHECKS} times in all, then the half message is discarded`, async () => {
  let p; let cons;
  const checker = recordingChecker();
  try {
    p = await startProducer(a, [T], { checker });
    cons = await startSimpleConsumer(b, G, T, { awaitDuration: 500 });
    // Three half messages a third of a tick apart: their checks fall due
    // at different points of the proxies' once-a-second ticks.
    const halves = [];
    for (let i = 0; i < 3; i++) {
      if (i > 0) await new Promise((r) => { setTimeout(r, 333); });
      halves.push(await sendHalf(p, `unresolved-via-a-${i}`));
    }
    const callsOf = (h) => checker.calls.filter((x) => x.id === h.r.messageId).map((x) => x.at);
    await waitFor(() => halves.every((h) => callsOf(h).length >= MAX_CHECKS), checksDueMs(MAX_CHECKS),
      `${MAX_CHECKS} checks each`, 100).catch(() => {});
    // A while longer: no extra check may come.
    const quiet = Date.now() + CHECK_AFTER_MS + 3 * CHECK_INTERVAL_MS;
    await waitFor(() => Date.now() >= quiet, quiet - Date.now() + 1000, 'quiet', 100);
    const wrong = [];
    for (const h of halves) {
      const at = callsOf(h);
      if (at.length !== MAX_CHECKS) wrong.push(`${h.r.messageId}: ${at.length} checks, at ${JSON.stringify(at.map((t) => t - at[0]))}`);
      for (let i = 1; i < at.length; i++) {
        // One per period: never two checks within one unresolved time.
        if (at[i] - at[i - 1] < CHECK_AFTER_MS - 300) wrong.push(`${h.r.messageId}: checks ${i} and ${i + 1} only ${at[i] - at[i - 1]} ms apart`);
      }
    }
    assert.deepEqual(wrong, [], `each half message checked exactly ${MAX_CHECKS} times, once per period`);
    // Discarded: the late commit finds nothing, nothing is delivered.
    for (const h of halves) await assert.rejects(h.tx.commit(), 'commit after the half message was discarded');
    assert.deepEqual(await cons.receive(8, 15000), [], 'a discarded half message was delivered');
  } finally {
    await shutdownQuietly(p, cons);
  }
});

// rocketmq_half_messages{topic=T} of a proxy: its sends less its commits,
// rollbacks and the node's discards.
async function halfMessages(g) {
  const r = await httpGet(g.httpPort, '/metrics');
  const m = new RegExp(`^rocketmq_half_messages\\{topic="${T}"\\} (\\d+)$`, 'm').exec(r.body);
  return m ? Number(m[1]) : undefined;
}

test(`a half message whose producer left every proxy is discarded after ${MAX_CHECKS} check periods`, async () => {
  let p; let cons;
  try {
    p = await startProducer(a, [T], { checker: recordingChecker() });
    await sendHalf(p, 'orphaned-everywhere');
    await waitFor(async () => (await halfMessages(a)) > 0, 5000, 'half message counted');
    await shutdownQuietly(p);
    p = undefined;
    // Neither proxy has a producer of T now: it is checked without one to
    // ask, once per period, and discarded at the last check.
    await waitFor(async () => (await halfMessages(a)) === 0, checksDueMs(MAX_CHECKS + 1),
      'the orphaned half message discarded', 100);
    cons = await startSimpleConsumer(b, G, T, { awaitDuration: 500 });
    assert.deepEqual(await cons.receive(8, 15000), [], 'an unresolved half message was delivered');
  } finally {
    await shutdownQuietly(p, cons);
  }
});
