// Unit tests of the session controls' pure pieces (js/controls.js) and of the model's
// new bookkeeping: the slash menu's matches, the AskUserQuestion answer in the CLI's
// shape, downscale sizes and the choice of encoding, the prompt's image budget under
// `auth.ok`'s limits, and `relay.plan` / `relay.settings` / queued and steering prompts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_IMAGE_EDGE, DEFAULT_LIMITS, base64Length, fitSize, imageBudget, limitedUntil, limitsFrom, pickEncoding, planText,
  promptContent, questionResponse, slashMatches, uploadName, withMention,
} from '../js/controls.js';
import { SessionLog } from '../js/session.js';

const commands = [
  { name: 'compact', description: 'Free up context', argument_hint: '<instructions>' },
  { name: 'clear', description: 'Clear the conversation' },
  { name: 'cost', description: 'Show the cost' },
  { name: 'review', description: 'Review a pull request' },
  { name: '__internal', description: 'hidden' },
  { name: 7 },
];

test('slash matches: only while a command name is typed; prefix matches before substring matches', () => {
  assert.deepEqual(slashMatches(commands, '/').map((c) => c.name), ['compact', 'clear', 'cost', 'review']);
  assert.deepEqual(slashMatches(commands, '/c').map((c) => c.name), ['compact', 'clear', 'cost']);
  assert.deepEqual(slashMatches(commands, '/CO').map((c) => c.name), ['compact', 'cost']);
  assert.deepEqual(slashMatches(commands, '/e').map((c) => c.name), ['clear', 'review'], 'no prefix match: substring ones');
  assert.deepEqual(slashMatches(commands, '/compact ').map((c) => c.name), [], 'a space: the command is chosen');
  assert.deepEqual(slashMatches(commands, 'compact'), [], 'not starting with /');
  assert.deepEqual(slashMatches(commands, '/zzz'), []);
  assert.deepEqual(slashMatches(undefined, '/c'), []);
  assert.deepEqual(slashMatches(commands, '/__'), [], 'internal names are never offered');
});

const askInput = {
  questions: [
    { question: 'Which color should the button be?', header: 'Color', multiSelect: false, options: [{ label: 'Red', description: 'warm' }, { label: 'Blue', description: 'calm' }] },
    { question: 'Which toppings do you want?', header: 'Toppings', multiSelect: true, options: [{ label: 'Cheese' }, { label: 'Olives' }, { label: 'Basil' }] },
  ],
};

test('question answers: allow with the input plus answers, multi-select joined with ", "', () => {
  const chosen = new Map([['Which color should the button be?', ['Blue']], ['Which toppings do you want?', ['Cheese', 'Basil']]]);
  const r = questionResponse(askInput, chosen);
  assert.deepEqual(r, {
    behavior: 'allow',
    updatedInput: { ...askInput, answers: { 'Which color should the button be?': 'Blue', 'Which toppings do you want?': 'Cheese, Basil' } },
  });
  // The input itself is not changed.
  assert.equal(askInput.answers, undefined);
});

test('question answers: none until every question is answered; "Other" text counts; unknown labels do not', () => {
  assert.equal(questionResponse(askInput, new Map([['Which color should the button be?', ['Red']]])), null);
  assert.equal(questionResponse(askInput, new Map([['Which color should the button be?', ['Green']], ['Which toppings do you want?', ['Olives']]])), null);
  const other = new Map([['Which color should the button be?', '  Teal '], ['Which toppings do you want?', 'Pineapple']]);
  const r = questionResponse(askInput, new Map([['Which color should the button be?', ['Red']], ['Which toppings do you want?', ['Olives']]]), other);
  assert.equal(r.updatedInput.answers['Which color should the button be?'], 'Teal', 'single choice: typed text replaces the pick');
  assert.equal(r.updatedInput.answers['Which toppings do you want?'], 'Olives, Pineapple', 'multi-select: typed text is one more');
  assert.equal(questionResponse({}, new Map()), null, 'no questions: nothing to send');
});

test('plan text: relay.plan wins over the request input', () => {
  assert.equal(planText('# From relay', { plan: 'input' }), '# From relay');
  assert.equal(planText('', { plan: 'input plan' }), 'input plan');
  assert.equal(planText(undefined, {}), '');
});

test('downscale: the long edge at most 1568 px, aspect kept, small images untouched', () => {
  assert.deepEqual(fitSize(4032, 3024), { width: 1568, height: 1176, scaled: true });
  assert.deepEqual(fitSize(1000, 3000), { width: 523, height: 1568, scaled: true });
  assert.deepEqual(fitSize(1568, 10), { width: 1568, height: 10, scaled: false });
  assert.deepEqual(fitSize(800, 600), { width: 800, height: 600, scaled: false });
  assert.deepEqual(fitSize(100000, 1), { width: 1568, height: 1, scaled: true }, 'never below one pixel');
  for (const [w, h] of [[1569, 1569], [3000, 2999], [1, 99999]]) {
    const f = fitSize(w, h);
    assert.ok(Math.max(f.width, f.height) <= MAX_IMAGE_EDGE, `${w}x${h} → ${f.width}x${f.height}`);
  }
});

test('encoding: JPEG for a photo, PNG with transparency, WebP only when smaller', () => {
  const jpeg = { type: 'image/jpeg', bytes: 300 };
  const png = { type: 'image/png', bytes: 900 };
  const webpSmall = { type: 'image/webp', bytes: 200 };
  const webpBig = { type: 'image/webp', bytes: 1000 };
  assert.equal(pickEncoding([jpeg, webpBig], false), jpeg);
  assert.equal(pickEncoding([jpeg, webpSmall], false), webpSmall);
  assert.equal(pickEncoding([png, webpBig], true), png);
  assert.equal(pickEncoding([png, webpSmall], true), webpSmall);
  assert.equal(pickEncoding([jpeg], false), jpeg, 'no WebP encoder');
  assert.equal(pickEncoding([], false), null);
});

test('limits: auth.ok limits or the defaults; the image budget shrinks with text and images', () => {
  assert.deepEqual(limitsFrom({}), DEFAULT_LIMITS);
  assert.deepEqual(limitsFrom({ limits: { max_prompt_bytes: 5000000, max_frame_bytes: -1 } }), { ...DEFAULT_LIMITS, max_prompt_bytes: 5000000 });
  const limits = { max_frame_bytes: 4 * 1024 * 1024, max_prompt_bytes: 1024 * 1024, max_upload_bytes: 1 };
  const empty = imageBudget(limits, '', []);
  assert.ok(empty < limits.max_prompt_bytes && empty > limits.max_prompt_bytes - 4096);
  assert.ok(imageBudget(limits, 'x'.repeat(1000), []) <= empty - 1000);
  assert.ok(imageBudget(limits, '', [{ data: 'A'.repeat(500000) }]) <= empty - 500000);
  // The frame limit caps a prompt limit above it.
  assert.ok(imageBudget({ ...limits, max_prompt_bytes: 64 * 1024 * 1024 }, '', []) < limits.max_frame_bytes);
  assert.equal(base64Length(3), 4);
  assert.equal(base64Length(4), 8);
});

test('prompt content: text alone, or a text block then image blocks', () => {
  assert.equal(promptContent('hi', []), 'hi');
  assert.deepEqual(promptContent('look', [{ type: 'image/png', data: 'QUJD' }]), [
    { type: 'text', text: 'look' },
    { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'QUJD' } },
  ]);
  assert.deepEqual(promptContent('', [{ type: 'image/jpeg', data: 'QQ==' }]), [{ type: 'image', source: { type: 'base64', media_type: 'image/jpeg', data: 'QQ==' } }]);
});

test('uploads: a base name without control characters; the mention goes on its own word', () => {
  assert.equal(uploadName('C:\\logs\\crash.log'), 'crash.log');
  assert.equal(uploadName('../../etc/passwd'), 'passwd');
  assert.equal(uploadName('a\u0000b\u202e.txt'), 'ab.txt');
  assert.equal(uploadName(''), 'upload');
  assert.equal(withMention('', '.ccrelay/uploads/x.log'), '@.ccrelay/uploads/x.log ');
  assert.equal(withMention('read', 'p'), 'read @p ');
  assert.equal(withMention('read ', 'p'), 'read @p ');
});

test('the model: relay.plan, relay.settings, queued, scheduled and steering prompts, answers kept', () => {
  const log = new SessionLog('s');
  const evs = [
    { type: 'relay.state', state: 'busy' },
    { type: 'relay.prompt', prompt_id: 'p1', content: [{ type: 'text', text: 'look' }, { type: 'image', source: {} }] },
    { type: 'relay.prompt', prompt_id: 'p2', content: 'now', steer: true },
    { type: 'relay.prompt', prompt_id: 'p3', content: 'later', scheduled_at: '2030-01-01T00:00:00Z' },
    { type: 'control_request', request_id: 'r1', request: { subtype: 'can_use_tool', tool_name: 'ExitPlanMode', input: {} } },
    { type: 'relay.plan', request_id: 'r1', plan: '# Plan' },
    { type: 'relay.settings', settings: { permission_mode: 'plan', model: null }, changed: ['permission_mode'], model_in_effect: 'claude-x' },
    { type: 'relay.resolved', request_id: 'r1', client_id: 'c', device: 'phone', response: { behavior: 'allow', updatedInput: { a: 1 } } },
  ];
  evs.forEach((e, i) => log.apply(i + 1, e));
  const m = log.model;
  assert.equal(m.get('prompt:p1').images, 1);
  assert.equal(m.get('prompt:p1').queued, true, 'accepted while busy');
  assert.equal(m.get('prompt:p2').steer, true);
  assert.equal(m.get('prompt:p3').scheduledAt, '2030-01-01T00:00:00Z');
  assert.equal(m.plans.get('r1'), '# Plan');
  assert.deepEqual(m.settings, { permission_mode: 'plan', model: null, model_in_effect: 'claude-x' });
  assert.equal(m.settingsRev, 1);
  assert.deepEqual(m.get('perm:r1').response, { behavior: 'allow', updatedInput: { a: 1 } });
  // A rebuild (tail + history) gives the same facts.
  log.rebuild();
  assert.equal(log.model.plans.get('r1'), '# Plan');
  assert.equal(log.model.settings.permission_mode, 'plan');
});

test('the model: a prompt the server says is queued is queued, even while the session is idle', () => {
  const log = new SessionLog('s');
  log.apply(1, { type: 'relay.state', state: 'idle' });
  log.apply(2, { type: 'relay.prompt', prompt_id: 'c', client_id: 'relay', content: 'continue', scheduled_at: '2030-01-01T00:00:00Z', auto_continue: true });
  log.apply(3, { type: 'relay.prompt', prompt_id: 'w', content: 'waits for the reset', queued: true });
  log.apply(4, { type: 'relay.prompt', prompt_id: 'n', content: 'runs now' });
  assert.equal(log.model.get('prompt:c').autoContinue, true);
  assert.equal(log.model.get('prompt:w').queued, true, 'held behind the auto_continue');
  assert.equal(log.model.get('prompt:n').queued, false);
});

test('limitedUntil: only a rejected status with a readable reset time', () => {
  const at = '2026-12-07T15:00:00Z';
  assert.equal(limitedUntil({ rate_limit: { status: 'rejected', resets_at: at } }), Date.parse(at));
  assert.equal(limitedUntil({ rate_limit: { status: 'rejected', resets_at: '2026-12-07T16:00:00+01:00' } }), Date.parse(at));
  assert.equal(limitedUntil({ rate_limit: { status: 'allowed_warning', resets_at: at } }), null);
  assert.equal(limitedUntil({ rate_limit: { status: 'rejected', resets_at: null } }), null);
  assert.equal(limitedUntil({ rate_limit: { status: 'rejected', resets_at: 'soon' } }), null);
  assert.equal(limitedUntil({ rate_limit: null }), null);
  assert.equal(limitedUntil(null), null);
  assert.equal(limitedUntil('x'), null);
});
