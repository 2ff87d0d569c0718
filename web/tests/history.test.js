// "Load earlier" (docs/protocol.md §4.9 `history`): a page that joined a long session with a
// `tail` attach fetches the earlier events page by page until the start, and then
// shows exactly what a page that saw everything shows.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, TestClient, launchBrowser, browserAvailable, openAuthorized, until } from './harness.js';

const enabled = browserAvailable();
let server;
let browser;
let term;

before(async () => {
  if (!enabled) return;
  server = await Server.start();
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
});

test('load earlier fetches history until the first event; the view then equals a full one', { skip: !enabled }, async () => {
  // A page that is there from the start sees everything live.
  const full = await openAuthorized(browser, server, server.base, 'laptop');
  for (const text of ['hello from the start', 'flood 300', 'hello in the middle', 'flood 300']) {
    const from = term.frames.length;
    await term.request({ type: 'prompt', session: 'default', content: text });
    await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from, timeout: 30000 });
  }
  const headOf = (p) => p.getByTestId('session-view').getAttribute('data-head').then(Number);
  await until(async () => (await headOf(full.page)) === term.head(), 'the full page at the head');

  const late = await openAuthorized(browser, server, server.base, 'phone');
  await until(async () => (await headOf(late.page)) === term.head(), 'the late page at the head');
  assert.equal(await late.page.getByTestId('user-prompt').count(), 0, 'a tail: the last 200 events are inside the last flood');
  let clicks = 0;
  while (await late.page.locator('#load-earlier').isVisible()) {
    const base = () => late.page.getByTestId('session-view').getAttribute('data-base').then(Number);
    const before = await base();
    assert.ok(before > 0);
    await late.page.locator('#load-earlier').click();
    clicks += 1;
    await until(async () => (await base()) < before || (await late.page.locator('#earlier-msg').innerText()) !== '', 'history arrived');
    assert.equal(await late.page.locator('#earlier-msg').innerText(), '', 'no error');
    assert.ok(clicks < 10, 'bounded');
  }
  console.log(`loaded the whole session in ${clicks} history pages`);
  assert.ok(clicks >= 2);
  assert.equal(await headOf(late.page), term.head());
  assert.equal(await late.page.getByTestId('user-prompt').count(), 4);
  assert.equal(await late.page.locator('#stream').innerText(), await full.page.locator('#stream').innerText(), 'the same view as a page that saw everything');
});
