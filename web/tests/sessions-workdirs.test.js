// Sessions in directories (docs/protocol.md §4), on a 390×844 phone: the sessions screen
// with an asleep session (`--agent-idle-stop`) beside one waiting for an answer; the
// new-session form with the directory picker and the worktree toggle, creating a session
// in a new git worktree (its branch shown, its resume command); and a past conversation
// (a CLI transcript under the server's CLAUDE_CONFIG_DIR) listed and resumed from the
// form. Screenshots go to target/web-screenshots/.

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

/** The CLI's name for a directory under `projects/`: every character but an ASCII letter or digit as `-`. */
const projectDirName = (dir) => dir.replace(/[^A-Za-z0-9]/g, '-');

/** A transcript as the CLI writes it: one user prompt and one answer, run in `cwd`. */
function writeTranscript(cwd, id, prompt) {
  const dir = path.join(claudeConfig, 'projects', projectDirName(cwd));
  mkdirSync(dir, { recursive: true });
  const user = { parentUuid: null, isSidechain: false, type: 'user', message: { role: 'user', content: prompt }, uuid: '93e8a4e5-685c-4163-a8c5-12fa9c4537df', timestamp: '2026-12-07T01:12:30.792Z', userType: 'external', entrypoint: 'sdk-cli', cwd, sessionId: id, version: '2.1.332', gitBranch: 'HEAD' };
  const answer = { parentUuid: user.uuid, isSidechain: false, type: 'assistant', message: { role: 'assistant', content: [{ type: 'text', text: `You said: ${prompt}` }] }, cwd, sessionId: id };
  writeFileSync(path.join(dir, `${id}.jsonl`), `${JSON.stringify(user)}\n${JSON.stringify(answer)}\n`);
}

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

test('a session in a new git worktree, and a past conversation resumed, from the form', { skip: !enabled }, async () => {
  const A = await openAuthorized(browser, server, server.base, 'tablet');
  const { page } = A;
  const view = page.getByTestId('session-view');
  await waitAttr(view, 'data-session', (v) => v === 'default');

  // A worktree of "repo" on a new branch: typing the branch ticks the toggle.
  await page.getByTestId('session-new').click();
  await page.getByTestId('session-new-workdir').fill(path.join(roots, 'repo'));
  await page.getByTestId('session-new-name').fill('login');
  await page.getByTestId('session-new-branch').fill('fix-login');
  assert.equal(await page.getByTestId('session-new-worktree').isChecked(), true);
  await page.getByTestId('session-new-submit').click();
  await waitAttr(view, 'data-session', (v) => v === 'login');
  const worktree = path.join(roots, 'repo.worktrees', 'login');
  const login = (await serverSessions()).get('login');
  assert.deepEqual(login.worktree, { path: worktree, branch: 'fix-login', repository: path.join(roots, 'repo') });
  assert.equal(login.workdir, worktree);
  const listed = execFileSync('git', ['worktree', 'list', '--porcelain'], { cwd: path.join(roots, 'repo') }).toString();
  assert.ok(listed.includes(`worktree ${worktree}\nHEAD `) && listed.includes('branch refs/heads/fix-login'), listed);
  // The page names the branch, and after a turn the command that continues it in a terminal.
  await until(async () => (await page.getByTestId('session-branch').textContent()) === '⎇ fix-login', 'the strip names the branch');
  assert.equal(await page.getByTestId('session-branch').isVisible(), true);
  await page.getByTestId('prompt-input').fill('hello worktree');
  await page.getByTestId('prompt-send').click();
  await page.locator('[data-testid="assistant-text"]', { hasText: 'You said: hello worktree' }).waitFor();
  const convo = await until(async () => (await serverSessions()).get('login').conversation, 'the conversation of "login"', 30000);
  await until(async () => (await page.getByTestId('resume-command').textContent()).trim() === `claude --resume ${convo}`, 'the resume command of the worktree session');
  await page.getByTestId('sessions-open').click();
  assert.match(await page.locator('[data-testid="session-item"][data-session="login"] .session-meta').textContent(), /⎇ fix-login/);
  await page.keyboard.press('Escape');

  // A past conversation: "plain"'s, once that session is closed, recorded as the CLI would.
  const plain = (await serverSessions()).get('plain');
  assert.ok(plain.conversation, '"plain" had a conversation');
  await term.request({ type: 'session.close', session: 'plain' });
  writeTranscript(path.join(roots, 'plain'), plain.conversation, 'hello plain');
  await page.getByTestId('session-new').click();
  await page.getByTestId('session-new-workdir').fill(path.join(roots, 'plain'));
  const item = page.locator(`[data-testid="conversation-item"][data-conversation="${plain.conversation}"]`);
  await item.waitFor();
  assert.match(await item.textContent(), /hello plain/);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'session-new-conversations-390x844.png') });
  await item.getByTestId('conversation-resume').click();
  await waitAttr(view, 'data-session', (v) => v !== 'login' && v !== 'default');
  const resumed = await view.getAttribute('data-session');
  // The agent continues that conversation: it remembers the earlier prompt.
  await page.getByTestId('prompt-input').fill('recall');
  await page.getByTestId('prompt-send').click();
  await page.locator('[data-testid="assistant-text"]', { hasText: '"hello plain"' }).waitFor({ timeout: 30000 });
  assert.equal((await serverSessions()).get(resumed).conversation, plain.conversation);
  await until(async () => (await page.getByTestId('resume-command').textContent()).trim() === `claude --resume ${plain.conversation}`, 'the resume command of the resumed session');
  assert.equal(await page.getByTestId('session-branch').isVisible(), false, 'no branch outside a worktree');
  assert.deepEqual(page.errors, []);
  await A.context.close();
});
