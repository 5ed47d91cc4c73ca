// The chaos checker (cluster_harness.mjs check()) on made-up records: it
// finds an acknowledged send never delivered, counts duplicates, tells
// deliveries of sends that failed apart, and finds a FIFO group delivered
// out of order (a redelivery of an earlier message is a duplicate, not an
// order fault).  The end-to-end counterpart is chaos.mjs's remote-wipe.
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
