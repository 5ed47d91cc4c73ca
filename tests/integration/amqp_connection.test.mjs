// The AMQP 0-9-1 gateway's connection layer (issue 9): amqplib 0.10.9
// connects, opens and closes channels, and is refused with 403 for a
// wrong password; raw sockets check RabbitMQ's answers to a bad protocol
// header, a frame on an unopened channel (504), a garbage frame (501),
// tune-ok outside the bounds and an unknown vhost (530), a method not
// RabbitMQ refuses (basic.qos prefetch-size: 540), and that a peer silent for two heartbeat intervals is
// dropped.  `amqp.listen: off` disables the listener.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import { startGantry, stopGantry, scaled, require } from './harness.mjs';
import * as rawPeer from './amqp_raw.mjs';
import { HEADER, u16, u32, shortstr, longstr, frame, method, parseClose } from './amqp_raw.mjs';

const amqp = require('amqplib');

let g;
before(async () => { g = await startGantry({ logLevel: 'info' }); });
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

const url = (user = 'guest', pass = 'guest', vhost = '') =>
  `amqp://${user}:${pass}@127.0.0.1:${g.amqpPort}/${vhost}`;

// ---- raw peers (tests/integration/amqp_raw.mjs) on this file's server ----

const rawConnect = () => rawPeer.rawConnect(g.amqpPort);
// The handshake, checking connection.tune's defaults on the way.
const rawHandshake = (c, opts = {}) => rawPeer.rawHandshake(c, {
  ...opts,
  onTune: (tune) => {
    assert.equal(tune.payload.readUInt16BE(4), 2047, 'channel_max');
    assert.equal(tune.payload.readUInt32BE(6), 131072, 'frame_max');
    assert.equal(tune.payload.readUInt16BE(10), 60, 'heartbeat');
  },
});

// ---- amqplib ------------------------------------------------------------

test('amqplib connects, opens and closes channels, closes the connection', async () => {
  const conn = await amqp.connect(url());
  const sp = conn.connection.serverProperties;
  // RabbitMQ's name and dialect version by default (amqp.server_product).
  assert.equal(sp.product, 'RabbitMQ');
  assert.equal(sp.version, '3.10.8');
  assert.match(sp.information, /^Gantry /);
  assert.equal(typeof sp.gantry_version, 'string');
  assert.equal(typeof sp.platform, 'string');
  assert.equal(typeof sp.cluster_name, 'string');
  for (const cap of ['publisher_confirms', 'exchange_exchange_bindings', 'basic.nack',
    'consumer_cancel_notify', 'connection.blocked', 'authentication_failure_close',
    'per_consumer_qos', 'direct_reply_to']) {
    assert.equal(sp.capabilities[cap], true, cap);
  }
  const ch1 = await conn.createChannel();
  const ch2 = await conn.createChannel();
  await ch1.close();
  const ch3 = await conn.createChannel();
  await ch2.close();
  await ch3.close();
  await conn.close();
});

// amqplib writes each channel's frames through its own buffer, so acks
// sent just before connection.close may reach the server after it.  A
// server that closed its socket with those unread reset the connection,
// and the reset could overtake the close-ok: close() then never returned
// (1 close in 5 here).  Gantry reads and drops them, as RabbitMQ does.
test('amqplib: close() right after acks returns, every time', { timeout: scaled(120000) },
  async () => {
    for (let i = 0; i < 40; i++) {
      const conn = await amqp.connect(url());
      conn.on('error', () => {});
      const ch = await conn.createChannel();
      const { queue } = await ch.assertQueue('', { exclusive: true });
      for (let k = 0; k < 30; k++) ch.sendToQueue(queue, Buffer.from(`m${k}`));
      await new Promise((resolve) => {
        let n = 0;
        ch.consume(queue, (m) => { ch.ack(m); if (++n === 30) resolve(); });
      });
      let timer;
      const closed = await Promise.race([
        conn.close().then(() => true),
        new Promise((resolve) => { timer = setTimeout(() => resolve(false), scaled(10000)); }),
      ]);
      clearTimeout(timer);
      assert.ok(closed, `close() of connection ${i} returned`);
    }
  });

test('amqplib with a wrong password is refused with 403 ACCESS_REFUSED', async () => {
  await assert.rejects(amqp.connect(url('guest', 'nope')), (e) => {
    assert.match(e.message, /403/);
    assert.match(e.message, /ACCESS_REFUSED|ACCESS-REFUSED/);
    return true;
  });
  await assert.rejects(amqp.connect(url('someone', 'guest')), /403/);
});

test('amqplib with AMQPLAIN logs in; a wrong AMQPLAIN password gets 403', async () => {
  const conn = await amqp.connect(url(), { credentials: amqp.credentials.amqplain('guest', 'guest') });
  await conn.close();
  await assert.rejects(
    amqp.connect(url(), { credentials: amqp.credentials.amqplain('guest', 'bad') }), /403/);
});

// guest/guest is refused from a peer that is not loopback (RabbitMQ's
// loopback_users default): a server on 0.0.0.0 reached through this host's
// own non-loopback address.  Skipped when the host has none.
const external = Object.values(os.networkInterfaces()).flat()
  .find((a) => !a.internal && a.family === 'IPv4')?.address;
test('guest is refused from a non-loopback peer', { skip: !external && 'no non-loopback IPv4 address' }, async () => {
  const { freePort } = await import('./harness.mjs');
  const port = await freePort();
  const g2 = await startGantry({ logLevel: 'info', amqpListen: `0.0.0.0:${port}` });
  try {
    await assert.rejects(amqp.connect(`amqp://guest:guest@${external}:${port}`), /403/);
    assert.match(g2.log(), /user 'guest' can only connect via localhost/);
    const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${port}`);
    await conn.close();
  } finally {
    await stopGantry(g2);
  }
});

test('an unknown vhost gets 530 NOT_ALLOWED', async () => {
  // amqplib reports the close during its handshake without the code.
  await assert.rejects(amqp.connect(url('guest', 'guest', 'elsewhere')), /ConnectionClose/);
  const c = rawConnect();
  const cl = parseClose(await rawHandshake(c, { vhost: 'elsewhere' }));
  assert.equal(cl.code, 530);
  assert.equal(cl.text, 'NOT_ALLOWED - vhost elsewhere not found');
  assert.deepEqual([cl.cls, cl.mid], [10, 40]);
  c.sock.destroy();
});

test('basic.qos with prefetch-size != 0 closes the connection with 540 NOT_IMPLEMENTED, as RabbitMQ', async () => {
  const c = rawConnect();
  const ok = await rawHandshake(c);
  assert.deepEqual([ok.cls, ok.mid], [10, 41]);
  c.send(method(1, 20, 10, shortstr('')));
  const oo = await c.nextMethod();
  assert.deepEqual([oo.cls, oo.mid], [20, 11]);
  c.send(method(1, 60, 10, Buffer.concat([u32(1), u16(0), Buffer.from([0])])));
  const cl = parseClose(await c.nextMethod());
  assert.equal(cl.code, 540);
  assert.match(cl.text, /^NOT_IMPLEMENTED - prefetch_size!=0 \(1\)/);
  assert.deepEqual([cl.cls, cl.mid], [60, 10]);
  c.sock.destroy();
});

test('connection.update-secret is answered with update-secret-ok', async () => {
  const conn = await amqp.connect(url());
  await conn.updateSecret(Buffer.from('new secret'), 'rotation');
  await conn.close();
});

// ---- raw sockets ----------------------------------------------------------

test('a bad protocol header gets AMQP 0-9-1 header and a close', async () => {
  const c = rawConnect();
  c.send(Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  await c.until(() => c.closed, 5000, 'socket closed');
  assert.deepEqual(c.bytes(), HEADER);
});

test('a frame on an unopened channel gets 504 CHANNEL_ERROR', async () => {
  const c = rawConnect();
  const ok = await rawHandshake(c);
  assert.deepEqual([ok.cls, ok.mid], [10, 41], 'open-ok');
  c.send(method(5, 20, 20, Buffer.from([1]))); // channel.flow on channel 5
  const cl = parseClose(await c.nextMethod());
  assert.equal(cl.code, 504);
  assert.match(cl.text, /^CHANNEL_ERROR - expected 'channel.open'/);
  assert.deepEqual([cl.cls, cl.mid], [20, 20]);
  c.send(method(0, 10, 51));
  await c.until(() => c.closed, 5000, 'closed after close-ok');
});

test('channel open, flow, close on a raw connection; connection.close both ways', async () => {
  const c = rawConnect();
  await rawHandshake(c);
  c.send(method(1, 20, 10, shortstr('')));
  let f = await c.nextMethod();
  assert.deepEqual([f.ch, f.cls, f.mid], [1, 20, 11], 'channel.open-ok');
  c.send(method(1, 20, 20, Buffer.from([1])));
  f = await c.nextMethod();
  assert.deepEqual([f.ch, f.cls, f.mid, f.payload[4]], [1, 20, 21, 1], 'channel.flow-ok');
  c.send(method(1, 20, 40, Buffer.concat([u16(200), shortstr('bye'), u16(0), u16(0)])));
  f = await c.nextMethod();
  assert.deepEqual([f.ch, f.cls, f.mid], [1, 20, 41], 'channel.close-ok');
  c.send(method(0, 10, 50, Buffer.concat([u16(200), shortstr('bye'), u16(0), u16(0)])));
  f = await c.nextMethod();
  assert.deepEqual([f.cls, f.mid], [10, 51], 'connection.close-ok');
  await c.until(() => c.closed, 5000, 'closed after close-ok');
});

test('a garbage frame gets 501 FRAME_ERROR and the socket is closed', async () => {
  const c = rawConnect();
  await rawHandshake(c);
  c.send(Buffer.from([7, 0, 0, 0, 0, 0, 1, 42, 0xce]));
  const cl = parseClose(await c.nextMethod());
  assert.equal(cl.code, 501);
  assert.match(cl.text, /^FRAME_ERROR - type 7, unknown frame type/);
  await c.until(() => c.closed, 5000, 'socket closed');
});

test('tune-ok outside the bounds gets 530 NOT_ALLOWED', async () => {
  for (const [opts, re] of [
    [{ frameMax: 1000 }, /negotiated frame_max = 1000 is lower than the minimum allowed value \(4096\)/],
    [{ frameMax: 0 }, /negotiated frame_max = 0 is higher than the maximum allowed value \(131072\)/],
    [{ channelMax: 4000 }, /negotiated channel_max = 4000 is higher than the maximum allowed value \(2047\)/],
  ]) {
    const c = rawConnect();
    const cl = parseClose(await rawHandshake(c, opts));
    assert.equal(cl.code, 530);
    assert.match(cl.text, re);
    assert.deepEqual([cl.cls, cl.mid], [10, 30]);
    c.sock.destroy();
  }
});

test('a peer silent for two heartbeat intervals is closed; heartbeats are sent', async () => {
  const c = rawConnect();
  await rawHandshake(c, { heartbeat: 1 });
  const t0 = Date.now();
  const hb = await c.next(5000);
  assert.equal(hb?.type, 8, 'a heartbeat frame from the server');
  await c.until(() => c.closed, 10000, 'closed for missed heartbeats');
  assert.ok(Date.now() - t0 >= 1500, `closed after ${Date.now() - t0} ms, before two intervals`);
  assert.match(g.log(), /missed heartbeats/);
});

test('a peer that sends heartbeats stays connected', async () => {
  const c = rawConnect();
  await rawHandshake(c, { heartbeat: 1 });
  // Answer every server heartbeat; after four of them (more than two
  // intervals) the connection must still be open.
  for (let i = 0; i < 4; i++) {
    const f = await c.next(5000);
    assert.equal(f?.type, 8);
    c.send(frame(8, 0, Buffer.alloc(0)));
  }
  assert.equal(c.closed, false);
  c.sock.destroy();
});

test('a peer that stops reading stops being read: output stays bounded', async () => {
  const c = rawConnect();
  await rawHandshake(c);
  c.send(method(1, 20, 10, shortstr('')));
  const ok = await c.nextMethod();
  assert.deepEqual([ok.ch, ok.cls, ok.mid], [1, 20, 11]);
  c.sock.pause(); // stop reading: every channel.flow below asks for a 13-byte flow-ok
  const flow = method(1, 20, 20, Buffer.from([1]));
  const chunk = Buffer.concat(Array(80000).fill(flow)); // ~1 MiB
  const limit = 64; // MiB: far over the 4 MiB output bound plus socket buffers
  let sent = 0;
  for (; sent < limit; sent++) {
    if (c.sock.write(chunk)) continue;
    // Wait for the kernel to take it; no drain for a while means the
    // server stopped reading (what this test wants).
    const drained = await new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), scaled(2000));
      c.sock.once('drain', () => { clearTimeout(t); resolve(true); });
    });
    if (!drained) break;
  }
  assert.ok(sent < limit, `the server kept reading ${limit} MiB while its peer read nothing`);
  // Reading again: every flow gets its flow-ok, in order, and the
  // connection still works.
  const want = sent * chunk.length + (sent < limit ? chunk.length : 0);
  c.counting = true; // count the bytes from here on instead of keeping them
  c.counted = c.bytes().length;
  c.sock.resume();
  await c.until(() => c.counted >= want || c.closed, 60000, `${want} bytes of flow-ok`);
  assert.equal(c.counted, want, 'one flow-ok per flow');
  assert.equal(c.closed, false);
  c.sock.destroy();
});

test('a refused login without authentication_failure_close: the socket is closed', async () => {
  const c = rawConnect();
  c.send(HEADER);
  const start = await c.nextMethod();
  assert.deepEqual([start.cls, start.mid], [10, 10]);
  c.send(method(0, 10, 11, Buffer.concat([u32(0), shortstr('PLAIN'),
    longstr(Buffer.from('\0guest\0wrong')), shortstr('en_US')])));
  assert.equal(await c.nextMethod(), null, 'no frame, the socket closes');
  assert.ok(c.closed);
});

test('SIGTERM with AMQP connections open: they are closed, gantry exits 0', async () => {
  const g2 = await startGantry({ logLevel: 'info' });
  const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g2.amqpPort}`);
  conn.on('error', () => {});
  await conn.createChannel();
  const closed = new Promise((r) => conn.on('close', r));
  const raw = net.connect(g2.amqpPort, '127.0.0.1'); // mid-handshake
  raw.on('error', () => {});
  await new Promise((r) => raw.on('connect', r));
  const info = await stopGantry(g2);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
  await closed;
});

test('amqp.listen: off starts no AMQP listener', async () => {
  const g2 = await startGantry({ logLevel: 'info', amqpListen: 'off' });
  try {
    const err = await new Promise((resolve) => {
      const s = net.connect(g2.amqpPort, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve(null); });
      s.on('error', (e) => resolve(e));
    });
    assert.equal(err?.code, 'ECONNREFUSED');
    assert.match(g2.log(), /AMQP off/);
  } finally {
    await stopGantry(g2);
  }
});

test('amqp.server_product: another product name is sent with Gantry\'s own version', async () => {
  const g2 = await startGantry({ logLevel: 'info', amqpYaml: '  server_product: "Gantry"' });
  try {
    const conn = await amqp.connect(`amqp://guest:guest@127.0.0.1:${g2.amqpPort}`);
    const sp = conn.connection.serverProperties;
    assert.equal(sp.product, 'Gantry');
    assert.equal(sp.version, sp.gantry_version);
    await conn.close();
  } finally {
    await stopGantry(g2);
  }
});
