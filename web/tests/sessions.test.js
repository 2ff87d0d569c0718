// Several sessions: the sessions screen lists them, switching attaches the other session and
// prompts go there; the first attach is a `tail` attach (a phone joining a long
// session sees the end at once, with "load earlier" for the rest).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Server, TestClient, launchBrowser, browserAvailable, openAuthorized, waitAttr, until } from './harness.js';

const enabled = browserAvailable();
let server;
let browser;
let term;

before(async () => {
  if (!enabled) return;
  server = await Server.start({
    prepare: (dir) => mkdirSync(path.join(dir, 'work2')),
    args: (dir) => ['--session', `work=${path.join(dir, 'work2')}`],
  });
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
  await term.request({ type: 'attach', session: 'work' });
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
});

async function turn(session, text) {
  const from = term.frames.length;
  await term.request({ type: 'prompt', session, content: text });
  await term.wait((f) => f.type === 'event' && f.session === session && f.event.type === 'result', { from, timeout: 30000 });
}

test('a tail attach shows the end of a long session; the sessions screen switches sessions and prompts follow', { skip: !enabled }, async () => {
  await turn('default', 'hello from the start');
  await turn('default', 'flood 400');
  const A = await openAuthorized(browser, server, server.base, 'phone');
  const view = A.page.getByTestId('session-view');
  assert.equal(await view.getAttribute('data-session'), 'default');
  await until(async () => Number(await view.getAttribute('data-head')) === term.head('default'), 'A at the head');
  // Only the tail was replayed: the first prompt is not shown yet, "load earlier" is offered.
  assert.equal(await A.page.getByTestId('user-prompt').filter({ hasText: 'hello from the start' }).count(), 0);
  assert.ok(await A.page.locator('#load-earlier').isVisible(), 'load earlier is offered');

  // The sessions screen lists both sessions; switching attaches `work`.
  await A.page.getByTestId('sessions-open').click();
  const items = A.page.getByTestId('session-item');
  await until(async () => (await items.count()) === 2, 'both sessions listed');
  assert.deepEqual((await items.evaluateAll((xs) => xs.map((x) => x.dataset.session))).sort(), ['default', 'work']);
  await A.page.locator('[data-testid="session-item"][data-session="work"] button').click();
  await waitAttr(view, 'data-session', (v) => v === 'work');
  const from = term.frames.length;
  await A.page.getByTestId('prompt-input').fill('hello work');
  await A.page.getByTestId('prompt-send').click();
  const p = await term.wait((f) => f.type === 'event' && f.event.type === 'relay.prompt', { from });
  assert.equal(p.session, 'work', 'the prompt went to the picked session');
  await term.wait((f) => f.type === 'event' && f.session === 'work' && f.event.type === 'result', { from });
  await until(async () => Number(await view.getAttribute('data-head')) === term.head('work'), 'A at work’s head');
  assert.match(await A.page.getByTestId('assistant-text').last().innerText(), /hello work/);
  assert.equal(await A.page.getByTestId('user-prompt').count(), 1, 'only work’s prompt is shown');
  await A.context.close();
});
