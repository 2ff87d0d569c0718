// Screenshots of the page, run by hand (not by the suite): the empty state, the
// session view with a pending approval, and the open panel, at 390×844 (light and
// dark, touch), 820×1180 (touch) and 1440×900, into target/screenshots/.
//
//   cd web/tests && CCRELAY_TARGET_DIR=$PWD/../../target/debug node screenshots.js

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Server, TestClient, launchBrowser, waitAttr, until, ROOT } from './harness.js';

const OUT = path.join(ROOT, 'target', 'screenshots');
const SIZES = [
  { name: '390x844-light', scheme: 'light', options: { viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true } },
  { name: '390x844-dark', scheme: 'dark', options: { viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true } },
  { name: '820x1180', scheme: 'light', options: { viewport: { width: 820, height: 1180 }, hasTouch: true, isMobile: true } },
  { name: '1440x900', scheme: 'light', options: { viewport: { width: 1440, height: 900 } } },
];

mkdirSync(OUT, { recursive: true });
const server = await Server.start();
const browser = await launchBrowser();
try {
  const term = await TestClient.connect(server.wsUrl, server.ownerKey, 'terminal');
  await term.request({ type: 'attach', session: 'default' });
  const pages = [];
  for (const size of SIZES) {
    const context = await browser.newContext({ ...size.options, colorScheme: size.scheme });
    const page = await context.newPage();
    await page.goto(`${server.base}/?device=${encodeURIComponent(`iPhone ${size.name}`)}`);
    await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'pairing');
    await server.authorize((await page.getByTestId('public-key').textContent()).trim());
    await page.reload();
    await waitAttr(page.getByTestId('connection-state'), 'data-state', (v) => v === 'connected');
    pages.push({ size, page });
  }
  const shot = async (page, view, size) => {
    const file = path.join(OUT, `${view}-${size.name}.png`);
    await page.screenshot({ path: file });
    console.log(file);
  };
  for (const { size, page } of pages) {
    await page.locator('#empty').waitFor({ state: 'visible' });
    await shot(page, 'empty', size);
  }
  let from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'hello\n## Plan\n- read the **tests**\n- fix `lineDiff`\n\n| file | change |\n|---|---|\n| diff.js | trailing newline |\n\n```js\nconst x = lines(a); // no empty last line\n```' });
  await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from });
  from = term.frames.length;
  await term.request({ type: 'prompt', session: 'default', content: 'please write-file notes.md' });
  const req = await term.wait((f) => f.type === 'event' && f.event.type === 'control_request', { from });
  for (const { size, page } of pages) {
    await until(async () => Number(await page.getByTestId('session-view').getAttribute('data-head')) >= req.seq, 'the page has the request');
    await page.locator(`[data-testid="permission-card"][data-request-id="${req.event.request_id}"]`).waitFor();
    await page.evaluate(() => window.scrollTo(0, document.documentElement.scrollHeight));
    await shot(page, 'approval', size);
    // Scrolled up: the card is off-screen, the sheet stands in for it.
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.getByTestId('approval-sheet').waitFor({ state: 'visible' }).catch(() => {});
    await shot(page, 'approval-sheet', size);
    if ((await page.getByTestId('panel').getAttribute('data-open')) !== 'true') await page.getByTestId('panel-toggle').click();
    await waitAttr(page.getByTestId('panel'), 'data-open', (v) => v === 'true');
    await shot(page, 'panel', size);
  }
  await term.request({ type: 'respond', session: 'default', request_id: req.event.request_id, response: { behavior: 'deny' } });
  term.close();
} finally {
  await browser.close();
  await server.stop();
}
