// Shared helpers for the SDK end-to-end tests (sdk_*.test.mjs): the official
// RocketMQ Node.js SDK and raw grpc-js calls against the real gantry.
import crypto from 'node:crypto';
import { require, sleep, httpGet, scaled, waitFor, TIME_SCALE } from './harness.mjs';

export const grpc = require('@grpc/grpc-js');
export const sdk = require('rocketmq-client-nodejs');
export const pb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/service_pb.js');
export const defPb = require('rocketmq-client-nodejs/proto/apache/rocketmq/v2/definition_pb.js');
export const { Duration } = require('google-protobuf/google/protobuf/duration_pb.js');
export const { Timestamp } = require('google-protobuf/google/protobuf/timestamp_pb.js');
export const Code = defPb.Code;
export const CodeName = Object.fromEntries(Object.entries(defPb.Code).map(([k, v]) => [v, k]));
export const SVC = '/apache.rocketmq.v2.MessagingService/';

// SDK 1.0.8 workaround: TelemetrySession.release() ends the stream and then
// removes all its listeners, so if the server goes away (a restart test's
// SIGKILL) before the stream's last status arrives, grpc-js emits 'error'
// with no listener and node dies of an uncaught exception.  Keep a no-op
// 'error' listener on released streams.
const origCreateTelemetryStream = sdk.BaseClient.prototype.createTelemetryStream;
sdk.BaseClient.prototype.createTelemetryStream = function createTelemetryStream(endpoints) {
  const stream = origCreateTelemetryStream.call(this, endpoints);
  const removeAll = stream.removeAllListeners.bind(stream);
  stream.removeAllListeners = (...args) => {
    const r = removeAll(...args);
    if (args.length === 0) stream.on('error', () => {});
    return r;
  };
  return stream;
};

export const quietLogger = {
  info() {}, warn() {}, error() {}, debug() {}, trace() {},
};

export function codeName(c) { return `${CodeName[c] ?? '?'}(${c})`; }

// Unique names so that tests sharing one server never see each other's data.
let seq = 0;
export function uniq(prefix) {
  seq += 1;
  return `${prefix}_${process.pid}_${seq}_${crypto.randomBytes(3).toString('hex')}`;
}

// YAML for harness opts.yaml.  topics: [{name, type, queues}], groups:
// [{name, max_delivery_attempts}].
export function yamlOf({ topics = [], groups = [] }) {
  let y = 'topics:\n';
  for (const t of topics) {
    y += `  - {name: "${t.name}", type: ${t.type ?? 'NORMAL'}, queues: ${t.queues ?? 4}}\n`;
  }
  y += 'groups:\n';
  for (const gr of groups) {
    y += `  - {name: "${gr.name}", max_delivery_attempts: ${gr.max_delivery_attempts ?? 16}}\n`;
  }
  return y;
}

// Rejects with `what` if `p` does not settle within ms.
export async function withTimeout(p, ms, what) {
  let timer;
  try {
    return await Promise.race([
      p,
      new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// The numeric RocketMQ code of an SDK error, walking `cause` links.
export function errCode(err) {
  for (let e = err; e; e = e.cause) {
    if (typeof e.code === 'number' && e.code >= 10000) return e.code;
  }
  return undefined;
}

export function errText(err) {
  const parts = [];
  for (let e = err; e; e = e.cause) parts.push(`${e.name ?? 'Error'}: ${e.message ?? e}`);
  return parts.join(' <- ');
}

// Awaits `p`, which must reject with RocketMQ code `code`.
export async function expectCode(p, code, what) {
  let res;
  try {
    res = await p;
  } catch (err) {
    const got = errCode(err);
    if (got !== code) {
      throw new Error(`${what}: expected ${codeName(code)}, got ${got === undefined ? 'no code' : codeName(got)}: ${errText(err)}`);
    }
    return err;
  }
  throw new Error(`${what}: expected ${codeName(code)}, but it succeeded: ${JSON.stringify(res)?.slice(0, 200)}`);
}

// ---- SDK clients -------------------------------------------------------

const startTimeoutMs = scaled(30000);

export async function startProducer(g, topics, extra = {}) {
  const p = new sdk.Producer({
    endpoints: g.endpoint, topics, requestTimeout: scaled(5000), logger: quietLogger, ...extra,
  });
  try {
    await withTimeout(p.startup(), startTimeoutMs, 'Producer.startup');
  } catch (e) {
    await shutdownQuietly(p);
    throw e;
  }
  return p;
}

// subs: Map topic -> tag expression string or FilterExpression, or a topic name.
export async function startSimpleConsumer(g, group, subs, extra = {}) {
  const subscriptions = typeof subs === 'string' ? new Map([[subs, '*']]) : subs;
  const c = new sdk.SimpleConsumer({
    endpoints: g.endpoint, consumerGroup: group, subscriptions,
    requestTimeout: scaled(5000), awaitDuration: 2000, logger: quietLogger, ...extra,
  });
  try {
    await withTimeout(c.startup(), startTimeoutMs, 'SimpleConsumer.startup');
  } catch (e) {
    await shutdownQuietly(c);
    throw e;
  }
  return c;
}

export async function shutdownQuietly(...clients) {
  await Promise.all(clients.filter(Boolean).map(async (c) => {
    try {
      await withTimeout(c.shutdown(), scaled(60000), 'client shutdown');
    } catch { /* best effort */ }
  }));
}

// PushConsumer.shutdown() waits for its receive in flight (a 20 s long
// poll); messages sent once shutdown has begun end that poll.  Starts the
// shutdown and calls sendSentinel() every 300 ms until it returns.
export async function shutdownPush(consumer, sendSentinel) {
  let done = false;
  const shut = consumer.shutdown().finally(() => { done = true; });
  const deadline = Date.now() + scaled(60000);
  while (!done && Date.now() < deadline) {
    await Promise.race([shut.catch(() => {}), sleep(300)]);
    if (!done) await sendSentinel();
  }
  await withTimeout(shut, scaled(60000), 'PushConsumer.shutdown');
}

// Receives until `want` distinct message ids were seen or scaled(ms)
// elapsed.
// opts: {invisible, batch, ack (default true), filter(msg) -> bool}.
// Returns every MessageView received, in order (duplicates included).
export async function receiveAll(consumer, want, ms, opts = {}) {
  const invisible = opts.invisible ?? 30000;
  const batch = opts.batch ?? 32;
  const ack = opts.ack ?? true;
  const got = [];
  const ids = new Set();
  const deadline = Date.now() + scaled(ms);
  while (ids.size < want && Date.now() < deadline) {
    const msgs = await consumer.receive(batch, invisible);
    for (const m of msgs) {
      got.push(m);
      ids.add(m.messageId);
      if (ack) await consumer.ack(m);
    }
  }
  return got;
}

export function md5Upper(buf) {
  return crypto.createHash('md5').update(buf).digest('hex').toUpperCase();
}

// Deterministic pseudo-random bytes (all 256 values occur).
export function patternBytes(n, seed = 1) {
  const b = Buffer.allocUnsafe(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

// ---- raw gRPC ----------------------------------------------------------

const ident = (x) => x;

export function resource(name) { return new defPb.Resource().setName(name); }

export function duration(ms) {
  return new Duration().setSeconds(Math.floor(ms / 1000)).setNanos((ms % 1000) * 1e6);
}

// A grpc-js channel to gantry with its own connection.
export class Raw {
  constructor(endpoint, opts = {}) {
    this.endpoint = endpoint;
    this.clientId = opts.clientId ?? uniq('raw-client');
    this.client = new grpc.Client(endpoint, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      'grpc.use_local_subchannel_pool': 1,
    });
  }

  md(opts = {}) {
    const m = new grpc.Metadata();
    if (opts.clientId !== null) m.set('x-mq-client-id', opts.clientId ?? this.clientId);
    m.set('x-mq-language', 'HTTP');
    m.set('x-mq-protocol', 'v2');
    m.set('x-mq-request-id', crypto.randomUUID());
    for (const [k, v] of Object.entries(opts.metadata ?? {})) m.set(k, v);
    return m;
  }

  // Unary call (deadline opts.timeoutMs, default scaled 10 s); `req` is a
  // protobuf message or raw bytes.  Resolves
  // {err, resp (decoded with Resp when given), bytes, ms}.
  unary(method, req, Resp, opts = {}) {
    const bytes = Buffer.from(req instanceof Uint8Array ? req : req.serializeBinary());
    return new Promise((resolve) => {
      const t0 = Date.now();
      this.client.makeUnaryRequest(SVC + method, ident, ident, bytes, this.md(opts),
        { deadline: Date.now() + (opts.timeoutMs ?? scaled(10000)) }, (err, out) => {
          let resp;
          if (!err && Resp) resp = Resp.deserializeBinary(new Uint8Array(out));
          resolve({ err, resp, bytes: out, ms: Date.now() - t0 });
        });
    });
  }

  // Server-streaming call, collected.  Resolves {err, resps, ms}.
  // opts.metadata: more request headers; opts.cancelAfterMs: the client
  // cancels the call then (err CANCELLED), with timeoutMs Infinity a bound
  // that is not sent to the server.
  serverStream(method, req, Resp, opts = {}) {
    const bytes = Buffer.from(req instanceof Uint8Array ? req : req.serializeBinary());
    return new Promise((resolve) => {
      const t0 = Date.now();
      const resps = [];
      const call = this.client.makeServerStreamRequest(SVC + method, ident, ident, bytes,
        this.md(opts), { deadline: Date.now() + (opts.timeoutMs ?? scaled(10000)) });
      const timer = opts.cancelAfterMs === undefined ? null : setTimeout(() => call.cancel(), opts.cancelAfterMs);
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        if (timer) clearTimeout(timer);
        resolve({ err, resps, ms: Date.now() - t0 });
      };
      call.on('data', (d) => resps.push(Resp ? Resp.deserializeBinary(new Uint8Array(d)) : d));
      call.on('error', (err) => finish(err));
      call.on('status', (s) => { if (s.code === grpc.status.OK) finish(null); });
      call.on('end', () => setImmediate(() => finish(null)));
    });
  }

  // Opens a Telemetry stream, sends `settings` (defPb.Settings) and waits
  // for the first answer.  Resolves {call, first, err}.
  telemetry(settings, opts = {}) {
    return new Promise((resolve) => {
      const call = this.client.makeBidiStreamRequest(SVC + 'Telemetry', ident, ident, this.md(opts), {});
      let done = false;
      const timer = setTimeout(() => finish(new Error('no telemetry answer in time')), opts.timeoutMs ?? scaled(10000));
      const finish = (err, first) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve({ call, first, err });
      };
      call.on('data', (d) => finish(null, pb.TelemetryCommand.deserializeBinary(new Uint8Array(d))));
      call.on('error', (err) => finish(err));
      call.on('status', (s) => finish(Object.assign(new Error(`telemetry ended: ${s.code} ${s.details}`), { code: s.code })));
      call.write(Buffer.from(new pb.TelemetryCommand().setSettings(settings).serializeBinary()));
    });
  }

  close() { this.client.close(); }
}

export function consumerSettings(group, topic, clientType = defPb.ClientType.SIMPLE_CONSUMER) {
  const sub = new defPb.Subscription().setGroup(resource(group)).setLongPollingTimeout(duration(20000));
  sub.addSubscriptions(new defPb.SubscriptionEntry().setTopic(resource(topic))
    .setExpression(new defPb.FilterExpression().setType(defPb.FilterType.TAG).setExpression('*')));
  return new defPb.Settings().setClientType(clientType).setSubscription(sub)
    .setRequestTimeout(duration(3000));
}

export function producerSettings(topics) {
  const pubs = new defPb.Publishing();
  for (const t of topics) pubs.addTopics(resource(t));
  return new defPb.Settings().setClientType(defPb.ClientType.PRODUCER).setPublishing(pubs)
    .setRequestTimeout(duration(3000));
}

// A wire Message for SendMessage.  o: {topic, body, id, tag, keys,
// props: {k: v}, type, group, queueId}.
export function wireMessage(o) {
  const sp = new defPb.SystemProperties()
    .setMessageId(o.id ?? newMessageId())
    .setBodyEncoding(defPb.Encoding.IDENTITY)
    .setMessageType(o.type ?? defPb.MessageType.NORMAL)
    .setBornTimestamp(Timestamp.fromDate(new Date()))
    .setBornHost('raw-test-host')
    .setQueueId(o.queueId ?? 0);
  if (o.tag !== undefined) sp.setTag(o.tag);
  if (o.keys) sp.setKeysList(o.keys);
  if (o.group !== undefined) sp.setMessageGroup(o.group);
  if (o.deliveryTimestamp) sp.setDeliveryTimestamp(Timestamp.fromDate(o.deliveryTimestamp));
  const m = new defPb.Message().setTopic(resource(o.topic)).setBody(o.body ?? Buffer.from('x'))
    .setSystemProperties(sp);
  for (const [k, v] of Object.entries(o.props ?? {})) m.getUserPropertiesMap().set(k, v);
  return m;
}

// A message id in the SDK's format (32 hex digits, version 01).
export function newMessageId() {
  return `01${crypto.randomBytes(15).toString('hex').toUpperCase()}`;
}

export function sendRequest(messages) {
  const r = new pb.SendMessageRequest();
  for (const m of messages) r.addMessages(m);
  return r;
}

export function receiveRequest(o) {
  const mq = new defPb.MessageQueue().setTopic(resource(o.topic)).setId(o.queueId ?? 0)
    .setPermission(defPb.Permission.READ_WRITE);
  const r = new pb.ReceiveMessageRequest().setGroup(resource(o.group)).setMessageQueue(mq)
    .setFilterExpression(new defPb.FilterExpression().setType(defPb.FilterType.TAG)
      .setExpression(o.tag ?? '*'))
    .setBatchSize(o.batch ?? 32)
    .setAutoRenew(o.autoRenew ?? false)
    .setLongPollingTimeout(duration(o.longPollMs ?? 2000));
  if (!(o.autoRenew ?? false)) r.setInvisibleDuration(duration(o.invisibleMs ?? 30000));
  return r;
}

// Splits ReceiveMessage responses into {status, messages, deliveryTs, order}.
export function splitReceive(resps) {
  const out = { status: undefined, messages: [], deliveryTs: undefined, order: [] };
  for (const r of resps) {
    switch (r.getContentCase()) {
      case pb.ReceiveMessageResponse.ContentCase.STATUS:
        out.status = r.getStatus(); out.order.push('status'); break;
      case pb.ReceiveMessageResponse.ContentCase.MESSAGE:
        out.messages.push(r.getMessage()); out.order.push('message'); break;
      case pb.ReceiveMessageResponse.ContentCase.DELIVERY_TIMESTAMP:
        out.deliveryTs = r.getDeliveryTimestamp(); out.order.push('delivery_timestamp'); break;
      default: out.order.push('?');
    }
  }
  return out;
}

export function ackRequest(group, topic, entries) {
  const r = new pb.AckMessageRequest().setGroup(resource(group)).setTopic(resource(topic));
  for (const e of entries) {
    r.addEntries(new pb.AckMessageEntry().setMessageId(e.id).setReceiptHandle(e.handle));
  }
  return r;
}

export async function healthy(g) {
  const r = await httpGet(g.httpPort, '/healthz');
  return r.status === 200;
}

export { sleep, scaled, waitFor, TIME_SCALE };
