// SQL92 filters with the official Node.js SDK: each group gets exactly the
// messages its expression selects over user properties and TAGS (RocketMQ
// semantics: numeric comparison of numeric strings, a missing property
// makes a comparison false).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  sdk, defPb, Code, startProducer, startSimpleConsumer, shutdownQuietly, yamlOf, expectCode,
  receiveAll,
} from './sdk_util.mjs';

const T = 'SqlTopic';
const SQL = defPb.FilterType.SQL;

// i = 0..29: a = i (as a string), color cycles red/blue/green/(none),
// tag TagA for even i, TagB for odd i.
const COLORS = ['red', 'blue', 'green', undefined];
function msgOf(i) {
  const props = new Map([['a', String(i)]]);
  if (COLORS[i % 4]) props.set('color', COLORS[i % 4]);
  return { i, a: i, color: COLORS[i % 4], tag: i % 2 ? 'TagB' : 'TagA', props };
}
const MSGS = Array.from({ length: 30 }, (_, i) => msgOf(i));

const CASES = [
  ['SqlGt', 'a > 25', (m) => m.a > 25],
  ['SqlBetween', 'a BETWEEN 3 AND 6', (m) => m.a >= 3 && m.a <= 6],
  ['SqlEq', "color = 'red'", (m) => m.color === 'red'],
  ['SqlNe', "color <> 'red'", (m) => m.color !== undefined && m.color !== 'red'],
  ['SqlIn', "color IN ('blue', 'green')", (m) => m.color === 'blue' || m.color === 'green'],
  ['SqlNull', 'color IS NULL', (m) => m.color === undefined],
  ['SqlNotNull', 'color IS NOT NULL AND a < 8', (m) => m.color !== undefined && m.a < 8],
  ['SqlAndOr', "(a < 4 OR a >= 28) AND color = 'red'", (m) => (m.a < 4 || m.a >= 28) && m.color === 'red'],
  ['SqlNot', 'NOT (a >= 2)', (m) => !(m.a >= 2)],
  ['SqlTags', "TAGS = 'TagB' AND a <= 5", (m) => m.tag === 'TagB' && m.a <= 5],
  ['SqlMissing', 'nosuchprop > 1', () => false],
  ['SqlTrue', 'TRUE', () => true],
  ['SqlFloat', 'a > 27.5', (m) => m.a > 27.5],
  ['SqlNumEq', 'a = 3', (m) => m.a === 3],
  ['SqlStrIn', "a IN ('1', '2')", (m) => m.a === 1 || m.a === 2],
  ['SqlNullOr', 'nosuchprop = 1 OR a = 0', (m) => m.a === 0],
  // Three-valued logic: NOT of an unknown is unknown, so nothing matches.
  ['SqlNotNull3', 'NOT (nosuchprop = 1)', () => false],
];

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info',
    yaml: yamlOf({
      topics: [{ name: T, queues: 2 }],
      groups: [...CASES.map(([name]) => ({ name })), { name: 'SqlBad' }],
    }),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

test('SQL92 expressions select exactly the matching messages', async () => {
  let producer;
  const consumers = [];
  try {
    producer = await startProducer(g, [T]);
    const idOf = new Map();
    for (const m of MSGS) {
      const r = await producer.send({ topic: T, body: Buffer.from(`s${m.i}`), tag: m.tag, properties: m.props });
      idOf.set(r.messageId, m.i);
    }
    const failures = [];
    await Promise.all(CASES.map(async ([group, expr, pred]) => {
      const c = await startSimpleConsumer(g, group, new Map([[T, new sdk.FilterExpression(expr, SQL)]]));
      consumers.push(c);
      const want = MSGS.filter(pred).map((m) => m.i);
      const got = await receiveAll(c, want.length, 20000, { invisible: 30000 });
      got.push(...await c.receive(32, 30000));
      const gotI = got.map((m) => idOf.get(m.messageId)).sort((x, y) => x - y);
      if (JSON.stringify(gotI) !== JSON.stringify(want)) {
        failures.push(`${expr}: got [${gotI}], want [${want}]`);
      }
    }));
    assert.deepEqual(failures, []);
  } finally {
    await shutdownQuietly(producer, ...consumers);
  }
});

test('malformed SQL92 expressions: ILLEGAL_FILTER_EXPRESSION', async () => {
  let c;
  try {
    c = await startSimpleConsumer(g, 'SqlBad', T);
    for (const expr of ['a = = 1', 'a >', "color = 'unterminated", '(a > 1', 'a BETWEEN 1', 'AND a = 1']) {
      await c.subscribe(T, new sdk.FilterExpression(expr, SQL));
      await expectCode(c.receive(1, 15000), Code.ILLEGAL_FILTER_EXPRESSION, `SQL ${JSON.stringify(expr)}`);
    }
  } finally {
    await shutdownQuietly(c);
  }
});
