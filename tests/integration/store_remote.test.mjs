// store.mode remote: gantry proxies in front of one gantry-store node on
// loopback, driven by the official SDK and raw gRPC calls.  Two proxies
// share topics, groups and messages (a receipt handle issued by one is
// acked through the other); the store node killed (SIGKILL) and restarted
// while a proxy serves: errors in-band, then recovery without touching
// the proxy, nothing acknowledged lost (sync flush); the store node
// stopped (SIGSTOP): requests end by their deadlines, nothing hangs; a
// metadata change after the node restarted reaches a proxy watching from
// before; a proxy killed while its consumer holds messages loses none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, startStore, stopGantry, httpGet } from './harness.mjs';
import {
  Code, codeName, pb, Raw, startProducer, startSimpleConsumer, shutdownQuietly, receiveAll,
  yamlOf, wireMessage, sendRequest, receiveRequest, ackRequest, resource, scaled, waitFor,
  withTimeout,
} from './sdk_util.mjs';

const T = 'RemoteTopic';
const G = 'RemoteGroup';
const YAML = yamlOf({ topics: [{ name: T, queues: 4 }], groups: [{ name: G }] });

function proxy(store, extra = {}) {
  return startGantry({ logLevel: 'info', yaml: YAML, remoteStore: store.endpoint, ...extra });
}

async function stopAll(...hs) {
  for (const h of hs.filter(Boolean)) {
    try { process.kill(h.pid, 'SIGCONT'); } catch { /* gone */ }
    await stopGantry(h);
  }
}

async function sendRaw(raw, body, timeoutMs) {
  return raw.unary('SendMessage', sendRequest([wireMessage({ topic: T, body: Buffer.from(body) })]),
    pb.SendMessageResponse, { timeoutMs });
}

test('two proxies share one store node: sent through one, received through the other; a handle from one acked through the other', async () => {
  const s = await startStore({ logLevel: 'info', yaml: YAML });
  let a; let b; let producer; let ca; let cb;
  try {
    a = await proxy(s);
    b = await proxy(s); // declares the same topic and group again: idempotent
    producer = await startProducer(a, [T]);
    const sent = new Map();
    for (let i = 0; i < 20; i++) {
      const body = Buffer.from(`remote-${i}`);
      const r = await producer.send({ topic: T, body, tag: 't' });
      sent.set(r.messageId, body);
    }
    cb = await startSimpleConsumer(b, G, T);
    const got = await receiveAll(cb, sent.size, 30000, { invisible: 30000 });
    const ids = new Set(got.map((m) => m.messageId));
    assert.deepEqual([...sent.keys()].filter((id) => !ids.has(id)), [], 'not received through b');
    for (const m of got) assert.ok(m.body.equals(sent.get(m.messageId)), 'body');

    // A handle issued by a is acked through b.
    const r = await producer.send({ topic: T, body: Buffer.from('handle-test') });
    ca = await startSimpleConsumer(a, G, T);
    const [m] = await receiveAll(ca, 1, 30000, { invisible: 60000, ack: false, batch: 1 });
    assert.equal(m?.messageId, r.messageId);
    const rawB = new Raw(b.endpoint);
    const rawA = new Raw(a.endpoint);
    try {
      const ack = await rawB.unary('AckMessage',
        ackRequest(G, T, [{ id: m.messageId, handle: m.receiptHandle }]), pb.AckMessageResponse);
      assert.equal(ack.err, null);
      assert.equal(ack.resp.getStatus().getCode(), Code.OK, codeName(ack.resp.getStatus().getCode()));
      // It is spent: a second ack, through a, is refused.
      const again = await rawA.unary('AckMessage',
        ackRequest(G, T, [{ id: m.messageId, handle: m.receiptHandle }]), pb.AckMessageResponse);
      assert.equal(again.err, null);
      assert.notEqual(again.resp.getStatus().getCode(), Code.OK, 'a spent handle was acked again');
    } finally {
      rawA.close();
      rawB.close();
    }
    // The proxies keep no message data.
    assert.match(a.log(), /store node .*engine/);
  } finally {
    await shutdownQuietly(producer, ca, cb);
    await stopAll(a, b, s);
  }
});

test('store node killed and restarted while the proxy serves: in-band errors, then recovery by itself', async () => {
  let s = await startStore({ logLevel: 'info', yaml: YAML, flush: 'sync' });
  let a; let consumer;
  const raw = { c: null };
  try {
    a = await proxy(s, { remoteYaml: '  remote_timeout_ms: 2000\n' });
    raw.c = new Raw(a.endpoint);
    const acked = new Map();
    for (let i = 0; i < 10; i++) {
      const body = `before-${i}`;
      const r = await sendRaw(raw.c, body);
      assert.equal(r.err, null);
      assert.equal(r.resp.getStatus().getCode(), Code.OK);
      acked.set(r.resp.getEntriesList()[0].getMessageId(), body);
    }

    await stopGantry(s, 'SIGKILL', { keepDir: true });
    // The proxy answers in-band (no transport error, no hang).
    const down = await sendRaw(raw.c, 'while-down', scaled(30000));
    assert.equal(down.err, null, `transport error: ${down.err}`);
    assert.notEqual(down.resp.getStatus().getCode(), Code.OK, 'a send succeeded with the store down');
    const h = await httpGet(a.httpPort, '/healthz');
    assert.equal(h.status, 200, 'proxy healthz while the store is down');

    s = await startStore({ dir: s.dir, grpcPort: s.grpcPort, httpPort: s.httpPort,
      amqpPort: s.amqpPort, logLevel: 'info', yaml: YAML, flush: 'sync' });
    // The proxy reconnects by itself.
    let after;
    await waitFor(async () => {
      after = await sendRaw(raw.c, 'after-0');
      return after.err === null && after.resp.getStatus().getCode() === Code.OK;
    }, 30000, 'a send through the proxy after the store node came back', 200);
    acked.set(after.resp.getEntriesList()[0].getMessageId(), 'after-0');

    consumer = await startSimpleConsumer(a, G, T);
    const got = await receiveAll(consumer, acked.size, 30000, { invisible: 30000 });
    const ids = new Set(got.map((m) => m.messageId));
    const lost = [...acked].filter(([id]) => !ids.has(id)).map(([, body]) => body);
    assert.deepEqual(lost, [], 'acknowledged sends lost');
  } finally {
    raw.c?.close();
    await shutdownQuietly(consumer);
    await stopAll(a, s);
  }
});

test('store node stopped (SIGSTOP): deadlines fire, nothing hangs; SIGCONT: served again', async () => {
  const s = await startStore({ logLevel: 'info', yaml: YAML });
  let a; let raw;
  try {
    a = await proxy(s, { remoteYaml: '  remote_timeout_ms: 1000\n' });
    raw = new Raw(a.endpoint);
    const ok = await sendRaw(raw, 'before');
    assert.equal(ok.resp.getStatus().getCode(), Code.OK);

    process.kill(s.pid, 'SIGSTOP');
    const [send, recv] = await Promise.all([
      sendRaw(raw, 'stalled', scaled(60000)),
      raw.serverStream('ReceiveMessage', receiveRequest({
        topic: T, group: G, queueId: -1, longPollMs: 2000,
      }), pb.ReceiveMessageResponse, { timeoutMs: scaled(60000) }),
    ]);
    assert.equal(send.err, null, `send: transport error ${send.err}`);
    assert.notEqual(send.resp.getStatus().getCode(), Code.OK, 'a send succeeded with the store stopped');
    assert.equal(recv.err, null, `receive: transport error ${recv.err}`);
    const h = await withTimeout(httpGet(a.httpPort, '/healthz'), scaled(10000), 'healthz');
    assert.equal(h.status, 200);

    process.kill(s.pid, 'SIGCONT');
    await waitFor(async () => {
      const r = await sendRaw(raw, 'after');
      return r.err === null && r.resp.getStatus().getCode() === Code.OK;
    }, 30000, 'a send after SIGCONT', 200);
  } finally {
    raw?.close();
    await stopAll(a, s);
  }
});

// The queues of T a proxy routes to (its copy of the store's metadata).
async function routeQueues(g) {
  const raw = new Raw(g.endpoint);
  try {
    const r = await raw.unary('QueryRoute', new pb.QueryRouteRequest().setTopic(resource(T)),
      pb.QueryRouteResponse);
    if (r.err || r.resp.getStatus().getCode() !== Code.OK) return -1;
    return new Set(r.resp.getMessageQueuesList().map((q) => q.getId())).size;
  } finally {
    raw.close();
  }
}

test('metadata after a store node restart: a change made afterwards reaches a proxy that watched before', async () => {
  let s = await startStore({ logLevel: 'info', yaml: YAML });
  let a; const extra = [];
  try {
    a = await proxy(s);
    assert.equal(await routeQueues(a), 4);
    // More metadata changes before the restart (every proxy start declares
    // the topic and group again), so that versions run ahead of what the
    // restarted node counts.
    for (let i = 0; i < 3; i++) await stopGantry(await proxy(s));
    await stopGantry(s, 'SIGTERM', { keepDir: true });
    s = await startStore({ dir: s.dir, grpcPort: s.grpcPort, httpPort: s.httpPort,
      amqpPort: s.amqpPort, logLevel: 'info', yaml: YAML });
    // Another proxy grows the topic to 8 queues; a learns it from its watch.
    extra.push(await proxy(s, { yaml: yamlOf({ topics: [{ name: T, queues: 8 }], groups: [{ name: G }] }) }));
    await waitFor(async () => (await routeQueues(a)) === 8, 20000,
      'proxy a routes to the 8 queues declared after the store node restarted', 100);
  } finally {
    await stopAll(a, ...extra, s);
  }
});

test('a proxy killed (SIGKILL) while its consumer holds messages: they come back through another proxy', async () => {
  const s = await startStore({ logLevel: 'info', yaml: YAML });
  let a; let b; let producer; let ca; let cb;
  try {
    a = await proxy(s);
    b = await proxy(s);
    producer = await startProducer(b, [T]);
    const sent = new Set();
    for (let i = 0; i < 5; i++) sent.add((await producer.send({ topic: T, body: Buffer.from(`held-${i}`) })).messageId);
    ca = await startSimpleConsumer(a, G, T);
    const held = await receiveAll(ca, sent.size, 30000, { invisible: 10000, ack: false });
    assert.deepEqual(new Set(held.map((m) => m.messageId)), sent, 'received through a');
    await stopGantry(a, 'SIGKILL');
    a = undefined;
    // Nothing of them lived in the proxy: after their invisible time they
    // are delivered again, through b.
    cb = await startSimpleConsumer(b, G, T);
    const again = await receiveAll(cb, sent.size, 30000, { invisible: 30000 });
    assert.deepEqual(new Set(again.map((m) => m.messageId)), sent, 'delivered again through b');
    assert.ok(again.every((m) => m.deliveryAttempt >= 2), 'a second delivery attempt');
  } finally {
    await shutdownQuietly(producer, ca, cb);
    await stopAll(a, b, s);
  }
});

test('remote store: a dead letter redriven within the de-dup window is stored again (an append keyed by the message id was answered from the window and the message lost)', async () => {
  const TD = 'RemoteDlqTopic';
  const GD = 'RemoteDlqGroup';
  const yaml = yamlOf({ topics: [{ name: TD, queues: 1 }], groups: [{ name: GD, max_delivery_attempts: 1 }] });
  const s = await startStore({ logLevel: 'info', yaml });
  let a; let producer; let c;
  try {
    a = await startGantry({ logLevel: 'info', yaml, remoteStore: s.endpoint });
    producer = await startProducer(a, [TD]);
    const sent = await producer.send({ topic: TD, body: Buffer.from('poison') });
    c = await startSimpleConsumer(a, GD, TD);
    // One attempt allowed: fail it; the next pop dead-letters it.
    await waitFor(async () => {
      for (const m of await c.receive(4, 30000)) {
        await c.changeInvisibleDuration(m, 0);
        return true;
      }
      return false;
    }, 30000, 'first delivery');
    const dlq = async () => JSON.parse((await httpGet(a.httpPort, `/api/v1/groups/${GD}`)).body).dlq_messages;
    await waitFor(async () => (await c.receive(4, 30000)).length === 0 && (await dlq()) === 1,
      30000, 'one dead letter');
    const r = await fetch(`http://127.0.0.1:${a.httpPort}/api/v1/groups/${GD}/dlq/redrive`,
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    const out = await r.json();
    assert.equal(out.moved, 1, JSON.stringify(out));
    // Back on its topic, well within the store node's 60 s window.
    const back = await waitFor(async () => {
      const ms = await c.receive(4, 30000);
      return ms.length > 0 ? ms : null;
    }, 30000, 'the redriven message delivered');
    assert.equal(back[0].messageId, sent.messageId);
    assert.equal(back[0].body.toString(), 'poison');
  } finally {
    await shutdownQuietly(producer, c);
    await stopAll(a);
    await stopGantry(s);
  }
});
