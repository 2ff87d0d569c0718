// Two browser profiles and a terminal/test client on one session, with the mock
// agent: a prompt from A appears in B
// and in the test client with A's device; the streamed answer is identical in both
// browsers; hostile agent text renders inert; a permission card with a diff appears
// in both, allowed in B shows `allow` by B in A, and the tool ran once. Screenshots
// at 390×844 go to target/web-screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { Server, TestClient, launchBrowser, browserAvailable, openAuthorized, until, waitAttr, SCREENSHOTS } from './harness.js';

const enabled = browserAvailable();
let server;
let browser;
let term;
let A;
let B;

before(async () => {
  if (!enabled) return;
  server = await Server.start();
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
  A = await openAuthorized(browser, server, server.base, 'phone-a');
  B = await openAuthorized(browser, server, server.base, 'tablet-b');
  mkdirSync(SCREENSHOTS, { recursive: true });
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
});

async function send(page, text) {
  await page.getByTestId('prompt-input').fill(text);
  await page.getByTestId('prompt-send').click();
}

/** The stream's text as a person reads it. */
const streamText = (page) => page.locator('#stream').innerText();

test('a prompt from A reaches B and the terminal with A’s device; the answer is identical; hostile text is inert', { skip: !enabled }, async () => {
  const hostile = 'hello <img src=x onerror="window.__pwned=1"> and [click](javascript:window.__pwned=2) and [ok](https://example.com/a)';
  const from = term.frames.length;
  await send(A.page, hostile);
  const p = await term.wait((f) => f.type === 'event' && f.event.type === 'relay.prompt', { from });
  assert.equal(p.event.device, 'phone-a', 'the terminal sees A’s device');
  const result = await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  for (const { page } of [A, B]) {
    await waitAttr(page.getByTestId('session-view'), 'data-head', (v) => Number(v) >= result.seq);
    const prompt = page.getByTestId('user-prompt').last();
    assert.equal(await prompt.getAttribute('data-device'), 'phone-a');
    assert.equal(await prompt.getAttribute('data-prompt-id'), p.event.prompt_id);
  }
  const ta = await A.page.getByTestId('assistant-text').last().innerText();
  const tb = await B.page.getByTestId('assistant-text').last().innerText();
  assert.equal(ta, tb, 'the streamed answer is identical in both browsers');
  assert.match(ta, /You said: hello/);
  assert.equal(await streamText(A.page), await streamText(B.page));

  // Inert: no element from agent text, no javascript: link, nothing ran.
  for (const { page } of [A, B]) {
    assert.equal(await page.locator('#stream img').count(), 0, 'no <img> from agent text');
    assert.equal(await page.locator('#stream a[href^="javascript" i]').count(), 0, 'no javascript: link');
    assert.equal(await page.evaluate(() => window.__pwned), undefined, 'no agent script ran');
    const links = await page.locator('#stream [data-testid="assistant-text"] a').evaluateAll((as) => as.map((a) => a.href));
    assert.deepEqual(links, ['https://example.com/a'], 'only the https link is a link');
    assert.match(await page.getByTestId('assistant-text').last().innerText(), /<img src=x onerror=/, 'the markup is shown as text');
    assert.deepEqual(page.errors, [], 'no page errors');
  }
  // Presence counts both browsers and the terminal.
  await waitAttr(A.page.getByTestId('presence'), 'data-count', (v) => v === '3');
  await waitAttr(B.page.getByTestId('presence'), 'data-count', (v) => v === '3');

  // Markdown as Claude Code writes it: headings, lists, code blocks highlighted.
  const from2 = term.frames.length;
  await send(A.page, 'hello\n## Plan\n- step **one**\n- step `two`\n\n```rust\nfn main() {\n    let x = 42; // the answer\n    println!("{x}");\n}\n```');
  const r2 = await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from: from2 });
  await waitAttr(A.page.getByTestId('session-view'), 'data-head', (v) => Number(v) >= r2.seq);
  const md = A.page.getByTestId('assistant-text').last();
  assert.equal(await md.locator('h4, h3').count(), 1, 'a heading');
  assert.equal(await md.locator('li').count(), 2, 'a list');
  assert.equal(await md.locator('pre.code[data-lang="rust"] .tok-kw').first().innerText(), 'fn', 'keywords highlighted');
  assert.equal(await md.locator('pre.code .tok-com').innerText(), '// the answer');
  assert.equal(await md.locator('pre.code .tok-num').first().innerText(), '42');
  await A.page.screenshot({ path: path.join(SCREENSHOTS, 'session-390x844.png') });
  await A.page.emulateMedia({ colorScheme: 'dark' });
  await A.page.screenshot({ path: path.join(SCREENSHOTS, 'session-dark-390x844.png') });
  await A.page.emulateMedia({ colorScheme: 'light' });
});

test('a permission card with a diff in both browsers; allowed in B, A shows allow by B; the tool ran once', { skip: !enabled }, async () => {
  // A Write: the card shows the new file as a diff.
  const from = term.frames.length;
  await send(A.page, 'please write-file notes.md');
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from });
  const id = req.event.request_id;
  const cardA = A.page.locator(`[data-testid="permission-card"][data-request-id="${id}"]`);
  const cardB = B.page.locator(`[data-testid="permission-card"][data-request-id="${id}"]`);
  await cardA.waitFor();
  await cardB.waitFor();
  assert.equal(await cardA.getAttribute('data-tool'), 'Write');
  assert.ok(await cardA.locator('.diff .add').count() > 0, 'the Write shows as a diff');
  await cardA.scrollIntoViewIfNeeded();
  await A.page.screenshot({ path: path.join(SCREENSHOTS, 'permission-diff-390x844.png') });

  const t0 = Date.now();
  await cardB.getByTestId('permission-allow').click();
  const resolved = await waitAttr(cardA, 'data-resolved', (v) => v !== null, 10000);
  console.log(`A showed the answer from B after ${Date.now() - t0} ms`);
  assert.equal(resolved, 'allow');
  assert.equal(await cardA.getAttribute('data-by'), 'tablet-b');
  await until(async () => /allowed by tablet-b/.test(await cardA.innerText()), 'A says who allowed it');
  assert.equal(await cardA.getByTestId('permission-allow').count(), 0, 'no longer actionable');
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  assert.equal(readFileSync(path.join(server.workdir, 'notes.md'), 'utf8'), 'written by the mock agent\n');

  // A command with a side effect we can count: allowed once, ran once, even when both browsers click.
  const from2 = term.frames.length;
  await send(B.page, "please run-bash sh -c 'echo ran >> ran.log'");
  const req2 = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from: from2 });
  const card2A = A.page.locator(`[data-testid="permission-card"][data-request-id="${req2.event.request_id}"]`);
  const card2B = B.page.locator(`[data-testid="permission-card"][data-request-id="${req2.event.request_id}"]`);
  await card2A.getByTestId('permission-allow').waitFor();
  await card2B.getByTestId('permission-allow').waitFor();
  // Both click at once (whichever card is re-rendered first may lose its button: allSettled).
  const clicks = await Promise.allSettled([card2A, card2B].map((c) => c.getByTestId('permission-allow').evaluate((b) => b.click(), null, { timeout: 5000 })));
  assert.ok(clicks.some((c) => c.status === 'fulfilled'), 'at least one click landed');
  const done = await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from: from2 });
  const resolutions = term.frames.slice(from2).filter((f) => f.type === 'event' && f.event.type === 'relay.resolved');
  assert.equal(resolutions.length, 1, 'one answer won');
  const winner = resolutions[0].event.device;
  for (const card of [card2A, card2B]) {
    assert.equal(await waitAttr(card, 'data-resolved', (v) => v !== null), 'allow');
    assert.equal(await card.getAttribute('data-by'), winner);
  }
  assert.equal(readFileSync(path.join(server.workdir, 'ran.log'), 'utf8'), 'ran\n', 'the tool ran once');
  await waitAttr(A.page.getByTestId('session-view'), 'data-head', (v) => Number(v) >= done.seq);
  assert.ok(await A.page.locator('[data-testid="tool-use"][data-tool="Bash"]').count() >= 1, 'a tool card');
});

test('deny with a message, and a card cancelled by an interrupt, say so', { skip: !enabled }, async () => {
  const from = term.frames.length;
  await send(A.page, 'please permission');
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from });
  const card = A.page.locator(`[data-testid="permission-card"][data-request-id="${req.event.request_id}"]`);
  await card.locator('input').fill('not now');
  await card.getByRole('button', { name: 'Deny with message' }).click();
  assert.equal(await waitAttr(card, 'data-resolved', (v) => v !== null), 'deny');
  assert.equal(await card.getAttribute('data-by'), 'phone-a');
  assert.equal((await card.locator('.resolution').innerText()).trim(), 'denied by phone-a: not now', 'merged with its tool card, it says who denied it and why');
  const res = term.frames.slice(from).find((f) => f.type === 'event' && f.event.type === 'relay.resolved');
  assert.equal(res.event.response.message, 'not now');
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });

  const from2 = term.frames.length;
  await send(B.page, 'please permission');
  const req2 = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from: from2 });
  const card2 = B.page.locator(`[data-testid="permission-card"][data-request-id="${req2.event.request_id}"]`);
  await card2.getByTestId('permission-deny').waitFor();
  await B.page.getByTestId('interrupt').click();
  assert.equal(await waitAttr(card2, 'data-resolved', (v) => v !== null), 'cancelled');
  assert.match(await card2.locator('.resolution').innerText(), /^Cancelled/);
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from: from2 });
  await waitAttr(B.page.getByTestId('session-state'), 'data-state', (v) => v === 'idle');
  assert.equal(await B.page.getByTestId('session-state').innerText(), 'idle');
});

test('a fresh profile shows the pairing screen with its key and device name', { skip: !enabled }, async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  await page.goto(`${server.base}/?device=${encodeURIComponent('Pixel 9')}`);
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'pairing');
  assert.equal(await page.getByTestId('device-name').inputValue(), 'Pixel 9');
  assert.match(await page.getByTestId('public-key').innerText(), /^ssh-ed25519 AAAA[0-9A-Za-z+/=]+ Pixel 9$/);
  assert.ok(await page.getByTestId('pair-start').isVisible());
  await page.screenshot({ path: path.join(SCREENSHOTS, 'pairing-390x844.png') });
  // The desktop layout of the session view, for the record.
  await A.page.setViewportSize({ width: 1280, height: 800 });
  await A.page.screenshot({ path: path.join(SCREENSHOTS, 'session-1280x800.png') });
  await A.page.setViewportSize({ width: 390, height: 844 });
  assert.ok(existsSync(path.join(SCREENSHOTS, 'session-390x844.png')));
  await context.close();
});
