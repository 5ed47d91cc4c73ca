// A headless Chromium driven over the DevTools protocol on a pipe
// (--remote-debugging-pipe: JSON messages ended by NUL on fds 3 and 4), so
// that browser tests need no npm package and no WebSocket.  The browser is
// the system's (Debian `chromium`; CHROMIUM_BIN overrides), with a private
// profile in a temp dir, no network services, and is killed by its PID.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { waitFor, scaled } from './harness.mjs';

export const CHROMIUM_BIN = process.env.CHROMIUM_BIN ||
  ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p)) || 'chromium';

export async function launchBrowser() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'gantry-chromium-'));
  const args = [
    '--headless=new', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-extensions', '--disable-dev-shm-usage', '--mute-audio', '--hide-scrollbars',
    `--user-data-dir=${profile}`, '--remote-debugging-pipe', '--window-size=1280,900',
  ];
  if (process.getuid && process.getuid() === 0) args.push('--no-sandbox');
  args.push('about:blank');
  const proc = spawn(CHROMIUM_BIN, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-8000); });
  const exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
  const spawnErr = new Promise((_, reject) => proc.on('error', reject));
  const b = new Browser(proc, profile, exited, () => stderr);
  await Promise.race([b.send('Browser.getVersion'), spawnErr,
    exited.then((e) => { throw new Error(`chromium exited (${JSON.stringify(e)}): ${stderr}`); })]);
  return b;
}

class Browser {
  constructor(proc, profile, exited, stderr) {
    this.proc = proc;
    this.profile = profile;
    this.exited = exited;
    this.stderr = stderr;
    this.nextId = 1;
    this.pending = new Map();
    this.handlers = [];
    this.buf = Buffer.alloc(0);
    proc.stdio[4].on('data', (d) => this.onData(d));
    exited.then(() => {
      for (const { reject } of this.pending.values()) reject(new Error(`chromium exited: ${stderr()}`));
      this.pending.clear();
    });
  }

  onData(d) {
    this.buf = Buffer.concat([this.buf, d]);
    let i;
    while ((i = this.buf.indexOf(0)) >= 0) {
      const msg = JSON.parse(this.buf.subarray(0, i).toString('utf8'));
      this.buf = this.buf.subarray(i + 1);
      if (msg.id !== undefined) {
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        if (!p) continue;
        if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
        else p.resolve(msg.result);
      } else {
        for (const h of this.handlers) h(msg);
      }
    }
  }

  send(method, params = {}, sessionId = undefined) {
    const id = this.nextId++;
    const msg = { id, method, params };
    if (sessionId) msg.sessionId = sessionId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      this.proc.stdio[3].write(`${JSON.stringify(msg)}\0`);
    });
  }

  // A new tab, 1280x900; window.confirm() answers yes.
  async newPage() {
    const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    const page = new Page(this, sessionId);
    this.handlers.push((m) => { if (m.sessionId === sessionId) page.onEvent(m); });
    await page.send('Page.enable');
    await page.send('Runtime.enable');
    await page.send('Emulation.setDeviceMetricsOverride',
      { width: 1280, height: 900, deviceScaleFactor: 1, mobile: false });
    await page.send('Page.addScriptToEvaluateOnNewDocument', { source: 'window.confirm = () => true;' });
    return page;
  }

  async close() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) {
      try { await Promise.race([this.send('Browser.close'), new Promise((r) => setTimeout(r, 2000))]); } catch { /* gone */ }
      const t = setTimeout(() => { try { this.proc.kill('SIGKILL'); } catch { /* gone */ } }, scaled(5000));
      await this.exited;
      clearTimeout(t);
    }
    fs.rmSync(this.profile, { recursive: true, force: true });
  }
}

class Page {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
    this.exceptions = [];  // uncaught page errors
    this.requests = [];    // {url, method, headers} once recordRequests()
  }

  // Records the page's requests as the network stack sends them.
  async recordRequests() {
    await this.send('Network.enable');
  }

  onEvent(m) {
    if (m.method === 'Runtime.exceptionThrown') {
      const d = m.params.exceptionDetails;
      this.exceptions.push(d.exception?.description ?? d.text);
    } else if (m.method === 'Network.requestWillBeSent') {
      const r = m.params.request;
      this.requests.push({ url: r.url, method: r.method, headers: r.headers });
    }
  }

  send(method, params = {}) { return this.browser.send(method, params, this.sessionId); }

  // Evaluates an expression in the page (promises awaited); returns its value.
  async eval(expression) {
    const r = await this.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
    if (r.exceptionDetails) {
      throw new Error(`page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    }
    return r.result.value;
  }

  async goto(url) {
    const r = await this.send('Page.navigate', { url });
    if (r.errorText) throw new Error(`navigate ${url}: ${r.errorText}`);
    await this.waitFor('document.readyState === "complete"', 20000, `${url} loaded`);
  }

  // Waits until the expression is truthy; returns its value.
  waitFor(expression, ms, what) {
    return waitFor(() => this.eval(expression), ms, what, 50);
  }

  text(selector) {
    return this.eval(`(() => { const e = document.querySelector(${JSON.stringify(selector)}); return e ? e.textContent : null; })()`);
  }

  click(selector) {
    return this.eval(`(() => { const e = document.querySelector(${JSON.stringify(selector)});
      if (!e) throw new Error('no element ' + ${JSON.stringify(selector)}); e.click(); return true; })()`);
  }

  async screenshot(file) {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const { data } = await this.send('Page.captureScreenshot', { format: 'png' });
    fs.writeFileSync(file, Buffer.from(data, 'base64'));
    return file;
  }
}
