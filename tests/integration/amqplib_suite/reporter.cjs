// A mocha reporter for the amqplib suite runner: one line per test on
// stdout (as the spec reporter, without colours) and, at the end, every
// test's full title and outcome (a failed hook counts as a failed "test"
// of its own title) and the number of tests as JSON in the file named by
// AMQPLIB_SUITE_RESULT.
'use strict';
const fs = require('fs');
const path = require('path');
const Mocha = require('mocha');

const { EVENT_RUN_BEGIN, EVENT_TEST_PASS, EVENT_TEST_FAIL, EVENT_TEST_PENDING, EVENT_RUN_END } =
  Mocha.Runner.constants;

// "file.js: suite test": titles repeat across the suite's files.
const title = (t) => `${t.file ? path.basename(t.file) : '?'}: ${t.fullTitle()}`;

class SuiteReporter {
  constructor(runner) {
    const results = [];
    let total = 0;
    runner.once(EVENT_RUN_BEGIN, () => { total = runner.total; });
    runner.on(EVENT_TEST_PASS, (t) => {
      results.push({ title: title(t), state: 'passed' });
      process.stdout.write(`  ok    ${title(t)}\n`);
    });
    runner.on(EVENT_TEST_FAIL, (t, err) => {
      const msg = String((err && err.message) || err).split('\n')[0].slice(0, 300);
      results.push({ title: title(t), state: 'failed', error: msg });
      process.stdout.write(`  FAIL  ${title(t)}: ${msg}\n`);
    });
    runner.on(EVENT_TEST_PENDING, (t) => {
      results.push({ title: title(t), state: 'pending' });
    });
    runner.once(EVENT_RUN_END, () => {
      if (process.env.AMQPLIB_SUITE_RESULT) {
        fs.writeFileSync(process.env.AMQPLIB_SUITE_RESULT,
          JSON.stringify({ total, results }, null, 1));
      }
    });
  }
}

module.exports = SuiteReporter;
