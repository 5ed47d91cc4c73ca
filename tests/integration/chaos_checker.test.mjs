// The chaos checker (cluster_harness.mjs check()) on made-up records: it
// finds an acknowledged send never delivered, counts duplicates, tells
// deliveries of sends that failed apart, and finds a FIFO group delivered
// out of order (a redelivery of an earlier message is a duplicate, not an
// order fault), and bounds duplicates by what was in flight (ack failures,
// late acks, sends across a disruption, failed sends).  The end-to-end
// counterpart is chaos.mjs's remote-wipe.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { check } from './cluster_harness.mjs';

const acked = (...entries) => new Map(entries.map(([id, mg, seq]) => [id, { mg, seq }]));
const d = (id, mg, seq) => ({ id, mg, seq });

test('nothing lost, nothing doubled', () => {
  const r = check({ acked: acked(['a'], ['b']), deliveries: [d('a'), d('b')] });
  assert.deepEqual([r.acked, r.lost, r.dup, r.extra, r.order], [2, 0, 0, 0, 0]);
});

test('an acknowledged send never delivered is lost; a delivery twice is one dup', () => {
  const r = check({ acked: acked(['a'], ['b'], ['c']), deliveries: [d('a'), d('c'), d('a')] });
  assert.equal(r.lost, 1);
  assert.deepEqual(r.lostIds, ['b']);
  assert.equal(r.dup, 1);
});

test('a delivered message whose send was not acknowledged is extra, not lost or dup', () => {
  const r = check({ acked: acked(['a']), deliveries: [d('a'), d('x')] });
  assert.deepEqual([r.lost, r.dup, r.extra], [0, 0, 1]);
});

test('FIFO: a group delivered out of order is found; other groups and redeliveries are not faults', () => {
  const ok = check({
    acked: acked(['1', 'g', 0], ['2', 'g', 1], ['3', 'h', 0], ['4', 'g', 2]),
    deliveries: [d('1', 'g', 0), d('3', 'h', 0), d('2', 'g', 1), d('1', 'g', 0), d('4', 'g', 2)],
  });
  assert.equal(ok.order, 0);
  assert.equal(ok.dup, 1);
  const bad = check({
    acked: acked(['1', 'g', 0], ['2', 'g', 1], ['3', 'g', 2]),
    deliveries: [d('1', 'g', 0), d('3', 'g', 2), d('2', 'g', 1)],
  });
  assert.equal(bad.order, 1);
  assert.match(bad.orderSamples[0], /g: 1 after 2/);
});

test('duplicates: each must be explained by something in flight', () => {
  // No fault, no failed ack: a second delivery is unexplained.
  const bare = check({ acked: acked(['a']), deliveries: [d('a'), d('a')] });
  assert.deepEqual([bare.dup, bare.dupBound, bare.dupUnexplained], [1, 0, 1]);
  assert.deepEqual(bare.dupSamples, ['a x2']);
  // An ack that failed (or came after the invisible time) explains one.
  const acks = check({ acked: acked(['a'], ['b']), deliveries: [d('a'), d('a'), d('b'), d('b'), d('b')],
    ackFailed: new Map([['a', 1], ['b', 1]]), lateAcks: new Map([['b', 1]]) });
  assert.deepEqual([acks.dup, acks.dupBound, acks.dupUnexplained], [3, 3, 0]);
  // A send in flight across a fault may be stored twice: one more; a send
  // answered before the fault may not.
  const sends = new Map([['s', { start: 100, end: 300 }], ['t', { start: 10, end: 50 }]]);
  const fault = check({ acked: sends, deliveries: [d('s'), d('s'), d('t'), d('t')],
    disruptions: [{ start: 200, end: 900 }] });
  assert.deepEqual([fault.dup, fault.dupBound, fault.dupUnexplained], [2, 1, 1]);
  assert.deepEqual(fault.dupSamples, ['t x2']);
  // Sends not acknowledged, delivered twice: at most one per failed send.
  const rec = { acked: acked(), deliveries: [d('x'), d('x'), d('y'), d('y')] };
  assert.equal(check({ ...rec, failedSends: 1, failedProbes: 1 }).dupUnexplained, 0);
  const one = check({ ...rec, failedSends: 1 });
  assert.deepEqual([one.dupBound, one.dupUnexplained], [1, 1]);
});
