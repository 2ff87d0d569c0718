// The controls with the REAL Claude Code CLI (pinned in tools/claude-cli, or
// $CCRELAY_CLAUDE_BIN) against the Node mock Anthropic API, at 390×844: an
// AskUserQuestion request renders as a `question-card` whose answer reaches the CLI in
// its own shape (the model reads the answers); plan mode chosen in `mode-select`, then
// an ExitPlanMode request renders as a `plan-card` with the plan as Markdown, approved
// with its `permission-allow` (the CLI then leaves plan mode, and the select follows);
// the `slash-menu` lists the CLI's commands, filtered as typed, chosen from the
// keyboard; an image attached in the page reaches the API as an image block no larger
// than 1568 px. Skips with a SKIPPED line when the CLI is missing, unless
// CCRELAY_REQUIRE_ALL=1. Screenshots go to target/web-screenshots/.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { RealCliWorld, SCREENSHOTS, browserAvailable, openAuthorized, pngFile, realCli, until } from './harness.js';
import { QUESTION_COLOR, QUESTION_TOPPINGS } from './mock-anthropic.js';


const claude = realCli();
const enabled = claude !== null && browserAvailable();
const TURN = { timeout: 60000 };
let world;
let api;
let server;
let browser;
let term;
let A;

before(async () => {
  if (!enabled) return;
  world = new RealCliWorld(claude);
  ({ api, server, browser, term } = await world.start());
  A = await openAuthorized(browser, server, server.base, 'phone-a');
});

after(() => world?.stop());

const isEvent = (type) => (f) => f.type === 'event' && f.event.type === type;
const shot = (page, name) => page.screenshot({ path: path.join(SCREENSHOTS, `controls-cli-${name}.png`) });

async function send(page, text) {
  await page.getByTestId('prompt-input').fill(text);
  await page.getByTestId('prompt-send').click();
}

test('real CLI: an AskUserQuestion request is a question card; its answer reaches the CLI in its shape', { skip: !enabled }, async () => {
  const { page } = A;
  const from = term.frames.length;
  await send(page, 'please ask-question');
  const req = await term.wait((f) => isEvent('control_request')(f) && f.event.request?.tool_name === 'AskUserQuestion', { ...TURN, from });
  const card = page.locator(`[data-testid="question-card"][data-request-id="${req.event.request_id}"]`);
  await card.waitFor();
  const option = (q, label) => card.locator(`[data-testid="question-option"][data-question="${q}"][data-label="${label}"]`);
  assert.equal(await card.getByTestId('question-option').count(), 5);
  assert.equal(await card.getByTestId('question-submit').isDisabled(), true, 'nothing chosen yet');
  await option(QUESTION_COLOR, 'Red').click();
  await option(QUESTION_COLOR, 'Blue').click(); // single choice: Blue replaces Red
  await option(QUESTION_TOPPINGS, 'Cheese').click();
  await option(QUESTION_TOPPINGS, 'Olives').click();
  await option(QUESTION_TOPPINGS, 'Basil').click();
  await option(QUESTION_TOPPINGS, 'Olives').click(); // multi-select: toggled off again
  assert.equal(await option(QUESTION_COLOR, 'Red').getAttribute('aria-pressed'), 'false');
  assert.equal(await option(QUESTION_TOPPINGS, 'Basil').getAttribute('aria-pressed'), 'true');
  await card.scrollIntoViewIfNeeded();
  await shot(page, 'question');
  await card.getByTestId('question-submit').click();
  const resolved = await term.wait((f) => isEvent('relay.resolved')(f) && f.event.request_id === req.event.request_id, { ...TURN, from });
  assert.equal(resolved.event.response.behavior, 'allow');
  assert.deepEqual(resolved.event.response.updatedInput.answers, { [QUESTION_COLOR]: 'Blue', [QUESTION_TOPPINGS]: 'Cheese, Basil' });
  assert.deepEqual(resolved.event.response.updatedInput.questions, req.event.request.input.questions, 'the questions are sent back as they came');
  const result = await term.wait(isEvent('result'), { ...TURN, from });
  assert.equal(result.event.is_error, false);
  // The CLI told the model the answers.
  const told = JSON.stringify(api.requests.at(-1).messages);
  assert.match(told, /Blue/);
  assert.match(told, /Cheese, Basil/);
  await until(async () => (await page.locator(`[data-testid="permission-card"][data-request-id="${req.event.request_id}"]`).getAttribute('data-resolved')) === 'allow', 'the card shows the answer');
  assert.deepEqual(page.errors, []);
});

test('real CLI: plan mode from mode-select; ExitPlanMode is a plan card with the plan as Markdown; approving leaves plan mode', { skip: !enabled }, async () => {
  const { page } = A;
  const mode = page.getByTestId('mode-select');
  await until(async () => (await mode.locator('option[value="plan"]').count()) === 1, 'plan mode offered');
  let from = term.frames.length;
  await mode.selectOption('plan');
  await term.wait((f) => isEvent('relay.settings')(f) && f.event.settings.permission_mode === 'plan', { ...TURN, from });
  from = term.frames.length;
  await send(page, 'plan-mode-exit please');
  const req = await term.wait((f) => isEvent('control_request')(f) && f.event.request?.tool_name === 'ExitPlanMode', { ...TURN, from });
  const card = page.locator(`[data-testid="plan-card"][data-request-id="${req.event.request_id}"]`);
  await card.waitFor();
  await until(async () => (await card.locator('h1, h2, h3').filter({ hasText: 'Plan' }).count()) >= 1, 'the plan heading rendered as Markdown');
  assert.equal(await card.locator('ol li').count(), 3, 'the numbered steps as a list');
  await card.scrollIntoViewIfNeeded();
  await shot(page, 'plan');
  await card.getByTestId('permission-allow').click();
  const resolved = await term.wait((f) => isEvent('relay.resolved')(f) && f.event.request_id === req.event.request_id, { ...TURN, from });
  assert.equal(resolved.event.response.behavior, 'allow');
  // The CLI leaves plan mode by itself; the select follows.
  await until(async () => (await mode.inputValue()) !== 'plan', 'the select left plan mode', 30000);
  await term.wait(isEvent('result'), { ...TURN, from });
  assert.deepEqual(page.errors, []);
});

test('real CLI: the slash menu lists the CLI’s commands, filters as typed, and is chosen with the keyboard', { skip: !enabled }, async () => {
  const { page } = A;
  const input = page.getByTestId('prompt-input');
  await input.fill('/');
  const menu = page.getByTestId('slash-menu');
  await menu.waitFor({ state: 'visible' });
  assert.ok(await menu.getByTestId('slash-item').count() >= 3, 'several commands');
  await input.fill('/comp');
  await until(async () => (await menu.getByTestId('slash-item').first().getAttribute('data-command')) === 'compact', '/compact first');
  for (const name of await menu.getByTestId('slash-item').evaluateAll((els) => els.map((e) => e.dataset.command))) {
    assert.match(name, /comp/i, `${name} matches what was typed`);
  }
  await shot(page, 'slash');
  await input.press('Enter');
  assert.equal(await input.inputValue(), '/compact ', 'Enter chose the command (and sent nothing)');
  assert.equal(await menu.isVisible(), false);
  await input.fill('');
});

test('real CLI: an image attached in the page reaches the API as an image block of at most 1568 px', { skip: !enabled }, async () => {
  const { page } = A;
  const file = path.join(server.dir, 'tall.png');
  writeFileSync(file, pngFile(900, 3000));
  await page.getByTestId('attach-image').setInputFiles(file);
  await page.getByTestId('attachment-chip').waitFor();
  const from = term.frames.length;
  const seen = api.requests.length;
  await send(page, 'describe this image');
  await term.wait(isEvent('result'), { ...TURN, from });
  const images = api.requests.slice(seen).flatMap((r) => (r.messages ?? []).flatMap((m) => (Array.isArray(m.content) ? m.content : []))).filter((b) => b.type === 'image');
  assert.ok(images.length >= 1, 'the API got the image');
  const img = images[0];
  const size = await page.evaluate(async ({ type, data }) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const bmp = await createImageBitmap(new Blob([bytes], { type }));
    return { width: bmp.width, height: bmp.height };
  }, { type: img.source.media_type, data: img.source.data });
  assert.deepEqual(size, { width: 470, height: 1568 });
});

