// Browser tests of the session controls (docs/protocol.md §10) with the mock agent, at
// 390×844: `mode-select` changed on page A shows on page B within 1 s, a refused change
// goes back with its message; an image larger than 1568 px attached through
// `attach-image` shows as an `attachment-chip` and reaches the session as an image
// block no larger than 1568 px on its long edge; `usage` carries the cost after a turn;
// a prompt queued behind a running turn shows as `queued-prompt` and `queued-cancel`
// aborts it; `prompt-steer` shows while a turn runs and sends `steer: true`; a viewer's
// page shows `usage` and none of the owner controls. Screenshots go to
// target/web-screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SCREENSHOTS, Server, TestClient, launchBrowser, browserAvailable, openAuthorized, pngFile, until, waitAttr } from './harness.js';

const enabled = browserAvailable();
let server;
let browser;
let term;
let A;
let B;

before(async () => {
  if (!enabled) return;
  server = await Server.start({
    prepare: (dir) => writeFileSync(path.join(dir, 'viewer_keys'), ''),
    args: (dir) => ['--viewer-keys', path.join(dir, 'viewer_keys')],
  });
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
  A = await openAuthorized(browser, server, server.base, 'phone-a');
  B = await openAuthorized(browser, server, server.base, 'phone-b');
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
});

const isEvent = (type) => (f) => f.type === 'event' && f.event.type === type;
const shot = (page, name) => page.screenshot({ path: path.join(SCREENSHOTS, `controls-${name}.png`) });


/** The pixel size of a base64 image, decoded by the browser. */
const imageSize = (page, type, data) => page.evaluate(async ({ type, data }) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const bmp = await createImageBitmap(new Blob([bytes], { type }));
  return { width: bmp.width, height: bmp.height };
}, { type, data });

test('an image larger than 1568 px attached in the page reaches the session downscaled, as an image block', { skip: !enabled }, async () => {
  const file = path.join(server.dir, 'big-photo.png');
  writeFileSync(file, pngFile(2400, 1600));
  const { page } = A;
  await page.getByTestId('attach-image').setInputFiles(file);
  const chip = page.getByTestId('attachment-chip');
  await chip.waitFor();
  assert.equal(await chip.getAttribute('data-width'), '1568');
  assert.equal(await chip.getAttribute('data-height'), '1045');
  await page.getByTestId('prompt-input').fill('what is in this picture?');
  await shot(page, 'attachment-chip');
  const from = term.frames.length;
  await page.getByTestId('prompt-send').click();
  const p = await term.wait(isEvent('relay.prompt'), { from });
  assert.ok(Array.isArray(p.event.content), `content blocks: ${JSON.stringify(p.event.content).slice(0, 200)}`);
  assert.deepEqual(p.event.content[0], { type: 'text', text: 'what is in this picture?' });
  const image = p.event.content[1];
  assert.equal(image.type, 'image');
  assert.equal(image.source.type, 'base64');
  assert.ok(['image/jpeg', 'image/webp'].includes(image.source.media_type), `an opaque picture is sent lossy: ${image.source.media_type}`);
  const size = await imageSize(page, image.source.media_type, image.source.data);
  assert.deepEqual(size, { width: 1568, height: 1045 }, 'the long edge is 1568 px, the aspect kept');
  assert.equal(await chip.count(), 0, 'the chips are gone once sent');
  await term.wait(isEvent('result'), { from, timeout: 60000 });
  // The prompt says it carried an image.
  const card = page.locator(`[data-testid="user-prompt"][data-prompt-id="${p.event.prompt_id}"]`);
  await until(async () => /1 image attached/.test(await card.innerText()), 'the prompt card names the image');
  assert.deepEqual(page.errors, []);
});

test('mode-select: a change on A shows on B within 1 s; a refused change goes back and says why', { skip: !enabled }, async () => {
  const modeA = A.page.getByTestId('mode-select');
  const modeB = B.page.getByTestId('mode-select');
  await until(async () => (await modeA.locator('option[value="plan"]').count()) === 1, 'A offers plan mode');
  assert.equal(await modeB.inputValue(), 'default');
  const from = term.frames.length;
  await modeA.selectOption('plan');
  const t0 = Date.now();
  await until(async () => (await modeB.inputValue()) === 'plan', 'B shows plan mode', 5000);
  const delay = Date.now() - t0;
  console.log(`B showed the mode A chose after ${delay} ms`);
  assert.ok(delay <= 1000, `B followed within 1 s (${delay} ms)`);
  const ev = await term.wait(isEvent('relay.settings'), { from });
  assert.equal(ev.event.settings.permission_mode, 'plan');
  assert.equal(ev.event.device, 'phone-a');
  await shot(B.page, 'mode-plan');

  // A mode the server refuses: the select goes back to what is in effect, with the message.
  await A.page.evaluate(() => {
    const s = document.querySelector('[data-testid="mode-select"]');
    const o = document.createElement('option');
    o.value = 'noSuchMode';
    o.textContent = 'noSuchMode';
    s.append(o);
  });
  await modeA.selectOption('noSuchMode');
  await until(async () => (await modeA.inputValue()) === 'plan', 'A went back to plan');
  await until(async () => /Could not change the mode/.test((await A.page.locator('#toast').textContent()) || ''), 'A says why');
  assert.equal(await modeB.inputValue(), 'plan');

  // Back to default from B: A follows.
  await modeB.selectOption('default');
  await until(async () => (await modeA.inputValue()) === 'default', 'A follows B', 5000);
});

test('usage: the cost after a turn; context attributes present', { skip: !enabled }, async () => {
  const from = term.frames.length;
  await A.page.getByTestId('prompt-input').fill('hello usage');
  await A.page.getByTestId('prompt-send').click();
  await term.wait(isEvent('result'), { from, timeout: 60000 });
  const usage = A.page.getByTestId('usage');
  const cost = await waitAttr(usage, 'data-cost', (v) => v !== null && v !== '' && Number.isFinite(Number(v)));
  assert.ok(Number(cost) >= 0);
  for (const name of ['data-context-used', 'data-context-max']) {
    const v = await usage.getAttribute(name);
    assert.ok(v === '' || Number.isFinite(Number(v)), `${name}: ${v}`);
  }
});

test('a prompt queued behind a running turn shows with Cancel; Cancel aborts it; Steer shows while the turn runs', { skip: !enabled }, async () => {
  const { page } = A;
  const from = term.frames.length;
  await page.getByTestId('prompt-input').fill('slow');
  await page.getByTestId('prompt-send').click();
  await term.wait((f) => isEvent('relay.turn')(f) && f.event.phase === 'started', { from });
  await page.getByTestId('prompt-steer').waitFor({ state: 'visible' });
  await page.getByTestId('prompt-input').fill('queued one');
  await page.getByTestId('prompt-send').click();
  const queued = await term.wait((f) => isEvent('relay.prompt')(f) && f.event.content === 'queued one', { from });
  const item = page.locator(`[data-testid="queued-prompt"][data-prompt-id="${queued.event.prompt_id}"]`);
  await item.waitFor();
  await shot(page, 'queued');
  await item.getByTestId('queued-cancel').click();
  const aborted = await term.wait((f) => isEvent('relay.turn')(f) && f.event.prompt_id === queued.event.prompt_id, { from });
  assert.equal(aborted.event.phase, 'aborted');
  assert.equal(aborted.event.detail, 'cancelled');
  await item.waitFor({ state: 'detached' });
  // Steering: the text goes to the running turn, marked steer.
  await page.getByTestId('prompt-input').fill('also check the tests');
  await page.getByTestId('prompt-steer').click();
  const steer = await term.wait((f) => isEvent('relay.prompt')(f) && f.event.content === 'also check the tests', { from });
  assert.equal(steer.event.steer, true);
  await term.wait((f) => isEvent('relay.turn')(f) && f.event.prompt_id === steer.event.prompt_id && ['ended', 'merged', 'aborted'].includes(f.event.phase), { from, timeout: 60000 });
  await until(async () => !(await page.getByTestId('prompt-steer').isVisible()), 'no Steer once idle', 30000);
  assert.deepEqual(page.errors, []);
});

test('Later schedules the prompt for the picked time; it shows when it will run and Cancel withdraws it', { skip: !enabled }, async () => {
  const { page } = A;
  const from = term.frames.length;
  await page.getByTestId('prompt-input').fill('run the nightly checks');
  await page.getByTestId('prompt-later').click();
  const at = page.getByTestId('schedule-at');
  await at.waitFor({ state: 'visible' });
  // A time in the past is refused on the page.
  await at.fill('2020-01-01T08:00');
  await page.getByTestId('schedule-send').click();
  await until(async () => /in the future/.test((await page.locator('#toast').textContent()) || ''), 'the page asks for a future time');
  // Two hours ahead, to the minute, in the page's own time zone.
  const when = await page.evaluate(() => {
    const d = new Date(Date.now() + 2 * 3600 * 1000);
    d.setSeconds(0, 0);
    const p = (n) => String(n).padStart(2, '0');
    return { local: `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`, ms: d.getTime() };
  });
  await at.fill(when.local);
  await shot(page, 'later');
  await page.getByTestId('schedule-send').click();
  const ev = await term.wait((f) => isEvent('relay.prompt')(f) && f.event.content === 'run the nightly checks', { from });
  assert.equal(new Date(ev.event.scheduled_at).getTime(), when.ms, `scheduled_at ${ev.event.scheduled_at}`);
  assert.equal(await page.getByTestId('schedule-sheet').isVisible(), false, 'the picker closes');
  assert.equal(await page.getByTestId('prompt-input').inputValue(), '', 'the box is sent');
  for (const p of [A.page, B.page]) {
    const item = p.locator(`[data-testid="queued-prompt"][data-prompt-id="${ev.event.prompt_id}"]`);
    await item.waitFor();
    assert.match(await item.textContent(), /scheduled for/);
  }
  await shot(page, 'scheduled');
  const item = page.locator(`[data-testid="queued-prompt"][data-prompt-id="${ev.event.prompt_id}"]`);
  await item.getByTestId('queued-cancel').click();
  const aborted = await term.wait((f) => isEvent('relay.turn')(f) && f.event.prompt_id === ev.event.prompt_id, { from });
  assert.equal(aborted.event.phase, 'aborted');
  assert.equal(aborted.event.detail, 'cancelled');
  await B.page.locator(`[data-testid="queued-prompt"][data-prompt-id="${ev.event.prompt_id}"]`).waitFor({ state: 'detached' });
  assert.deepEqual(page.errors, []);
});

test('a viewer sees usage and none of the owner controls', { skip: !enabled }, async () => {
  const { context, page } = await openAuthorized(browser, server, server.base, 'tv', { keysFile: path.join(server.dir, 'viewer_keys') });
  await page.getByTestId('view-only').waitFor({ state: 'visible' });
  await waitAttr(page.getByTestId('usage'), 'data-cost', (v) => v !== null && v !== '');
  for (const id of ['mode-select', 'model-select', 'prompt-steer', 'prompt-later', 'schedule-sheet', 'queued-cancel', 'attach-image', 'slash-menu', 'prompt-send']) {
    assert.equal(await page.getByTestId(id).count(), 0, `${id} is not rendered for a viewer`);
  }
  await shot(page, 'viewer');
  await context.close();
});
