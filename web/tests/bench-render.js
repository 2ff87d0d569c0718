// A benchmark run by hand (not by the suite), printing figures and asserting none:
// one 20,000-delta answer (the mock agent's `flood 20000`) as `ccrelay attach
// --prompt` takes it, then as the page renders it at 390×844, then again under 4×
// CPU throttling (CDP Emulation.setCPUThrottlingRate) with the longest main-thread
// task the page's PerformanceObserver saw (`longtask`).
//
//   cd web/tests && CCRELAY_TARGET_DIR=$PWD/../../target/debug node bench-render.js [DELTAS]

import { spawn, execFileSync } from 'node:child_process';
import path from 'node:path';
import { Server, TestClient, launchBrowser, openAuthorized, waitAttr, bin } from './harness.js';

const DELTAS = Number(process.argv[2] || 20000);

/** `ccrelay attach --prompt`: wall time from spawn to exit. */
async function attachRun(server) {
  const keyFile = path.join(server.dir, 'bench_key');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'bench', '-f', keyFile]);
  await server.authorize(execFileSync('cat', [`${keyFile}.pub`]).toString());
  const t0 = performance.now();
  const code = await new Promise((resolve, reject) => {
    const p = spawn(bin('ccrelay'), ['attach', server.wsUrl, '-i', keyFile, '--device', 'bench-terminal', '--accept-new-server',
      '--known-servers', path.join(server.dir, 'known_servers'), '--prompt', `flood ${DELTAS}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stdout.on('data', () => {});
    p.stderr.on('data', (d) => {
      err += d;
    });
    p.once('exit', (c) => (c === 0 ? resolve(c) : reject(new Error(`attach exited ${c}: ${err}`))));
  });
  return { ms: performance.now() - t0, code };
}

/** The page: from the click on Send to the result applied and rendered. */
async function pageRun(page, term, { throttle }) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: throttle });
  await page.evaluate(() => {
    window.__longest = 0;
    window.__longtasks = 0;
    if (!window.__observer) {
      window.__observer = new PerformanceObserver((list) => {
        for (const e of list.getEntries()) {
          window.__longtasks += 1;
          window.__longest = Math.max(window.__longest, e.duration);
        }
      });
      window.__observer.observe({ type: 'longtask' });
    }
  });
  const from = term.frames.length;
  const t0 = performance.now();
  await page.getByTestId('prompt-input').fill(`flood ${DELTAS}`);
  await page.getByTestId('prompt-send').click();
  const result = await term.wait((f) => f.type === 'event' && f.event.type === 'result', { from, timeout: 600000 });
  const tServer = performance.now() - t0;
  await waitAttr(page.getByTestId('session-view'), 'data-head', (v) => Number(v) >= result.seq, 600000);
  const tPage = performance.now() - t0;
  const text = await page.getByTestId('assistant-text').last().textContent();
  const figures = await page.evaluate(() => ({ longest: window.__longest, longtasks: window.__longtasks, nodes: document.getElementsByTagName('*').length }));
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: 1 });
  await cdp.detach();
  return { tServer, tPage, textOk: text.includes(`flood-${DELTAS - 1} `), ...figures };
}

const server = await Server.start();
const browser = await launchBrowser();
try {
  const term = await TestClient.connect(server.wsUrl, server.ownerKey, 'bench-observer');
  await term.request({ type: 'attach', session: 'default' });
  const attach = await attachRun(server);
  console.log(`ccrelay attach --prompt 'flood ${DELTAS}': ${attach.ms.toFixed(0)} ms to exit`);
  const { page, context } = await openAuthorized(browser, server, server.base, 'bench-phone');
  for (const throttle of [1, 4]) {
    const r = await pageRun(page, term, { throttle });
    console.log(`page, CPU ×${throttle}: result at the server after ${r.tServer.toFixed(0)} ms, rendered after ${r.tPage.toFixed(0)} ms; ` +
      `longest task ${r.longest.toFixed(0)} ms (${r.longtasks} tasks over 50 ms); ${r.nodes} elements; final text ${r.textOk ? 'complete' : 'INCOMPLETE'}`);
  }
  await context.close();
  term.close();
} finally {
  await browser.close();
  await server.stop();
}
