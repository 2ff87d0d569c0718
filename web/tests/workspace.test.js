// The workspace view (docs/protocol.md §11) against the real server and the mock agent,
// in a git workdir: a turn (run-bash, allowed by the test client) edits, adds and deletes
// files; the page shows a `turn-changes` card with the turn's totals; the Changes view
// lists what `files.status` lists; a file's diff shows exactly the lines `git diff HEAD`
// prints (unified at 390×844, side by side at 1280×800); the card opens the turn's diff;
// the file browser opens a text file (numbered lines) and previews an image; a viewer on
// a server without --viewer-files gets no workspace view but a note. Screenshots go to
// target/web-screenshots/workspace-*.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, copyFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Server, TestClient, launchBrowser, browserAvailable, openAuthorized, waitAttr, until, SCREENSHOTS, ROOT } from './harness.js';

const enabled = browserAvailable();
let server;
let browser;
let term;
let turn; // {promptId, files} of the editing turn's relay.changes

const git = (...args) => execFileSync('git', ['-C', server.workdir, ...args], { encoding: 'utf8' });

const BIG_LINES = 5000;

const APP_JS = `// app.js — a sample
import { thing } from './thing.js';

/* a block
   comment */
export function main(argv) {
  const name = "world";
  let count = 0;
  for (const a of argv) count += a.length;
  return \`hello \${name} \${count}\`;
}

export const answer = 42;
`;

before(async () => {
  if (!enabled) return;
  server = await Server.start({
    prepare: (dir) => writeFileSync(path.join(dir, 'viewer_keys'), ''),
    args: (dir) => ['--viewer-keys', path.join(dir, 'viewer_keys')],
  });
  const w = server.workdir;
  mkdirSync(path.join(w, 'src'));
  writeFileSync(path.join(w, 'src', 'app.js'), APP_JS);
  writeFileSync(path.join(w, 'README.md'), '# Sample\n\nA project for the workspace view.\n');
  writeFileSync(path.join(w, 'old.txt'), 'to be deleted\n');
  // Over files.read's default 256 KiB: the viewer loads it in two reads.
  writeFileSync(path.join(w, 'big.txt'), Array.from({ length: BIG_LINES }, (_, k) => `line ${k + 1} ${'x'.repeat(60)}`).join('\n') + '\n');
  copyFileSync(path.join(ROOT, 'web', 'icons', 'icon-192.png'), path.join(w, 'logo.png'));
  git('init', '-q', '-b', 'main');
  git('-c', 'user.email=t@example.com', '-c', 'user.name=t', 'add', '.');
  git('-c', 'user.email=t@example.com', '-c', 'user.name=t', 'commit', '-q', '-m', 'first');
  // What the agent's turn runs (kept outside the workdir, so it is no change itself).
  const script = path.join(server.dir, 'edits.sh');
  writeFileSync(script, [
    'set -e',
    "sed -i 's/const name = \"world\";/const name = \"relay\"; \\/\\/ changed by the turn/' src/app.js",
    "sed -i 's/^export const answer = 42;$/export const answer = 43;/' src/app.js",
    "printf '%s\\n' 'export const long = \"" + 'a very long line that wraps on a phone, '.repeat(4) + "\";' >> src/app.js",
    "printf 'def greet(name):\\n    return f\"hi {name}\"  # greeting\\n' > src/new.py",
    'rm old.txt',
    '',
  ].join('\n'));
  browser = await launchBrowser();
  term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
  mkdirSync(SCREENSHOTS, { recursive: true });
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: `run-bash sh ${script}`, key: 'ws-edit' });
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from, timeout: 60000 });
  await term.request({ type: 'respond', session: 'default', request_id: req.event.request_id, response: { behavior: 'allow' } });
  const changes = await term.wait((f) => f.type === 'event' && f.event.type === 'relay.changes', { from, timeout: 60000 });
  turn = { promptId: changes.event.prompt_id, files: changes.event.files };
});

after(async () => {
  term?.close();
  await browser?.close();
  await server?.stop();
});

/** `git diff HEAD` of one file as [kind, text] per line (the lines a diff view must show). */
function gitDiffLines(file) {
  const out = git('-c', 'core.pager=cat', 'diff', '--no-color', '--no-ext-diff', 'HEAD', '--', file);
  const lines = [];
  let inHunk = false;
  for (const l of out.split('\n')) {
    if (l.startsWith('@@')) inHunk = true;
    else if (inHunk && (l.startsWith('+') || l.startsWith('-') || l.startsWith(' '))) lines.push([l[0] === '+' ? 'add' : l[0] === '-' ? 'del' : 'ctx', l.slice(1)]);
  }
  return lines;
}

/** The diff lines a `file-diff` shows, as [kind, text] in reading order. */
async function shownLines(diff) {
  return diff.locator('[data-testid="diff-line"]').evaluateAll((els) => els.map((e) => {
    const code = e.classList.contains('sbs-row') ? e.querySelector('.cell .code') : e.querySelector('.code');
    return [e.dataset.kind, code ? code.textContent : null];
  }));
}

const AXE = readFileSync(path.join(ROOT, 'web', 'tests', 'node_modules', 'axe-core', 'axe.min.js'), 'utf8');

/** axe-core's serious and critical violations, and buttons under 44×44 px, on the page as it is now. */
async function a11yProblems(page) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
    .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  const small = await page.evaluate(() => [...document.querySelectorAll('#workspace button, [data-testid="turn-changes"]')]
    .filter((b) => b.getClientRects().length > 0)
    .map((b) => ({ b, r: b.getBoundingClientRect() }))
    .filter(({ r }) => r.width < 44 || r.height < 44)
    .map(({ b, r }) => `${b.dataset.testid || b.id || b.textContent.trim().slice(0, 20)} ${r.width.toFixed(0)}×${r.height.toFixed(0)}`));
  return [...serious, ...small];
}

const sortLines = (ls) => ls.map((l) => l.join('\u0000')).sort();

test('a turn’s changes: the card, the Changes view, a diff equal to git diff, the turn diff, the file viewer (390×844)', { skip: !enabled }, async () => {
  assert.ok(turn.files.some((f) => f.path === 'src/app.js'), JSON.stringify(turn.files));
  const { context, page } = await openAuthorized(browser, server, server.base, 'phone');
  // The card in the stream: the turn's totals, as the event says.
  const card = page.locator(`[data-testid="turn-changes"][data-prompt-id="${turn.promptId}"]`);
  await card.waitFor();
  const ins = turn.files.reduce((n, f) => n + (f.insertions || 0), 0);
  const del = turn.files.reduce((n, f) => n + (f.deletions || 0), 0);
  assert.match(await card.innerText(), new RegExp(`${turn.files.length} files changed, \\+${ins} −${del}`));
  await card.scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(SCREENSHOTS, 'workspace-card-390.png') });

  // One tap from the session view: the Changes view lists what files.status lists.
  await page.getByTestId('workspace-open').click();
  const list = page.getByTestId('changes-list');
  await list.waitFor();
  const status = await term.request({ type: 'files.status', session: 'default' });
  const items = await list.locator('[data-testid="change-item"]').evaluateAll((els) => els.map((e) => [e.dataset.path, e.dataset.status, e.dataset.insertions, e.dataset.deletions]));
  assert.deepEqual(items, status.files.map((f) => [f.path, f.status, String(f.insertions || 0), String(f.deletions || 0)]));
  assert.deepEqual(items.map((i) => i[0]).sort(), ['old.txt', 'src/app.js', 'src/new.py']);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'workspace-changes-390.png') });

  // A file's diff: exactly git diff's lines, in order, unified on a phone.
  await list.locator('[data-testid="change-item"][data-path="src/app.js"]').click();
  const diff = page.locator('[data-testid="file-diff"][data-path="src/app.js"]');
  await diff.waitFor();
  assert.deepEqual(await shownLines(diff), gitDiffLines('src/app.js'));
  assert.equal(await diff.locator('.sbs-row').count(), 0, 'unified at 390 px');
  assert.ok(await diff.locator('.hl-kw').count() > 0, 'keywords are coloured');
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `long lines wrap: the page is ${width} px wide`);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'workspace-diff-390.png') });
  assert.deepEqual(await a11yProblems(page), [], 'the diff view');
  // Wrap off: the lines keep their length and scroll sideways inside the hunk.
  await page.getByTestId('ws-wrap').uncheck();
  const scrolls = await diff.locator('.hunk').first().evaluate((h) => h.scrollWidth > h.clientWidth);
  assert.ok(scrolls, 'without wrapping, the hunk scrolls sideways');
  await page.getByTestId('ws-wrap').check();

  // The turn card opens the turn's diff (files.diff base turn:<id>): every file of the turn.
  await page.getByTestId('ws-close').click();
  await card.click();
  await page.locator('[data-testid="file-diff"][data-path="src/new.py"]').waitFor();
  const turnPaths = await page.locator('[data-testid="file-diff"]').evaluateAll((els) => els.map((e) => e.dataset.path));
  assert.deepEqual(turnPaths.sort(), turn.files.map((f) => f.path).sort());
  const removed = page.locator('[data-testid="file-diff"][data-path="old.txt"]');
  assert.deepEqual(await shownLines(removed), [['del', 'to be deleted']]);

  // Files: the root, into src/, a text file with numbered lines, up, an image preview.
  await page.getByTestId('ws-tab-files').click();
  const browserBox = page.getByTestId('file-browser');
  await browserBox.locator('[data-testid="file-entry"][data-path="src"]').click();
  await page.locator('[data-testid="file-browser"][data-path="src"]').waitFor();
  const entries = await page.locator('[data-testid="file-entry"]').evaluateAll((els) => els.map((e) => [e.dataset.path, e.dataset.kind]));
  assert.deepEqual(entries, [['src/app.js', 'file'], ['src/new.py', 'file']]);
  await page.locator('[data-testid="file-entry"][data-path="src/new.py"]').click();
  const view = page.locator('[data-testid="file-view"][data-path="src/new.py"]');
  await view.waitFor();
  assert.equal(await view.locator('.fv-lines').innerText(), '1\ndef greet(name):\n2\n    return f"hi {name}"  # greeting');
  assert.ok(await view.locator('.hl-com').count() === 1, 'the comment is coloured');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'workspace-file-390.png') });
  assert.deepEqual(await a11yProblems(page), [], 'the file view');
  await page.locator('#ws-back').click();
  await page.getByTestId('file-up').click();
  await page.locator('[data-testid="file-browser"][data-path=""] [data-testid="file-entry"][data-path="logo.png"]').click();
  const img = page.locator('[data-testid="file-view"][data-path="logo.png"] [data-testid="file-image"]');
  await img.waitFor();
  await until(() => img.evaluate((i) => i.complete && i.naturalWidth === 192), 'the image preview decodes');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'workspace-image-390.png') });
  // A file over one read: "Load more" reads on from the offset until every line is shown.
  await page.locator('#ws-back').click();
  await page.locator('[data-testid="file-entry"][data-path="big.txt"]').click();
  const big = page.locator('[data-testid="file-view"][data-path="big.txt"]');
  await big.waitFor();
  assert.equal(await big.getAttribute('data-truncated'), 'true');
  const firstLines = await big.locator('.fl').count();
  assert.ok(firstLines > 0 && firstLines < BIG_LINES, `a first part only (${firstLines} lines)`);
  await page.getByTestId('file-more').click();
  await waitAttr(big, 'data-truncated', (v) => v === 'false');
  assert.equal(await big.locator('.fl').count(), BIG_LINES);
  assert.equal(await big.locator('.fl').last().innerText(), `${BIG_LINES}\nline ${BIG_LINES} ${'x'.repeat(60)}`);
  assert.equal(await big.locator('.fl').nth(firstLines).locator('.ln').innerText(), String(firstLines + 1), 'numbering goes on');
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('side by side at 1280×800: the same lines as git diff, removals beside additions', { skip: !enabled }, async () => {
  const { context, page } = await openAuthorized(browser, server, server.base, 'desktop', { viewport: { width: 1280, height: 800 } });
  await page.locator(`[data-testid="turn-changes"][data-prompt-id="${turn.promptId}"]`).waitFor();
  await page.getByTestId('workspace-open').click();
  await page.locator('[data-testid="change-item"][data-path="src/app.js"]').click();
  const diff = page.locator('[data-testid="file-diff"][data-path="src/app.js"]');
  await diff.waitFor();
  assert.ok(await diff.locator('.sbs-row').count() > 0, 'side by side at 1280 px');
  const shown = await diff.locator('[data-testid="diff-line"]').evaluateAll((els) => els.map((e) => [e.dataset.kind, (e.classList.contains('sbs-row') ? e.querySelector('.cell .code') : e.querySelector('.code')).textContent]));
  assert.deepEqual(sortLines(shown), sortLines(gitDiffLines('src/app.js')));
  // The changed line and its replacement are on one row.
  const row = diff.locator('.sbs-row').filter({ hasText: 'const name = "world";' });
  assert.match(await row.innerText(), /const name = "relay";/);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'workspace-diff-1280.png') });
  assert.deepEqual(await a11yProblems(page), [], 'side by side, light');
  await page.emulateMedia({ colorScheme: 'dark' });
  assert.deepEqual(await a11yProblems(page), [], 'side by side, dark');
  await page.screenshot({ path: path.join(SCREENSHOTS, 'workspace-diff-1280-dark.png') });
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('a request opened from a notification shows its file’s whole current diff; its card links to the diff', { skip: !enabled }, async () => {
  const from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'write-file src/app.js', key: 'ws-write' });
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from, timeout: 60000 });
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(`${server.base}/?device=notified#request=${req.event.request_id}&session=default`);
  await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'pairing');
  await server.authorize((await page.getByTestId('public-key').textContent()).trim());
  await page.reload();
  const card = page.locator(`[data-testid="permission-card"][data-request-id="${req.event.request_id}"]`);
  await waitAttr(card, 'data-focused', (v) => v === 'true');
  const diff = card.locator('[data-testid="permission-file-diff"] [data-testid="file-diff"][data-path="src/app.js"]');
  await diff.waitFor();
  assert.deepEqual(await shownLines(diff), gitDiffLines('src/app.js'));
  await page.screenshot({ path: path.join(SCREENSHOTS, 'workspace-request-390.png') });
  // The link opens the same file's diff in the workspace view.
  await card.getByTestId('permission-full-diff').click();
  const full = page.locator('#workspace [data-testid="file-diff"][data-path="src/app.js"]');
  await full.waitFor();
  assert.deepEqual(await shownLines(full), gitDiffLines('src/app.js'));
  await term.request({ type: 'respond', session: 'default', request_id: req.event.request_id, response: { behavior: 'deny' } });
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  assert.deepEqual(page.errors, []);
  await context.close();
});

test('a viewer on a server without --viewer-files gets a note instead of the workspace view', { skip: !enabled }, async () => {
  const { context, page } = await openAuthorized(browser, server, server.base, 'tv', { keysFile: path.join(server.dir, 'viewer_keys') });
  await page.getByTestId('workspace-note').waitFor({ state: 'visible' });
  assert.match(await page.getByTestId('workspace-note').innerText(), /--viewer-files/);
  assert.equal(await page.getByTestId('workspace-open').isVisible(), false);
  await context.close();
});
