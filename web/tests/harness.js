// Test harness for the browser tests: the real `ccrelay` binary on 127.0.0.1:0 with
// the mock agent, a protocol test client (Node WebSocket + the page's own sshsig.js
// with a Node WebCrypto key), a loopback TCP proxy the test can cut, and Debian's
// chromium driven by playwright-core (one browser context per "profile").

import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, appendFileSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { deflateSync, crc32 } from 'node:zlib';
import WebSocket from 'ws';
import * as sshsig from '../js/sshsig.js';
import { bindingOrigin, boundText } from '../js/protocol.js';
import { MockAnthropic } from './mock-anthropic.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, '../..');
export const CHROMIUM = process.env.CCRELAY_CHROMIUM || '/usr/bin/chromium';
export const SCREENSHOTS = path.join(ROOT, 'target', 'web-screenshots');

export function bin(name) {
  const dir = process.env.CCRELAY_TARGET_DIR || path.join(ROOT, 'target', 'debug');
  return path.join(dir, name);
}

/** Whether browser tests can run; prints the SKIPPED line when not (and fails when required). */
export function browserAvailable() {
  if (existsSync(CHROMIUM)) return true;
  const msg = `SKIPPED: browser tests need Debian's chromium at ${CHROMIUM}`;
  if (process.env.CCRELAY_REQUIRE_ALL === '1') throw new Error(`${msg} (CCRELAY_REQUIRE_ALL=1)`);
  console.log(msg);
  return false;
}

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-background-timer-throttling',
  '--disable-renderer-backgrounding',
  '--disable-backgrounding-occluded-windows',
];

export async function launchBrowser(extraArgs = []) {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, args: [...FLAGS, ...extraArgs], headless: true });
}

/**
 * A running `ccrelay serve` in a fresh directory: the mock agent, or `agentCmd` (e.g.
 * the real Claude Code CLI) with `env` added to the server's (and so the agent's) environment.
 */
export class Server {
  static async start({ args = [], prepare, agentCmd, env = {} } = {}) {
    const dir = mkdtempSync(path.join(tmpdir(), 'ccrelay-web-'));
    const s = new Server(dir);
    if (prepare) prepare(dir);
    mkdirSync(path.join(dir, 'work'));
    mkdirSync(path.join(dir, 'mock-state'));
    // The terminal/test client's key: the server needs at least one usable key.
    s.ownerKey = await nodeKey('terminal');
    writeFileSync(s.authorizedKeys, `${s.ownerKey.line}\n`);
    s.proc = spawn(
      bin('ccrelay'),
      [
        'serve',
        '--listen', '127.0.0.1:0',
        '--authorized-keys', s.authorizedKeys,
        '--data-dir', path.join(dir, 'data'),
        '--workdir', path.join(dir, 'work'),
        '--agent-cmd', agentCmd ?? bin('ccrelay-mock-agent'),
        '--log-format', 'json',
        ...(typeof args === 'function' ? args(dir) : args),
      ],
      { env: { ...process.env, CCRELAY_MOCK_STATE_DIR: path.join(dir, 'mock-state'), ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    s.logs = [];
    createInterface({ input: s.proc.stderr }).on('line', (l) => s.logs.push(l));
    const line = await new Promise((resolve, reject) => {
      const rl = createInterface({ input: s.proc.stdout });
      const t = setTimeout(() => reject(new Error(`no listening line; logs:\n${s.logs.join('\n')}`)), 30000);
      rl.once('line', (l) => {
        clearTimeout(t);
        resolve(l);
      });
      s.proc.once('exit', (code) => reject(new Error(`ccrelay exited ${code}: ${s.logs.join('\n')}`)));
    });
    const m = /^ccrelay listening on ws:\/\/(.+)\/v1\/ws$/.exec(line);
    if (!m) throw new Error(`unexpected listening line ${line}`);
    s.addr = m[1];
    s.port = Number(s.addr.split(':').pop());
    s.base = `http://${s.addr}`;
    s.wsUrl = `ws://${s.addr}/v1/ws`;
    return s;
  }

  constructor(dir) {
    this.dir = dir;
    this.authorizedKeys = path.join(dir, 'authorized_keys');
    this.workdir = path.join(dir, 'work');
  }

  /** Append a key line and wait until the server has reloaded its keys. */
  /** Add `line` to the owners' keys (or another keys file, e.g. `--viewer-keys`) and wait for the reload. */
  async authorize(line, file = this.authorizedKeys) {
    const reloads = () => this.logs.filter((l) => l.includes('authorized keys reloaded')).length;
    const before = reloads();
    appendFileSync(file, `${line.trim()}\n`);
    await until(() => reloads() > before, 'the server reloads its keys');
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The `auth.response` or `pair.request` fields that answer `challenge` for a client that
 * dialed `url`: a signature over the challenge bound to that URL's origin, as the page
 * makes it (docs/protocol.md, "Origin binding"), and the `origin` field.
 */
export async function boundAnswer(key, challenge, url) {
  const origin = bindingOrigin(url);
  return { signature: await key.sign(boundText(challenge.sign, origin)), public_key: key.line, origin };
}

/** An Ed25519 key for the Node test client (same sshsig.js as the page). */
export async function nodeKey(comment = 'test-client') {
  const pair = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  return {
    pair,
    raw,
    line: sshsig.publicKeyLine(raw, comment),
    fingerprint: await sshsig.fingerprint(raw),
    sign: (text) => sshsig.sign(pair.privateKey, raw, 'ccrelay-auth', text),
  };
}

/** A protocol client over a real WebSocket: auth, requests with ids, frame waits. */
export class TestClient {
  static async connect(url, key, device) {
    const c = new TestClient();
    c.ws = new WebSocket(url, { maxPayload: 64 * 1024 * 1024 });
    c.frames = [];
    c.waiters = [];
    c.nextId = 1;
    c.ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      c.frames.push(m);
      for (const w of [...c.waiters]) {
        if (w.pred(m)) {
          c.waiters.splice(c.waiters.indexOf(w), 1);
          clearTimeout(w.timer);
          w.resolve(m);
        }
      }
    });
    await new Promise((resolve, reject) => {
      c.ws.once('open', resolve);
      c.ws.once('error', reject);
    });
    const ch = await c.wait((m) => m.type === 'auth.challenge');
    c.ws.send(JSON.stringify({ type: 'auth.response', ...(await boundAnswer(key, ch, url)), device }));
    c.authOk = await c.wait((m) => m.type === 'auth.ok' || m.type === 'error');
    if (c.authOk.type !== 'auth.ok') throw new Error(`auth failed: ${JSON.stringify(c.authOk)}`);
    return c;
  }

  /** Wait for a frame matching `pred` (also one that already arrived after `from`). */
  wait(pred, { timeout = 20000, from = 0 } = {}) {
    const have = this.frames.slice(from).find(pred);
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out waiting for a frame (${pred})`));
      }, timeout);
      this.waiters.push(w);
    });
  }

  async request(m) {
    const id = this.nextId++;
    const from = this.frames.length;
    this.ws.send(JSON.stringify({ ...m, id }));
    const reply = await this.wait((f) => f.id === id, { from });
    if (reply.type === 'error') throw Object.assign(new Error(reply.message), { code: reply.code });
    return reply;
  }

  events(session = 'default') {
    return this.frames.filter((f) => f.type === 'event' && f.session === session);
  }

  head(session = 'default') {
    const e = this.events(session);
    return e.length ? e[e.length - 1].seq : 0;
  }

  close() {
    this.ws.close();
  }
}

/**
 * A loopback TCP proxy (forwarder) in front of the server that a test can cut and
 * restore. `target` is the server's port; it may be set after the start, so that the
 * server can be told the proxy's address (`--server-name 127.0.0.1:<proxy port>`).
 */
export class Proxy {
  static async start(target = 0) {
    const p = new Proxy(target);
    await p.listen(0);
    return p;
  }

  constructor(target) {
    this.target = target;
    this.sockets = new Set();
    this.pairs = [];
    this.port = 0;
  }

  listen(port) {
    this.server = net.createServer((client) => {
      const upstream = net.connect(this.target, '127.0.0.1');
      this.sockets.add(client);
      this.sockets.add(upstream);
      client.pipe(upstream);
      upstream.pipe(client);
      this.pairs.push({ client, upstream });
      const done = () => {
        client.destroy();
        upstream.destroy();
        this.sockets.delete(client);
        this.sockets.delete(upstream);
      };
      client.on('error', done);
      upstream.on('error', done);
      client.on('close', done);
      upstream.on('close', done);
    });
    return new Promise((resolve) => this.server.listen(port, '127.0.0.1', () => {
      this.port = this.server.address().port;
      resolve();
    }));
  }

  /** Cut every connection and stop accepting (the port stays refused until restore). */
  async cut() {
    const closed = new Promise((r) => this.server.close(() => r()));
    this.destroyAll();
    await closed;
  }

  /** Stop delivering server → browser bytes on open connections (the browser's sends still arrive). */
  freeze() {
    for (const { client, upstream } of this.pairs) {
      upstream.unpipe(client);
      upstream.pause();
    }
  }

  destroyAll() {
    this.pairs = [];
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
  }

  async restore() {
    await this.listen(this.port);
  }

  async stop() {
    this.destroyAll();
    await new Promise((r) => this.server.close(() => r()));
  }
}

/**
 * Open the page in a fresh profile (browser context) and get it authorized: as an owner,
 * or with the key in `keysFile` (e.g. the server's `--viewer-keys` file).
 */
export async function openAuthorized(browser, server, baseUrl, device, { viewport = { width: 390, height: 844 }, keysFile } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => {
    // A refused WebSocket while the test holds the network down is expected noise.
    if (m.type() === 'error' && !/WebSocket connection to .* failed/.test(m.text())) page.errors.push(m.text());
  });
  await page.goto(`${baseUrl}/?device=${encodeURIComponent(device)}`);
  const state = page.getByTestId('connection-state');
  await waitAttr(state, 'data-state', (v) => v === 'pairing');
  const line = (await page.getByTestId('public-key').textContent()).trim();
  await server.authorize(line, keysFile);
  await page.reload();
  await waitAttr(state, 'data-state', (v) => v === 'connected');
  return { context, page, line };
}

/** Poll an attribute until `ok(value)`; returns the value. */
export async function waitAttr(locator, name, ok, timeout = 20000) {
  const deadline = Date.now() + timeout;
  let v = null;
  while (Date.now() < deadline) {
    v = await locator.getAttribute(name, { timeout: 5000 }).catch(() => null);
    if (ok(v)) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`attribute ${name} never satisfied the condition (last: ${v})`);
}

export async function until(fn, what, timeout = 20000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out: ${what}`);
}

/** What `paired_keys` holds before a pairing test starts (a comment and one key). */
export const EXISTING_PAIRED = '# keys paired earlier\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq1Vb0dWZ3xdRlH8jPzV+Jl1fH0RrvdGQSD8o4tJQy8 old-phone (paired 2026-01-01 by SHA256:x)\n';

/**
 * The set-up of the pairing and devices tests: a server whose `paired_keys` already
 * holds EXISTING_PAIRED, a browser, a terminal owner client and an owner page.
 */
export async function startWithPairedKeys() {
  const server = await Server.start({
    prepare: (dir) => {
      mkdirSync(path.join(dir, 'data'), { recursive: true });
      writeFileSync(path.join(dir, 'data', 'paired_keys'), EXISTING_PAIRED);
    },
  });
  const pairedKeys = path.join(server.dir, 'data', 'paired_keys');
  mkdirSync(SCREENSHOTS, { recursive: true });
  const browser = await launchBrowser();
  const term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  const owner = await openAuthorized(browser, server, server.base, 'laptop');
  return { server, pairedKeys, browser, term, owner };
}

/** The real Claude Code CLI, or null after printing the SKIPPED line (throws when it is required). */
export function realCli() {
  const cli = process.env.CCRELAY_CLAUDE_BIN || path.join(ROOT, 'tools', 'claude-cli', 'node_modules', '.bin', 'claude');
  if (existsSync(cli)) return cli;
  const msg = `SKIPPED: real Claude Code CLI not installed at ${cli} (run npm install in tools/claude-cli)`;
  if (process.env.CCRELAY_REQUIRE_ALL === '1') throw new Error(`${msg} (CCRELAY_REQUIRE_ALL=1)`);
  console.log(msg);
  return null;
}

/** What real_cli.rs `offline_env` sets: the mock API, and all CLI state inside `home`. */
export function offlineEnv(home, baseUrl) {
  const config = path.join(home, '.claude');
  const tmp = path.join(home, 'tmp');
  mkdirSync(config, { recursive: true });
  mkdirSync(tmp, { recursive: true });
  return {
    ANTHROPIC_BASE_URL: baseUrl,
    ANTHROPIC_API_KEY: 'test',
    HOME: home,
    CLAUDE_CONFIG_DIR: config,
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_ERROR_REPORTING: '1',
    TMPDIR: tmp,
  };
}

/**
 * `offlineEnv` as an LLM gateway's client instead of with an API key (real_cli.rs
 * `gateway_env`): `ANTHROPIC_AUTH_TOKEN` is an unsigned JWT whose audience is
 * `claude-gateway`. The CLI then reports a usage limit with its reset time as a
 * `rate_limit_event`, as for claude.ai logins (docs/protocol.md §10.1).
 */
export function gatewayEnv(home, baseUrl) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const env = offlineEnv(home, baseUrl);
  delete env.ANTHROPIC_API_KEY;
  env.ANTHROPIC_AUTH_TOKEN = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ aud: 'claude-gateway', sub: 'ccrelay-tests', exp: 4102444800 })}.unsigned`;
  return env;
}

/**
 * What the real-CLI page tests share: a fresh Node mock Anthropic API (`api`, its
 * options), a server whose agent is the real CLI at `claude` with all its state in a
 * throwaway `home` (`env`: offlineEnv, or gatewayEnv), a browser, and a terminal client
 * attached to `default`. `stop()` undoes whatever `start()` got to.
 */
export class RealCliWorld {
  constructor(claude, { env = offlineEnv, api = {} } = {}) {
    this.claude = claude;
    this.options = { env, api };
  }

  async start() {
    this.api = await MockAnthropic.start(this.options.api);
    this.home = mkdtempSync(path.join(tmpdir(), 'ccrelay-web-cli-home-'));
    this.server = await Server.start({ agentCmd: this.claude, env: this.options.env(this.home, this.api.baseUrl) });
    mkdirSync(SCREENSHOTS, { recursive: true });
    this.browser = await launchBrowser();
    this.term = await TestClient.connect(this.server.wsUrl, this.server.ownerKey, 'terminal');
    await this.term.request({ type: 'attach', session: 'default' });
    return this;
  }

  async stop() {
    this.term?.close();
    await this.browser?.close();
    await this.server?.stop();
    await this.api?.stop();
    if (this.home) rmSync(this.home, { recursive: true, force: true });
  }
}

/** A PNG of `width`×`height` (opaque RGB, a gradient so that it is not trivially small). */
export function pngFile(width, height) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body) >>> 0);
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    for (let x = 0; x < width; x++) {
      const o = row + 1 + x * 3;
      raw[o] = (x * 255) / width;
      raw[o + 1] = (y * 255) / height;
      raw[o + 2] = ((x + y) * 7) & 255;
    }
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
