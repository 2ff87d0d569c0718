// Devices (the `keys.list` / `keys.rename` / `keys.revoke` extension):
// an owner's page lists the keys the server accepts, marks its own key "this
// browser", renames a second paired browser (only that line's device part
// changes in the paired keys file) and revokes it after confirming; the revoked
// page goes to `refused`. A viewer's page is told it cannot list keys.

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

/** A fresh profile paired as `device` (the terminal owner allows it). */
async function pairedBrowser(device, role = 'owner') {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await page.goto(`${server.base}/?device=${encodeURIComponent(device)}`);
  const state = page.getByTestId('connection-state');
  await waitAttr(state, 'data-state', (v) => v === 'pairing');
  const from = term.frames.length;
  await page.getByTestId('pair-start').click();
  const req = await term.wait((f) => f.type === 'pair.requested' && f.device === device, { from });
  await term.request({ type: 'pair.respond', pair_id: req.pair_id, allow: true, role });
  await waitAttr(state, 'data-state', (v) => v === 'connected');
  return { context, page, fingerprint: req.fingerprint };
}

const entry = (page, fingerprint) => page.locator(`[data-testid="device-entry"][data-fingerprint="${fingerprint}"]`);

test('an owner page renames and revokes a paired browser, which goes to refused', { skip: !enabled }, async () => {
  const second = await pairedBrowser('Pixel 9');
  const withSecond = readFileSync(pairedKeys, 'utf8');
  const added = withSecond.slice(EXISTING.length);
  assert.ok(withSecond.startsWith(EXISTING) && added.includes(' Pixel 9 (paired '), withSecond);

  // The owner page lists it (refreshed when the pairing resolved), with its role and
  // date, in the side panel (collapsed on a phone until opened).
  await owner.page.locator('#panel-toggle').click();
  const e = entry(owner.page, second.fingerprint);
  await e.waitFor();
  assert.equal(await e.getAttribute('data-role'), 'owner');
  assert.equal((await e.getByTestId('device-label').textContent()).trim(), 'Pixel 9');
  assert.match(await e.textContent(), /paired \d{4}-\d{2}-\d{2}/);
  // The owner page's own key: from authorized_keys, marked, not editable.
  const ownFp = (await owner.page.locator('#me-fp').textContent()).trim();
  const own = entry(owner.page, ownFp);
  await own.waitFor();
  assert.equal(await own.getAttribute('data-self'), 'true');
  assert.match(await own.textContent(), /this browser/);
  assert.equal(await own.getByTestId('device-rename').count(), 0);
  assert.equal(await own.getByTestId('device-revoke').count(), 0);
  // The key paired earlier is listed too.
  assert.equal(await owner.page.locator('[data-testid="device-entry"]').filter({ hasText: 'old-phone' }).count(), 1);
  await owner.page.screenshot({ path: path.join(SCREENSHOTS, 'devices-390x844.png'), fullPage: true });

  // Rename: only the device part of that one line changes.
  await e.getByTestId('device-rename').click();
  await e.getByTestId('device-rename-input').fill('Work phone');
  await e.getByTestId('device-rename-save').click();
  await until(async () => (await e.getByTestId('device-label').textContent()).trim() === 'Work phone', 'the entry shows the new name');
  const renamed = readFileSync(pairedKeys, 'utf8');
  assert.equal(renamed, withSecond.replace(' Pixel 9 (paired ', ' Work phone (paired '));

  // Revoke asks first; Cancel changes nothing.
  await e.getByTestId('device-revoke').click();
  await e.getByTestId('device-revoke-cancel').click();
  assert.equal(readFileSync(pairedKeys, 'utf8'), renamed);
  assert.equal(await second.page.getByTestId('connection-state').getAttribute('data-state'), 'connected');
  await e.getByTestId('device-revoke').click();
  await e.getByTestId('device-revoke-confirm').click();
  await until(async () => (await e.count()) === 0, 'the revoked entry leaves the list');
  assert.equal(readFileSync(pairedKeys, 'utf8'), EXISTING, 'only its line went');
  // The revoked page is closed (1008), tries again, and is refused.
  await waitAttr(second.page.getByTestId('connection-state'), 'data-state', (v) => v === 'refused');
  // The owner page is still connected.
  assert.equal(await owner.page.getByTestId('connection-state').getAttribute('data-state'), 'connected');
  assert.deepEqual(owner.page.errors, []);
  await second.context.close();
});

test('a viewer page is told only owners see the keys', { skip: !enabled }, async () => {
  const viewer = await pairedBrowser('tv', 'viewer');
  await until(async () => /Only owners/.test((await viewer.page.locator('#device-keys-note').textContent()) || ''), 'the viewer note');
  assert.equal(await viewer.page.locator('[data-testid="device-entry"]').count(), 0);
  await viewer.context.close();
});
