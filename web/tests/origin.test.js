// Origin binding as the page does it (docs/protocol.md, "Origin binding" and "This
// server's names"). The page signs the challenge bound to the WebSocket URL it opened
// (its own origin, http → ws) in both `pair.request` and `auth.response`, and sends that
// origin along. A page reached through a loopback TCP forwarder on another port is
// therefore refused unless the server is started with `--server-name 127.0.0.1:<that
// port>`; the page says so and links to the server's own address instead of signing in.
// The same holds for `localhost` on a server that listens on 127.0.0.1 only.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Server, TestClient, Proxy, launchBrowser, browserAvailable, waitAttr, until, SCREENSHOTS } from './harness.js';

const enabled = browserAvailable();
let browser;

before(async () => {
  if (enabled) browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * A fresh profile on `url`, recording every WebSocket the page opens and every frame
 * it sends and receives on them (parsed JSON).
 */
async function recordedPage(url) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  const rec = { sockets: [], sent: [], received: [], errors: [] };
  page.on('pageerror', (e) => rec.errors.push(String(e)));
  page.on('websocket', (ws) => {
    rec.sockets.push(ws.url());
    ws.on('framesent', (f) => rec.sent.push(JSON.parse(f.payload)));
    ws.on('framereceived', (f) => rec.received.push(JSON.parse(f.payload)));
  });
  await page.goto(url);
  return { context, page, rec };
}

/** `ssh-keygen -Y verify` of `signature` by `line` over exactly `message`: true when good. */
function sshVerifies(line, signature, message) {
  const dir = mkdtempSync(path.join(tmpdir(), 'origin-sig-'));
  try {
    writeFileSync(path.join(dir, 'allowed'), `signer ${line}\n`);
    writeFileSync(path.join(dir, 'sig'), `${signature}\n`);
    execFileSync('ssh-keygen', ['-Y', 'verify', '-f', path.join(dir, 'allowed'), '-I', 'signer', '-n', 'ccrelay-auth', '-s', path.join(dir, 'sig')], { input: message, stdio: ['pipe', 'pipe', 'pipe'] });
    return true;
  } catch {
    return false;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The page's answer of `type` and the challenge it answered (the last challenge received
 * before it): the answer carries `origin` and its signature verifies over the challenge
 * bound to `origin`, and not over the bare challenge.
 */
function assertBound(rec, type, origin) {
  const at = rec.sent.findIndex((m) => m.type === type);
  assert.ok(at >= 0, `the page sent ${type}: ${JSON.stringify(rec.sent)}`);
  const answer = rec.sent[at];
  const challenge = rec.received.filter((m) => m.type === 'auth.challenge').at(-1);
  assert.ok(challenge, 'a challenge arrived');
  assert.equal(answer.origin, origin, `${type} names the origin the page dialed`);
  assert.ok(sshVerifies(answer.public_key, answer.signature, `${challenge.sign}:origin:${origin}`), `${type} is signed over the bound text`);
  assert.ok(!sshVerifies(answer.public_key, answer.signature, challenge.sign), `${type} is not a signature over the bare challenge`);
}

test('through a forwarder the server does not know: the page explains, links to the server, never signs; the server refuses a bound signature', { skip: !enabled }, async () => {
  const server = await Server.start();
  const fwd = await Proxy.start(server.port);
  try {
    const { context, page, rec } = await recordedPage(`http://127.0.0.1:${fwd.port}/?device=forwarded`);
    const state = page.getByTestId('connection-state');
    await waitAttr(state, 'data-state', (v) => v === 'refused');
    await page.getByTestId('wrong-name').waitFor();
    assert.match(await page.getByTestId('wrong-name').innerText(), new RegExp(`127\\.0\\.0\\.1:${fwd.port}`), 'it names the address it was opened at');
    const link = page.getByTestId('wrong-name-link');
    assert.equal(await link.getAttribute('href'), `http://127.0.0.1:${server.port}/`);
    assert.deepEqual(rec.sockets, [], 'no WebSocket opened, nothing signed');
    assert.equal(await page.getByTestId('public-key').innerText(), '', 'no key was made for this origin');

    // What the page would have sent (the same signing code, protocol.js + sshsig.js),
    // with a key the server authorizes: refused, because it names the forwarder.
    await assert.rejects(TestClient.connect(`ws://127.0.0.1:${fwd.port}/v1/ws`, server.ownerKey, 'forwarded'), /auth_failed/);
    await until(() => server.logs.some((l) => l.includes(`ws://127.0.0.1:${fwd.port}`)), 'the server log names the refused origin');

    // The link leads to a page that can sign in.
    await link.click();
    await page.waitForURL(`http://127.0.0.1:${server.port}/`);
    await waitAttr(state, 'data-state', (v) => v === 'pairing');
    assert.deepEqual(rec.errors, []);
    await context.close();
  } finally {
    await fwd.stop();
    await server.stop();
  }
});

test('with --server-name 127.0.0.1:<forwarder port> the page pairs and signs in through the forwarder, bound to that origin', { skip: !enabled }, async () => {
  const fwd = await Proxy.start();
  const server = await Server.start({ args: ['--server-name', `127.0.0.1:${fwd.port}`] });
  fwd.target = server.port;
  const origin = `ws://127.0.0.1:${fwd.port}`;
  const term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  try {
    const { context, page, rec } = await recordedPage(`http://127.0.0.1:${fwd.port}/?device=forwarded`);
    const state = page.getByTestId('connection-state');
    await waitAttr(state, 'data-state', (v) => v === 'pairing');
    assert.ok(await page.getByTestId('wrong-name').isHidden());

    // pair.request through the forwarder, approved by the owner.
    const from = term.frames.length;
    await page.getByTestId('pair-start').click();
    const req = await term.wait((f) => f.type === 'pair.requested', { from });
    assert.equal(req.device, 'forwarded');
    await term.request({ type: 'pair.respond', pair_id: req.pair_id, allow: true });
    await waitAttr(state, 'data-state', (v) => v === 'connected');
    assertBound(rec, 'pair.request', origin);

    // A reload signs in with auth.response, bound the same way.
    rec.sent.length = 0;
    rec.received.length = 0;
    await page.reload();
    await waitAttr(state, 'data-state', (v) => v === 'connected');
    assertBound(rec, 'auth.response', origin);
    assert.ok(rec.sockets.every((u) => u === `${origin}/v1/ws`), `every socket went through the forwarder: ${rec.sockets}`);
    assert.deepEqual(rec.errors, []);
    await context.close();
  } finally {
    term.close();
    await fwd.stop();
    await server.stop();
  }
});

test('localhost on a server that listens on 127.0.0.1 only: the page explains and links to http://127.0.0.1:PORT/', { skip: !enabled }, async () => {
  const server = await Server.start();
  try {
    const { context, page, rec } = await recordedPage(`http://localhost:${server.port}/?device=local`);
    const state = page.getByTestId('connection-state');
    await waitAttr(state, 'data-state', (v) => v === 'refused');
    const text = await page.getByTestId('wrong-name').innerText();
    assert.match(text, new RegExp(`localhost:${server.port}`), text);
    mkdirSync(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SCREENSHOTS, 'wrong-name-390x844.png') });
    const link = page.getByTestId('wrong-name-link');
    assert.equal(await link.getAttribute('href'), `http://127.0.0.1:${server.port}/`);
    assert.deepEqual(rec.sockets, [], 'no WebSocket opened');
    await link.click();
    await page.waitForURL(`http://127.0.0.1:${server.port}/`);
    await waitAttr(state, 'data-state', (v) => v === 'pairing');
    assert.deepEqual(rec.errors, []);
    await context.close();
  } finally {
    await server.stop();
  }
});
