// store.mode cluster over several replica sets (store-remote/st_place.c,
// st_shard.c).  A private etcd and standalone gantry-store nodes, one per
// replica set (no replication: the test writes the keys the store nodes'
// cluster control would write: stores/<id>, rs/<k>/leader, rs/<k>/isr).
//  - Two sets known at start: two proxies declare four topics; the
//    placement keys spread them two and two, the SDK sends through one
//    proxy and receives everything through the other, the admin API
//    lists the sets; a topic made and deleted with gantry-admin loses its
//    placement key, and both proxies forget it.  A message of a topic on
//    set 1 runs out of delivery attempts: %DLQ%<group> is created on set 1
//    only, the other proxy knows it (admin API) and an SDK consumer reads
//    the dead letter.
//  - Growth: one set, four topics on it, an SDK producer and consumer
//    running; a second set appears, gets the metadata, POST
//    /api/v1/cluster/rebalance moves half the topics' writes to it
//    (placement "1,0"), messages are then written there, and every acknowledged
//    message is consumed (lost = 0).  A second group that consumes from the
//    last offset is paused across the rebalance: when it resumes it gets
//    every message sent since (those on set 1 included: it had no position
//    there yet; before the fix it started at set 1's end and skipped them).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { spawnGantry, startStore, stopGantry, scaled, sleep, GANTRY_BIN } from './harness.mjs';
import { startEtcd, stopEtcd } from './etcd_util.mjs';
import {
  startProducer, startSimpleConsumer, shutdownQuietly, yamlOf, waitFor, uniq,
} from './sdk_util.mjs';

const TOPICS = ['ShardA', 'ShardB', 'ShardC', 'ShardD'];
const G = 'ShardGroup';
const GL = 'ShardLast'; // consumes from the last offset
const GD = 'ShardOnce'; // one delivery attempt, then %DLQ%ShardOnce
const GDL = 'ShardDeadReader';
const YAML = `${yamlOf({ topics: TOPICS.map((name) => ({ name, queues: 2 })), groups: [{ name: G }] })}`
  + `  - {name: "${GL}", max_delivery_attempts: 16, consume_from: last}\n`
  + `  - {name: "${GD}", max_delivery_attempts: 1}\n`
  + `  - {name: "${GDL}", max_delivery_attempts: 16}\n`;

const ADMIN_BIN = process.env.GANTRY_ADMIN_BIN || path.join(path.dirname(GANTRY_BIN), 'gantry-admin');

function admin(g, args) {
  return new Promise((resolve) => {
    execFile(ADMIN_BIN, ['--server', `http://127.0.0.1:${g.httpPort}`, '--json', ...args],
      { timeout: scaled(60000) },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? err.signal) : 0, stdout, stderr }));
  });
}

// A request that gets no answer within scaled(30 s) ends with status 0
// (as one that fails): a stuck request fails the test where it happened
// (or is polled again by waitFor) instead of waiting forever.
function api(g, method, p) {
  return new Promise((resolve) => {
    const req = http.request({
      host: '127.0.0.1', port: g.httpPort, path: p, method, agent: false, timeout: scaled(30000),
    },
      (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => {
          let json = null;
          try { json = JSON.parse(b); } catch { /* not JSON */ }
          resolve({ status: res.statusCode, json, text: b });
        });
      });
    req.on('timeout', () => req.destroy(new Error('no answer')));
    req.on('error', (e) => resolve({ status: 0, json: null, text: `${method} ${p}: ${e.message}` }));
    req.end();
  });
}

async function startProxy(etcd, name) {
  return spawnGantry({
    logLevel: 'info', yaml: YAML,
    storeYaml: `  mode: cluster\n  etcd: ["${etcd.endpoint}"]\n  cluster_name: "${name}"\n`,
  });
}

async function waitReady(p) {
  const { httpGet } = await import('./harness.mjs');
  await waitFor(async () => (await httpGet(p.httpPort, '/readyz')).status === 200, 30000,
    'the proxy ready');
}

async function setReady(p, k) {
  await waitFor(async () => {
    const r = await api(p, 'GET', '/api/v1/cluster');
    return r.status === 200 && r.json.replica_sets.some((s) => s.id === k && s.ready);
  }, 30000, `replica set ${k} ready on the proxy`);
}

// Receives and acks until stop(); `topics` (optional) collects the
// topics received from.
// A failed receive waits a little before the next: one that fails at once
// would otherwise spin without ever yielding to the event loop (timers,
// sockets), and the whole test would hang there.
function consumeLoop(consumer, got, handles, topics = null) {
  let stop = false;
  const errors = [];
  const done = (async () => {
    while (!stop) {
      let msgs = [];
      try {
        msgs = await consumer.receive(32, 30000);
      } catch (e) {
        errors.push(String(e?.message ?? e).slice(0, 200));
        await sleep(50);
        continue;
      }
      for (const m of msgs) {
        handles.push(m.receiptHandle ?? '');
        topics?.add(m.topic);
        try {
          await consumer.ack(m);
          got.add(m.messageId);
        } catch { /* redelivered later */ }
      }
    }
  })();
  return { errors, stop() { stop = true; return done; } };
}

test('two replica sets: topics placed two and two, the SDK through two proxies', async () => {
  let etcd; let a; let b; let p1; let p2; let producer; let consumer;
  try {
    etcd = await startEtcd();
    a = await startStore({ logLevel: 'info', yaml: yamlOf({}) });
    b = await startStore({ logLevel: 'info', yaml: yamlOf({}) });
    const name = uniq('sh');
    const key = (k) => `/gantry/${name}/${k}`;
    await etcd.put(key('stores/node-a'), a.endpoint);
    await etcd.put(key('stores/node-b'), b.endpoint);
    await etcd.put(key('rs/0/members'), 'node-a');
    await etcd.put(key('rs/0/isr'), '1:node-a');
    await etcd.put(key('rs/0/leader'), 'node-a');
    await etcd.put(key('rs/1/members'), 'node-b');
    await etcd.put(key('rs/1/isr'), '1:node-b');
    await etcd.put(key('rs/1/leader'), 'node-b');

    p1 = await startProxy(etcd, name);
    await waitReady(p1);
    p2 = await startProxy(etcd, name);
    await waitReady(p2);
    const placement = {};
    for (const t of TOPICS) placement[t] = await etcd.get(key(`placement/${t}`));
    const on = (k) => Object.values(placement).filter((v) => v === k).length;
    assert.equal(on('0'), 2, JSON.stringify(placement));
    assert.equal(on('1'), 2, JSON.stringify(placement));
    for (const p of [p1, p2]) {
      const r = await api(p, 'GET', '/api/v1/cluster');
      assert.equal(r.status, 200, r.text);
      // The config's four topics and the AMQP gateway's own: 3 and 2.
      assert.deepEqual(r.json.replica_sets.map((s) => [s.id, s.leader, s.ready]),
        [[0, 'node-a', true], [1, 'node-b', true]], r.text);
      const [c0, c1] = r.json.replica_sets.map((s) => s.topics);
      assert.ok(c0 + c1 === Object.keys(r.json.placement).length && Math.abs(c0 - c1) <= 1, r.text);
      for (const t of TOPICS) assert.deepEqual(r.json.placement[t], [Number(placement[t])]);
    }

    // A topic made and deleted with gantry-admin: its placement key goes
    // with it, and both proxies forget it (before: the key stayed, and the
    // deleted topic still counted for its set in placement and rebalance).
    const TMP = 'ShardTmp';
    const setTopics = async (p) => (await api(p, 'GET', '/api/v1/cluster')).json;
    const made = await admin(p1, ['topic', 'create', TMP, '--queues', '2']);
    assert.equal(made.code, 0, made.stderr);
    const tmpSet = await etcd.get(key(`placement/${TMP}`));
    assert.ok(tmpSet === '0' || tmpSet === '1', `placement of ${TMP}: ${tmpSet}`);
    await waitFor(async () => (await setTopics(p2))?.placement?.[TMP] !== undefined, 30000,
      `proxy 2 sees the placement of ${TMP}`);
    const gone = await admin(p2, ['topic', 'delete', TMP]);
    assert.equal(gone.code, 0, gone.stderr);
    assert.equal(await etcd.get(key(`placement/${TMP}`)), null, 'the placement key left behind');
    for (const p of [p2, p1]) {
      await waitFor(async () => {
        const j = await setTopics(p);
        return j && j.placement[TMP] === undefined &&
          j.replica_sets.reduce((a, x) => a + x.topics, 0) === Object.keys(j.placement).length;
      }, 30000, `the proxy on ${p.httpPort} forgets ${TMP}`);
    }
    // Made again on the other set: the set it had before stays in its
    // placement after the new one (a proxy that has not seen the delete
    // yet may still write there).  Two placement keys on the old set
    // first, so that placement chooses the other one.
    const X = Number(tmpSet); const Y = 1 - X;
    for (const f of ['ShardFill0', 'ShardFill1']) await etcd.put(key(`placement/${f}`), String(X));
    await waitFor(async () => {
      const j = await setTopics(p1);
      const cnt = (k) => j.replica_sets.find((x) => x.id === k).topics;
      return cnt(X) > cnt(Y);
    }, 30000, 'proxy 1 counts the filler placements');
    const again = await admin(p1, ['topic', 'create', TMP, '--queues', '2']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await etcd.get(key(`placement/${TMP}`)), `${Y},${X}`);

    producer = await startProducer(p1, TOPICS);
    consumer = await startSimpleConsumer(p2, G, new Map(TOPICS.map((t) => [t, '*'])));
    const sent = new Set();
    for (let i = 0; i < 40; i++) {
      sent.add((await producer.send({ topic: TOPICS[i % 4], body: Buffer.from(`m-${i}`) })).messageId);
    }
    const got = new Set();
    const handles = [];
    const loop = consumeLoop(consumer, got, handles);
    await waitFor(() => [...sent].every((id) => got.has(id)), 60000,
      'every message sent through proxy 1 received through proxy 2');
    await loop.stop();
    // Receipt handles of set 1 carry its prefix.
    assert.ok(handles.some((h) => h.startsWith('1.')), 'no message came from replica set 1');
    assert.ok(handles.some((h) => !/^\d+\./.test(h)), 'no message came from replica set 0');

    // A dead letter of a topic on set 1: set 1's store creates
    // %DLQ%ShardOnce there only; proxy 1 (which never handled the group)
    // must know the topic from its metadata watch, and a consumer reads
    // the message from it (before: the topic was unknown to the proxies).
    const t1 = TOPICS.find((t) => placement[t] === '1');
    const deadId = (await producer.send({ topic: t1, body: Buffer.from('dead') })).messageId;
    const once = await startSimpleConsumer(p2, GD, t1);
    try {
      let first = [];
      await waitFor(async () => {
        first = (await once.receive(4, 30000)).filter((m) => m.messageId === deadId);
        return first.length > 0;
      }, 60000, 'the message received once');
      // Given back: its one attempt is spent, so the next receives move it
      // to the DLQ instead of handing it out again.
      await once.changeInvisibleDuration(first[0], 0);
      await waitFor(async () => {
        const again = await once.receive(4, 30000);
        assert.ok(!again.some((m) => m.messageId === deadId), 'handed out a second time');
        const r = await api(p1, 'GET', `/api/v1/topics/${encodeURIComponent(`%DLQ%${GD}`)}`);
        return r.status === 200;
      }, 60000, `%DLQ%${GD} known to proxy 1`);
    } finally {
      await shutdownQuietly(once);
    }
    // Its first and last store times are read from set 1 (before: null,
    // the reads of its queues' edge messages went to set 0).
    const shown = await api(p1, 'GET', `/api/v1/topics/${encodeURIComponent(`%DLQ%${GD}`)}`);
    assert.equal(shown.status, 200, shown.text);
    assert.ok(shown.json.first_store_time_ms > 0 &&
      shown.json.last_store_time_ms >= shown.json.first_store_time_ms, shown.text);
    const dlq = await startSimpleConsumer(p1, GDL, `%DLQ%${GD}`);
    try {
      await waitFor(async () => (await dlq.receive(4, 30000))
        .some((m) => m.messageId === deadId && m.body.toString() === 'dead'), 60000,
      'the dead letter read from %DLQ% through proxy 1');
    } finally {
      await shutdownQuietly(dlq);
    }
  } finally {
    await shutdownQuietly(producer, consumer);
    for (const g of [p1, p2, a, b].filter(Boolean)) await stopGantry(g);
    await stopEtcd(etcd);
  }
});

test('growth: a second replica set appears, rebalance moves half the topics to it under load, nothing lost', async () => {
  let etcd; let a; let b; let p; let producer; let consumer; let consumerL;
  let sending = true;
  const loops = [];
  try {
    etcd = await startEtcd();
    a = await startStore({ logLevel: 'info', yaml: yamlOf({}) });
    b = await startStore({ logLevel: 'info', yaml: yamlOf({}) });
    const name = uniq('gr');
    const key = (k) => `/gantry/${name}/${k}`;
    await etcd.put(key('stores/node-a'), a.endpoint);
    await etcd.put(key('rs/0/members'), 'node-a');
    await etcd.put(key('rs/0/isr'), '1:node-a');
    await etcd.put(key('rs/0/leader'), 'node-a');
    p = await startProxy(etcd, name);
    await waitReady(p);
    for (const t of TOPICS) assert.equal(await etcd.get(key(`placement/${t}`)), '0');

    producer = await startProducer(p, TOPICS);
    consumer = await startSimpleConsumer(p, G, new Map(TOPICS.map((t) => [t, '*'])));
    const acked = new Set();
    const ackedAt = new Map(); // id -> send number
    const got = new Set();
    const handles = [];
    let n = 0;
    let refused = 0;
    let lastRefusal = '';
    const prod = (async () => {
      while (sending) {
        const i = n++;
        try {
          const id = (await producer.send({ topic: TOPICS[i % 4], body: Buffer.from(`g-${i}`) })).messageId;
          acked.add(id);
          ackedAt.set(id, i);
        } catch (e) {
          refused++;
          lastRefusal = String(e?.message ?? e).slice(0, 200);
          await sleep(10); // see consumeLoop
        }
      }
    })();
    const loop = consumeLoop(consumer, got, handles);
    loops.push(loop);
    await waitFor(() => got.size >= 50, 60000, 'messages flowing on replica set 0');
    // GL: a position on every topic of set 0, then paused.
    consumerL = await startSimpleConsumer(p, GL, new Map(TOPICS.map((t) => [t, '*'])));
    const gotL = new Set();
    const topicsL = new Set();
    const handlesL = [];
    let loopL = consumeLoop(consumerL, gotL, handlesL, topicsL);
    loops.push(loopL);
    await waitFor(() => topicsL.size === TOPICS.length, 60000,
      'the last-offset group receiving from every topic on replica set 0');
    await loopL.stop();
    const pausedAt = n;

    // A second replica set forms.
    await etcd.put(key('stores/node-b'), b.endpoint);
    await etcd.put(key('rs/1/members'), 'node-b');
    await etcd.put(key('rs/1/isr'), '1:node-b');
    await etcd.put(key('rs/1/leader'), 'node-b');
    await setReady(p, 1);
    let r = await api(p, 'GET', '/api/v1/cluster');
    const total = Object.keys(r.json.placement).length; // with the AMQP gateway's topic
    assert.ok(total >= 4, r.text);
    assert.deepEqual(r.json.replica_sets.map((s) => [s.id, s.topics]), [[0, total], [1, 0]], r.text);

    r = await api(p, 'POST', '/api/v1/cluster/rebalance');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.moved, Math.floor(total / 2), r.text);
    const values = [];
    for (const t of TOPICS) values.push(await etcd.get(key(`placement/${t}`)));
    assert.ok(values.every((v) => v === '0' || v === '1,0'), values.join(' '));
    assert.ok(values.filter((v) => v === '1,0').length >= 1, values.join(' '));
    assert.deepEqual(r.json.replica_sets.map((s) => [s.id, s.topics]),
      [[0, Math.ceil(total / 2)], [1, Math.floor(total / 2)]], r.text);
    // Again, through gantry-admin: nothing to move.
    const cli = await admin(p, ['cluster', 'rebalance']);
    assert.equal(cli.code, 0, cli.stdout + cli.stderr);
    assert.equal(JSON.parse(cli.stdout).moved, 0, cli.stdout);
    const show = await admin(p, ['cluster']);
    assert.equal(show.code, 0, show.stdout + show.stderr);
    assert.deepEqual(JSON.parse(show.stdout).replica_sets.map((s) => s.id), [0, 1], show.stdout);

    // Traffic goes on, now partly on set 1.
    await waitFor(() => handles.some((h) => h.startsWith('1.')), 60000,
      'messages received from replica set 1 after the rebalance');
    const mark = acked.size;
    await waitFor(() => acked.size >= mark + 50, 60000, 'sends after the rebalance');
    // GL resumes: everything sent while it was paused comes to it.
    loopL = consumeLoop(consumerL, gotL, handlesL, topicsL);
    loops.push(loopL);
    sending = false;
    await prod;
    await waitFor(() => [...acked].every((id) => got.has(id)), 60000,
      'every acknowledged message consumed');
    const since = [...ackedAt].filter(([, i]) => i >= pausedAt).map(([id]) => id);
    await waitFor(() => since.every((id) => gotL.has(id)), 60000,
      'the last-offset group getting every message sent since its pause');
    await loop.stop();
    await loopL.stop();
    const lost = [...acked].filter((id) => !got.has(id)).length;
    const lostL = since.filter((id) => !gotL.has(id)).length;
    process.stdout.write(`# growth: acked=${acked.size} lost=${lost} refused=${refused} `
      + `last-offset group: since pause=${since.length} lost=${lostL} `
      + `from set 1=${handlesL.filter((h) => h.startsWith('1.')).length} `
      + `receive errors=${loop.errors.length}/${loopL.errors.length} ${lastRefusal} `
      + `${loop.errors.concat(loopL.errors).slice(-2).join(' | ')}\n`);
    assert.equal(lost, 0);
    assert.equal(lostL, 0);
    assert.ok(handlesL.some((h) => h.startsWith('1.')), 'the last-offset group read set 1');
  } finally {
    // On a failure too: the producer and the consumers stop before their
    // clients shut down (else they would go on against closed clients).
    sending = false;
    for (const l of loops) l.stop();
    await shutdownQuietly(producer, consumer, consumerL);
    for (const g of [p, a, b].filter(Boolean)) await stopGantry(g);
    await stopEtcd(etcd);
  }
});
