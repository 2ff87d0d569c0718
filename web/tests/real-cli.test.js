// Two browser profiles and a terminal on one session with the REAL Claude Code CLI (the pinned install in
// tools/claude-cli, or $CCRELAY_CLAUDE_BIN), run offline against the Node mock
// Anthropic API (mock-anthropic.js) with the environment tests/it/common/real_cli.rs
// gives it: two browser profiles and a terminal/test client on one session; a prompt
// typed in A appears in B and in the terminal with A's device; the streamed answer is
// identical in both browsers; a Bash permission card appears in both, allowed in B,
// A's card shows allow by B (within 10 s; the delay is printed); the tool ran once
// (ran.txt has one line). Skips with a SKIPPED line when the CLI is missing, unless
// CCRELAY_REQUIRE_ALL=1.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { RealCliWorld, browserAvailable, openAuthorized, realCli, waitAttr } from './harness.js';
import { HELLO, BASH_COMMAND } from './mock-anthropic.js';


const claude = realCli();
const enabled = claude !== null && browserAvailable();
let world;
let api;
let server;
let browser;
let term;
let A;
let B;

before(async () => {
  if (!enabled) return;
  world = new RealCliWorld(claude);
  ({ api, server, browser, term } = await world.start());
  A = await openAuthorized(browser, server, server.base, 'phone-a');
  B = await openAuthorized(browser, server, server.base, 'tablet-b');
});

after(() => world?.stop());

async function send(page, text) {
  await page.getByTestId('prompt-input').fill(text);
  await page.getByTestId('prompt-send').click();
}

const isEvent = (type) => (f) => f.type === 'event' && f.event.type === type;
// Turns of the real CLI are slower than the mock agent's (node start-up, the first request).
const TURN = { timeout: 60000 };

test('real CLI: a prompt from A reaches B and the terminal with A’s device; the streamed answer is identical', { skip: !enabled }, async () => {
  const from = term.frames.length;
  await send(A.page, 'hello from the phone');
  const p = await term.wait(isEvent('relay.prompt'), { ...TURN, from });
  assert.equal(p.event.device, 'phone-a', 'the terminal sees A’s device');
  const result = await term.wait(isEvent('result'), { ...TURN, from });
  assert.equal(result.event.is_error, false, `the turn succeeded: ${JSON.stringify(result.event)}`);
  // The answer really was streamed to the relay in several deltas by the CLI.
  const deltas = term.frames.slice(from).filter((f) => f.type === 'event' && f.event.type === 'stream_event'
    && f.event.event?.delta?.type === 'text_delta');
  assert.ok(deltas.length >= 3, `streamed in ${deltas.length} text deltas`);
  for (const { page } of [A, B]) {
    await waitAttr(page.getByTestId('session-view'), 'data-head', (v) => Number(v) >= result.seq, 20000);
    const prompt = page.getByTestId('user-prompt').last();
    assert.equal(await prompt.getAttribute('data-device'), 'phone-a');
    assert.equal(await prompt.getAttribute('data-prompt-id'), p.event.prompt_id);
    assert.match(await prompt.innerText(), /hello from the phone/);
  }
  const ta = await A.page.getByTestId('assistant-text').last().innerText();
  const tb = await B.page.getByTestId('assistant-text').last().innerText();
  assert.equal(ta, tb, 'the streamed answer is identical in both browsers');
  assert.equal(ta.trim(), `${HELLO} You said: hello from the phone`);
  for (const { page } of [A, B]) assert.deepEqual(page.errors, [], 'no page errors');
});

test('real CLI: a Bash permission card in both browsers; allowed in B, A shows allow by B; the tool ran once', { skip: !enabled }, async () => {
  const from = term.frames.length;
  await send(A.page, 'please run-bash');
  const req = await term.wait((f) => isEvent('control_request')(f) && f.event.request?.subtype === 'can_use_tool', { ...TURN, from });
  assert.equal(req.event.request.tool_name, 'Bash');
  assert.equal(req.event.request.input.command, BASH_COMMAND);
  const id = req.event.request_id;
  const cardA = A.page.locator(`[data-testid="permission-card"][data-request-id="${id}"]`);
  const cardB = B.page.locator(`[data-testid="permission-card"][data-request-id="${id}"]`);
  await cardA.getByTestId('permission-allow').waitFor();
  await cardB.getByTestId('permission-allow').waitFor();
  assert.equal(await cardA.getAttribute('data-tool'), 'Bash');
  assert.equal(await cardB.getAttribute('data-tool'), 'Bash');
  assert.equal(existsSync(path.join(server.workdir, 'ran.txt')), false, 'nothing ran before the answer');

  const t0 = Date.now();
  await cardB.getByTestId('permission-allow').click();
  const resolved = await waitAttr(cardA, 'data-resolved', (v) => v !== null, 10000);
  console.log(`A showed the answer from B after ${Date.now() - t0} ms (real CLI)`);
  assert.equal(resolved, 'allow');
  assert.equal(await cardA.getAttribute('data-by'), 'tablet-b');
  assert.equal(await cardA.getByTestId('permission-allow').count(), 0, 'no longer actionable');

  const done = await term.wait(isEvent('result'), { ...TURN, from });
  assert.equal(done.event.is_error, false, `the turn succeeded: ${JSON.stringify(done.event)}`);
  const resolutions = term.frames.slice(from).filter(isEvent('relay.resolved'));
  assert.equal(resolutions.length, 1, 'one answer');
  assert.equal(resolutions[0].event.device, 'tablet-b');
  assert.equal(readFileSync(path.join(server.workdir, 'ran.txt'), 'utf8'), 'ran\n', 'the tool ran once');
  // The CLI sent the tool's result back to the model: the mock API saw it.
  assert.ok(api.requests.some((r) => JSON.stringify(r.messages ?? []).includes('tool_result')), 'the model got the tool result');
  await waitAttr(A.page.getByTestId('session-view'), 'data-head', (v) => Number(v) >= done.seq, 20000);
  assert.ok(await A.page.locator('[data-testid="tool-use"][data-tool="Bash"]').count() >= 1, 'a tool card');
  for (const { page } of [A, B]) assert.deepEqual(page.errors, [], 'no page errors');
});
