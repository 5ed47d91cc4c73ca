// The admin API (/api/v1/..., JSON over the HTTP port) and the
// gantry-admin CLI against a running gantry with SDK traffic: topics
// (counts, offsets, store times; create, update, delete; system topics
// refused), groups (lag per queue as a consumer acks, reset-offset to the
// beginning / end / a time), clients (the SDK's producer and consumer,
// close), messages (by id, key, position; text and base64 bodies; the
// consumption state per group), config (secrets masked; log level at run
// time), errors (bad JSON 400, unknown route 404, wrong method 405,
// oversize body 413, duplicate 409) and persistence across a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { startGantry, stopGantry, GANTRY_BIN, waitFor, scaled } from './harness.mjs';
import {
  startProducer, startSimpleConsumer, shutdownQuietly, yamlOf, withTimeout,
} from './sdk_util.mjs';

const ADMIN_BIN = process.env.GANTRY_ADMIN_BIN || path.join(path.dirname(GANTRY_BIN), 'gantry-admin');
const T = 'AdmTopic';
const G = 'AdmGroup';
const G_OTHER = 'AdmOther';
const T_DLQ = 'AdmDlqTopic';
const G_DLQ = 'AdmDlq';
const N = 12;
const SECRET = 'hunter2-very-secret';

let g;
let producer;
let consumer;
const sent = [];  // {messageId, key, body}

function api(method, p, body, opts = {}) {
  return new Promise((resolve) => {
    const data = body === undefined ? undefined
      : (typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body));
    const headers = { ...(opts.headers ?? {}) };
    if (data !== undefined && !opts.chunked) headers['content-length'] = Buffer.byteLength(data);
    const req = http.request({ host: '127.0.0.1', port: g.httpPort, path: p, method, headers, agent: false },
      (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => {
          let json = null;
          try { json = JSON.parse(text); } catch { /* not JSON */ }
          resolve({ status: res.statusCode, json, text, headers: res.headers });
        });
      });
    req.setTimeout(scaled(20000), () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, json: null, text: String(e) }));
    if (data !== undefined) {
      if (opts.chunked) {
        // several writes without a length: chunked transfer encoding
        const buf = Buffer.from(data);
        for (let i = 0; i < buf.length; i += 16384) req.write(buf.subarray(i, i + 16384));
      } else {
        req.write(data);
      }
    }
    req.end();
  });
}

function cli(args, env = {}) {
  return new Promise((resolve) => {
    execFile(ADMIN_BIN, ['--server', `http://127.0.0.1:${g.httpPort}`, ...args],
      { env: { ...process.env, ...env }, timeout: scaled(30000) },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? -1) : 0, stdout, stderr }));
  });
}

const CONFIG = {
  yaml: yamlOf({
    topics: [{ name: T, queues: 3 }, { name: T_DLQ, queues: 1 }],
    groups: [{ name: G, max_delivery_attempts: 5 }, { name: G_OTHER },
      { name: G_DLQ, max_delivery_attempts: 1 }],
  }),
  amqpYaml: `  users:\n    - {name: ops, password: "${SECRET}", tags: [administrator]}`,
};

before(async () => {
  g = await startGantry({ logLevel: 'info', ...CONFIG });
  producer = await startProducer(g, [T]);
  for (let i = 0; i < N; i++) {
    const body = i === 0 ? Buffer.from([0, 1, 2, 255, 254]) : Buffer.from(`hello ${i}`);
    const key = `key-${i}`;
    const r = await producer.send({ topic: T, body, tag: `tag${i % 2}`, keys: [key],
      properties: new Map([['idx', String(i)]]) });
    sent.push({ messageId: r.messageId, key, body });
  }
  consumer = await startSimpleConsumer(g, G, T);
});

after(async () => {
  await shutdownQuietly(producer, consumer);
  if (g) {
    const info = await stopGantry(g);
    assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  }
});

test('topics: list and show count what the producer sent', async () => {
  const list = await api('GET', '/api/v1/topics');
  assert.equal(list.status, 200);
  assert.match(list.headers['content-type'], /^application\/json/);
  const t = list.json.topics.find((x) => x.name === T);
  assert.deepEqual(t, { name: T, type: 'NORMAL', queues: 3, perm: 'rw', system: false });
  const show = await api('GET', `/api/v1/topics/${T}`);
  assert.equal(show.status, 200);
  assert.equal(show.json.messages, N);
  assert.equal(show.json.queue_stats.length, 3);
  assert.equal(show.json.queue_stats.reduce((s, q) => s + q.max_offset - q.min_offset, 0), N);
  assert.ok(show.json.bytes > 0);
  assert.ok(show.json.first_store_time_ms > 0);
  assert.ok(show.json.last_store_time_ms >= show.json.first_store_time_ms);
  assert.ok(Math.abs(show.json.last_store_time_ms - Date.now()) < scaled(600000));
  assert.equal((await api('GET', '/api/v1/topics/NoSuchTopic')).status, 404);
});

test('topics: create, update (queues only grow), delete; system topics refused', async () => {
  let r = await api('POST', '/api/v1/topics', { name: 'AdmNew', type: 'FIFO', queues: 2 });
  assert.equal(r.status, 201, r.text);
  assert.deepEqual(r.json, { name: 'AdmNew', type: 'FIFO', queues: 2, perm: 'rw', system: false });
  assert.equal((await api('POST', '/api/v1/topics', { name: 'AdmNew' })).status, 409);
  r = await api('PUT', '/api/v1/topics/AdmNew', { queues: 5, perm: 'r' });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.queues, 5);
  assert.equal(r.json.perm, 'r');
  r = await api('PUT', '/api/v1/topics/AdmNew', { queues: 4 });
  assert.equal(r.status, 400);
  assert.match(r.json.error, /only grow/);
  assert.equal((await api('PUT', '/api/v1/topics/AdmNew', { type: 'WEIRD' })).status, 400);
  assert.equal((await api('PUT', '/api/v1/topics/Nope', { queues: 9 })).status, 404);
  assert.equal((await api('POST', '/api/v1/topics', { name: 'bad name!' })).status, 400);
  assert.equal((await api('POST', '/api/v1/topics', { name: '%SYS%MINE' })).status, 403);
  // the store's own topics and a dead-letter topic cannot be deleted
  for (const sys of ['%SYS%TIMER', '%SYS%HALF', `%DLQ%${G}`, `%RETRY%${G}`]) {
    r = await api('DELETE', `/api/v1/topics/${encodeURIComponent(sys)}`);
    assert.equal(r.status, 403, `${sys}: ${r.text}`);
    assert.match(r.json.error, /system topic/);
  }
  r = await api('DELETE', '/api/v1/topics/AdmNew');
  assert.equal(r.status, 200, r.text);
  assert.equal((await api('GET', '/api/v1/topics/AdmNew')).status, 404);
  assert.equal((await api('DELETE', '/api/v1/topics/AdmNew')).status, 404);
});

test('groups: lag per queue follows the consumer; reset-offset to beginning, end and time', async () => {
  let r = await api('GET', `/api/v1/groups/${G}`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.max_delivery_attempts, 5);
  assert.equal(r.json.dlq_messages, 0);
  // receive and ack 5 messages
  let acked = 0;
  await waitFor(async () => {
    const msgs = await consumer.receive(5 - acked, 30000);
    for (const m of msgs) { await consumer.ack(m); acked++; }
    return acked >= 5;
  }, 30000, 'five messages acked');
  r = await waitFor(async () => {
    const s = await api('GET', `/api/v1/groups/${G}`);
    return s.json?.lag === N - 5 ? s : null;
  }, 10000, 'lag = N - 5');
  const topic = r.json.topics.find((x) => x.topic === T);
  assert.ok(topic, JSON.stringify(r.json));
  assert.equal(topic.lag, N - 5);
  assert.equal(topic.queues.length, 3);
  for (const q of topic.queues) {
    assert.equal(q.lag, q.max_offset - q.committed, JSON.stringify(q));
  }
  assert.equal(topic.queues.reduce((s, q) => s + q.lag, 0), N - 5);
  assert.equal(r.json.inflight, 0);
  // the consumer is a member
  assert.equal(r.json.members.length, 1);

  r = await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: T, to: 'beginning' });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.offsets, [0, 0, 0]);
  assert.equal((await api('GET', `/api/v1/groups/${G}`)).json.lag, N);
  r = await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: T, to: 'end' });
  assert.equal(r.status, 200, r.text);
  assert.equal((await api('GET', `/api/v1/groups/${G}`)).json.lag, 0);
  // a time before every message: back to the beginning
  r = await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: T, to: 'time', time: '2000-01-01T00:00:00Z' });
  assert.equal(r.status, 200, r.text);
  assert.equal((await api('GET', `/api/v1/groups/${G}`)).json.lag, N);
  // a time after every message: the end
  r = await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: T, to: 'time', time: Date.now() + 3600000 });
  assert.equal(r.status, 200, r.text);
  assert.equal((await api('GET', `/api/v1/groups/${G}`)).json.lag, 0);

  assert.equal((await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: T, to: 'later' })).status, 400);
  assert.equal((await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: T, to: 'time', time: 'yesterday' })).status, 400);
  assert.equal((await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: 'Nope', to: 'end' })).status, 404);
  assert.equal((await api('POST', '/api/v1/groups/NoGroup/reset-offset', { topic: T, to: 'end' })).status, 404);
  // A topic name beyond 255 characters is refused (it was cut to 255 and
  // could name another topic); so are system topics.
  r = await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: 'x'.repeat(300), to: 'end' });
  assert.equal(r.status, 400, r.text);
  for (const sys of [`%RETRY%${G}`, `%DLQ%${G}`, '%SYS%TIMER']) {
    r = await api('POST', `/api/v1/groups/${G}/reset-offset`, { topic: sys, to: 'beginning' });
    assert.equal(r.status, 403, `${sys}: ${r.text}`);
    assert.match(r.json.error, /system topic/);
  }
});

test('groups: create, update, delete; system groups refused', async () => {
  let r = await api('POST', '/api/v1/groups', {
    name: 'AdmG2', fifo: true, max_delivery_attempts: 3, consume_from: 'LAST',
    retry: { initial_ms: 1000, max_ms: 60000, multiplier: 200 },
  });
  assert.equal(r.status, 201, r.text);
  assert.deepEqual(r.json, {
    name: 'AdmG2', fifo: true, max_delivery_attempts: 3, consume_from: 'LAST',
    retry: { initial_ms: 1000, max_ms: 60000, multiplier: 200 }, system: false,
  });
  assert.equal((await api('POST', '/api/v1/groups', { name: 'AdmG2' })).status, 409);
  r = await api('PUT', '/api/v1/groups/AdmG2', { max_delivery_attempts: 7 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.max_delivery_attempts, 7);
  assert.equal(r.json.fifo, true);
  assert.equal((await api('PUT', '/api/v1/groups/AdmG2', { fifo: 'yes' })).status, 400);
  assert.equal((await api('PUT', '/api/v1/groups/AdmG2', { max_delivery_attempts: 0 })).status, 400);
  assert.ok((await api('GET', '/api/v1/groups')).json.groups.some((x) => x.name === 'AdmG2'));
  assert.equal((await api('DELETE', '/api/v1/groups/%25SYS%25HOLD')).status, 403);
  assert.equal((await api('DELETE', '/api/v1/groups/AdmG2')).status, 200);
  assert.equal((await api('GET', '/api/v1/groups/AdmG2')).status, 404);
});

test('clients: the SDK producer and consumer are listed; close', async () => {
  const r = await waitFor(async () => {
    const l = await api('GET', '/api/v1/clients');
    return l.json?.clients?.length >= 2 ? l : null;
  }, 10000, 'two clients listed');
  const prod = r.json.clients.find((c) => c.type === 'PRODUCER');
  const cons = r.json.clients.find((c) => c.type === 'SIMPLE_CONSUMER');
  assert.ok(prod && cons, JSON.stringify(r.json));
  assert.equal(prod.client_id, producer.clientId);
  assert.deepEqual(prod.topics, [T]);
  assert.equal(cons.group, G);
  for (const c of [prod, cons]) {
    assert.equal(c.language, 'HTTP'); // what the Node.js SDK sends as x-mq-language
    assert.match(c.version, /^\d+\.\d+/);
    assert.match(c.remote, /127\.0\.0\.1/);
    assert.ok(c.since_ms > 0 && c.since_ms <= Date.now());
    assert.equal(c.connected, true);
  }
  assert.equal((await api('DELETE', '/api/v1/clients/no-such-client')).status, 404);
  assert.equal((await api('PUT', '/api/v1/clients')).status, 405);
});

test('messages: by id, key and position; text and base64 bodies; consumption state', async () => {
  // the binary one, by id
  let r = await api('GET', `/api/v1/messages/${sent[0].messageId}`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.messages.length, 1);
  let m = r.json.messages[0];
  assert.equal(m.msg_id, sent[0].messageId);
  assert.equal(m.topic, T);
  assert.equal(m.body_encoding, 'base64');
  assert.equal(Buffer.from(m.body, 'base64').toString('hex'), sent[0].body.toString('hex'));
  assert.deepEqual(m.keys, ['key-0']);
  assert.equal(m.tag, 'tag0');
  assert.equal(m.properties.idx, '0');
  assert.ok(!Object.keys(m.properties).some((k) => k.charCodeAt(0) < 32), 'internal properties hidden');
  assert.ok(m.groups.some((x) => x.group === G), JSON.stringify(m.groups));
  // a text one, by key, with a cut body
  r = await api('GET', `/api/v1/messages?topic=${T}&key=key-7&body_max=3`);
  assert.equal(r.status, 200, r.text);
  m = r.json.messages[0];
  assert.equal(m.msg_id, sent[7].messageId);
  assert.equal(m.body_encoding, 'text');
  assert.equal(m.body, 'hel');
  assert.equal(m.body_size, 'hello 7'.length);
  assert.equal(m.body_truncated, true);
  // the same by position
  r = await api('GET', `/api/v1/topics/${T}/queues/${m.queue}/offsets/${m.offset}`);
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.messages[0].msg_id, sent[7].messageId);
  assert.equal(r.json.messages[0].body, 'hello 7');
  assert.equal((await api('GET', `/api/v1/topics/${T}/queues/0/offsets/999999`)).status, 404);
  assert.equal((await api('GET', `/api/v1/topics/${T}/queues/x/offsets/1`)).status, 400);
  assert.equal((await api('GET', '/api/v1/messages/0000NOSUCHID')).status, 404);
  assert.equal((await api('GET', '/api/v1/messages?key=k')).status, 400);
  assert.equal((await api('GET', `/api/v1/messages?topic=${T}&key=nokey`)).status, 404);
  assert.equal((await api('GET', `/api/v1/messages/${sent[1].messageId}?body_max=x`)).status, 400);
});

test('config: effective config with secrets masked; log level at run time', async () => {
  let r = await api('GET', '/api/v1/config');
  assert.equal(r.status, 200);
  assert.match(r.json.yaml, /grpc_listen/);
  assert.ok(!r.json.yaml.includes(SECRET), 'the password is masked');
  assert.match(r.json.yaml, /password: \*+/);
  assert.equal(r.json.log_level, 'info');
  r = await api('PUT', '/api/v1/config/log-level', { level: 'debug' });
  assert.equal(r.status, 200, r.text);
  assert.equal((await api('GET', '/api/v1/config/log-level')).json.level, 'debug');
  assert.equal((await api('PUT', '/api/v1/config/log-level', { level: 'loud' })).status, 400);
  r = await api('PUT', '/api/v1/config/log-level', { level: 'info' });
  assert.equal(r.status, 200);
  assert.match(g.log(), /log level set to debug through the admin API/);
  assert.equal((await api('POST', '/api/v1/config')).status, 405);
});

test('errors: bad JSON, wrong body, unknown route, wrong method, oversize bodies', async () => {
  let r = await api('POST', '/api/v1/topics', '{"name": ');
  assert.equal(r.status, 400);
  assert.match(r.json.error, /bad JSON/);
  assert.equal((await api('POST', '/api/v1/topics', '[1,2]')).status, 400);
  assert.equal((await api('POST', '/api/v1/topics', '')).status, 400);
  assert.equal((await api('POST', '/api/v1/topics', { name: 5 })).status, 400);
  r = await api('GET', '/api/v1/nothing-here');
  assert.equal(r.status, 404);
  assert.ok(r.json.error);
  assert.equal((await api('GET', '/api/v2/topics')).status, 404);
  assert.equal((await api('GET', '/api/v1/topicsX')).status, 404);
  assert.equal((await api('GET', `/api/v1/topics/${T}/extra`)).status, 404);
  assert.equal((await api('PATCH', '/api/v1/topics')).status, 405);
  assert.equal((await api('POST', `/api/v1/groups/${G}`)).status, 405);
  assert.equal((await api('GET', '/api/v1/topics/%ZZ')).status, 400);
  assert.equal((await api('GET', '/api/v1/topics/a%00b')).status, 400);
  // over 64 KiB: refused from its Content-Length, or after reading when chunked
  const big = JSON.stringify({ name: 'X', pad: 'x'.repeat(70000) });
  r = await api('POST', '/api/v1/topics', big);
  assert.equal(r.status, 413);
  r = await api('POST', '/api/v1/topics', big, { chunked: true });
  assert.equal(r.status, 413);
  // still serving
  assert.equal((await api('GET', '/api/v1/topics')).status, 200);
  // the AMQP gateway's own operation stays where it was
  assert.equal((await api('POST', '/api/v1/amqp/queues/%2F/nope/pause')).status, 404);
});

test('gantry-admin: tables, --json, exit codes, usage errors', async () => {
  let r = await cli(['topic', 'list']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^NAME\s+TYPE\s+QUEUES\s+PERM/m);
  assert.match(r.stdout, new RegExp(`^${T}\\s+NORMAL\\s+3\\s+rw`, 'm'));
  r = await cli(['--json', 'topic', 'show', T]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).messages, N);
  r = await cli(['topic', 'create', 'CliTopic', '--queues', '2', '--type', 'DELAY']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['topic', 'update', 'CliTopic', '--queues', '4']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^queues: 4$/m);
  r = await cli(['group', 'create', 'CliGroup', '--fifo', '--max-attempts', '3']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['group', 'lag', G]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^TOPIC\s+QUEUE\s+MAX_OFFSET\s+COMMITTED\s+LAG/m);
  r = await cli(['group', 'reset-offset', G, '--topic', T, '--to', 'beginning']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['--json', 'group', 'show', G]);
  assert.equal(JSON.parse(r.stdout).lag, N);
  r = await cli(['message', 'key', 'key-3', '--topic', T]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^msg_id: ${sent[3].messageId}$`, 'm'));
  assert.match(r.stdout, /^body: hello 3$/m);
  r = await cli(['message', 'id', sent[5].messageId]);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['client', 'list']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /PRODUCER/);
  r = await cli(['config', 'show']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!r.stdout.includes(SECRET));
  // refused by the server: exit 1 with its error
  r = await cli(['topic', 'delete', '%SYS%TIMER']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /system topic.*HTTP 403/);
  r = await cli(['topic', 'show', 'NoSuchTopic']);
  assert.equal(r.code, 1);
  // usage errors: exit 2, no crash
  for (const args of [[], ['bogus'], ['topic'], ['topic', 'show'], ['topic', 'update', 'X'],
    ['--queues', 'many', 'topic', 'list'], ['topic', 'list', '--nope'], ['--server'],
    ['group', 'reset-offset', G, '--topic', T], ['group', 'reset-offset', G, '--topic', T, '--to', 'soon'],
    ['message', 'at', T, 'x', '1'], ['message', 'key', 'k'], ['a', 'b', 'c', 'd', 'e', 'f']]) {
    r = await cli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.code} ${r.stderr}`);
    assert.ok(r.stderr.length > 0);
  }
  r = await cli(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /usage: gantry-admin/);
  // unreachable server: exit 3
  r = await new Promise((resolve) => execFile(ADMIN_BIN, ['--server', 'http://127.0.0.1:1', 'topic', 'list'],
    (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stderr })));
  assert.equal(r.code, 3);
  // a token goes along as a bearer token (access is open by default)
  r = await cli(['topic', 'list'], { GANTRY_ADMIN_TOKEN: 't0ken' });
  assert.equal(r.code, 0, r.stderr);
});

test('client close: the stream ends, unknown clients 404', async () => {
  const extra = await startProducer(g, [T]);
  try {
    await waitFor(async () => (await api('GET', '/api/v1/clients')).json?.clients
      ?.some((c) => c.client_id === extra.clientId), 10000, 'new producer listed');
    const r = await api('DELETE', `/api/v1/clients/${encodeURIComponent(extra.clientId)}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.closed, extra.clientId);
    assert.match(g.log(), /closed through the admin API/);
  } finally {
    await shutdownQuietly(extra);
  }
});

test('DLQ redrive: dead letters go back to their topic with their ids', async () => {
  const dc = await startSimpleConsumer(g, G_DLQ, T_DLQ);
  try {
    const poison = await producer.send({ topic: T_DLQ, body: Buffer.from('poison'), keys: ['pk'] });
    // one attempt allowed: fail it; the next pop dead-letters the message
    await waitFor(async () => {
      for (const m of await dc.receive(4, 30000)) {
        assert.equal(m.messageId, poison.messageId);
        await dc.changeInvisibleDuration(m, 0);
        return true;
      }
      return false;
    }, 30000, 'first delivery');
    const again = await dc.receive(4, 30000);
    assert.deepEqual(again.map((m) => m.messageId), [], 'no second delivery');
    await waitFor(async () => (await api('GET', `/api/v1/groups/${G_DLQ}`)).json?.dlq_messages === 1,
      10000, 'one dead letter');
    assert.equal((await api('POST', `/api/v1/groups/${G_DLQ}/dlq/redrive`, { max: 0 })).status, 400);
    assert.equal((await api('POST', '/api/v1/groups/NoGroup/dlq/redrive', {})).status, 404);
    assert.equal((await api('GET', `/api/v1/groups/${G_DLQ}/dlq/redrive`)).status, 405);
    let r = await cli(['--json', 'group', 'redrive-dlq', G_DLQ]);
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.moved, 1, r.stdout);
    assert.equal(out.failed, 0, r.stdout);
    r = await api('GET', `/api/v1/groups/${G_DLQ}`);
    assert.equal(r.json.dlq_messages, 0, r.text);
    assert.ok(!r.json.topics.some((t) => t.topic.startsWith('%DLQ%')), 'own DLQ not listed');
    // delivered again, same id, a first attempt
    const back = await waitFor(async () => {
      const ms = await dc.receive(4, 30000);
      return ms.length > 0 ? ms : null;
    }, 30000, 'redriven message delivered');
    assert.equal(back.length, 1);
    assert.equal(back[0].messageId, poison.messageId);
    assert.equal(back[0].body.toString(), 'poison');
    assert.deepEqual(back[0].keys, ['pk']);
    assert.ok(!back[0].properties.has('RETRY_TOPIC'));
    await dc.ack(back[0]);
    r = await api('POST', `/api/v1/groups/${G_DLQ}/dlq/redrive`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.moved, 0);
  } finally {
    await shutdownQuietly(dc);
  }
});

test('persistence: API changes survive a restart; the config re-declares its own', async () => {
  // the earlier tests created CliTopic and CliGroup; change the declared group too
  let r = await api('POST', '/api/v1/topics', { name: 'Durable', queues: 2 });
  assert.equal(r.status, 201, r.text);
  r = await api('PUT', `/api/v1/topics/${T}`, { queues: 6 });
  assert.equal(r.status, 200, r.text);
  r = await api('PUT', `/api/v1/groups/${G}`, { max_delivery_attempts: 9 });
  assert.equal(r.status, 200, r.text);
  await shutdownQuietly(producer, consumer);
  producer = null;
  consumer = null;
  await stopGantry(g, 'SIGTERM', { keepDir: true });
  g = await startGantry({ logLevel: 'info', ...CONFIG, dir: g.dir, grpcPort: g.grpcPort, httpPort: g.httpPort, amqpPort: g.amqpPort });
  assert.equal((await api('GET', '/api/v1/topics/Durable')).json.queues, 2);
  assert.equal((await api('GET', '/api/v1/topics/CliTopic')).json.type, 'DELAY');
  assert.equal((await api('GET', '/api/v1/groups/CliGroup')).json.fifo, true);
  // a declared topic keeps the queues added (counts never shrink) ...
  assert.equal((await api('GET', `/api/v1/topics/${T}`)).json.queues, 6);
  // ... and a declared group gets the config's settings back
  assert.equal((await api('GET', `/api/v1/groups/${G}`)).json.max_delivery_attempts, 5);
  // messages are still found
  r = await api('GET', `/api/v1/messages/${sent[2].messageId}`);
  assert.equal(r.status, 200);
  assert.equal(r.json.messages[0].body, 'hello 2');
});
