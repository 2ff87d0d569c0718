// The phone client as a daily driver, at 390×844 with touch emulation unless named:
// Enter sends with a hardware keyboard and starts a new line on a touch screen; the
// draft survives a reload; a request whose card is off-screen shows the approval
// sheet, which answers it; "Jump to latest" counts what arrived for a reader who
// scrolled up (who is never moved); "Load earlier" keeps the first visible item in
// place; the panel opens and closes (button, Escape, backdrop) and never covers its
// toggle; a viewer's page is view-only; the browser's offline event shows at once;
// axe-core finds no serious or critical violation and every button is 44×44 px or
// more; the DOM stays the same size from the 51st turn on.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Server, TestClient, launchBrowser, browserAvailable, waitAttr, until, ROOT } from './harness.js';

const enabled = browserAvailable();
const PHONE = { viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true, deviceScaleFactor: 1 };
const DESKTOP = { viewport: { width: 1280, height: 800 } };
let server;
let browser;
let term;
let viewerKeys;

before(async () => {
  if (!enabled) return;
  server = await Server.start({
    prepare: (dir) => writeFileSync(path.join(dir, 'viewer_keys'), ''),
    args: (dir) => ['--viewer-keys', path.join(dir, 'viewer_keys')],
  });
  viewerKeys = path.join(server.dir, 'viewer_keys');
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
});

async function authorizeIn(file, line) {
  const reloads = () => server.logs.filter((l) => l.includes('authorized keys reloaded')).length;
  const before = reloads();
  appendFileSync(file, `${line.trim()}\n`);
  await until(() => reloads() > before, 'the server reloads its keys');
}

/** A fresh profile (touch phone unless `options` says otherwise), authorized as owner or viewer. */
async function open(device, { options = PHONE, viewer = false } = {}) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(`${server.base}/?device=${encodeURIComponent(device)}`);
  const state = page.getByTestId('connection-state');
  await waitAttr(state, 'data-state', (v) => v === 'pairing');
  const line = (await page.getByTestId('public-key').textContent()).trim();
  await authorizeIn(viewer ? viewerKeys : server.authorizedKeys, line);
  await page.reload();
  await waitAttr(state, 'data-state', (v) => v === 'connected');
  await atHead(page);
  return { context, page };
}

const headOf = (page) => page.getByTestId('session-view').getAttribute('data-head').then(Number);
const atHead = (page) => until(async () => (await headOf(page)) >= term.head(), 'the page at the session head');

async function turn(text) {
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: text });
  return term.wait((f) => f.type === 'event' && f.event.type === 'result', { from, timeout: 60000 });
}

const promptFrom = (device, from) => term.wait((f) => f.type === 'event' && f.event.type === 'relay.prompt' && f.event.device === device, { from });
const scrollY = (page) => page.evaluate(() => window.scrollY);
const fromBottom = (page) => page.evaluate(() => document.documentElement.scrollHeight - (window.scrollY + window.innerHeight));

test('keyboard: Enter sends on a desktop, Shift+Enter is a new line; on a touch phone Enter is a new line and Send sends; the draft survives a reload', { skip: !enabled }, async () => {
  const desk = await open('laptop', { options: DESKTOP });
  const input = desk.page.getByTestId('prompt-input');
  await input.click();
  await desk.page.keyboard.type('line one');
  await desk.page.keyboard.press('Shift+Enter');
  await desk.page.keyboard.type('line two');
  assert.equal(await input.inputValue(), 'line one\nline two', 'Shift+Enter inserted a newline');
  let from = term.frames.length;
  await desk.page.keyboard.press('Enter');
  const sent = await promptFrom('laptop', from);
  assert.equal(sent.event.content, 'line one\nline two', 'Enter sent the prompt');
  assert.equal(await input.inputValue(), '', 'the box is empty after sending');
  await turn('hello after the desktop prompt');
  await desk.context.close();

  const phone = await open('phone-keys');
  const box = phone.page.getByTestId('prompt-input');
  assert.doesNotMatch(await box.getAttribute('placeholder'), /Ctrl|Enter/, 'no keyboard advice on a touch screen');
  await box.click();
  await phone.page.keyboard.type('first');
  from = term.frames.length;
  await phone.page.keyboard.press('Enter');
  await phone.page.keyboard.type('second');
  assert.equal(await box.inputValue(), 'first\nsecond', 'Enter inserted a newline on the touch screen');
  await phone.page.getByTestId('prompt-send').click();
  const touchSent = await promptFrom('phone-keys', from);
  assert.equal(touchSent.event.content, 'first\nsecond', 'Send sent the whole text, once');
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });

  // A draft typed and not sent is back after a reload.
  await box.fill('a draft I have not sent yet');
  await until(() => phone.page.evaluate(() => new Promise((resolve) => {
    const req = indexedDB.open('ccrelay-drafts', 1);
    req.onsuccess = () => {
      const get = req.result.transaction('drafts', 'readonly').objectStore('drafts').get('draft:default');
      get.onsuccess = () => resolve(get.result === 'a draft I have not sent yet');
      get.onerror = () => resolve(false);
    };
    req.onerror = () => resolve(false);
  })), 'the draft is saved');
  await phone.page.reload();
  await waitAttr(phone.page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  await until(async () => (await box.inputValue()) === 'a draft I have not sent yet', 'the draft is back after the reload');
  assert.deepEqual(phone.page.errors, []);
  await phone.context.close();
});

test('a permission request whose card is off-screen shows the approval sheet, which answers it; the reader is not moved', { skip: !enabled }, async () => {
  await turn('flood 400');
  const { context, page } = await open('phone-sheet');
  await page.evaluate(() => window.scrollTo(0, 0));
  await until(async () => (await scrollY(page)) === 0 && (await fromBottom(page)) > 400, 'scrolled up, far from the bottom');
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'please permission' });
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from });
  await until(async () => (await headOf(page)) >= req.seq, 'the page applied the request');
  const sheet = page.getByTestId('approval-sheet');
  // Within a second of the page having the request (its own reaction, not the network's).
  await sheet.waitFor({ state: 'visible', timeout: 1000 });
  assert.equal(await sheet.getAttribute('data-request-id'), req.event.request_id);
  assert.equal(await sheet.getAttribute('data-session'), 'default');
  assert.match(await sheet.innerText(), /Bash/);
  assert.match(await page.title(), /^\(1\) /, 'the tab title counts what waits');
  assert.equal(await scrollY(page), 0, 'the reader who scrolled up was not moved');
  await page.getByTestId('sheet-allow').click();
  const resolved = await term.wait((f) => f.type === 'event' && f.event.type === 'relay.resolved' && f.event.request_id === req.event.request_id, { from });
  assert.equal(resolved.event.device, 'phone-sheet', 'answered by this device');
  assert.equal(resolved.event.response.behavior, 'allow');
  await sheet.waitFor({ state: 'hidden' });
  const card = page.locator(`[data-testid="permission-card"][data-request-id="${req.event.request_id}"]`);
  assert.equal(await waitAttr(card, 'data-resolved', (v) => v !== null), 'allow');
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  await until(async () => !/^\(\d+\)/.test(await page.title()), 'the count leaves the title');
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('"Jump to latest" counts new items for a reader who scrolled up and takes them down; "Load earlier" keeps the first visible item in place', { skip: !enabled }, async () => {
  await turn('flood 400'); // something to scroll in
  const { context, page } = await open('phone-scroll');
  await atHead(page);
  await page.evaluate(() => window.scrollTo(0, 0));
  await until(async () => (await fromBottom(page)) > 400, 'scrolled up');
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'slow' });
  const jump = page.getByTestId('jump-latest');
  await jump.waitFor({ state: 'visible' });
  assert.ok(Number(await jump.getAttribute('data-new')) > 0, 'data-new counts what arrived');
  assert.equal(await scrollY(page), 0, 'streaming did not move the reader');
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  await atHead(page);
  assert.equal(await scrollY(page), 0, 'still not moved at the end of the turn');
  await jump.click();
  await until(async () => (await fromBottom(page)) <= 80, 'at the bottom after the click');
  await jump.waitFor({ state: 'hidden' });
  await context.close();

  // A page that joins now gets the tail: earlier events are loaded above it.
  const late = await open('phone-late');
  const earlier = late.page.getByTestId('load-earlier');
  await earlier.waitFor({ state: 'visible' });
  await late.page.evaluate(() => window.scrollTo(0, 0));
  const firstVisible = () => late.page.evaluate(() => {
    const top = document.querySelector('.bar').getBoundingClientRect().bottom;
    for (const e of document.querySelectorAll('#stream [data-item]')) {
      const r = e.getBoundingClientRect();
      if (r.height > 0 && r.bottom > top) return { id: e.dataset.item, top: r.top };
    }
    return null;
  });
  const positionOf = (id) => late.page.evaluate((i) => document.querySelector(`#stream [data-item="${CSS.escape(i)}"]`)?.getBoundingClientRect().top ?? null, id);
  const anchor = await firstVisible();
  assert.ok(anchor, 'an item is visible');
  const base = Number(await late.page.getByTestId('session-view').getAttribute('data-base'));
  await earlier.click();
  await until(async () => Number(await late.page.getByTestId('session-view').getAttribute('data-base')) < base, 'earlier events arrived');
  const after = await positionOf(anchor.id);
  assert.ok(after !== null, 'the item is still there');
  console.log(`first visible item moved ${Math.abs(after - anchor.top).toFixed(1)} px on "Load earlier"`);
  assert.ok(Math.abs(after - anchor.top) < 50, `kept in place (${anchor.top} → ${after})`);
  assert.deepEqual(late.page.errors, []);
  await late.context.close();
});

test('the panel opens with its toggle and closes with its button, Escape and a tap on the backdrop; the toggle is never covered', { skip: !enabled }, async () => {
  const { context, page } = await open('phone-panel');
  const panel = page.getByTestId('panel');
  const toggle = page.getByTestId('panel-toggle');
  const uncovered = () => toggle.evaluate((b) => {
    const r = b.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return b.contains(hit) && r.width >= 44 && r.height >= 44;
  });
  const openIt = async () => {
    await toggle.click();
    await waitAttr(panel, 'data-open', (v) => v === 'true');
    assert.ok(await uncovered(), 'the toggle stays tappable above the open panel');
  };
  assert.equal(await panel.getAttribute('data-open'), 'false');
  assert.ok(await uncovered(), 'the toggle is free while closed');
  await openIt();
  await page.getByTestId('panel-close').click();
  await waitAttr(panel, 'data-open', (v) => v === 'false');
  await openIt();
  await page.keyboard.press('Escape');
  await waitAttr(panel, 'data-open', (v) => v === 'false');
  await openIt();
  // The strip the panel leaves on the right is the backdrop.
  await page.touchscreen.tap(375, 600);
  await waitAttr(panel, 'data-open', (v) => v === 'false');
  await openIt();
  await toggle.click();
  await waitAttr(panel, 'data-open', (v) => v === 'false');
  assert.ok(await uncovered());
  await context.close();
});

test('a viewer’s page says "view only" and has nothing to send or answer with', { skip: !enabled }, async () => {
  const { context, page } = await open('tv', { viewer: true });
  await page.getByTestId('view-only').waitFor({ state: 'visible' });
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'please permission' });
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from });
  const card = page.locator(`[data-testid="permission-card"][data-request-id="${req.event.request_id}"]`);
  await card.waitFor();
  for (const id of ['prompt-send', 'prompt-input', 'interrupt', 'permission-allow', 'permission-always', 'permission-deny', 'sheet-allow', 'sheet-deny', 'pair-invite']) {
    assert.equal(await page.locator(`[data-testid="${id}"]:visible`).count(), 0, `no visible ${id}`);
  }
  // The sessions screen too: nothing that creates or closes sessions.
  await page.getByTestId('sessions-open').click();
  await page.locator('[data-testid="session-item"][data-session="default"]').waitFor();
  for (const id of ['prompt-send', 'interrupt', 'permission-allow', 'permission-deny', 'sheet-allow', 'sheet-deny', 'session-new', 'session-close', 'session-rename', 'resume-command']) {
    assert.equal(await page.getByTestId(id).count(), 0, `no ${id} in the page`);
  }
  await page.keyboard.press('Escape');
  await term.request({ type: 'respond', session: 'default', request_id: req.event.request_id, response: { behavior: 'allow' } });
  assert.equal(await waitAttr(card, 'data-resolved', (v) => v !== null), 'allow');
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('the browser going offline shows "offline" within 2 s; back online it reconnects', { skip: !enabled }, async () => {
  const { context, page } = await open('phone-offline');
  const state = page.getByTestId('connection-state');
  const t0 = Date.now();
  await context.setOffline(true);
  await waitAttr(state, 'data-state', (v) => v === 'offline', 2000);
  console.log(`offline shown ${Date.now() - t0} ms after the browser went offline`);
  assert.match(await state.innerText(), /Offline/);
  // Presence is redrawn in the page's next render pass (batched), within the same 2 s.
  await waitAttr(page.getByTestId('presence'), 'data-live', (v) => v === 'false', 2000);
  await page.getByTestId('prompt-input').fill('sent when the network is back');
  await page.getByTestId('prompt-send').click();
  assert.match(await page.getByTestId('queued-prompt').innerText(), /waiting for the connection/);
  assert.ok(await page.locator('.bar').evaluate((b) => b.getBoundingClientRect().height) <= 64, 'the header stays one row at 390 px');
  const from = term.frames.length;
  await context.setOffline(false);
  await waitAttr(state, 'data-state', (v) => v === 'connected');
  const sent = await promptFrom('phone-offline', from);
  assert.equal(sent.event.content, 'sent when the network is back');
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  const copies = term.frames.slice(from).filter((f) => f.type === 'event' && f.event.type === 'relay.prompt' && f.event.device === 'phone-offline');
  assert.equal(copies.length, 1, 'the prompt arrived once');
  await page.getByTestId('queued-prompt').waitFor({ state: 'detached' });
  await context.close();
});

const AXE = readFileSync(path.join(ROOT, 'web', 'tests', 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

/** axe-core's serious and critical violations on the page as it is now. */
async function axeSerious(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return result.violations
    .filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
}

/** Every visible button smaller than 44×44 px. */
const smallButtons = (page) => page.evaluate(() => [...document.querySelectorAll('button, select, [role="button"]')]
  .filter((b) => b.getClientRects().length > 0 && getComputedStyle(b).visibility !== 'hidden')
  .map((b) => ({ b, r: b.getBoundingClientRect() }))
  .filter(({ r }) => r.width < 44 || r.height < 44)
  .map(({ b, r }) => `${b.dataset.testid || b.id || b.textContent.trim().slice(0, 20)} ${r.width.toFixed(0)}×${r.height.toFixed(0)}`));

test('axe-core: no serious or critical violation on the session view, the pairing screen and the panel; every button is at least 44×44 px', { skip: !enabled }, async () => {
  const { context, page } = await open('phone-a11y');
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'please write-file a11y.md' });
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from });
  await page.locator(`[data-testid="permission-card"][data-request-id="${req.event.request_id}"]`).waitFor();
  for (const scheme of ['light', 'dark']) {
    await page.emulateMedia({ colorScheme: scheme });
    assert.deepEqual(await axeSerious(page), [], `session view (${scheme})`);
    assert.deepEqual(await smallButtons(page), [], `session view buttons (${scheme})`);
    await page.getByTestId('panel-toggle').click();
    await waitAttr(page.getByTestId('panel'), 'data-open', (v) => v === 'true');
    assert.deepEqual(await axeSerious(page), [], `panel (${scheme})`);
    assert.deepEqual(await smallButtons(page), [], `panel buttons (${scheme})`);
    await page.getByTestId('panel-close').click();
  }
  await term.request({ type: 'respond', session: 'default', request_id: req.event.request_id, response: { behavior: 'deny' } });
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });

  const fresh = await browser.newContext(PHONE);
  const pairing = await fresh.newPage();
  await pairing.goto(`${server.base}/?device=new-phone`);
  await waitAttr(pairing.getByTestId('connection-state'), 'data-state', (v) => v === 'pairing');
  for (const scheme of ['light', 'dark']) {
    await pairing.emulateMedia({ colorScheme: scheme });
    assert.deepEqual(await axeSerious(pairing), [], `pairing screen (${scheme})`);
    assert.deepEqual(await smallButtons(pairing), [], `pairing screen buttons (${scheme})`);
  }
  await fresh.close();
  await context.close();
});

test('the DOM stays the same size from the 51st turn on', { skip: !enabled }, async () => {
  const { context, page } = await open('phone-long');
  const count = () => page.evaluate(() => document.getElementsByTagName('*').length);
  const sizes = [];
  // The page saw these 58 turns live (and a tail of the earlier ones): from its 53rd on, measure.
  for (let i = 1; i <= 58; i++) {
    await turn(`hello number ${String(i).padStart(3, '0')}`);
    await atHead(page);
    if (i >= 53) sizes.push(await count());
  }
  console.log(`elements after turns 53 to 58: ${sizes.join(' ')}`);
  assert.ok(sizes.length >= 5);
  assert.ok(sizes.every((n) => n === sizes[0]), `flat: ${sizes.join(' ')}`);
  assert.ok(await page.getByRole('button', { name: /Show \d+ earlier turns?/ }).isVisible(), 'the older turns are one line');
  await context.close();
});

test('"Pair a device" asks the server for an invite and shows it as a QR code of the page URL, or says the server cannot', { skip: !enabled }, async () => {
  let serverInvites = true;
  try {
    await term.request({ type: 'pair.invite', role: 'owner' });
  } catch (e) {
    if (e.code !== 'unknown_type') throw e;
    serverInvites = false;
  }
  const { context, page } = await open('phone-invite');
  await page.getByTestId('panel-toggle').click();
  await page.getByTestId('pair-invite').click();
  const qr = page.getByTestId('pair-invite-qr');
  if (serverInvites) {
    await qr.waitFor({ state: 'visible' });
    assert.match(await qr.getAttribute('data-url'), new RegExp(`^${server.base.replace(/[.]/g, '\\.')}/#invite=[A-Za-z0-9_-]{22,}$`));
    assert.ok(await qr.locator('svg path').count() === 1, 'the QR code is drawn');
  } else {
    console.log('this server build answers pair.invite with unknown_type: the page must say so');
    await until(async () => /cannot make invites/.test(await page.locator('#invite-note').innerText()), 'the page says the server cannot make invites');
    assert.ok(await qr.isHidden());
  }
  assert.deepEqual(page.errors, []);
  await context.close();
});
