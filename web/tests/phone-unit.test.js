// Unit tests of the phone pass's pure pieces: the model's turns, final text and
// tail-attach orphans; "Always allow" in words; when the approval sheet may offer
// Allow; which restored prompts are sent again; new-file diffs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SessionLog } from '../js/session.js';
import { grantText, relativePath } from '../js/views/stream.js';
import { completeSummary } from '../js/views/sheet.js';
import { triage, RESEND_WINDOW_MS } from '../js/drafts.js';
import { lineDiff } from '../js/views/diff.js';

const prompt = (id) => ({ type: 'relay.prompt', prompt_id: id, content: `p${id}`, device: 'd' });
const start = { type: 'stream_event', api_message_id: 'm1', event: { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } } };
const delta = (text) => ({ type: 'stream_event', api_message_id: 'm1', event: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } } });
const final = (text) => ({ type: 'assistant', message: { id: 'm1', content: [{ type: 'text', text }] } });

test('turns are counted by prompts; the final text wins and later deltas are dropped', () => {
  const log = new SessionLog('s');
  [prompt('a'), start, delta('Hel'), delta('lo'), final('Hello'), delta(' late'), prompt('b')].forEach((e, i) => log.apply(i + 1, e));
  const text = log.model.get('text:m1:0');
  assert.equal(text.text, 'Hello');
  assert.equal(text.final, true);
  assert.equal(text.resets, 0, 'the final text extends what was streamed: no redraw');
  assert.equal(text.turn, 1);
  assert.equal(log.model.turns, 2);
  assert.equal(log.model.get('prompt:b').turn, 2);
});

test('a final text that differs from the stream counts as a reset (the view redraws)', () => {
  const log = new SessionLog('s');
  [start, delta('Helo'), final('Hello')].forEach((e, i) => log.apply(i + 1, e));
  assert.equal(log.model.get('text:m1:0').resets, 1);
});

test('a tool result whose call is before a tail attach leaves no card; an interrupt labels the result', () => {
  const log = new SessionLog('s');
  log.reset(10);
  log.apply(11, { type: 'user', message: { content: [{ type: 'tool_result', tool_use_id: 'toolu_gone', content: 'ok' }] } });
  assert.equal(log.model.items.length, 0, 'no orphan "tool · done" card');
  log.apply(12, { type: 'user', uuid: 'u1', message: { content: [{ type: 'text', text: '[Request interrupted by user]' }] } });
  log.apply(13, { type: 'result', is_error: true, subtype: 'error_during_execution' });
  const [notice, result] = log.model.items;
  assert.equal(notice.text, 'Interrupted');
  assert.equal(result.interrupted, true);
});

test('"Always allow" in words', () => {
  assert.equal(grantText([{ type: 'addRules', rules: [{ toolName: 'Bash', ruleContent: 'npm test:*' }], behavior: 'allow', destination: 'localSettings' }]),
    'allow Bash(npm test:*) for this project on this machine (.claude/settings.local.json)');
  assert.equal(grantText([{ type: 'setMode', mode: 'acceptEdits', destination: 'session' }]), 'accept file edits without asking for the rest of this session');
  assert.equal(grantText([{ type: 'addDirectories', directories: ['/tmp/x'], destination: 'session' }]), 'access to /tmp/x for the rest of this session');
  assert.equal(grantText([null, { type: 'unknown' }]), '');
});

test('the sheet offers Allow only for an input it shows whole', () => {
  assert.equal(completeSummary('Bash', { command: 'npm test', description: 'Run the tests' }, ''), 'npm test');
  assert.equal(completeSummary('Bash', { command: 'a\nb' }, ''), '', 'a multi-line command is not shown whole');
  assert.equal(completeSummary('Bash', { command: 'x'.repeat(500) }, ''), '', 'a long command is not shown whole');
  assert.equal(completeSummary('Write', { file_path: '/w/notes.md', content: 'text' }, '/w'), '', 'the content is not in the sheet');
  assert.equal(completeSummary('Read', { file_path: '/w/src/a.rs' }, '/w'), 'src/a.rs');
  assert.equal(relativePath('/w/src/a.rs', '/w/'), 'src/a.rs');
  assert.equal(relativePath('/other/a.rs', '/w'), '/other/a.rs');
});

test('restored prompts: young ones are sent again under their key, old ones come back as drafts', () => {
  const now = 1_000_000_000;
  const { resend, redraft } = triage([
    { key: 'k1', session: 's', content: 'new', created: now - 1000 },
    { key: 'k2', session: 's', content: 'old', created: now - RESEND_WINDOW_MS - 1 },
    { key: 'k3', session: 's', content: 'unknown age' },
    { session: 's', content: 'no key' },
  ], now);
  assert.deepEqual(resend.map((p) => p.key), ['k1']);
  assert.deepEqual(redraft.map((p) => p.key), ['k2', 'k3']);
});

test('a new file ending in a newline has no empty added last line', () => {
  assert.deepEqual(lineDiff('', 'one\ntwo\n'), [{ op: '+', text: 'one' }, { op: '+', text: 'two' }]);
});
