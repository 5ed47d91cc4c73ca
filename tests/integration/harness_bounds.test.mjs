// The tests' time bounds are scaled exactly once.  waitFor(cond, ms) and the
// helpers built on it (cluster_harness.mjs: waitLeaders, waitHealthy,
// waitNewLeader, waitWritable, Load.waitAcked) multiply `ms` by TIME_SCALE
// themselves; a bound written as scaled(...) there is scaled twice (x36
// under TSan: a 20 s bound became 12 min, and a stalled test hung the CI
// that long).  This reads every integration test file and fails on such a
// call.  No server is started.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
// Helpers whose `ms` argument (1-based position) is scaled inside.
const SCALING = { waitFor: 2, waitLeaders: 2, waitHealthy: 2, waitNewLeader: 3, waitWritable: 2,
  waitAcked: 2 };

// The top-level arguments of the call whose '(' is at `open` (strings,
// template literals and nested brackets skipped well enough for this code).
function callArgs(src, open) {
  const args = [];
  let depth = 0;
  let start = open + 1;
  for (let i = open; i < src.length; i++) {
    const ch = src[i];
    if (ch === '\'' || ch === '"' || ch === '`') {
      for (i++; i < src.length && src[i] !== ch; i++) if (src[i] === '\\') i++;
      continue;
    }
    if (ch === '(' || ch === '[' || ch === '{') depth++;
    else if (ch === ')' || ch === ']' || ch === '}') {
      depth--;
      if (depth === 0) { args.push(src.slice(start, i)); return args; }
    } else if (ch === ',' && depth === 1) {
      args.push(src.slice(start, i));
      start = i + 1;
    }
  }
  return args;
}

export function doubleScaled(src) {
  const found = [];
  const re = new RegExp(`\\b(${Object.keys(SCALING).join('|')})\\(`, 'g');
  for (let m; (m = re.exec(src));) {
    const before = src.slice(Math.max(0, m.index - 16), m.index);
    if (/(function|async)\s+$/.test(before)) continue; // the definition
    const arg = callArgs(src, m.index + m[0].length - 1)[SCALING[m[1]] - 1];
    if (arg !== undefined && /\bscaled\(/.test(arg)) {
      found.push(`line ${src.slice(0, m.index).split('\n').length}: ${m[1]}(..., ${arg.trim()})`);
    }
  }
  return found;
}

test('the checker finds a bound scaled twice, and only that', () => {
  assert.deepEqual(doubleScaled('await waitFor(() => ok, scaled(20000), \'x\');'),
    ['line 1: waitFor(..., scaled(20000))']);
  assert.deepEqual(doubleScaled('await waitFor(async () => {\n  return f(scaled(2000));\n}, 20000, \'x\');'), []);
  assert.equal(doubleScaled('x;\nawait load.waitAcked(200, scaled(60000));').length, 1);
  assert.deepEqual(doubleScaled('export async function waitFor(cond, ms) {}'), []);
});

test('no integration test passes scaled(...) to a helper that scales', () => {
  const bad = [];
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.mjs') && n !== path.basename(fileURLToPath(import.meta.url))).sort()) {
    for (const hit of doubleScaled(fs.readFileSync(path.join(dir, f), 'utf8'))) bad.push(`${f} ${hit}`);
  }
  assert.deepEqual(bad, [], `bounds scaled twice (pass plain ms):\n${bad.join('\n')}`);
});
