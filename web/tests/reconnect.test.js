// Never lose or duplicate anything (docs/protocol.md §5.4): browser A reaches
// the server through a loopback TCP proxy the test cuts while 500+ events are
// produced; back online, A's `data-head` equals the server's head, its rendered
// stream equals B's (a seq applied twice or skipped would show), and a prompt typed
// while offline was sent once — the agent saw it once. A prompt whose `ok` was lost
// is not sent again when the replay already holds its `relay.prompt`. Prompts typed
// offline in two tabs of one profile are both kept (each tab its own list), and the
// one of a tab closed before the network came back is sent, once, by the next page; a
// prompt typed offline survives a reload of its tab (the service worker serves the page).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Server, TestClient, Proxy, launchBrowser, browserAvailable, openAuthorized, waitAttr, until } from './harness.js';

const enabled = browserAvailable();
let server;
let proxy;
let browser;
let term;
let A;
let B;

before(async () => {
  if (!enabled) return;
  // The page reaches the server through the proxy, so it signs in bound to the proxy's
  // address: the server must know that address as one of its names.
  proxy = await Proxy.start();
  server = await Server.start({ args: ['--server-name', `127.0.0.1:${proxy.port}`] });
  proxy.target = server.port;
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
  A = await openAuthorized(browser, server, `http://127.0.0.1:${proxy.port}`, 'phone-a');
  B = await openAuthorized(browser, server, server.base, 'tablet-b');
});

after(async () => {
  term?.close();
  await browser?.close();
  await proxy?.stop();
  await server?.stop();
});

const head = (page) => page.getByTestId('session-view').getAttribute('data-head').then(Number);
const streamText = (page) => page.locator('#stream').innerText();

/** How many times the mock agent was given `text` as a prompt (its stored conversations). */
function agentSaw(text) {
  const dir = path.join(server.dir, 'mock-state');
  let n = 0;
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.json'))) {
    const conv = JSON.parse(readFileSync(path.join(dir, f), 'utf8'));
    n += conv.exchanges.filter((e) => e.prompt === text).length;
  }
  return n;
}

async function turnDone(text, from) {
  const p = await term.wait((f) => f.type === 'event' && f.event.type === 'relay.prompt' && f.event.content === text, { from, timeout: 30000 });
  await term.wait((f) => f.type === 'event' && f.event.type === 'relay.turn' && f.event.prompt_id === p.event.prompt_id && f.event.phase !== 'started', { from, timeout: 30000 });
  return p;
}

test('cut during 500+ events and a prompt typed offline: back online, nothing lost or doubled, the prompt ran once', { skip: !enabled }, async () => {
  const from = term.frames.length;
  await A.page.getByTestId('prompt-input').fill('hello before the cut');
  await A.page.getByTestId('prompt-send').click();
  await turnDone('hello before the cut', from);
  await until(async () => (await head(A.page)) === term.head(), 'A caught up before the cut');

  // Cut A off: the proxy drops its socket and refuses new ones; the browser goes offline too.
  await A.context.setOffline(true);
  await proxy.cut();
  await waitAttr(A.page.getByTestId('connection-state'), 'data-state', (v) => v === 'reconnecting' || v === 'offline');
  const cutHead = term.head();

  const offlinePrompt = 'typed while offline';
  await A.page.getByTestId('prompt-input').fill(offlinePrompt);
  await A.page.getByTestId('prompt-send').click();
  await until(async () => /typed while offline/.test(await A.page.locator('#outbox').innerText()), 'the prompt is shown as waiting');

  const f2 = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'flood 500' });
  await turnDone('flood 500', f2);
  const produced = term.head() - cutHead;
  console.log(`events produced while A was cut off: ${produced}`);
  assert.ok(produced >= 500, `at least 500 events while cut (${produced})`);

  const t0 = Date.now();
  await proxy.restore();
  await A.context.setOffline(false);
  await waitAttr(A.page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected', 30000);
  console.log(`A reconnected ${Date.now() - t0} ms after the network came back`);
  await turnDone(offlinePrompt, f2);

  await until(async () => (await head(A.page)) === term.head() && (await head(B.page)) === term.head(), 'A and B reach the server head', 30000);
  const list = await term.request({ type: 'session.list' });
  assert.equal(await head(A.page), list.sessions.find((s) => s.session === 'default').head, 'A’s data-head is the server’s head');
  assert.equal(await streamText(A.page), await streamText(B.page), 'A renders exactly what B renders');
  const ids = await A.page.getByTestId('user-prompt').evaluateAll((els) => els.map((e) => e.dataset.promptId));
  assert.equal(new Set(ids).size, ids.length, 'no prompt shown twice');
  assert.equal(term.events().filter((f) => f.event.type === 'relay.prompt' && f.event.content === offlinePrompt).length, 1, 'accepted once');
  assert.equal(agentSaw(offlinePrompt), 1, 'the agent saw it once');
  assert.equal(await A.page.locator('#outbox > *').count(), 0, 'nothing left to send');
  assert.deepEqual(A.page.errors, []);
});

test('a prompt whose ok was lost is not sent again: the replay holds its relay.prompt', { skip: !enabled }, async () => {
  await until(async () => (await head(A.page)) === term.head(), 'A is caught up');
  const from = term.frames.length;
  proxy.freeze(); // A's frames still reach the server; nothing comes back
  const text = 'sent just before the cut';
  await A.page.getByTestId('prompt-input').fill(text);
  await A.page.getByTestId('prompt-send').click();
  await turnDone(text, from);
  await proxy.cut();
  await proxy.restore();
  await waitAttr(A.page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected', 30000);
  await until(async () => (await head(A.page)) === term.head(), 'A reaches the server head', 30000);
  // A later prompt proves the page is live and would have resent by now.
  const f2 = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'after the resume' });
  await turnDone('after the resume', f2);
  await until(async () => (await head(A.page)) === term.head(), 'A follows live events', 30000);
  assert.equal(term.events().filter((f) => f.event.type === 'relay.prompt' && f.event.content === text).length, 1);
  assert.equal(agentSaw(text), 1, 'the agent saw it once');
  assert.equal(await A.page.locator('#outbox > *').count(), 0);
  assert.equal(await streamText(A.page), await streamText(B.page));
});

test('a socket that died silently is noticed when the page becomes visible again, and the page catches up', { skip: !enabled }, async () => {
  await until(async () => (await head(A.page)) === term.head(), 'A is caught up');
  proxy.freeze(); // like a phone's socket killed in the background: no close, nothing arrives
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'while the phone slept' });
  await turnDone('while the phone slept', from);
  assert.ok((await head(A.page)) < term.head(), 'A missed it');
  // The page is shown again: it probes the socket, finds it dead and resumes.
  await A.page.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
  await until(async () => (await head(A.page)) === term.head(), 'A resumed after the wake-up', 20000);
  assert.equal(await A.page.getByTestId('connection-state').getAttribute('data-state'), 'connected');
  assert.equal(await streamText(A.page), await streamText(B.page));
});

test('prompts typed offline in two tabs: the tab closed before the network came back still has its prompt sent, once, by the next page', { skip: !enabled }, async () => {
  // One device with two tabs (one browser profile), reaching the server through the proxy.
  const base = `http://127.0.0.1:${proxy.port}`;
  const dev = await openAuthorized(browser, server, base, 'laptop-tabs');
  const one = dev.page;
  const two = await dev.context.newPage();
  await two.goto(`${base}/?device=laptop-tabs`);
  await waitAttr(two.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  await dev.context.setOffline(true);
  await proxy.cut();
  for (const tab of [one, two]) await waitAttr(tab.getByTestId('connection-state'), 'data-state', (v) => v === 'reconnecting' || v === 'offline');
  const from = term.frames.length;
  for (const [tab, text] of [[one, 'typed in tab one'], [two, 'typed in tab two']]) {
    await tab.getByTestId('prompt-input').fill(text);
    await tab.getByTestId('prompt-send').click();
    await until(async () => (await tab.locator('#outbox').innerText()).includes(text), `${text}: waiting to be sent`);
  }
  // Both outboxes are kept: the second tab's save did not replace the first's.
  const stored = () => two.evaluate(() => new Promise((resolve) => {
    const req = indexedDB.open('ccrelay-drafts', 1);
    req.onsuccess = () => {
      const all = req.result.transaction('drafts', 'readonly').objectStore('drafts').getAll();
      all.onsuccess = () => resolve(JSON.stringify(all.result));
    };
  }));
  await until(async () => /typed in tab one/.test(await stored()) && /typed in tab two/.test(await stored()), 'both tabs’ prompts are stored');
  await one.close();

  await proxy.restore();
  await dev.context.setOffline(false);
  await turnDone('typed in tab two', from);
  // The next page takes over what the closed tab left, not what an open tab holds.
  const three = await dev.context.newPage();
  await three.goto(`${base}/?device=laptop-tabs`);
  await turnDone('typed in tab one', from);
  for (const text of ['typed in tab one', 'typed in tab two']) {
    assert.equal(term.events().filter((f) => f.event.type === 'relay.prompt' && f.event.content === text).length, 1, `${text}: accepted once`);
    assert.equal(agentSaw(text), 1, `${text}: the agent saw it once`);
  }
  await until(async () => !/typed in tab/.test(await stored()), 'nothing left stored once both were sent');
  await dev.context.close();
});

test('a prompt typed offline survives a reload of its tab (the reloaded page takes it over) and is sent once', { skip: !enabled }, async () => {
  const base = `http://127.0.0.1:${proxy.port}`;
  const dev = await openAuthorized(browser, server, base, 'phone-reload');
  const { page } = dev;
  // The service worker serves the page while the network is down.
  await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  await dev.context.setOffline(true);
  await proxy.cut();
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'reconnecting' || v === 'offline');
  const from = term.frames.length;
  const text = 'typed offline, then reloaded';
  await page.getByTestId('prompt-input').fill(text);
  await page.getByTestId('prompt-send').click();
  await until(async () => (await page.locator('#outbox').innerText()).includes(text), 'waiting to be sent');
  const stored = () => page.evaluate(() => new Promise((resolve) => {
    const req = indexedDB.open('ccrelay-drafts', 1);
    req.onsuccess = () => {
      const all = req.result.transaction('drafts', 'readonly').objectStore('drafts').getAll();
      all.onsuccess = () => resolve(JSON.stringify(all.result));
    };
  }));
  await until(async () => (await stored()).includes(text), 'stored');
  await page.reload();
  await until(async () => (await page.locator('#outbox').innerText()).includes(text), 'the reloaded page holds it again');
  await proxy.restore();
  await dev.context.setOffline(false);
  await turnDone(text, from);
  assert.equal(term.events().filter((f) => f.event.type === 'relay.prompt' && f.event.content === text).length, 1, 'accepted once');
  assert.equal(agentSaw(text), 1, 'the agent saw it once');
  await until(async () => !(await stored()).includes(text), 'nothing left stored once it was sent');
  await dev.context.close();
});
