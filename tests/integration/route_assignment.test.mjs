// QueryAssignment: message-level balancing for normal groups (one
// assignment, queue -1); one assignment per queue for FIFO groups.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import { pb, Raw, resource } from './sdk_util.mjs';

const yaml = `
topics:
  - {name: FifoAssignT, type: FIFO, queues: 3}
groups:
  - {name: FifoAssignG, fifo: true}
  - {name: PlainAssignG}
`;

test('QueryAssignment: -1 for a normal group, every queue for a FIFO group', async () => {
  const g = await startGantry({ yaml });
  const raw = new Raw(g.endpoint);
  try {
    const ask = async (group) => {
      const r = await raw.unary('QueryAssignment', new pb.QueryAssignmentRequest()
        .setTopic(resource('FifoAssignT')).setGroup(resource(group)), pb.QueryAssignmentResponse);
      assert.equal(r.resp.getStatus().getCode(), 20000, r.resp.getStatus().getMessage());
      return r.resp.getAssignmentsList().map((a) => a.getMessageQueue().getId());
    };
    assert.deepEqual(await ask('PlainAssignG'), [-1]);
    assert.deepEqual((await ask('FifoAssignG')).sort(), [0, 1, 2]);
    const r = await raw.unary('QueryAssignment', new pb.QueryAssignmentRequest()
      .setTopic(resource('FifoAssignT')).setGroup(resource('NoSuchGroup')), pb.QueryAssignmentResponse);
    assert.equal(r.resp.getStatus().getCode(), 40403, 'CONSUMER_GROUP_NOT_FOUND');
  } finally {
    raw.close();
    await stopGantry(g);
  }
});
