// amqplib with typed headers: message.properties.typedHeaders holds the
// content header's headers table with every value's type letter kept
// ({t: 'l', v: 1}, tables {t: 'F', v: {...}}, arrays {t: 'A', v: [...]}),
// which amqplib's own decoder drops.  Import this before anything else
// loads amqplib in the process (it patches amqplib's decoder on load).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const defs = require('amqplib/lib/defs');
const orig = defs.decode;

function table(buf, off, end) {
  const out = {};
  while (off < end) {
    const kl = buf[off];
    const key = buf.toString('utf8', off + 1, off + 1 + kl);
    off += 1 + kl;
    const [v, n] = value(buf, off);
    out[key] = v;
    off = n;
  }
  return out;
}

function value(buf, off) {
  const t = String.fromCharCode(buf[off++]);
  switch (t) {
    case 't': return [{ t, v: buf[off] !== 0 }, off + 1];
    case 'b': return [{ t, v: buf.readInt8(off) }, off + 1];
    case 'B': return [{ t, v: buf.readUInt8(off) }, off + 1];
    case 's': return [{ t, v: buf.readInt16BE(off) }, off + 2];
    case 'u': return [{ t, v: buf.readUInt16BE(off) }, off + 2];
    case 'I': return [{ t, v: buf.readInt32BE(off) }, off + 4];
    case 'i': return [{ t, v: buf.readUInt32BE(off) }, off + 4];
    case 'l': case 'L': return [{ t, v: Number(buf.readBigInt64BE(off)) }, off + 8];
    case 'T': return [{ t, v: Number(buf.readBigUInt64BE(off)) }, off + 8];
    case 'f': return [{ t, v: buf.readFloatBE(off) }, off + 4];
    case 'd': return [{ t, v: buf.readDoubleBE(off) }, off + 8];
    case 'D': return [{ t, v: [buf[off], buf.readUInt32BE(off + 1)] }, off + 5];
    case 'V': return [{ t, v: null }, off];
    case 'S': case 'x': {
      const n = buf.readUInt32BE(off);
      return [{ t, v: buf.toString(t === 'S' ? 'utf8' : 'hex', off + 4, off + 4 + n) }, off + 4 + n];
    }
    case 'F': {
      const n = buf.readUInt32BE(off);
      return [{ t, v: table(buf, off + 4, off + 4 + n) }, off + 4 + n];
    }
    case 'A': {
      const n = buf.readUInt32BE(off);
      const end = off + 4 + n;
      const arr = [];
      let p = off + 4;
      while (p < end) { const [v, q] = value(buf, p); arr.push(v); p = q; }
      return [{ t, v: arr }, end];
    }
    default: throw new TypeError(`type ${t}`);
  }
}

// The property list (flags, then fields): headers are the third field.
function typedHeaders(buf) {
  const flags = buf.readUInt16BE(0);
  let off = 2;
  if (flags & 0x8000) off += 1 + buf[off];
  if (flags & 0x4000) off += 1 + buf[off];
  if (!(flags & 0x2000)) return undefined;
  const n = buf.readUInt32BE(off);
  return table(buf, off + 4, off + 4 + n);
}

defs.decode = function decode(id, buf) {
  const fields = orig(id, buf);
  if (id === defs.BasicProperties) fields.typedHeaders = typedHeaders(buf);
  return fields;
};

export default require('amqplib');
