// The session model fed with what the real Claude Code CLI printed (recorded
// transcripts, stdout lines as the relay logs them as events; see
// fixtures/): streamed text and complete `assistant` lines become one text item per
// block, tool calls get their output, permission prompts become cards, and a prompt
// the CLI withdraws on interrupt is cancelled.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SessionLog } from '../js/session.js';

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');

function replay(name) {
  const log = new SessionLog('default');
  const lines = readFileSync(path.join(dir, `${name}.events.jsonl`), 'utf8').split('\n').filter(Boolean);
  lines.forEach((l, i) => assert.equal(log.apply(i + 1, JSON.parse(l)), 'applied'));
  const kinds = (k) => log.model.items.filter((i) => i.kind === k);
  return { log, texts: kinds('text').map((t) => t.text), tools: kinds('tool'), perms: kinds('permission'), results: kinds('result') };
}

test('a streamed hello: one text item, equal to the complete assistant line', () => {
  const r = replay('a_hello_partial');
  assert.equal(r.texts.length, 1);
  assert.match(r.texts[0], /\S/);
  assert.equal(r.results.length, 1);
  assert.equal(r.results[0].isError, false);
});

test('run-bash allowed (partial messages): text, tool card with output, permission card, final text', () => {
  const r = replay('b_run_bash_allow');
  assert.deepEqual(r.texts, ['I will run a command.', 'Tool finished. Output was: relay-ok']);
  assert.equal(r.tools.length, 1);
  assert.equal(r.tools[0].name, 'Bash');
  assert.equal(r.tools[0].input.command, "sh -c 'echo relay-ok'");
  assert.equal(r.tools[0].output, 'relay-ok');
  assert.equal(r.perms.length, 1);
  assert.equal(r.perms[0].tool, 'Bash');
  assert.equal(r.perms[0].toolUseId, r.tools[0].toolId, 'the card is linked to its tool call');
  assert.ok(r.perms[0].suggestions.length > 0, 'always-allow suggestions kept');
  assert.equal(r.log.model.permissionFor(r.tools[0].toolId), r.perms[0]);
});

test('two tools in one message (no partial messages): two cards, two outputs, one text', () => {
  const r = replay('b5_two_tools');
  assert.equal(r.tools.length, 2);
  assert.deepEqual(r.tools.map((t) => t.output), ['one', 'second one denied']);
  assert.deepEqual(r.tools.map((t) => t.isError), [false, true]);
  assert.equal(r.perms.length, 2);
  assert.equal(r.texts.length, 1);
});

test('interrupt while a permission prompt is pending: the card is cancelled by the agent', () => {
  const r = replay('d2_interrupt_while_permission_pending');
  assert.equal(r.perms.length, 1);
  assert.equal(r.perms[0].resolved, 'cancelled');
  assert.equal(r.perms[0].by, 'agent');
  assert.equal(r.results[0].isError, true, 'the interrupted turn ends in error');
  assert.equal(r.results.length, 2, 'the next prompt works');
});
