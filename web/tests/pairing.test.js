// Pairing a browser (docs/protocol.md §3.9): a fresh profile asks to be
// paired, an owner test client receives `pair.requested` with the code the page
// shows, an owner's web page shows the request and allows it; the page reaches
// `connected`, the paired keys file gained exactly one line and kept every other
// byte, and after a reload the profile authenticates without pairing. A denied
// request leaves the page `refused`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { browserAvailable, waitAttr, until, SCREENSHOTS, startWithPairedKeys, EXISTING_PAIRED } from './harness.js';

const enabled = browserAvailable();
const EXISTING = EXISTING_PAIRED;
let server;
let browser;
let term;
let owner;
let pairedKeys;

before(async () => {
  if (!enabled) return;
  ({ server, pairedKeys, browser, term, owner } = await startWithPairedKeys());
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
});

async function freshProfile(device) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await page.goto(`${server.base}/?device=${encodeURIComponent(device)}`);
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'pairing');
  return { context, page };
}

test('a fresh profile pairs: same code on both sides, one line added, and a reload signs in', { skip: !enabled }, async () => {
  const { page } = await freshProfile('Pixel 9');
  const from = term.frames.length;
  await page.getByTestId('pair-start').click();
  const code = await until(async () => {
    const t = (await page.getByTestId('pair-code').textContent()) || '';
    return /^\d{6}$/.test(t.trim()) ? t.trim() : null;
  }, 'the page shows its pairing code');
  const req = await term.wait((f) => f.type === 'pair.requested', { from });
  assert.equal(req.code, code, 'the owner sees the code the page computed');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'pairing-code-390x844.png') });
  assert.equal(req.device, 'Pixel 9');
  assert.equal(await page.getByTestId('connection-state').getAttribute('data-state'), 'pairing');

  // The owner's web page shows the request with the same code, and allows it.
  const card = owner.page.locator(`[data-testid="pair-request"][data-pair-id="${req.pair_id}"]`);
  await card.waitFor();
  assert.equal(await card.getAttribute('data-code'), code);
  await owner.page.screenshot({ path: path.join(SCREENSHOTS, 'pair-request-390x844.png') });
  await card.getByTestId('pair-allow').click();
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  assert.equal(await waitAttr(card, 'data-resolved', (v) => v !== null), 'allow');
  const resolved = await term.wait((f) => f.type === 'pair.resolved' && f.pair_id === req.pair_id, { from });
  assert.equal(resolved.allow, true);

  const after1 = readFileSync(pairedKeys, 'utf8');
  assert.ok(after1.startsWith(EXISTING), 'every other byte kept');
  const added = after1.slice(EXISTING.length).split('\n').filter(Boolean);
  assert.equal(added.length, 1, 'exactly one line added');
  const key = (await page.getByTestId('public-key').textContent()).trim().split(' ').slice(0, 2).join(' ');
  assert.ok(added[0].startsWith(`${key} Pixel 9 (paired `), added[0]);

  // A reload authenticates with the stored key, without pairing.
  const from2 = term.frames.length;
  await page.reload();
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  assert.equal(term.frames.slice(from2).filter((f) => f.type === 'pair.requested').length, 0, 'no new pair request');
  assert.equal(readFileSync(pairedKeys, 'utf8'), after1, 'the keys file is unchanged');
  await page.getByTestId('session-view').waitFor();
});

test('a denied pair request leaves the page refused, and the owner page says denied', { skip: !enabled }, async () => {
  const { page } = await freshProfile('stranger tablet');
  const before = readFileSync(pairedKeys, 'utf8');
  const from = term.frames.length;
  await page.getByTestId('pair-start').click();
  const req = await term.wait((f) => f.type === 'pair.requested', { from });
  const card = owner.page.locator(`[data-testid="pair-request"][data-pair-id="${req.pair_id}"]`);
  await card.waitFor();
  await term.request({ type: 'pair.respond', pair_id: req.pair_id, allow: false });
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'refused');
  assert.equal(await waitAttr(card, 'data-resolved', (v) => v !== null), 'deny');
  assert.equal(await card.getByTestId('pair-allow').count(), 0, 'no longer actionable');
  assert.equal(readFileSync(pairedKeys, 'utf8'), before, 'nothing added');
});

test('an invite URL pairs a fresh profile with no owner action, once', { skip: !enabled }, async () => {
  const invite = await term.request({ type: 'pair.invite', role: 'owner' });
  assert.match(invite.invite, /^[A-Za-z0-9_-]{22,}$/);
  const url = `${server.base}/?device=${encodeURIComponent('invited phone')}#invite=${invite.invite}`;
  const before = readFileSync(pairedKeys, 'utf8');
  const from = term.frames.length;

  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await page.goto(url);
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  assert.ok(!page.url().includes('#invite='), `the fragment is gone from the address bar: ${page.url()}`);
  await page.getByTestId('session-view').waitFor();
  const resolved = await term.wait((f) => f.type === 'pair.resolved' && f.by === `invite:${term.authOk.client_id}`, { from });
  assert.equal(resolved.allow, true);
  assert.equal(resolved.role, 'owner');
  assert.equal(term.frames.slice(from).filter((f) => f.type === 'pair.requested').length, 0, 'no owner was asked');
  const after1 = readFileSync(pairedKeys, 'utf8');
  const added = after1.slice(before.length).split('\n').filter(Boolean);
  assert.ok(after1.startsWith(before), 'every other byte kept');
  assert.equal(added.length, 1, 'exactly one line added');
  assert.ok(added[0].includes(' invited phone (paired '), added[0]);

  // The same URL in a second fresh profile: the invite is used up.
  const other = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page2 = await other.newPage();
  await page2.goto(url);
  await waitAttr(page2.getByTestId('connection-state'), 'data-state', (v) => v === 'refused');
  assert.ok(!page2.url().includes('#invite='), page2.url());
  assert.equal(readFileSync(pairedKeys, 'utf8'), after1, 'nothing added for the second profile');
  await context.close();
  await other.close();
});

// Last: it blocks this address (127.0.0.1) for pair requests for the rest of the run.
test('the owner page marks a recently denied address and "Deny and block" refuses its next request', { skip: !enabled }, async () => {
  // The denial of the second test was less than an hour ago, from this address.
  const { page } = await freshProfile('second try');
  const from = term.frames.length;
  await page.getByTestId('pair-start').click();
  const req = await term.wait((f) => f.type === 'pair.requested', { from });
  assert.equal(req.denied_recently, true);
  const card = owner.page.locator(`[data-testid="pair-request"][data-pair-id="${req.pair_id}"]`);
  await card.waitFor();
  await card.getByTestId('pair-denied-recently').waitFor();
  await card.getByTestId('pair-deny-block').click();
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'refused');
  assert.equal(await waitAttr(card, 'data-resolved', (v) => v !== null), 'deny');

  const { page: next } = await freshProfile('third try');
  const from2 = term.frames.length;
  await next.getByTestId('pair-start').click();
  await until(async () => /blocked/.test((await next.locator('#pair-msg').textContent()) || ''), 'the page says the address may be blocked');
  assert.equal(term.frames.slice(from2).filter((f) => f.type === 'pair.requested').length, 0, 'no owner was asked');
});
