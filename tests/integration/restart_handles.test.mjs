// A receipt handle given out before a graceful restart still acks after
// it: a server that stops is not a client that went away, so the messages
// its clients hold are not given back (and their handles stay valid).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry, scaled } from './harness.mjs';
import {
  pb, Raw, yamlOf, consumerSettings, receiveRequest, splitReceive, wireMessage, sendRequest,
  ackRequest,
} from './sdk_util.mjs';

const T = 'HandleTopic';
const G = 'HandleGroup';
const yaml = yamlOf({ topics: [{ name: T, queues: 2 }], groups: [{ name: G }] });

test('a receipt handle from before a SIGTERM restart acks after it; nothing is redelivered', async () => {
  let g = await startGantry({ yaml, flush: 'sync' });
  let raw = new Raw(g.endpoint, { clientId: 'handle-client' });
  let raw2;
  try {
    const tele = await raw.telemetry(consumerSettings(G, T));
    assert.equal(tele.err, null);
    const sent = await raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, body: Buffer.from('keep') })]),
      pb.SendMessageResponse);
    assert.equal(sent.resp.getStatus().getCode(), 20000);
    const r = splitReceive((await raw.serverStream('ReceiveMessage',
      receiveRequest({ group: G, topic: T, invisibleMs: scaled(120000) }), pb.ReceiveMessageResponse)).resps);
    assert.equal(r.messages.length, 1);
    const m = r.messages[0];
    const handle = m.getSystemProperties().getReceiptHandle();
    const id = m.getSystemProperties().getMessageId();

    tele.call.on('error', () => {});
    const info = await stopGantry(g, 'SIGTERM', { keepDir: true });
    assert.equal(info.code, 0);
    raw.close();
    g = await startGantry({ dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort, yaml, flush: 'sync' });
    raw2 = new Raw(g.endpoint, { clientId: 'handle-client' });
    // Still invisible: the restart did not give it back.
    const again = splitReceive((await raw2.serverStream('ReceiveMessage',
      receiveRequest({ group: G, topic: T, longPollMs: 1500 }), pb.ReceiveMessageResponse)).resps);
    assert.equal(again.messages.length, 0, 'the held message was handed out again after the restart');
    const ack = await raw2.unary('AckMessage', ackRequest(G, T, [{ id, handle }]), pb.AckMessageResponse);
    assert.equal(ack.resp.getStatus().getCode(), 20000, ack.resp.getStatus().getMessage());
  } finally {
    raw.close();
    if (raw2) raw2.close();
    await stopGantry(g);
  }
});
