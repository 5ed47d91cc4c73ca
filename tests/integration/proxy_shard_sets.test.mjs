// Several replica sets with real store nodes (cluster_harness.mjs): the
// proxies' placement and rebalance (store-remote/st_place.c) over sets the
// nodes form themselves (R=3).
//  - 6 nodes -> rs/0 and rs/1, 2 proxies: the harness's two topics (one
//    NORMAL, one FIFO) are placed one per set; the load (SDK producers and
//    consumers on both proxies) loses nothing and keeps FIFO order.
//  - Growth: 3 nodes, both topics on rs/0, the load running; 3 more nodes
//    form rs/1; POST /api/v1/cluster/rebalance on one proxy moves one topic
//    (placement "1,0"), both proxies follow, writes go on; every
//    acknowledged message is consumed (lost = 0), FIFO order holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import {
  startCluster, stopCluster, addNodes, clusterSupport, etcdGet, Load, check, T, TF, waitFor,
} from './cluster_harness.mjs';

function api(g, method, p) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: g.httpPort, path: p, method, agent: false },
      (res) => {
        let b = '';
        res.on('data', (d) => { b += d; });
        res.on('end', () => {
          let json = null;
          try { json = JSON.parse(b); } catch { /* not JSON */ }
          resolve({ status: res.statusCode, json, text: b });
        });
      });
    req.on('error', reject);
    req.end();
  });
}

const placement = async (c, t) => etcdGet(c.etcd, `/gantry/${c.name}/placement/${t}`);

async function finish(load) {
  await load.stopSending();
  await load.drain(60000 + load.o.invisibleMs * 2);
  return check(load);
}

test('6 store nodes, R=3: two replica sets, topics placed one per set, nothing lost', async (t) => {
  const why = await clusterSupport();
  if (why) { t.skip(why); return; }
  let c; let load;
  try {
    c = await startCluster({ name: 'shard6', nodes: 6, replicas: 3, proxies: 2 });
    assert.deepEqual(c.sets.map((s) => s.k), [0, 1]);
    const v = [await placement(c, T), await placement(c, TF)].sort();
    assert.deepEqual(v, ['0', '1'], `placements ${v}`);
    for (const p of c.proxies) {
      const r = await api(p, 'GET', '/api/v1/cluster');
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json.replica_sets.map((s) => [s.id, s.ready, s.topics]),
        [[0, true, 1], [1, true, 1]], r.text);
    }
    load = new Load(c.proxies);
    await load.start();
    await load.waitAcked(300, 60000);
    const r = await finish(load);
    process.stdout.write(`# two sets: acked=${load.acked.size} lost=${r.lost} dup=${r.dup} order=${r.order}\n`);
    assert.equal(r.lost, 0);
    assert.equal(r.order, 0);
  } finally {
    await load?.close();
    await stopCluster(c);
  }
});

test('growth under load: 3 more nodes form rs/1, rebalance moves a topic there, nothing lost', async (t) => {
  const why = await clusterSupport();
  if (why) { t.skip(why); return; }
  let c; let load;
  try {
    c = await startCluster({ name: 'grow6', nodes: 3, replicas: 3, proxies: 2 });
    assert.equal(await placement(c, T), '0');
    assert.equal(await placement(c, TF), '0');
    load = new Load(c.proxies);
    await load.start();
    await load.waitAcked(200, 60000);

    await addNodes(c, 3);
    assert.deepEqual(c.sets.map((s) => s.k), [0, 1]);
    for (const p of c.proxies) {
      await waitFor(async () => {
        const r = await api(p, 'GET', '/api/v1/cluster');
        return r.status === 200 && r.json.replica_sets.some((s) => s.id === 1 && s.ready);
      }, 60000, 'replica set 1 ready on the proxy');
    }
    const r = await api(c.proxies[0], 'POST', '/api/v1/cluster/rebalance');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.moved, 1, r.text);
    const moved = { [T]: await placement(c, T), [TF]: await placement(c, TF) };
    process.stdout.write(`# placements after the rebalance: ${JSON.stringify(moved)}\n`);
    assert.deepEqual(Object.values(moved).sort(), ['0', '1,0'], JSON.stringify(moved));
    // The other proxy follows the new placement from its watch.
    await waitFor(async () => {
      const o = await api(c.proxies[1], 'GET', '/api/v1/cluster');
      return o.json.replica_sets.some((s) => s.id === 1 && s.topics === 1);
    }, 30000, 'the second proxy sees the move');
    await load.waitAcked(300, 60000); // writes go on, now partly on rs/1
    const res = await finish(load);
    process.stdout.write(`# growth: acked=${load.acked.size} lost=${res.lost} dup=${res.dup} order=${res.order}\n`);
    assert.equal(res.lost, 0);
    assert.equal(res.order, 0);
  } finally {
    await load?.close();
    await stopCluster(c);
  }
});
