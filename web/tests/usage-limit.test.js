// A usage limit seen from the phone, with the REAL Claude Code CLI as an LLM gateway's
// client (the only offline way to make it report the limit with its reset time; see
// `gatewayEnv` in harness.js) against the Node mock Anthropic API, at 390×844: with
// `auto_continue` on, a prompt that hits the limit leaves the `usage` indicator leading
// with the reset time (`data-rate-limit="rejected"`, `data-resets-at` = the reset the CLI
// reported) and the relay's scheduled `continue` in the queue ("scheduled for …", with
// Cancel); when the reset comes the indicator drops the limit by itself and `continue`
// runs, then a prompt the page sent meanwhile (it waited in the queue behind `continue`
// rather than running into the limit). The log names the relay's prompt "Auto-continue",
// and the limited turn's end reads as an error. Screenshot: target/web-screenshots/usage-limit.png.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { RealCliWorld, SCREENSHOTS, browserAvailable, gatewayEnv, openAuthorized, realCli, waitAttr } from './harness.js';

const claude = realCli();
const enabled = claude !== null && browserAvailable();
const TURN = { timeout: 60000 };
/** Long enough for the page to show the limit on a loaded machine, short enough to wait out. */
const RESET_SECS = 12;
let world;
let server;
let browser;
let term;
let A;

before(async () => {
  if (!enabled) return;
  world = new RealCliWorld(claude, { env: gatewayEnv, api: { limitResetSecs: RESET_SECS } });
  ({ server, browser, term } = await world.start());
  A = await openAuthorized(browser, server, server.base, 'phone-a');
});

after(() => world?.stop());

const isEvent = (type) => (f) => f.type === 'event' && f.event.type === type;

test('real CLI: a usage limit leads the usage indicator until it lifts; the scheduled continue is listed and runs then', { skip: !enabled }, async () => {
  const { page } = A;
  const on = await term.request({ type: 'session.set', session: 'default', settings: { auto_continue: true } });
  assert.equal(on.type, 'ok', JSON.stringify(on));
  const usage = page.getByTestId('usage');
  assert.equal(await usage.getAttribute('data-rate-limit'), '', 'no limit before');

  const from = term.frames.length;
  await page.getByTestId('prompt-input').fill('please usage-limit-soon');
  await page.getByTestId('prompt-send').click();
  const limit = await term.wait((f) => isEvent('rate_limit_event')(f), { ...TURN, from });
  assert.equal(limit.event.rate_limit_info.status, 'rejected');
  const resetsAt = limit.event.rate_limit_info.resetsAt * 1000;
  const scheduled = await term.wait((f) => isEvent('relay.prompt')(f) && f.event.auto_continue === true, { ...TURN, from });

  // The page asks session.usage when the turn ends: the limit leads, until the reset.
  await waitAttr(usage, 'data-rate-limit', (v) => v === 'rejected', (RESET_SECS - 2) * 1000);
  assert.equal(Date.parse(await usage.getAttribute('data-resets-at')), resetsAt, 'the reset the CLI reported');
  assert.match(await usage.innerText(), /^limit · \d{1,2}:\d{2}(\s?[AP]M)?$/, 'the reset alone: the row has no room for more');
  assert.match(await usage.getAttribute('title'), /^Usage limit reached: resets /);
  assert.equal(await usage.isVisible(), true, 'shown on a phone');
  const queued = page.locator(`[data-testid="queued-prompt"][data-prompt-id="${scheduled.event.prompt_id}"]`);
  await queued.waitFor();
  assert.match(await queued.innerText(), /scheduled for/);
  assert.equal(await queued.getByTestId('queued-cancel').count(), 1, 'the owner may cancel it');
  const logged = page.locator(`[data-testid="user-prompt"][data-prompt-id="${scheduled.event.prompt_id}"]`);
  assert.equal((await logged.locator('.who').innerText()).trim(), 'Auto-continue', 'the relay’s prompt names itself');
  // The limited turn's result is an error whose subtype says "success": the page says error.
  assert.equal(await page.locator('.turn-end.warn').filter({ hasText: /^Turn ended: error/ }).count(), 1);
  // A prompt sent now waits behind `continue` (not run into the limit): listed, cancellable.
  const waitFrom = term.frames.length;
  await page.getByTestId('prompt-input').fill('after the reset, say hello');
  await page.getByTestId('prompt-send').click();
  const waiting = await term.wait((f) => isEvent('relay.prompt')(f) && f.event.content === 'after the reset, say hello', { ...TURN, from: waitFrom });
  assert.equal(waiting.event.queued, true, 'queued, though the session is idle');
  const waitingCard = page.locator(`[data-testid="queued-prompt"][data-prompt-id="${waiting.event.prompt_id}"]`);
  await waitingCard.waitFor();
  assert.equal(await page.getByTestId('queued-prompt').count(), 2, 'continue, then the waiting prompt');
  assert.match(await waitingCard.innerText(), /runs after “continue”, at the reset/);
  await page.screenshot({ path: path.join(SCREENSHOTS, 'usage-limit.png') });

  // At the reset the indicator drops the limit by itself, and `continue` runs.
  await waitAttr(usage, 'data-rate-limit', (v) => v === '', RESET_SECS * 1000 + 10000);
  assert.ok(Date.now() >= resetsAt, 'not before the reset');
  assert.doesNotMatch(await usage.innerText(), /limit/);
  const started = await term.wait((f) => isEvent('relay.turn')(f) && f.event.prompt_id === scheduled.event.prompt_id && f.event.phase !== 'accepted', { ...TURN, from });
  assert.equal(started.event.phase, 'started', JSON.stringify(started.event));
  await queued.waitFor({ state: 'detached' });
  // Then the prompt that waited, after `continue` ended.
  const next = await term.wait((f) => isEvent('relay.turn')(f) && f.event.phase === 'started' && f.event.prompt_id !== scheduled.event.prompt_id, { ...TURN, from: waitFrom });
  assert.equal(next.event.prompt_id, waiting.event.prompt_id);
  const continued = term.frames.findIndex((f) => isEvent('relay.turn')(f) && f.event.prompt_id === scheduled.event.prompt_id && f.event.phase === 'ended');
  assert.ok(continued !== -1 && continued < term.frames.indexOf(next), '`continue` ended first');
  await waitingCard.waitFor({ state: 'detached' });
});
