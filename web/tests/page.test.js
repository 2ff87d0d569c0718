// The page as served: security headers and content types on `/` and every asset,
// the own-origin rule on /v1/ws, and the browser's SSHSIG verified
// by `ssh-keygen -Y verify`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { Server, launchBrowser, browserAvailable, nodeKey, until } from './harness.js';
import * as sshsig from '../js/sshsig.js';

let server;
before(async () => {
  server = await Server.start();
});
after(async () => {
  await server?.stop();
});

function checkSecurityHeaders(res, what) {
  const csp = res.headers.get('content-security-policy') || '';
  assert.match(csp, /default-src 'self'/, `${what}: CSP default-src`);
  assert.match(csp, /connect-src 'self'/, `${what}: CSP connect-src`);
  assert.match(csp, /frame-ancestors 'none'/, `${what}: CSP frame-ancestors`);
  assert.match(csp, /base-uri 'none'/, `${what}: CSP base-uri`);
  assert.match(csp, /form-action 'none'/, `${what}: CSP form-action`);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*|https?:/, `${what}: CSP allows nothing else`);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff', `${what}: nosniff`);
  assert.equal(res.headers.get('referrer-policy'), 'no-referrer', `${what}: referrer policy`);
}

/** Every same-origin URL the page loads: the shell's references and each module's imports. */
async function crawl(base) {
  const seen = new Map();
  const queue = ['/'];
  while (queue.length) {
    const url = queue.shift();
    if (seen.has(url)) continue;
    const res = await fetch(new URL(url, base));
    const body = Buffer.from(await res.arrayBuffer());
    seen.set(url, { res, body });
    const type = res.headers.get('content-type') || '';
    const text = body.toString('utf8');
    let refs = [];
    if (type.startsWith('text/html')) refs = [...text.matchAll(/(?:href|src)="(\/[^"]*)"/g)].map((m) => m[1]);
    if (type.startsWith('text/javascript')) {
      refs = [...text.matchAll(/from '(\.{1,2}\/[^']+)'/g)].map((m) => new URL(m[1], new URL(url, base)).pathname);
    }
    if (type.startsWith('application/manifest+json')) refs = JSON.parse(text).icons.map((i) => i.src);
    for (const r of refs) if (!seen.has(r)) queue.push(r);
  }
  return seen;
}

test('/ and every asset carry the CSP and security headers, with content types and caching', async () => {
  const all = await crawl(server.base);
  for (const extra of ['/sw.js', '/js/app.js', '/app.css', '/icons/icon-512.png', '/icons/maskable-512.png', '/no-such-file']) {
    const res = await fetch(new URL(extra, server.base));
    all.set(extra, { res, body: Buffer.from(await res.arrayBuffer()) });
  }
  const types = { '.js': 'text/javascript', '.css': 'text/css', '.png': 'image/png', '.svg': 'image/svg+xml', '.webmanifest': 'application/manifest+json' };
  let modules = 0;
  for (const [url, { res }] of all) {
    checkSecurityHeaders(res, url);
    if (url === '/no-such-file') {
      assert.equal(res.status, 404);
      continue;
    }
    assert.equal(res.status, 200, url);
    const ext = path.extname(url);
    if (url === '/') assert.match(res.headers.get('content-type'), /^text\/html/);
    else assert.ok(res.headers.get('content-type').startsWith(types[ext]), `${url}: ${res.headers.get('content-type')}`);
    if (url.startsWith('/v/')) assert.match(res.headers.get('cache-control'), /immutable/, url);
    else assert.equal(res.headers.get('cache-control'), 'no-cache', url);
    if (url.endsWith('.js') && url.startsWith('/v/')) modules += 1;
  }
  assert.ok(modules >= 8, `the crawl found the page's modules (${modules})`);
  const index = all.get('/').body.toString();
  assert.doesNotMatch(index, /<script>|<style|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handlers');
  console.log(`checked ${all.size} responses`);
  // A fresh request with the ETag is answered 304, still with the headers.
  const etag = all.get('/').res.headers.get('etag');
  const again = await fetch(new URL('/', server.base), { headers: { 'if-none-match': etag } });
  assert.equal(again.status, 304);
  checkSecurityHeaders(again, '/ (304)');
});

test('serve logs the page URL (no QR code or plain line when stderr is not a terminal)', () => {
  const lines = server.logs.map((l) => JSON.parse(l)); // every stderr line stays a JSON log line
  const ev = lines.find((l) => l.message === 'web client');
  assert.equal(ev && ev.url, `http://127.0.0.1:${server.port}/`);
  assert.ok(!server.logs.some((l) => /[█▀▄]/.test(l)), 'no QR code on a pipe');
});

async function upgrade(host, origin) {
  // A raw upgrade request, so that Host and Origin are exactly what the test says.
  return new Promise((resolve, reject) => {
    const s = net.connect(server.port, '127.0.0.1', () => {
      s.write(`GET /v1/ws HTTP/1.1\r\nHost: ${host}\r\nOrigin: ${origin}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`);
    });
    let data = '';
    s.on('data', (d) => {
      data += d;
      if (data.includes('\r\n')) {
        s.destroy();
        resolve(Number(data.split(' ')[1]));
      }
    });
    s.on('error', reject);
  });
}

test('/v1/ws allows the page’s own origin only on one of the server’s names', async () => {
  const own = `127.0.0.1:${server.port}`;
  assert.equal(await upgrade(own, `http://${own}`), 101, 'own origin');
  // localhost is one of its names only while it holds the port on both 127.0.0.1 and ::1.
  assert.equal(await upgrade(`localhost:${server.port}`, `http://localhost:${server.port}`), 403, 'localhost on a 127.0.0.1-only listener');
  assert.equal(await upgrade(own, 'http://127.0.0.1:1'), 403, 'another port on this machine');
  assert.equal(await upgrade(own, 'https://evil.example'), 403, 'another site');
  assert.equal(await upgrade(`evil.example:${server.port}`, `http://evil.example:${server.port}`), 403, 'DNS rebinding');
});

function sshVerify(dir, line, signature, message) {
  writeFileSync(path.join(dir, 'allowed'), `tester ${line}\n`);
  writeFileSync(path.join(dir, 'sig'), `${signature}\n`);
  return execFileSync('ssh-keygen', ['-Y', 'verify', '-f', path.join(dir, 'allowed'), '-I', 'tester', '-n', 'ccrelay-auth', '-s', path.join(dir, 'sig')], { input: message, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
}

test('a Node WebCrypto key signs SSHSIG that ssh-keygen verifies', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sshsig-'));
  try {
    const k = await nodeKey('node');
    const message = 'ccrelay-auth-v1:server:nonce-ü';
    const out = sshVerify(dir, k.line, await k.sign(message), message);
    assert.match(out, /Good "ccrelay-auth" signature for tester/);
    assert.throws(() => sshVerify(dir, k.line, 'not a signature', message));
    // The pairing code: first 4 bytes of SHA-256 big-endian mod 10^6, six digits.
    const code = await sshsig.pairCode('abc', 'SHA256:x');
    const d = (await import('node:crypto')).createHash('sha256').update('ccrelay-pair-v1:abc:SHA256:x').digest();
    assert.equal(code, String(d.readUInt32BE(0) % 1000000).padStart(6, '0'));
    // ssh-keygen agrees on the fingerprint.
    writeFileSync(path.join(dir, 'k.pub'), `${k.line}\n`);
    const fp = execFileSync('ssh-keygen', ['-lf', path.join(dir, 'k.pub')]).toString().split(' ')[1];
    assert.equal(k.fingerprint, fp);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the browser’s non-extractable key signs SSHSIG that ssh-keygen verifies', { skip: !browserAvailable() }, async () => {
  const browser = await launchBrowser();
  const dir = mkdtempSync(path.join(tmpdir(), 'sshsig-'));
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.base}/?device=signer`);
    const message = 'ccrelay-auth-v1:abc:nonce';
    const r = await page.evaluate(async (msg) => {
      const { DeviceKey } = await import('/js/keys.js');
      // Callers racing on a fresh profile (the app is loading its key too) get one key.
      const [k, ...racing] = await Promise.all([1, 2, 3].map(() => DeviceKey.loadOrCreate()));
      const again = await DeviceKey.loadOrCreate();
      let extractable = true;
      try {
        await crypto.subtle.exportKey('pkcs8', k.pair.privateKey);
      } catch {
        extractable = false;
      }
      return { line: k.publicLine('signer'), sig: await k.sign(msg), same: [again, ...racing].every((o) => o.publicLine('') === k.publicLine('')), extractable, fp: k.fingerprint };
    }, message);
    assert.equal(r.extractable, false, 'the private key cannot be exported');
    assert.ok(r.same, 'one key, kept in IndexedDB, whoever asked first');
    assert.equal((await page.getByTestId('public-key').textContent()).trim(), r.line, 'the page shows the same key');
    // The service worker installed and cached this build's shell (PWA).
    const cached = await page.evaluate(async () => {
      await navigator.serviceWorker.ready;
      const keys = await caches.keys();
      const c = await caches.open(keys.find((k) => k.startsWith('ccrelay-')));
      return { keys, shell: !!(await c.match('/')), app: (await c.keys()).some((q) => q.url.endsWith('/js/app.js')) };
    });
    assert.equal(cached.keys.length, 1, `one cache (${cached.keys})`);
    assert.ok(cached.shell && cached.app, 'the shell and the modules are cached');
    const out = sshVerify(dir, r.line, r.sig, message);
    assert.match(out, /Good "ccrelay-auth" signature/);
    assert.throws(() => sshVerify(dir, r.line, r.sig, `${message}x`), 'a different message fails');
  } finally {
    await browser.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('pages racing on a fresh profile end up with one device key', { skip: !browserAvailable() }, async () => {
  const browser = await launchBrowser();
  try {
    // A same-origin document that does not run the app, so nothing has stored a key yet.
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.base}/js/keys.js`);
    const lines = await page.evaluate(async () => {
      const { DeviceKey } = await import('/js/keys.js');
      const racing = await Promise.all([1, 2, 3, 4].map(() => DeviceKey.loadOrCreate()));
      const later = await DeviceKey.loadOrCreate();
      return [...racing, later].map((k) => k.publicLine(''));
    });
    assert.equal(new Set(lines).size, 1, `one key for every caller: ${lines.join(' | ')}`);
  } finally {
    await browser.close();
  }
});

test('outside a secure context the page says it needs https or localhost (data-state=insecure)', { skip: !browserAvailable() }, async () => {
  // A name that is not localhost, mapped to the loopback server: plain http there is not secure.
  const browser = await launchBrowser(['--host-resolver-rules=MAP insecure.test 127.0.0.1']);
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`http://insecure.test:${server.port}/`);
    assert.equal(await page.evaluate(() => window.isSecureContext), false);
    const state = page.getByTestId('connection-state');
    await state.waitFor();
    await until(async () => (await state.getAttribute('data-state')) === 'insecure', 'the page reports insecure');
    assert.match(await page.locator('#insecure').innerText(), /https:\/\/.*localhost/s);
    assert.ok(await page.locator('#insecure').isVisible());
  } finally {
    await browser.close();
  }
});
