// Request metadata over 8 KiB (grpc C core's default header-list limit):
// with the default, one such call failed every call in flight on the same
// connection.  The runtime holds each call to 64 KiB itself and gives the
// transport a 1 MiB limit: a call with 16 KiB and one with 60 KiB of
// metadata are answered; one with 100 KiB or 900 KiB gets
// RESOURCE_EXHAUSTED alone (before, with the transport's limit at 64 KiB,
// that call failed the long poll beside it too); in every case a long poll
// in flight on the same channel ends normally.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  grpc, pb, SVC, Code, codeName, receiveRequest, splitReceive, scaled,
} from './sdk_util.mjs';

const ident = (x) => x;
let g;
before(async () => { g = await startGantry({ logLevel: 'info' }); });
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

function md(bigBytes) {
  const m = new grpc.Metadata();
  m.set('x-mq-client-id', 'big-headers-client');
  m.set('x-mq-language', 'HTTP');
  if (bigBytes) m.set('x-big-value', 'v'.repeat(bigBytes));
  return m;
}

for (const kib of [16, 60, 100, 900]) {
  const fits = kib < 64;
  test(`a call with ${kib} KiB of metadata is ${fits ? 'answered' : 'refused alone'}; a long poll on the same channel is not hurt`, async () => {
    const c = new grpc.Client(g.endpoint, grpc.credentials.createInsecure(),
      { 'grpc.use_local_subchannel_pool': 1 });
    try {
      let started = false;
      const poll = new Promise((resolve) => {
        const resps = [];
        const call = c.makeServerStreamRequest(SVC + 'ReceiveMessage', ident, ident,
          Buffer.from(receiveRequest({ group: 'GroupTest', topic: 'TopicTest', longPollMs: scaled(1500) })
            .serializeBinary()), md(0), { deadline: Date.now() + scaled(20000) });
        call.on('metadata', () => { started = true; });
        call.on('data', (d) => resps.push(pb.ReceiveMessageResponse.deserializeBinary(new Uint8Array(d))));
        call.on('error', (err) => resolve({ err }));
        call.on('status', (s) => { if (s.code === grpc.status.OK) resolve({ resps }); });
      });
      // The poll is on the wire (its stream open) before the big call goes.
      await new Promise((r) => setTimeout(r, 100));
      const big = await new Promise((resolve) => c.makeUnaryRequest(SVC + 'Heartbeat', ident, ident,
        Buffer.from(new pb.HeartbeatRequest().serializeBinary()), md(kib * 1024),
        { deadline: Date.now() + scaled(10000) }, (err, out) => resolve({ err, out })));
      if (fits) {
        assert.equal(big.err, null, big.err && `${big.err.code} ${big.err.details}`);
        assert.equal(codeName(pb.HeartbeatResponse.deserializeBinary(new Uint8Array(big.out))
          .getStatus().getCode()), codeName(Code.OK));
      } else {
        assert.ok(big.err, 'an oversized call must be refused');
        assert.equal(big.err.code, grpc.status.RESOURCE_EXHAUSTED, `${big.err.code} ${big.err.details}`);
        assert.match(big.err.details, /request metadata of \d+ bytes exceeds the limit of 65536 bytes/);
      }
      const p = await poll;
      assert.equal(p.err, undefined, p.err && `poll failed: ${p.err.code} ${p.err.details}`);
      assert.equal(codeName(splitReceive(p.resps).status?.getCode()), codeName(Code.MESSAGE_NOT_FOUND));
      void started;
    } finally {
      c.close();
    }
  });
}
