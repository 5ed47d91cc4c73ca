// A raw AMQP 0-9-1 peer for integration tests that must send what no
// client library would (oversized frames, garbage, half headers): frame
// writers, a socket whose frames can be awaited one by one, and the
// handshake as guest/guest.
import assert from 'node:assert/strict';
import net from 'node:net';
import { scaled } from './harness.mjs';

export const HEADER = Buffer.from('AMQP\x00\x00\x09\x01', 'latin1');
export const u16 = (v) => { const b = Buffer.alloc(2); b.writeUInt16BE(v); return b; };
export const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32BE(v); return b; };
export const shortstr = (s) => Buffer.concat([Buffer.from([Buffer.byteLength(s)]), Buffer.from(s)]);
export const longstr = (b) => Buffer.concat([u32(b.length), b]);
export function frame(type, ch, payload) {
  return Buffer.concat([Buffer.from([type]), u16(ch), u32(payload.length), payload,
    Buffer.from([0xce])]);
}
export const method = (ch, cls, mid, args = Buffer.alloc(0)) =>
  frame(1, ch, Buffer.concat([u16(cls), u16(mid), args]));

// Connects to `port`; the returned peer buffers what it reads.
export function rawConnect(port) {
  const sock = net.connect(port, '127.0.0.1');
  let buf = Buffer.alloc(0);
  let waiters = [];
  let closed = false;
  const wake = () => { const w = waiters; waiters = []; w.forEach((f) => f()); };
  sock.on('data', (d) => {
    // c.counting set: the bytes are counted (c.counted), not kept.
    if (c.counting) { c.counted += d.length; wake(); return; }
    buf = buf.length ? Buffer.concat([buf, d]) : d;
    // c.onFrame set: frames are handed over as they complete (only a
    // partial frame is kept, so large volumes cost no copying).
    while (c.onFrame && buf.length >= 7 && buf.length >= 8 + buf.readUInt32BE(3)) {
      const size = buf.readUInt32BE(3);
      const f = { type: buf[0], ch: buf.readUInt16BE(1), payload: buf.subarray(7, 7 + size),
        end: buf[7 + size] };
      if (f.type === 1) { f.cls = f.payload.readUInt16BE(0); f.mid = f.payload.readUInt16BE(2); }
      buf = buf.subarray(8 + size);
      c.onFrame(f);
    }
    wake();
  });
  sock.on('close', () => { closed = true; wake(); });
  sock.on('error', () => {});
  const c = {
    sock,
    onFrame: null,
    counting: false,
    counted: 0,
    get closed() { return closed; },
    bytes() { return buf; },
    // Resolves when cond() holds; rejects after ms (scaled).
    until(cond, ms, what) {
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timeout: ${what}`)), scaled(ms));
        const check = () => {
          const v = cond();
          if (v) { clearTimeout(t); resolve(v); } else waiters.push(check);
        };
        check();
      });
    },
    // The next frame {type, ch, payload, cls, mid}; null once closed.
    async next(ms = 5000) {
      await c.until(() => closed || (buf.length >= 7 && buf.length >= 8 + buf.readUInt32BE(3)),
        ms, 'a frame');
      if (buf.length < 7 || buf.length < 8 + buf.readUInt32BE(3)) return null;
      const size = buf.readUInt32BE(3);
      const f = { type: buf[0], ch: buf.readUInt16BE(1), payload: buf.subarray(7, 7 + size) };
      assert.equal(buf[7 + size], 0xce, 'frame end');
      buf = buf.subarray(8 + size);
      if (f.type === 1) { f.cls = f.payload.readUInt16BE(0); f.mid = f.payload.readUInt16BE(2); }
      return f;
    },
    // The next method frame (heartbeats skipped); null once closed.
    async nextMethod(ms) {
      for (;;) {
        const f = await c.next(ms);
        if (f === null || f.type === 1) return f;
      }
    },
    send(b) { sock.write(b); },
  };
  return c;
}

// connection.close's fields.
export function parseClose(f) {
  assert.ok(f, 'a connection.close before the socket closed');
  assert.deepEqual([f.cls, f.mid], [10, 50], 'connection.close');
  const p = f.payload;
  const tl = p[6];
  return { code: p.readUInt16BE(4), text: p.subarray(7, 7 + tl).toString(),
    cls: p.readUInt16BE(7 + tl), mid: p.readUInt16BE(9 + tl) };
}

// Header, start, start-ok (PLAIN guest/guest), tune, tune-ok, open of
// vhost; resolves with the frame answering connection.open.  onTune(frame)
// may check connection.tune.
export async function rawHandshake(c, { heartbeat = 0, frameMax = 131072, channelMax = 2047,
  vhost = '/', onTune = null } = {}) {
  c.send(HEADER);
  const start = await c.nextMethod();
  assert.deepEqual([start.cls, start.mid], [10, 10], 'connection.start');
  c.send(method(0, 10, 11, Buffer.concat([u32(0), shortstr('PLAIN'),
    longstr(Buffer.from('\0guest\0guest')), shortstr('en_US')])));
  const tune = await c.nextMethod();
  assert.deepEqual([tune.cls, tune.mid], [10, 30], 'connection.tune');
  if (onTune) onTune(tune);
  c.send(method(0, 10, 31, Buffer.concat([u16(channelMax), u32(frameMax), u16(heartbeat)])));
  c.send(method(0, 10, 40, Buffer.concat([shortstr(vhost), shortstr(''), Buffer.from([0])])));
  return c.nextMethod();
}

// Frames to content: calls onMessage({deliver, body}) for each delivery
// (basic.deliver, its content header and body frames) of a peer whose
// onFrame is set to the returned function.
export function deliveries(onMessage) {
  let cur = null;
  return (f) => {
    assert.equal(f.end, 0xce, 'frame end');
    if (f.type === 1 && f.cls === 60 && f.mid === 60) {
      cur = { deliver: f, size: -1, parts: [], got: 0 };
    } else if (f.type === 2 && cur) {
      cur.size = Number(f.payload.readBigUInt64BE(4));
      if (cur.size === 0) { onMessage({ deliver: cur.deliver, body: Buffer.alloc(0) }); cur = null; }
    } else if (f.type === 3 && cur) {
      cur.parts.push(Buffer.from(f.payload));
      cur.got += f.payload.length;
      if (cur.got >= cur.size) {
        onMessage({ deliver: cur.deliver, body: Buffer.concat(cur.parts) });
        cur = null;
      }
    }
  };
}
