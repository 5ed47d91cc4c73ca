// /metrics with RocketMQ 5's metric names (proxy/http/px_metrics.c) and the
// AMQP gateway's in RabbitMQ's (gateway-amqp/gw_metrics.c): values
// after real SDK traffic (send, receive, ack, dead-lettering, transaction
// commit and rollback), histograms cumulative, the consumer gauges equal to
// the backlog, `promtool check metrics` on the real output, and the cap on
// label sets (metrics.max_label_sets) with scrapes running under load.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { require, startGantry, stopGantry, httpGet, waitFor } from './harness.mjs';
import {
  startProducer, startSimpleConsumer, shutdownQuietly, patternBytes, defPb,
} from './sdk_util.mjs';

const T = 'MetTopic'; const G = 'MetGroup';
const T_DLQ = 'MetDlqTopic'; const G_DLQ = 'MetDlqGroup';
const T_TX = 'MetTxTopic';

// name{labels} value lines -> [{name, labels, value}]
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable metrics line: ${line}`);
    const labels = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

async function scrape(g) {
  const r = await httpGet(g.httpPort, '/metrics');
  assert.equal(r.status, 200);
  return { text: r.body, samples: parseMetrics(r.body) };
}

function value(samples, name, labels = {}) {
  const hits = samples.filter((s) => s.name === name &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return hits.length === 0 ? undefined : hits.reduce((a, s) => a + s.value, 0);
}

function promtool(text) {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.ok(!r.error, `promtool is needed (Debian package prometheus, scripts/install-deps.sh): ${r.error?.message}`);
  return r;
}

// The buckets of one histogram series: cumulative, +Inf last, = _count.
function checkHistogram(samples, name, labels) {
  const b = samples.filter((s) => s.name === `${name}_bucket` &&
    Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(b.length > 1, `${name} ${JSON.stringify(labels)} has buckets`);
  for (let i = 1; i < b.length; i++) assert.ok(b[i].value >= b[i - 1].value, `${name} buckets cumulative`);
  assert.equal(b.at(-1).labels.le, '+Inf');
  assert.equal(value(samples, `${name}_count`, labels), b.at(-1).value, `${name}_count = +Inf bucket`);
  return Object.fromEntries(b.map((s) => [s.labels.le, s.value]));
}

let g;
before(async () => {
  g = await startGantry({
    yaml: `
topics:
  - {name: ${T}, type: NORMAL, queues: 1}
  - {name: ${T_DLQ}, type: NORMAL, queues: 1}
  - {name: ${T_TX}, type: TRANSACTION, queues: 1}
groups:
  - {name: ${G}}
  - {name: ${G_DLQ}, max_delivery_attempts: 1}
message: {tx_check_after_ms: 600000}
`,
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0);
});

test('SDK traffic: messages in/out, sizes, consumer gauges = backlog, DLQ, tx commit/rollback, rpc latency; promtool accepts it', async () => {
  let p; let c; let cd;
  try {
    p = await startProducer(g, [T, T_DLQ, T_TX], { checker: { check: async () => defPb.TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED } });
    const sizes = [10, 2000, 5000, 600000, 100];
    const sentAt = [];
    for (const [i, n] of sizes.entries()) {
      const before = Date.now();
      await p.send({ topic: T, body: patternBytes(n, i + 1) });
      sentAt.push([before, Date.now()]);
    }
    let { samples } = await scrape(g);
    // The store's syncs (sync mode): five sends one after the other are
    // five commitlog fdatasyncs at least, and nothing is left unsynced.
    const fsyncBuckets = ['0.1', '0.25', '0.5', '1', '2.5', '5', '10', '25', '50', '100', '250', '1000', '+Inf'];
    const cl0 = checkHistogram(samples, 'rocketmq_storage_fsync_latency', { file: 'commitlog' });
    assert.deepEqual(samples.filter((x) => x.name === 'rocketmq_storage_fsync_latency_bucket' &&
      x.labels.file === 'commitlog').map((x) => x.labels.le), fsyncBuckets);
    assert.ok(cl0['+Inf'] >= sizes.length, `commitlog syncs ${cl0['+Inf']} >= ${sizes.length}`);
    assert.ok(value(samples, 'rocketmq_storage_fsync_latency_sum', { file: 'commitlog' }) > 0);
    checkHistogram(samples, 'rocketmq_storage_fsync_latency', { file: 'state' });
    assert.equal(value(samples, 'rocketmq_storage_flush_behind_bytes'), 0, 'sync mode: nothing behind');
    assert.equal(value(samples, 'rocketmq_storage_fsync_failures_total', { file: 'commitlog' }), 0);
    assert.equal(value(samples, 'rocketmq_storage_fsync_failures_total', { file: 'state' }), 0);
    const sel = { topic: T, message_type: 'normal' };
    assert.equal(value(samples, 'rocketmq_messages_in_total', sel), sizes.length, 'messages in = sent');
    assert.equal(value(samples, 'rocketmq_throughput_in_total', sel), sizes.reduce((a, b) => a + b), 'bytes in');
    const bk = checkHistogram(samples, 'rocketmq_message_size', sel);
    assert.deepEqual(bk, { 1024: 2, 4096: 3, 524288: 4, 1048576: 5, 2097152: 5, 4194304: 5, '+Inf': 5 });
    assert.equal(value(samples, 'rocketmq_message_size_sum', sel), sizes.reduce((a, b) => a + b));

    // Receive 2 of the 5, ack the first: 3 ready, 1 in flight, 4 not acked.
    c = await startSimpleConsumer(g, G, T);
    const got = [];
    await waitFor(async () => {
      got.push(...await c.receive(2 - got.length, 30000));
      return got.length >= 2;
    }, 15000, 'two messages received');
    got.sort((a, b) => a.offset - b.offset);
    await c.ack(got[0]);
    const t0 = Date.now();
    ({ samples } = await scrape(g));
    const t1 = Date.now();
    const pair = { topic: T, consumer_group: G };
    assert.equal(value(samples, 'rocketmq_messages_out_total', pair), 2);
    assert.equal(value(samples, 'rocketmq_throughput_out_total', pair), got.reduce((a, m) => a + m.body.length, 0));
    assert.equal(value(samples, 'rocketmq_consumer_ready_messages', pair), 3, 'ready');
    assert.equal(value(samples, 'rocketmq_consumer_inflight_messages', pair), 1, 'in flight');
    assert.equal(value(samples, 'rocketmq_consumer_lag_messages', pair), 4, 'lag = the backlog');
    // The oldest unacknowledged message is the second one sent (offset 1).
    const ll = value(samples, 'rocketmq_consumer_lag_latency', pair);
    assert.ok(ll >= t0 - sentAt[1][1] - 2 && ll <= t1 - sentAt[1][0] + 2,
      `lag latency ${ll} ms: the second message's age (${t0 - sentAt[1][1]}..${t1 - sentAt[1][0]})`);
    assert.equal(value(samples, 'rocketmq_producer_connections', { language: 'HTTP' }), 1, 'producer connections');
    assert.equal(value(samples, 'rocketmq_consumer_connections', { consumer_group: G, language: 'HTTP', consume_mode: 'pop' }), 1,
      'consumer connections');

    // Dead letter: max_delivery_attempts 1, the one delivery fails.
    await p.send({ topic: T_DLQ, body: Buffer.from('poison') });
    cd = await startSimpleConsumer(g, G_DLQ, T_DLQ);
    let m;
    await waitFor(async () => { [m] = await cd.receive(1, 30000); return m; }, 15000, 'poison received');
    await cd.changeInvisibleDuration(m, 0);
    await waitFor(async () => {
      await cd.receive(1, 30000);
      return value((await scrape(g)).samples, 'rocketmq_send_to_dlq_messages_total', { consumer_group: G_DLQ }) === 1;
    }, 15000, 'send_to_dlq = 1');

    // Transactions: a half message counts until it is resolved.
    const tx1 = p.beginTransaction();
    await p.send({ topic: T_TX, body: Buffer.from('c') }, tx1);
    ({ samples } = await scrape(g));
    assert.equal(value(samples, 'rocketmq_half_messages', { topic: T_TX }), 1, 'one half message');
    await tx1.commit();
    const tx2 = p.beginTransaction();
    await p.send({ topic: T_TX, body: Buffer.from('r') }, tx2);
    await tx2.rollback();
    ({ samples } = await scrape(g));
    assert.equal(value(samples, 'rocketmq_commit_messages_total', { topic: T_TX }), 1);
    assert.equal(value(samples, 'rocketmq_rollback_messages_total', { topic: T_TX }), 1);
    assert.equal(value(samples, 'rocketmq_half_messages', { topic: T_TX }), 0, 'no half message left');
    assert.equal(value(samples, 'rocketmq_messages_in_total', { topic: T_TX, message_type: 'transaction' }), 2);

    // rpc_latency: every SendMessage so far answered OK.  A call counts
    // when it closes on the server, which is after the client has its
    // reply: the last send's may come a moment after the scrape above.
    const send = { protocol_type: 'grpc', request_code: 'send_message', response_code: 'ok', is_long_polling: 'false', result: 'success' };
    await waitFor(async () => {
      ({ samples } = await scrape(g));
      return value(samples, 'rocketmq_rpc_latency_count', send) >= sizes.length + 3;
    }, 5000, 'rpc_latency counts the eight sends');
    const lat = checkHistogram(samples, 'rocketmq_rpc_latency', send);
    assert.equal(lat['+Inf'], sizes.length + 3, 'one SendMessage per send');
    assert.deepEqual(Object.keys(lat), ['1', '3', '5', '7', '10', '100', '1000', '2000', '3000', '+Inf']);
    assert.ok(value(samples, 'rocketmq_rpc_latency_count', { request_code: 'receive_message', is_long_polling: 'true' }) >= 2);
    assert.ok(value(samples, 'rocketmq_storage_size') > 600000, 'storage size');
    // Two more sends (transactional) since: two more commitlog syncs at least.
    const cl1 = checkHistogram(samples, 'rocketmq_storage_fsync_latency', { file: 'commitlog' });
    assert.ok(cl1['+Inf'] >= cl0['+Inf'] + 2, `commitlog syncs grew: ${cl0['+Inf']} -> ${cl1['+Inf']}`);
    assert.equal(value(samples, 'rocketmq_proxy_up', { proxy_mode: 'local' }), 1);

    const pt = promtool((await scrape(g)).text);
    assert.equal(pt.status, 0, `promtool check metrics:\n${pt.stdout}${pt.stderr}`);
  } finally {
    await shutdownQuietly(p, c, cd);
  }
});

test('label sets are capped (metrics.max_label_sets): the rest count under _other; scrapes during sends stay consistent', async () => {
  const topics = Array.from({ length: 6 }, (_, i) => `MetCap${i}`);
  const gc = await startGantry({
    serverYaml: '', yaml: `metrics: {max_label_sets: 3}\ntopics:\n${topics.map((t) => `  - {name: ${t}, queues: 1}`).join('\n')}\ngroups:\n  - {name: GroupTest}\n`,
  });
  let p;
  try {
    p = await startProducer(gc, topics);
    const per = 5;
    let scrapes = 0;
    let sending = true;
    const scraper = (async () => {
      while (sending) {
        const { samples } = await scrape(gc);
        assert.ok(samples.filter((s) => s.name === 'rocketmq_messages_in_total').length <= 4);
        scrapes++;
      }
    })();
    await Promise.all(topics.map(async (t) => {
      for (let i = 0; i < per; i++) await p.send({ topic: t, body: Buffer.from(`${t}-${i}`) });
    }));
    sending = false;
    await scraper;
    const { samples, text } = await scrape(gc);
    const ins = samples.filter((s) => s.name === 'rocketmq_messages_in_total');
    assert.equal(ins.length, 4, `3 label sets and _other:\n${ins.map((s) => JSON.stringify(s)).join('\n')}`);
    assert.equal(ins.reduce((a, s) => a + s.value, 0), topics.length * per, 'nothing lost');
    assert.equal(value(samples, 'rocketmq_messages_in_total', { topic: '_other', message_type: '_other' }), 3 * per);
    assert.ok(scrapes >= 1);
    const pt = promtool(text);
    assert.equal(pt.status, 0, `promtool:\n${pt.stdout}${pt.stderr}`);
  } finally {
    await shutdownQuietly(p);
    await stopGantry(gc);
  }
});

test('AMQP traffic: RabbitMQ-named gauges (connections, channels, consumers, queue ready / unacked); promtool accepts it', async () => {
  const amqp = require('amqplib');
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g.amqpPort}`);
  try {
    const ch = await conn.createConfirmChannel();
    const ch2 = await conn.createChannel();
    await ch.assertQueue('met-q');
    await ch.assertQueue('met-idle');
    for (let i = 0; i < 3; i++) ch.sendToQueue('met-q', Buffer.from(`m${i}`));
    await ch.waitForConfirms();
    const got = await ch.get('met-q', { noAck: false });
    assert.ok(got, 'basic.get found a message');
    await ch2.consume('met-idle', () => {});
    const q = { vhost: '/', queue: 'met-q' };
    const idle = { vhost: '/', queue: 'met-idle' };
    let samples;
    await waitFor(async () => {
      ({ samples } = await scrape(g));
      return value(samples, 'rabbitmq_queue_consumers', idle) === 1;
    }, 5000, 'the consumer is counted');
    assert.equal(value(samples, 'rabbitmq_queue_messages_ready', q), 2, 'ready');
    assert.equal(value(samples, 'rabbitmq_queue_messages_unacked', q), 1, 'unacked');
    assert.equal(value(samples, 'rabbitmq_queue_messages', q), 3, 'depth');
    assert.equal(value(samples, 'rabbitmq_queue_consumers', q), 0);
    assert.equal(value(samples, 'rabbitmq_connections'), 1);
    assert.equal(value(samples, 'rabbitmq_channels'), 2);
    assert.equal(value(samples, 'rabbitmq_consumers'), 1);
    assert.ok(value(samples, 'rabbitmq_queues') >= 2);
    ch.ack(got);
    await waitFor(async () => value((await scrape(g)).samples, 'rabbitmq_queue_messages_unacked', q) === 0,
      5000, 'the ack is counted');
    const pt = promtool((await scrape(g)).text);
    assert.equal(pt.status, 0, `promtool check metrics:\n${pt.stdout}${pt.stderr}`);
  } finally {
    await conn.close();
  }
});
