// The AMQP gateway's users, vhosts and permissions from the config's amqp
// section (issue 9): a configured user logs in with a RabbitMQ password
// hash (one RabbitMQ 3.10.8 exported) or a plain development password, a
// wrong password gets 403, a loopback-only user is refused from another
// address, connection.open of an unknown vhost or of a vhost the user has
// no permissions on gets RabbitMQ's 530 texts, and connection.tune carries
// the configured frame_max / channel_max / heartbeat.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import { startGantry, stopGantry, freePort, scaled, require } from './harness.mjs';

const amqp = require('amqplib');

// RabbitMQ 3.10.8's own hash of the password "guest"
// (rabbitmqctl export_definitions).
const RMQ_GUEST_HASH = 'JmaHioqUginIjVKjKm/ofePbHGzslRU4pmu0M81pI1k0TH2z';

const AMQP_YAML = `  frame_max: 8192
  channel_max: 16
  heartbeat: 7
  users:
    - {name: app, password_hash: "${RMQ_GUEST_HASH}", tags: [management]}
    - {name: dev, password: "dev pw"}
    - {name: local, password: lpw}
  vhosts: ["/", prod]
  permissions:
    - {user: app, vhost: prod, configure: ".*", write: ".*", read: ".*"}
    - {user: dev, vhost: "/", configure: ".*", write: ".*", read: ".*"}
    - {user: local, vhost: "/", configure: "", write: "", read: ""}
  loopback_users: [local]
`;

let g;
before(async () => { g = await startGantry({ logLevel: 'info', amqpYaml: AMQP_YAML }); });
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

const url = (user, pass, vhost = '', host = '127.0.0.1', port = g.amqpPort) =>
  `amqp://${encodeURIComponent(user)}:${encodeURIComponent(pass)}@${host}:${port}/${encodeURIComponent(vhost)}`;

// ---- raw handshake: amqplib hides connection.close's text during open ----

const u16 = (v) => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
const shortstr = (s) => Buffer.concat([Buffer.from([Buffer.byteLength(s)]), Buffer.from(s)]);
const method = (cls, mid, args) => {
  const p = Buffer.concat([u16(cls), u16(mid), args]);
  return Buffer.concat([Buffer.from([1]), u16(0), u32(p.length), p, Buffer.from([0xce])]);
};

// Runs the handshake as user/pass up to connection.open of vhost; resolves
// to {tune: {channelMax, frameMax, heartbeat}, reply: {cls, mid, code, text}}
// with reply the answer to open (or to start-ok when the login failed, or
// to tune-ok).  tuneOk: values to answer the tune with instead of its own.
function rawOpen(user, pass, vhost, tuneOk = null) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(g.amqpPort, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let step = 0;
    let tune = null;
    const timer = setTimeout(() => { sock.destroy(); reject(new Error('raw handshake timeout')); },
      scaled(10000));
    const done = (v) => { clearTimeout(timer); sock.destroy(); resolve(v); };
    sock.on('error', () => {});
    sock.on('close', () => { clearTimeout(timer); resolve({ tune, reply: null }); });
    sock.on('connect', () => sock.write(Buffer.from('AMQP\x00\x00\x09\x01', 'latin1')));
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 8 && buf.length >= 8 + buf.readUInt32BE(3)) {
        const size = buf.readUInt32BE(3);
        const type = buf[0];
        const p = buf.subarray(7, 7 + size);
        buf = buf.subarray(8 + size);
        if (type !== 1) continue;
        const cls = p.readUInt16BE(0), mid = p.readUInt16BE(2);
        if (cls === 10 && mid === 50) {
          const tl = p[6];
          done({ tune, reply: { cls: p.readUInt16BE(7 + tl), mid: p.readUInt16BE(9 + tl),
            code: p.readUInt16BE(4), text: p.subarray(7, 7 + tl).toString() } });
          return;
        }
        if (step === 0 && cls === 10 && mid === 10) {
          const resp = Buffer.from(`\0${user}\0${pass}`);
          // client-properties with capabilities.authentication_failure_close
          const caps = Buffer.concat([shortstr('authentication_failure_close'), Buffer.from('t'),
            Buffer.from([1])]);
          const cp = Buffer.concat([shortstr('capabilities'), Buffer.from('F'), u32(caps.length),
            caps]);
          sock.write(method(10, 11, Buffer.concat([u32(cp.length), cp, shortstr('PLAIN'),
            u32(resp.length), resp, shortstr('en_US')])));
          step = 1;
        } else if (step === 1 && cls === 10 && mid === 30) {
          tune = { channelMax: p.readUInt16BE(4), frameMax: p.readUInt32BE(6),
            heartbeat: p.readUInt16BE(10) };
          const t = tuneOk ?? tune;
          sock.write(method(10, 31, Buffer.concat([u16(t.channelMax), u32(t.frameMax),
            u16(0)])));
          sock.write(method(10, 40, Buffer.concat([shortstr(vhost), shortstr(''),
            Buffer.from([0])])));
          step = 2;
        } else if (step === 2 && cls === 10 && mid === 41) {
          done({ tune, reply: { cls, mid } });
          return;
        }
      }
    });
  });
}

// ---- tests ----------------------------------------------------------------

test('a user with a RabbitMQ password hash logs in and opens its vhost', async () => {
  const conn = await amqp.connect(url('app', 'guest', 'prod'));
  const ch = await conn.createChannel();
  await ch.close();
  await conn.close();
  // The same with AMQPLAIN.
  const c2 = await amqp.connect(url('app', 'guest', 'prod').replace('app:guest@', ''),
    { credentials: amqp.credentials.amqplain('app', 'guest') });
  await c2.close();
});

test('channel errors name the connection\'s vhost (404 no queue / no exchange)', async () => {
  const conn = await amqp.connect(url('app', 'guest', 'prod'));
  conn.on('error', () => {});
  for (const [fn, text] of [
    [(c) => c.checkQueue('nq'), "NOT_FOUND - no queue 'nq' in vhost 'prod'"],
    [(c) => c.checkExchange('nx'), "NOT_FOUND - no exchange 'nx' in vhost 'prod'"],
  ]) {
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    await assert.rejects(fn(ch), (e) => e.code === 404 && e.message.includes(text));
  }
  await conn.close();
});

test('a user with a plain (development) password logs in; its warning is logged', async () => {
  const conn = await amqp.connect(url('dev', 'dev pw', '/'));
  await conn.close();
  assert.match(g.log(), /user 'dev' has a plain-text password in the config/);
});

test('the default guest is gone once users are configured', async () => {
  await assert.rejects(amqp.connect(url('guest', 'guest')), /403/);
});

test('a wrong password or an unknown user gets 403 ACCESS_REFUSED', async () => {
  for (const [u, p] of [['app', 'Guest'], ['app', ''], ['dev', 'dev'], ['nobody', 'guest']]) {
    await assert.rejects(amqp.connect(url(u, p, 'prod')), (e) => {
      assert.match(e.message, /403/);
      assert.match(e.message, /ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN/);
      return true;
    }, `${u}/${p}`);
  }
  const r = await rawOpen('app', 'wrong', 'prod');
  assert.deepEqual(r.reply, { cls: 10, mid: 11, code: 403,
    text: 'ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For '
      + 'details see the broker logfile.' });
  assert.match(g.log(), /PLAIN login refused: user 'app' - invalid credentials/);
});

test('connection.tune proposes the configured channel_max, frame_max and heartbeat', async () => {
  const r = await rawOpen('app', 'guest', 'prod');
  assert.deepEqual(r.tune, { channelMax: 16, frameMax: 8192, heartbeat: 7 });
  assert.deepEqual(r.reply, { cls: 10, mid: 41 });
  const conn = await amqp.connect(url('app', 'guest', 'prod'));
  assert.equal(conn.connection.frameMax, 8192);
  assert.equal(conn.connection.channelMax, 16);
  assert.equal(conn.connection.heartbeat, 7);
  await conn.close();
  // A tune-ok above the configured bounds is refused, as RabbitMQ does.
  let t = await rawOpen('app', 'guest', 'prod', { channelMax: 16, frameMax: 16384 });
  assert.deepEqual(t.reply, { cls: 10, mid: 30, code: 530, text: 'NOT_ALLOWED - negotiated '
    + 'frame_max = 16384 is higher than the maximum allowed value (8192)' });
  t = await rawOpen('app', 'guest', 'prod', { channelMax: 17, frameMax: 8192 });
  assert.deepEqual(t.reply, { cls: 10, mid: 30, code: 530, text: 'NOT_ALLOWED - negotiated '
    + 'channel_max = 17 is higher than the maximum allowed value (16)' });
});

test('connection.open of an unknown vhost gets 530 "vhost X not found"', async () => {
  const r = await rawOpen('app', 'guest', 'nope');
  assert.deepEqual(r.reply, { cls: 10, mid: 40, code: 530,
    text: 'NOT_ALLOWED - vhost nope not found' });
  await assert.rejects(amqp.connect(url('app', 'guest', 'nope')), /ConnectionClose/);
});

test('connection.open of a vhost without permissions gets 530 access refused', async () => {
  let r = await rawOpen('app', 'guest', '/');
  assert.deepEqual(r.reply, { cls: 10, mid: 40, code: 530,
    text: "NOT_ALLOWED - access to vhost '/' refused for user 'app'" });
  r = await rawOpen('dev', 'dev pw', 'prod');
  assert.deepEqual(r.reply, { cls: 10, mid: 40, code: 530,
    text: "NOT_ALLOWED - access to vhost 'prod' refused for user 'dev'" });
  // Empty regexes still grant the vhost (RabbitMQ: an entry is access).
  r = await rawOpen('local', 'lpw', '/');
  assert.deepEqual(r.reply, { cls: 10, mid: 41 });
});

// A loopback-only user from another address: a server on 0.0.0.0 reached
// through this host's own non-loopback address (skipped without one).
const external = Object.values(os.networkInterfaces()).flat()
  .find((a) => !a.internal && a.family === 'IPv4')?.address;
test('a loopback_users user is refused from a non-loopback peer, others are not', { skip: !external && 'no non-loopback IPv4 address' }, async () => {
  const port = await freePort();
  const g2 = await startGantry({ logLevel: 'info', amqpListen: `0.0.0.0:${port}`,
    amqpYaml: AMQP_YAML });
  try {
    await assert.rejects(amqp.connect(url('local', 'lpw', '', external, port)), /403/);
    assert.match(g2.log(), /user 'local' can only connect via localhost/);
    const c1 = await amqp.connect(url('local', 'lpw', '', '127.0.0.1', port));
    await c1.close();
    const c2 = await amqp.connect(url('dev', 'dev pw', '', external, port));
    await c2.close();
  } finally {
    await stopGantry(g2);
  }
});

test('a config with a bad amqp section is refused at start, naming the key', async () => {
  await assert.rejects(startGantry({ amqpYaml: '  users: [{name: x}]\n' }),
    /amqp\.users\[0\]: give either password_hash or password/);
  await assert.rejects(startGantry({ amqpYaml: '  frame_max: 100\n' }),
    /amqp\.frame_max: 100 is out of range \(4096\.\.16777216\)/);
});
