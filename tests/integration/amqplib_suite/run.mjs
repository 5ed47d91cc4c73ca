// Runs amqplib 0.10.9's own test suite (the files that talk to a server:
// test/channel_api.js, test/callback_api.js, test/connect.js, as shipped
// in the npm package) with mocha, as amqplib's Makefile does
// (`mocha --check-leaks -u tdd --exit`), against a server, and checks a
// ratchet of test titles that must pass.
//
//   node run.mjs                    start build/gantry (or GANTRY_BIN) on free
//                                   ports, run the suite against it, check
//                                   ../amqplib_expected_pass.txt
//   node run.mjs --url amqp://...   run against that server (e.g. RabbitMQ);
//                                   the ratchet is not checked
//   --no-ratchet                    print the counts only
//   --list                          print the passing titles (to refresh the list)
//
// The tests are not edited: the suite reads the server's URL from the
// environment (URL), and redirect.cjs sends the three connections the
// suite makes to the default port 5672 to the server's port instead.
// Prints "amqplib suite: P passed, F failed (of T)", the listed titles
// that did not pass (then exits 1) and the titles that pass but are not
// listed yet (so the list can grow).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startGantry, stopGantry, freePort, TIME_SCALE } from '../harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const amqplibDir = path.resolve(here, '../node_modules/amqplib');
const mochaBin = path.resolve(here, '../node_modules/mocha/bin/mocha');
const listFile = path.resolve(here, '../amqplib_expected_pass.txt');
const FILES = ['test/channel_api.js', 'test/callback_api.js', 'test/connect.js'];

const args = process.argv.slice(2);
const urlArg = args.includes('--url') ? args[args.indexOf('--url') + 1] : null;
const ratchet = !urlArg && !args.includes('--no-ratchet');

function runMocha(url, port) {
  const result = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'amqplib-suite-')), 'r.json');
  // mocha's per-test timeout (2 s by default) grows with the harness's
  // TIME_SCALE on sanitizer builds; nothing else is changed.
  const mochaArgs = [mochaBin, '--check-leaks', '-u', 'tdd', '--exit',
    '--timeout', String(2000 * TIME_SCALE),
    '--require', path.join(here, 'redirect.cjs'), '--reporter', path.join(here, 'reporter.cjs'),
    ...FILES];
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, mochaArgs, {
      cwd: amqplibDir,
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, URL: url, AMQPLIB_SUITE_PORT: String(port),
        AMQPLIB_SUITE_RESULT: result },
    });
    const killer = setTimeout(() => p.kill('SIGKILL'), 600000 * TIME_SCALE);
    p.on('error', reject);
    p.on('exit', () => {
      clearTimeout(killer);
      try {
        resolve(JSON.parse(fs.readFileSync(result, 'utf8')));
      } catch (e) {
        reject(new Error(`mocha wrote no result (${e.message})`));
      } finally {
        fs.rmSync(path.dirname(result), { recursive: true, force: true });
      }
    });
  });
}

function readList() {
  return fs.readFileSync(listFile, 'utf8').split('\n').map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

async function main() {
  let g = null;
  let url = urlArg;
  let port;
  if (url) {
    port = Number(new URL(url).port) || 5672;
  } else {
    // Dual-stack on a free port: the suite's "ipv6" test connects to [::1].
    port = await freePort();
    g = await startGantry({ logLevel: 'info', amqpPort: port, amqpListen: `[::]:${port}` });
    url = `amqp://localhost:${port}`;
  }
  let out;
  try {
    out = await runMocha(url, port);
  } finally {
    if (g) {
      const info = await stopGantry(g);
      if (info.code !== 0) {
        console.error(`gantry exited with ${info.code ?? info.signal}`);
        process.exitCode = 1;
      }
    }
  }
  // A test passes when it reported a pass and no failure (mocha also
  // reports a failure after a pass, e.g. "done() called multiple times").
  const failedTitles = new Set(out.results.filter((r) => r.state === 'failed').map((r) => r.title));
  const passed = new Set(out.results.filter((r) => r.state === 'passed' && !failedTitles.has(r.title))
    .map((r) => r.title));
  const failed = out.total - passed.size;
  console.log(`\namqplib suite: ${passed.size} passed, ${failed} failed (of ${out.total}, `
    + `${FILES.join(' ')}) against ${g ? 'gantry' : url}`);
  if (args.includes('--list')) {
    console.log([...passed].sort().join('\n'));
  }
  if (!ratchet) return;
  const listed = readList();
  const lost = listed.filter((t) => !passed.has(t));
  const fresh = [...passed].filter((t) => !listed.includes(t)).sort();
  console.log(`ratchet (${path.basename(listFile)}): ${listed.length} listed, `
    + `${listed.length - lost.length} of them pass`);
  if (fresh.length > 0) {
    console.log(`newly passing, not listed yet (add them to ${path.basename(listFile)}):`);
    for (const t of fresh) console.log(`  + ${t}`);
  }
  if (lost.length > 0) {
    console.log('LISTED BUT NOT PASSING:');
    for (const t of lost) {
      const r = out.results.find((x) => x.title === t && x.state === 'failed')
        ?? out.results.find((x) => x.title === t);
      console.log(`  - ${t}${r ? `: ${r.state} ${r.error ?? ''}` : ': not run'}`);
    }
    process.exitCode = 1;
  }
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
