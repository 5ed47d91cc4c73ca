// Leaving the in-sync set (issue 12; store-server/ss_repl.c
// ss_repl_isr_leave, ss_cluster.c isr_change; docs/cluster.md "In-sync set
// changes"): writes are answered once a quorum of the set holds them, so a
// lagging member may hold acknowledged writes that another member lacks.
// It must not be dropped while the members that stay do not hold them all:
// the set left behind could elect the member that lacks them.
//
// A private etcd, one real gantry-store node (n1) and the test itself as
// the members n2 (X) and n3 (Y), speaking ReplicaFetch (R = 3, min_insync
// 2: a write needs n1 and one of them).  Both join; Y stops fetching, a
// write is answered with X's acknowledgement, X stops too.  Both become
// late at about the same time (X first in the leader's list): the leader
// may drop Y (n1 and X still hold every answered write), but not X before
// Y: the set "n1,n3" (Y without X) must never be written.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startStore, stopGantry, scaled, waitFor, sleep } from './harness.mjs';
import { startEtcd, stopEtcd, etcdGet, etcdPut } from './cluster_harness.mjs';
import { storeCall } from './store_rpc.mjs';

const NAME = 'leavetest';
const RS = `/gantry/${NAME}/rs/0`;
const TTL_S = 16;
const LAG_MS = scaled(3000);

let etcd;
let n1;
let epoch;

const call = (method, req, ms = 10000) => storeCall(n1.endpoint, method, req, ms);

const isrIds = async () => ((await etcdGet(etcd, `${RS}/isr`)) ?? '').split(':')[1]?.split(',') ?? [];

// A member that writes nothing: it holds what its requests say.
class Member {
  constructor(id) {
    Object.assign(this, { id, cl: 0, lastEpoch: 0, stEpoch: 0, stIno: 0, stOff: 0, stop: true });
  }

  async fetchApply() {
    const r = await call('ReplicaFetch', { epoch, node_id: this.id, cl_next: this.cl,
      last_epoch: this.lastEpoch, state_epoch: this.stEpoch, state_ino: this.stIno,
      state_offset: this.stOff, max_bytes: 0, wait_ms: 0 });
    assert.equal(r.err, null, `ReplicaFetch: ${r.err?.details}`);
    const s = r.resp;
    if (s.err !== 'OK') return;
    if (s.truncate) {
      this.cl = s.truncate_to;
      return;
    }
    for (const ch of s.chunks) this.cl = ch.segment_base + ch.file_offset + ch.data.length;
    if (s.state_epoch !== 0 && (s.state_epoch !== this.stEpoch || s.state_ino !== this.stIno)) {
      Object.assign(this, { stEpoch: s.state_epoch, stIno: s.state_ino, stOff: 0 });
    }
    this.stOff += s.state_data.length;
    const held = s.history.filter((h) => h.cl_pos <= this.cl);
    this.lastEpoch = held.length ? held[held.length - 1].epoch : 0;
  }

  // Fetches (each request acknowledging what came before) until stopped.
  follow() {
    this.stop = false;
    this.loop = (async () => {
      while (!this.stop) {
        await this.fetchApply();
        await sleep(20);
      }
    })();
  }

  async unfollow() {
    this.stop = true;
    await this.loop;
  }
}
const X = new Member('n2');
const Y = new Member('n3');

before(async () => {
  etcd = await startEtcd();
  await etcdPut(etcd, `${RS}/members`, 'n1,n2,n3');
  await etcdPut(etcd, `${RS}/isr`, '0:n1,n2,n3');
  // n2 and n3 hold nothing, as n1: their positions equal its own, so n1
  // may win (it needs 2 of 3); unregistered, they are then not listed.
  const empty = ['00000000000000000000', '0', '00000000000000000000',
    '00000000000000000000', '00000000000000000000'].join(' ');
  for (const id of ['n2', 'n3']) await etcdPut(etcd, `${RS}/pos/${id}`, `0 ${empty}`);
  n1 = await startStore({ logLevel: 'info', amqpListen: 'off', yaml: `
topics:
  - {name: T, type: NORMAL, queues: 1}
cluster:
  etcd: ["${etcd.endpoints[0]}"]
  name: ${NAME}
  node_id: n1
  lease_ttl_s: ${TTL_S}
  replicas: 3
  min_insync: 2
  replica_lag_ms: ${LAG_MS}
` });
  await waitFor(async () => (await etcdGet(etcd, `${RS}/leader`)) === 'n1', 30000, 'n1 leads', 50);
  epoch = Number(await etcdGet(etcd, `${RS}/epoch`));
});

after(async () => {
  await X.unfollow();
  await Y.unfollow();
  const errs = [];
  if (n1) await stopGantry(n1).catch((e) => errs.push(e));
  if (etcd) await stopEtcd(etcd);
  if (errs.length) throw errs[0];
});

test('a lagging member holding acknowledged writes is not dropped before one that lacks them', async () => {
  // X joins first (first in the leader's list), then Y
  X.follow();
  await waitFor(async () => (await isrIds()).includes('n2'), 30000, 'n2 listed', 50);
  Y.follow();
  await waitFor(async () => (await isrIds()).includes('n3'), 30000, 'n3 listed', 50);
  assert.deepEqual(await isrIds(), ['n1', 'n2', 'n3']);
  await waitFor(async () => {
    const r = await call('PutTopic', { topic: { name: 'T', type: 'TOPIC_NORMAL',
      queue_count: 1, perm: 6 } });
    return !r.err && r.resp.err === 'OK';
  }, 30000, 'a write answered', 100);

  await Y.unfollow();
  const w = await call('Append', { topic: 'T', messages: [{ body: Buffer.from('only X'),
    queue_id: 0, born_ts_ms: Date.now() }] });
  assert.equal(w.err, null);
  assert.equal(w.resp.err, 'OK', 'answered by n1 and n2');
  await X.unfollow();

  await waitFor(async () => (await isrIds()).join(',') === 'n1', 63000,
    'both dropped from the in-sync set', 100);
  // n1 logs a change after etcd has taken it: wait for the line too
  await waitFor(() => / n1 \(n2 lagging\)/.test(n1.log()), 10000, 'n1 logs the last change', 50);
  const sets = [...n1.log().matchAll(/in-sync set of epoch \d+: (\S+) \((\S+) lagging\)/g)]
    .map((m) => `${m[1]} (${m[2]})`);
  const refused = /in-sync change for n2 \(lagging\) not made: the other members do not hold/
    .test(n1.log());
  console.log(`in-sync changes: ${sets.join('; ')}${refused ? '; n2 refused while n3 lacked the write' : ''}`);
  assert.ok(!sets.includes('n1,n3 (n2)'),
    `n2, the only member with the write, dropped while n3 stayed: ${sets.join('; ')}`);
  assert.deepEqual(sets, ['n1,n2 (n3)', 'n1 (n2)']);
});
