// Sessions in directories (docs/protocol.md §4), on a 390×844 phone: the sessions screen
// with an asleep session (`--agent-idle-stop`) beside one waiting for an answer, and the
// new-session form with the directory picker and the worktree toggle. Screenshots go
// to target/web-screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Server, TestClient, launchBrowser, browserAvailable, openAuthorized, waitAttr, until, SCREENSHOTS } from './harness.js';

const enabled = browserAvailable();
let server;
let browser;
let term;
let roots;
let claudeConfig; // the server's CLAUDE_CONFIG_DIR: where conversations.list reads transcripts

/** A git repository with one commit at `dir`. */
function gitRepo(dir) {
  mkdirSync(dir, { recursive: true });
  const git = (...args) => execFileSync('git', args, { cwd: dir, stdio: 'pipe' });
  git('init', '-q', '-b', 'main');
  writeFileSync(path.join(dir, 'README.md'), '# repo\n');
  git('add', 'README.md');
  git('-c', 'user.name=test', '-c', 'user.email=test@example.invalid', 'commit', '-q', '-m', 'first');
}

before(async () => {
  if (!enabled) return;
  claudeConfig = mkdtempSync(path.join(tmpdir(), 'ccrelay-claude-config-'));
  server = await Server.start({
    prepare: (dir) => {
      gitRepo(path.join(dir, 'roots', 'repo'));
      mkdirSync(path.join(dir, 'roots', 'plain'), { recursive: true });
    },
    // Idle agents sleep after 2 s: the sessions screen shows an asleep session.
    args: (dir) => ['--session-root', path.join(dir, 'roots'), '--agent-idle-stop', '2'],
    env: { CLAUDE_CONFIG_DIR: claudeConfig },
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
  if (claudeConfig) rmSync(claudeConfig, { recursive: true, force: true });
});

/** The server's session.list entries, by name. */
async function serverSessions() {
  const r = await term.request({ type: 'session.list' });
  return new Map(r.sessions.map((s) => [s.session, s]));
}

test('the sessions screen shows an asleep session and a waiting request; the form has the picker and the worktree toggle', { skip: !enabled }, async () => {
  // "plain" falls asleep once its first turn is over; "repo" waits for an answer.
  await term.request({ type: 'session.create', workdir: path.join(roots, 'plain'), name: 'plain', key: 'workdirs-plain' });
  await term.request({ type: 'session.create', workdir: path.join(roots, 'repo'), name: 'repo', key: 'workdirs-repo' });
  await term.request({ type: 'attach', session: 'plain' });
  await term.request({ type: 'attach', session: 'repo' });
  await term.request({ type: 'prompt', session: 'plain', content: 'hello plain' });
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'repo', content: 'permission' });
  await term.wait((f) => f.type === 'event' && f.session === 'repo' && f.event.type === 'control_request', { from, timeout: 30000 });
  await until(async () => (await serverSessions()).get('plain').state === 'asleep', '"plain" asleep', 30000);

  const A = await openAuthorized(browser, server, server.base, 'phone');
  const { page } = A;
  await waitAttr(page.getByTestId('session-view'), 'data-session', (v) => v === 'default');
  await page.getByTestId('sessions-open').click();
  await waitAttr(page.locator('[data-testid="session-item"][data-session="plain"]'), 'data-state', (v) => v === 'asleep');
  await page.locator('[data-testid="session-item"][data-session="repo"] [data-testid="session-pending"]').waitFor();
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal scroll');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'sessions-asleep-waiting-390x844.png') });

  // The form: the picker in the roots, "repo" marked as a git repository, the worktree toggle on.
  await page.getByTestId('session-new').click();
  await page.getByTestId('dir-browse').click();
  await page.locator('[data-testid="dir-entry"]').first().waitFor();
  let entry = page.locator(`[data-testid="dir-entry"][data-path="${path.join(roots, 'repo')}"]`);
  if ((await entry.count()) === 0) {
    await page.locator(`[data-testid="dir-entry"][data-path="${roots}"]`).click();
    entry = page.locator(`[data-testid="dir-entry"][data-path="${path.join(roots, 'repo')}"]`);
  }
  await entry.waitFor();
  assert.equal(await entry.locator('.tag').textContent(), 'git');
  await page.getByTestId('session-new-worktree').check();
  await page.getByTestId('session-new-branch').fill('fix-login');
  assert.equal(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'no horizontal scroll in the form');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'session-new-worktree-390x844.png') });
  await page.keyboard.press('Escape');
  assert.deepEqual(page.errors, []);
  await A.context.close();
  await term.request({ type: 'respond', session: 'repo', request_id: (await serverSessions()).get('repo').pending[0].request_id, response: { behavior: 'deny' } });
});
