// Sessions from any device (docs/protocol.md §4), on a 390×844 phone: the sessions
// screen, a session created from the new-session form (its directory picked with the
// directory picker under --session-root, and a refusal outside the roots shown), two
// sessions streaming while the page switches between them (each view's data-head only
// ever grows, and ends at the server's head), a permission request of the session not on
// screen answered from the approval sheet without attaching it (the sheet fetches it whole
// and offers Allow), and a session closed
// with the in-page confirmation. Screenshots of the sessions screen and the form go to
// target/web-screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { Server, TestClient, launchBrowser, browserAvailable, openAuthorized, waitAttr, until, SCREENSHOTS } from './harness.js';

const enabled = browserAvailable();
let server;
let browser;
let term;
let roots;

before(async () => {
  if (!enabled) return;
  server = await Server.start({
    prepare: (dir) => {
      for (const p of ['one', 'two']) mkdirSync(path.join(dir, 'roots', p), { recursive: true });
    },
    args: (dir) => ['--session-root', path.join(dir, 'roots')],
  });
  roots = realpathSync(path.join(server.dir, 'roots'));
  mkdirSync(SCREENSHOTS, { recursive: true });
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
});

/** The server's session.list entries, by name. */
async function serverSessions() {
  const r = await term.request({ type: 'session.list' });
  return new Map(r.sessions.map((s) => [s.session, s]));
}

/** Wait until `session` is idle on the server (its turns are over); returns its entry. */
async function idle(session) {
  return until(async () => {
    const s = (await serverSessions()).get(session);
    return s && s.state === 'idle' ? s : null;
  }, `${session} idle`, 30000);
}

/** Open the sessions screen and tap the item of `session`. */
async function goTo(page, session) {
  await page.getByTestId('sessions-open').click();
  await page.getByTestId('session-list').waitFor({ state: 'visible' });
  await page.locator(`[data-testid="session-item"][data-session="${session}"] button`).first().click();
  await waitAttr(page.getByTestId('session-view'), 'data-session', (v) => v === session);
}

test('create, switch while both stream, answer the other session’s request, close', { skip: !enabled }, async () => {
  const A = await openAuthorized(browser, server, server.base, 'phone');
  const { page } = A;
  const view = page.getByTestId('session-view');

  // Record every (session, head) the view shows: a head never goes back within a session.
  await page.evaluate(() => {
    const v = document.querySelector('[data-testid="session-view"]');
    window.headLog = [];
    new MutationObserver(() => window.headLog.push([v.dataset.session, Number(v.dataset.head)])).observe(v, { attributes: true, attributeFilter: ['data-session', 'data-head'] });
  });

  // The sessions screen lists the configured session.
  await page.getByTestId('sessions-open').click();
  const list = page.getByTestId('session-list');
  await list.waitFor({ state: 'visible' });
  await page.locator('[data-testid="session-item"][data-session="default"]').waitFor();
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal scroll');

  // New session: a directory outside the roots is refused with the server's message.
  await page.getByTestId('session-new').click();
  await page.getByTestId('session-new-workdir').fill('/');
  await page.getByTestId('session-new-submit').click();
  await until(async () => (await page.getByTestId('session-new-error').textContent()).trim().length > 0, 'the refusal is shown');

  // The directory picker: the roots, then down into one of them.
  await page.getByTestId('session-new-workdir').fill('');
  await page.getByTestId('dir-browse').click();
  await page.locator('[data-testid="dir-entry"]').first().waitFor();
  const target = path.join(roots, 'one');
  let entry = page.locator(`[data-testid="dir-entry"][data-path="${target}"]`);
  if ((await entry.count()) === 0) {
    // The roots themselves were listed: go into the root first.
    await page.locator(`[data-testid="dir-entry"][data-path="${roots}"]`).click();
    entry = page.locator(`[data-testid="dir-entry"][data-path="${target}"]`);
  }
  await entry.click();
  await until(async () => (await page.getByTestId('session-new-workdir').inputValue()) === target, 'the picked directory fills the field');
  await page.getByTestId('session-new-name').fill('one');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'session-new-390x844.png') });
  await page.getByTestId('session-new-submit').click();
  await waitAttr(view, 'data-session', (v) => v === 'one');
  const created = (await serverSessions()).get('one');
  assert.ok(created && created.uid, 'the server has the new session');

  // A second session, from the terminal; the page learns of it from session.changed.
  await term.request({ type: 'session.create', workdir: path.join(roots, 'two'), name: 'two', key: 'lifecycle-two' });
  await term.request({ type: 'attach', session: 'one' });
  await term.request({ type: 'attach', session: 'two' });
  await page.getByTestId('sessions-open').click();
  await page.locator('[data-testid="session-item"][data-session="two"]').waitFor();
  await page.keyboard.press('Escape');

  // Both stream (the mock's "slow": 20 deltas, 250 ms apart) while the page switches.
  await term.request({ type: 'prompt', session: 'one', content: 'slow one' });
  await term.request({ type: 'prompt', session: 'two', content: 'slow two' });
  await until(async () => Number(await view.getAttribute('data-head')) > 3, 'one streams into the page');
  await goTo(page, 'two');
  await until(async () => Number(await view.getAttribute('data-head')) > 3, 'two streams into the page');
  await goTo(page, 'one');
  await goTo(page, 'two');
  await goTo(page, 'one');
  await idle('one');
  await idle('two');

  // "two" runs a turn while the page shows "one": it is marked unread.
  await term.request({ type: 'prompt', session: 'two', content: 'hello again' });
  await idle('two');
  await page.getByTestId('sessions-open').click();
  await page.locator('[data-testid="session-item"][data-session="two"] [data-testid="session-unread"]').waitFor();
  await page.keyboard.press('Escape');

  // A permission request in "two" while the page shows "one": the sheet names "two",
  // fetches the request whole (an attach with tail 0, then a detach: the page does not
  // stay attached) and shows its command, with Allow and Deny; Deny answers without attaching.
  let from = term.frames.length;
  await term.request({ type: 'prompt', session: 'two', content: 'permission' });
  const req = await term.wait((f) => f.type === 'event' && f.session === 'two' && f.event.type === 'control_request', { from, timeout: 30000 });
  const sheet = page.getByTestId('approval-sheet');
  await waitAttr(sheet, 'data-request-id', (v) => v === req.event.request_id);
  assert.equal(await sheet.getAttribute('data-session'), 'two');
  await sheet.getByTestId('sheet-allow').waitFor();
  assert.equal((await sheet.getByTestId('sheet-input').textContent()).trim(), `$ ${req.event.request.input.command}`);
  assert.equal(await view.getAttribute('data-session'), 'one', 'the page stays on its session');
  await until(async () => (await serverSessions()).get('two').clients === 1, 'the page detached "two" after fetching its request');
  // The sessions screen: "two" needs an answer, the header button counts it.
  await page.getByTestId('sessions-open').click();
  await page.locator('[data-testid="session-item"][data-session="two"] [data-testid="session-pending"]').waitFor();
  assert.equal(await page.getByTestId('sessions-open').getAttribute('data-pending'), '1');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'sessions-screen-390x844.png') });
  await page.keyboard.press('Escape');
  from = term.frames.length;
  await sheet.getByTestId('sheet-deny').click();
  const resolved = await term.wait((f) => f.type === 'event' && f.session === 'two' && f.event.type === 'relay.resolved', { from });
  assert.equal(resolved.event.request_id, req.event.request_id);
  assert.equal(resolved.event.device, 'phone');
  assert.equal(resolved.event.response.behavior, 'deny');
  await sheet.waitFor({ state: 'hidden' });
  await idle('two');

  // A Write in "two": the sheet shows the new file as a diff, and Allow runs it there.
  from = term.frames.length;
  await term.request({ type: 'prompt', session: 'two', content: 'write-file notes.txt' });
  const write = await term.wait((f) => f.type === 'event' && f.session === 'two' && f.event.type === 'control_request', { from, timeout: 30000 });
  await waitAttr(sheet, 'data-request-id', (v) => v === write.event.request_id);
  await sheet.getByTestId('sheet-allow').waitFor();
  const added = await sheet.locator('[data-testid="sheet-input"] .diff-body .add').allTextContents();
  assert.deepEqual(added.map((t) => t.trim()), [`+ ${write.event.request.input.content.trim()}`]);
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal scroll with the sheet');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'approval-other-session-390x844.png') });
  from = term.frames.length;
  await sheet.getByTestId('sheet-allow').click();
  const allowed = await term.wait((f) => f.type === 'event' && f.session === 'two' && f.event.type === 'relay.resolved', { from });
  assert.equal(allowed.event.request_id, write.event.request_id);
  assert.equal(allowed.event.response.behavior, 'allow');
  await sheet.waitFor({ state: 'hidden' });
  await idle('two');
  assert.equal(readFileSync(path.join(roots, 'two', 'notes.txt'), 'utf8'), write.event.request.input.content, 'the allowed Write ran');
  assert.equal(await view.getAttribute('data-session'), 'one', 'the page stayed on its session');

  // Continue in a terminal: the conversation of "one".
  const convo = (await serverSessions()).get('one').conversation;
  assert.ok(convo, 'the server knows the conversation of "one"');
  await until(async () => (await page.getByTestId('resume-command').textContent()).trim() === `claude --resume ${convo}`, 'the resume command');

  // Close "one" with the in-page confirmation: the page goes to the sessions screen.
  from = term.frames.length;
  await page.getByTestId('session-close').click();
  await page.getByTestId('session-close-confirm').waitFor();
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(SCREENSHOTS, 'session-close-confirm-390x844.png') });
  await page.getByTestId('session-close-confirm').click();
  await term.wait((f) => f.type === 'event' && f.session === 'one' && f.event.type === 'relay.closed', { from });
  await list.waitFor({ state: 'visible' });
  await until(async () => (await page.locator('[data-testid="session-item"][data-session="one"]').count()) === 0, 'the closed session leaves the list');
  await waitAttr(view, 'data-session', (v) => v !== 'one');
  await page.keyboard.press('Escape');

  // Every remaining session the page shows ends at the server's head.
  for (const name of ['two', 'default']) {
    if ((await view.getAttribute('data-session')) !== name) await goTo(page, name);
    const head = (await serverSessions()).get(name).head;
    await until(async () => Number(await view.getAttribute('data-head')) === head, `${name}: the page at the server's head ${head}`);
  }

  const heads = await page.evaluate(() => window.headLog);
  const last = new Map();
  for (const [session, head] of heads) {
    assert.ok(head >= (last.get(session) ?? 0), `${session}: head went back from ${last.get(session)} to ${head}`);
    last.set(session, head);
  }
  assert.ok(last.has('one') && last.has('two'), 'both sessions were shown');
  assert.deepEqual(page.errors, []);
  await A.context.close();
});

test('rename in the session strip; the new-session form one tap from the session view', { skip: !enabled }, async () => {
  const A = await openAuthorized(browser, server, server.base, 'tablet');
  const { page } = A;
  const view = page.getByTestId('session-view');
  await waitAttr(view, 'data-session', (v) => v === 'default');

  // `session-new` straight from the session view opens the form...
  await page.getByTestId('session-new').click();
  await page.getByTestId('session-new-workdir').waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await page.getByTestId('session-list').waitFor({ state: 'hidden' });
  // ...and so does the way through the sessions screen.
  await page.getByTestId('sessions-open').click();
  await page.getByTestId('session-list').waitFor({ state: 'visible' });
  await page.getByTestId('session-new').click();
  await page.getByTestId('session-new-workdir').waitFor({ state: 'visible' });
  await page.keyboard.press('Escape');
  await page.getByTestId('session-list').waitFor({ state: 'hidden' });

  // Rename in place: an empty title is refused in the page, a real one goes to the server.
  await page.getByTestId('session-rename').click();
  const input = page.getByTestId('session-rename-input');
  await input.fill('  ');
  await input.press('Enter');
  await until(async () => (await page.getByTestId('session-rename-error').textContent()) === 'A title cannot be empty.', 'the empty title is refused');
  await input.fill(' Login   bug ');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'session-rename-390x844.png') });
  await input.press('Enter');
  await until(async () => (await serverSessions()).get('default').title === 'Login bug', 'the server has the new title');
  await input.waitFor({ state: 'detached' });
  await until(async () => (await page.locator('#sessions-label').textContent()) === 'Login bug', 'the header names the session by its new title');
  await page.getByTestId('sessions-open').click();
  await waitAttr(page.locator('[data-testid="session-item"][data-session="default"]'), 'data-title', (v) => v === 'Login bug');
  await page.keyboard.press('Escape');

  // A refusal from the server is shown in the form: here one the test answers itself,
  // through a WebSocket route that passes everything else to the server.
  await A.context.routeWebSocket(/\/v1\/ws$/, (ws) => {
    const upstream = ws.connectToServer();
    ws.onMessage((text) => {
      const m = JSON.parse(String(text));
      if (m.type === 'session.rename') ws.send(JSON.stringify({ type: 'error', id: m.id, code: 'forbidden', message: 'renaming is not allowed here' }));
      else upstream.send(text);
    });
  });
  await page.reload();
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
  await page.getByTestId('session-rename').click();
  await input.fill('Another title');
  await page.getByTestId('session-rename-save').click();
  await until(async () => (await page.getByTestId('session-rename-error').textContent()) === 'renaming is not allowed here', 'the server’s refusal is shown');
  assert.equal(await page.getByTestId('session-rename-error').getAttribute('data-code'), 'forbidden');
  await page.getByTestId('session-rename-cancel').click();
  await input.waitFor({ state: 'detached' });
  assert.equal((await serverSessions()).get('default').title, 'Login bug');
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal scroll');
  assert.deepEqual(page.errors, []);
  await A.context.close();
});
