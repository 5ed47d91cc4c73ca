// Transactional messages with the official Node.js SDK: a half message is
// invisible until EndTransaction COMMIT, ROLLBACK discards it; a blank
// transaction id is INVALID_TRANSACTION_ID and an unknown or already
// resolved one a clear error; an unresolved half message is checked through
// RecoverOrphanedTransactionCommand on the Telemetry stream of a live
// producer of its topic, whose TransactionChecker's answer (commit or
// rollback, with EndTransaction source SOURCE_SERVER_CHECK) is applied,
// also when the producer that sent it is gone; after message.tx_max_checks
// unanswered checks it is discarded; half messages and resolutions survive
// a SIGKILL restart (flush: sync).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startGantry, stopGantry } from './harness.mjs';
import {
  Code, codeName, defPb, pb, Raw, resource, startProducer, startSimpleConsumer, shutdownQuietly,
  errText, newMessageId, scaled, waitFor,
} from './sdk_util.mjs';

const { TransactionResolution: Res } = defPb;

function yamlOf(topics, groups, message) {
  let y = 'topics:\n';
  for (const t of topics) y += `  - {name: "${t.name}", type: ${t.type ?? 'TRANSACTION'}, queues: 2}\n`;
  y += 'groups:\n';
  for (const gr of groups) y += `  - {name: "${gr}"}\n`;
  y += 'message:\n';
  for (const [k, v] of Object.entries(message)) y += `  ${k}: ${v}\n`;
  return y;
}

const CHECK_AFTER_MS = 1500;
const CHECK_INTERVAL_MS = 500;
const MAX_CHECKS = 3;
// A half message unresolved for CHECK_AFTER_MS is checked within the next
// CHECK_INTERVAL_MS; allow generous slack (scaled for slow machines).
const CHECK_DUE_MS = CHECK_AFTER_MS + CHECK_INTERVAL_MS + scaled(4000);

const T_COMMIT = 'TxCommitT'; const G_COMMIT = 'TxCommitG';
const T_ROLLBACK = 'TxRollbackT'; const G_ROLLBACK = 'TxRollbackG';
const T_BAD = 'TxBadT';
const T_CHECK = 'TxCheckT'; const G_CHECK = 'TxCheckG';
const T_HANDOFF = 'TxHandoffT'; const G_HANDOFF = 'TxHandoffG'; const T_UNRELATED = 'TxUnrelatedT';
const T_MAX = 'TxMaxChecksT'; const G_MAX = 'TxMaxChecksG';
const T_RESTART = 'TxRestartT'; const G_RESTART = 'TxRestartG';

let g;
before(async () => {
  g = await startGantry({
    logLevel: 'info', flush: 'sync',
    yaml: yamlOf(
      [T_COMMIT, T_ROLLBACK, T_BAD, T_CHECK, T_HANDOFF, T_UNRELATED, T_MAX].map((name) => ({ name })),
      [G_COMMIT, G_ROLLBACK, G_CHECK, G_HANDOFF, G_MAX],
      { tx_check_after_ms: CHECK_AFTER_MS, tx_check_interval_ms: CHECK_INTERVAL_MS, tx_max_checks: MAX_CHECKS },
    ),
  });
});
after(async () => {
  const info = await stopGantry(g);
  assert.equal(info.code, 0, `gantry exit code ${info.code}`);
});

// A TransactionChecker that records its calls and answers decide(body).
function recordingChecker(decide = () => Res.TRANSACTION_RESOLUTION_UNSPECIFIED) {
  const calls = [];
  return {
    calls,
    async check(mv) {
      calls.push({ id: mv.messageId, body: mv.body.toString(), topic: mv.topic, at: Date.now() });
      return decide(mv.body.toString(), mv);
    },
  };
}

function txProducer(gs, topics, checker) {
  return startProducer(gs, topics, { checker });
}

// Receives (acking) until `want` messages or `stopAt`; returns bodies.
async function collect(consumer, { want = Infinity, stopAt }) {
  const got = [];
  while (got.length < want && Date.now() < stopAt) {
    for (const m of await consumer.receive(32, 15000)) {
      got.push(m.body.toString());
      await consumer.ack(m);
    }
  }
  return got;
}

// A non-OK RocketMQ code from an SDK error.
function sdkCode(err) {
  for (let e = err; e; e = e.cause) if (typeof e.code === 'number' && e.code >= 10000) return e.code;
  return undefined;
}

async function expectSdkError(p, what) {
  let res;
  try {
    res = await p;
  } catch (err) {
    const code = sdkCode(err);
    assert.ok(code !== undefined && code >= 40000 && code < 60000,
      `${what}: expected a RocketMQ error code, got ${code === undefined ? 'none' : codeName(code)}: ${errText(err)}`);
    return code;
  }
  assert.fail(`${what}: expected an error, but it succeeded: ${JSON.stringify(res)}`);
}

async function sendHalf(producer, topic, body) {
  const tx = producer.beginTransaction();
  const r = await producer.send({ topic, body: Buffer.from(body), properties: new Map([['k', body]]) }, tx);
  assert.ok(r.transactionId, `${body}: send receipt without a transaction id`);
  return { tx, r };
}

test('commit: the half message is invisible until EndTransaction COMMIT, then delivered once; a second commit is an error', async () => {
  let p; let c;
  const checker = recordingChecker();
  try {
    p = await txProducer(g, [T_COMMIT], checker);
    c = await startSimpleConsumer(g, G_COMMIT, T_COMMIT, { awaitDuration: 700 });
    const { tx, r } = await sendHalf(p, T_COMMIT, 'commit-me');
    const early = await collect(c, { stopAt: Date.now() + 700 });
    assert.deepEqual(early, [], 'delivered before the commit');
    await tx.commit();
    const got = await collect(c, { want: 1, stopAt: Date.now() + scaled(5000) });
    assert.deepEqual(got, ['commit-me'], 'after the commit');
    await expectSdkError(tx.commit(), 'second commit of the same transaction');
    await expectSdkError(tx.rollback(), 'rollback after the commit');
    const late = await collect(c, { stopAt: Date.now() + 700 });
    assert.deepEqual(late, [], 'delivered again');
    assert.deepEqual(checker.calls.filter((x) => x.id === r.messageId), [], 'a committed message was checked');
  } finally {
    await shutdownQuietly(p, c);
  }
});

test('rollback: the half message is never delivered, not even after a check period', async () => {
  let p; let c;
  const checker = recordingChecker(() => Res.COMMIT); // a check would wrongly commit it
  try {
    p = await txProducer(g, [T_ROLLBACK], checker);
    c = await startSimpleConsumer(g, G_ROLLBACK, T_ROLLBACK, { awaitDuration: 1000 });
    const t0 = Date.now();
    const { tx, r } = await sendHalf(p, T_ROLLBACK, 'roll-me-back');
    const ok = await sendHalf(p, T_ROLLBACK, 'committed-control');
    await tx.rollback();
    await ok.tx.commit();
    const got = await collect(c, { want: 1, stopAt: Date.now() + scaled(5000) });
    // Then past the time a (wrong) check would have come.
    got.push(...await collect(c, { stopAt: Math.max(Date.now(), t0 + CHECK_AFTER_MS + 3 * CHECK_INTERVAL_MS + 1000) }));
    assert.deepEqual(got, ['committed-control'], 'delivered after a rollback and a commit');
    assert.deepEqual(checker.calls.filter((x) => x.id === r.messageId), [], 'a rolled back message was checked');
    await expectSdkError(tx.commit(), 'commit after the rollback');
  } finally {
    await shutdownQuietly(p, c);
  }
});

test('EndTransaction: blank transaction id → INVALID_TRANSACTION_ID; unknown message → clear error (raw gRPC)', async () => {
  let p;
  const raw = new Raw(g.endpoint);
  try {
    p = await txProducer(g, [T_BAD], recordingChecker());
    const { tx, r } = await sendHalf(p, T_BAD, 'bad-ids');
    const end = (messageId, transactionId, resolution = Res.COMMIT) => raw.unary('EndTransaction',
      new pb.EndTransactionRequest().setTopic(resource(T_BAD)).setMessageId(messageId)
        .setTransactionId(transactionId).setResolution(resolution)
        .setSource(defPb.TransactionSource.SOURCE_CLIENT), pb.EndTransactionResponse);
    const wrong = [];
    for (const [what, txId] of [['empty transaction id', ''], ['blank transaction id', '   ']]) {
      const x = await end(r.messageId, txId);
      assert.equal(x.err, null, x.err?.message);
      const code = x.resp.getStatus().getCode();
      if (code !== Code.INVALID_TRANSACTION_ID) {
        wrong.push(`${what}: expected ${codeName(Code.INVALID_TRANSACTION_ID)}, got ${codeName(code)} "${x.resp.getStatus().getMessage()}"`);
      }
    }
    for (const [what, msgId, txId] of [
      ['unknown message id', newMessageId(), r.transactionId],
      ['unknown message and transaction ids', newMessageId(), newMessageId()],
    ]) {
      const x = await end(msgId, txId);
      assert.equal(x.err, null, x.err?.message);
      const code = x.resp.getStatus().getCode();
      if (!(code >= 40000 && code < 50000)) {
        wrong.push(`${what}: expected a 4xxxx code, got ${codeName(code)} "${x.resp.getStatus().getMessage()}"`);
      }
    }
    assert.deepEqual(wrong, [], 'EndTransaction validation');
    // The half message is still pending and can be resolved.
    await tx.rollback();
  } finally {
    raw.close();
    await shutdownQuietly(p);
  }
});

test('orphan check: the producer\'s TransactionChecker is asked and its commit or rollback is applied, once', async () => {
  let p; let c;
  const checker = recordingChecker((body) => (body.startsWith('check-commit') ? Res.COMMIT : Res.ROLLBACK));
  try {
    p = await txProducer(g, [T_CHECK], checker);
    c = await startSimpleConsumer(g, G_CHECK, T_CHECK, { awaitDuration: 1000 });
    const t0 = Date.now();
    const a = await sendHalf(p, T_CHECK, 'check-commit');
    const b = await sendHalf(p, T_CHECK, 'check-rollback');
    // Neither transaction is ended by the client.
    const got = await collect(c, { want: 1, stopAt: t0 + CHECK_DUE_MS });
    assert.deepEqual(got, ['check-commit'], `delivered after the checks; checker calls: ${JSON.stringify(checker.calls)}`);
    const callsOf = (id) => checker.calls.filter((x) => x.id === id);
    const ca = callsOf(a.r.messageId);
    assert.ok(ca.length >= 1, 'checker not called for check-commit');
    assert.ok(ca[0].at - t0 >= CHECK_AFTER_MS - 200, `checked ${ca[0].at - t0} ms after the send (tx_check_after_ms ${CHECK_AFTER_MS})`);
    assert.equal(ca[0].topic, T_CHECK);
    assert.equal(ca[0].body, 'check-commit');
    // The rollback answer: wait until it was asked, then a while longer.
    await waitFor(() => callsOf(b.r.messageId).length >= 1, Math.max(0, t0 + CHECK_DUE_MS - Date.now()),
      'checker called for check-rollback', 100);
    const later = await collect(c, { stopAt: Date.now() + 3 * CHECK_INTERVAL_MS + 1000 });
    assert.deepEqual(later, [], 'delivered after the rollback answer (or delivered twice)');
    // Resolved messages are not checked again.
    assert.equal(callsOf(a.r.messageId).length, 1, `checks of check-commit: ${JSON.stringify(callsOf(a.r.messageId))}`);
    assert.equal(callsOf(b.r.messageId).length, 1, `checks of check-rollback: ${JSON.stringify(callsOf(b.r.messageId))}`);
  } finally {
    await shutdownQuietly(p, c);
  }
});

test('orphan check after the sending producer is gone: another live producer of the topic answers; a producer of another topic is not asked', async () => {
  let p1; let p2; let p3; let c;
  const checker1 = recordingChecker();
  const checker2 = recordingChecker(() => Res.COMMIT);
  const checker3 = recordingChecker(() => Res.ROLLBACK);
  try {
    p1 = await txProducer(g, [T_HANDOFF], checker1);
    p3 = await txProducer(g, [T_UNRELATED], checker3);
    c = await startSimpleConsumer(g, G_HANDOFF, T_HANDOFF, { awaitDuration: 1000 });
    const t0 = Date.now();
    const { r } = await sendHalf(p1, T_HANDOFF, 'orphaned');
    await shutdownQuietly(p1); // goes away without ending the transaction
    p1 = undefined;
    p2 = await txProducer(g, [T_HANDOFF], checker2);
    const got = await collect(c, { want: 1, stopAt: t0 + CHECK_DUE_MS });
    assert.deepEqual(got, ['orphaned'], `after the check; calls: p1 ${checker1.calls.length}, p2 ${JSON.stringify(checker2.calls)}, p3 ${checker3.calls.length}`);
    assert.deepEqual(checker2.calls.map((x) => x.id), [r.messageId], 'checks answered by the second producer');
    assert.deepEqual(checker3.calls, [], 'a producer of another topic was asked');
  } finally {
    await shutdownQuietly(p1, p2, p3, c);
  }
});

test(`a half message the checker never resolves is checked tx_max_checks (${MAX_CHECKS}) times, then discarded`, async () => {
  let p; let c;
  const checker = recordingChecker(); // always UNSPECIFIED: unknown yet
  try {
    p = await txProducer(g, [T_MAX], checker);
    c = await startSimpleConsumer(g, G_MAX, T_MAX, { awaitDuration: 1000 });
    const { tx, r } = await sendHalf(p, T_MAX, 'never-resolved');
    const callsOf = () => checker.calls.filter((x) => x.id === r.messageId);
    try {
      await waitFor(() => callsOf().length >= MAX_CHECKS,
        CHECK_AFTER_MS + MAX_CHECKS * (CHECK_AFTER_MS + CHECK_INTERVAL_MS) + 6000, `${MAX_CHECKS} checks`, 100);
    } catch { /* the assertion below says how many */ }
    const got = await collect(c, { stopAt: Date.now() + CHECK_AFTER_MS + 2 * CHECK_INTERVAL_MS + 1000 });
    assert.deepEqual(got, [], 'delivered');
    assert.equal(callsOf().length, MAX_CHECKS, `checks: ${JSON.stringify(callsOf().map((x) => x.at))}`);
    // Discarded: a late commit finds nothing.
    await expectSdkError(tx.commit(), 'commit after the half message was discarded');
    const after = await collect(c, { stopAt: Date.now() + 1000 });
    assert.deepEqual(after, [], 'delivered after a late commit of a discarded half message');
  } finally {
    await shutdownQuietly(p, c);
  }
});

test('half messages and resolutions survive a SIGKILL: commit after the restart, orphan check after the restart, rollback and commit from before it kept', async () => {
  const yaml = yamlOf([{ name: T_RESTART }], [G_RESTART],
    { tx_check_after_ms: 3000, tx_check_interval_ms: CHECK_INTERVAL_MS, tx_max_checks: 15 });
  let gr = await startGantry({ logLevel: 'info', yaml, flush: 'sync' });
  let p; let c;
  try {
    p = await txProducer(gr, [T_RESTART], recordingChecker());
    const h1 = await sendHalf(p, T_RESTART, 'commit-after-restart');
    const h2 = await sendHalf(p, T_RESTART, 'checked-after-restart');
    const h3 = await sendHalf(p, T_RESTART, 'rolled-back-before');
    const h4 = await sendHalf(p, T_RESTART, 'committed-before');
    await h3.tx.rollback();
    await h4.tx.commit();
    await shutdownQuietly(p);
    p = undefined;
    const info = await stopGantry(gr, 'SIGKILL', { keepDir: true });
    assert.equal(info.signal, 'SIGKILL');
    gr = await startGantry({ dir: gr.dir, grpcPort: gr.grpcPort, httpPort: gr.httpPort, logLevel: 'info', yaml, flush: 'sync' });

    const checker = recordingChecker((body) => (body === 'checked-after-restart' ? Res.COMMIT : Res.TRANSACTION_RESOLUTION_UNSPECIFIED));
    p = await txProducer(gr, [T_RESTART], checker);
    // The first producer's transaction, ended by the new one.
    await p.endTransaction(p.endpoints, { topic: T_RESTART }, h1.r.messageId, h1.r.transactionId, Res.COMMIT);
    c = await startSimpleConsumer(gr, G_RESTART, T_RESTART, { awaitDuration: 1000 });
    const got = await collect(c, { want: 3, stopAt: Date.now() + 3000 + CHECK_INTERVAL_MS + scaled(6000) });
    const extra = await collect(c, { stopAt: Date.now() + 1000 });
    assert.deepEqual([...got, ...extra].sort(), ['checked-after-restart', 'commit-after-restart', 'committed-before'],
      `delivered after the restart; checker calls ${JSON.stringify(checker.calls.map((x) => x.body))}`);
    assert.ok(checker.calls.some((x) => x.id === h2.r.messageId), 'the unresolved half message was not checked after the restart');
    assert.ok(!checker.calls.some((x) => [h3.r.messageId, h4.r.messageId].includes(x.id)),
      `messages resolved before the kill were checked after it: ${JSON.stringify(checker.calls.map((x) => x.body))}`);
    await expectSdkError(p.endTransaction(p.endpoints, { topic: T_RESTART }, h3.r.messageId, h3.r.transactionId, Res.COMMIT),
      'commit (after the restart) of a transaction rolled back before it');
  } finally {
    await shutdownQuietly(p, c);
    await stopGantry(gr);
  }
});
