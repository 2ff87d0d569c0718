// Unit tests of the page's pure modules: the applied-seq log (never skip, never apply
// twice, history prepends, rebuilds), the model's permission/tool bookkeeping, line
// diffs, the link filter of the Markdown renderer, and the origin a signature is bound to.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SessionLog } from '../js/session.js';
import { lineDiff, fileChange } from '../js/views/diff.js';
import { safeUrl } from '../js/views/markdown.js';
import { bindingOrigin, boundText, wsUrl } from '../js/protocol.js';

const delta = (text) => ({ type: 'stream_event', api_message_id: 'm1', event: { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } } });
const start = { type: 'stream_event', api_message_id: 'm1', event: { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } } };

test('the log applies each seq once and in order', () => {
  const log = new SessionLog('default');
  assert.equal(log.apply(1, start), 'applied');
  assert.equal(log.apply(2, delta('a')), 'applied');
  assert.equal(log.apply(2, delta('a')), 'duplicate');
  assert.equal(log.apply(1, start), 'duplicate');
  assert.equal(log.apply(4, delta('c')), 'gap');
  assert.equal(log.head, 2);
  assert.equal(log.apply(3, delta('b')), 'applied');
  assert.equal(log.model.get('text:m1:0').text, 'ab');
  assert.equal(log.apply(Number.NaN, delta('x')), 'duplicate');
});

test('a tail attach then history: the earlier events join in front, the view is rebuilt the same', () => {
  const all = [start, delta('1'), delta('2'), delta('3'), delta('4')];
  const full = new SessionLog('s');
  all.forEach((e, i) => full.apply(i + 1, e));
  const tail = new SessionLog('s');
  tail.reset(3);
  tail.apply(4, all[3]);
  tail.apply(5, all[4]);
  assert.equal(tail.model.get('text:m1:0').text, '34');
  // Not ending at base: refused.
  assert.equal(tail.prepend([{ seq: 1, event: all[0] }]), 0);
  assert.equal(tail.prepend([{ seq: 2, event: all[1] }, { seq: 1, event: all[0] }, { seq: 3, event: all[2] }]), 3);
  assert.equal(tail.base, 0);
  assert.equal(tail.model.get('text:m1:0').text, full.model.get('text:m1:0').text);
});

test('permission cards resolve, cancel, and name who answered', () => {
  const log = new SessionLog('s');
  const req = (id) => ({ type: 'control_request', request_id: id, request: { subtype: 'can_use_tool', tool_name: 'Bash', input: { command: 'ls' }, permission_suggestions: [{ type: 'addRules' }], tool_use_id: 't1' } });
  log.apply(1, req('r1'));
  log.apply(2, { type: 'relay.resolved', request_id: 'r1', client_id: 'c', fingerprint: 'SHA256:x', device: 'phone', response: { behavior: 'allow' } });
  assert.deepEqual([log.model.get('perm:r1').resolved, log.model.get('perm:r1').by], ['allow', 'phone']);
  log.apply(3, req('r2'));
  log.apply(4, { type: 'relay.resolved', request_id: 'r2', client_id: 'relay', response: { behavior: 'deny', message: 'no answer' } });
  assert.deepEqual([log.model.get('perm:r2').resolved, log.model.get('perm:r2').by], ['deny', 'relay']);
  log.apply(5, req('r3'));
  log.apply(6, { type: 'control_cancel_request', request_id: 'r3' });
  assert.equal(log.model.get('perm:r3').resolved, 'cancelled');
  // Pending list from `attached` for a request whose event is not in the log.
  log.setPending([req('r9')]);
  assert.equal(log.model.get('perm:r9').resolved, '');
  assert.equal(log.model.get('perm:r9').suggestions.length, 1);
});

test('prompt keys are remembered for the resend check', () => {
  const log = new SessionLog('s');
  log.apply(1, { type: 'relay.prompt', prompt_id: 'p', client_id: 'c', fingerprint: 'f', key: 'web-1', content: [{ type: 'text', text: 'hi' }] });
  assert.ok(log.hasPromptKey('web-1'));
  assert.ok(!log.hasPromptKey('web-2'));
  assert.equal(log.model.get('prompt:p').text, 'hi');
});

test('line diffs', () => {
  assert.deepEqual(lineDiff('a\nb\nc', 'a\nB\nc'), [{ op: ' ', text: 'a' }, { op: '-', text: 'b' }, { op: '+', text: 'B' }, { op: ' ', text: 'c' }]);
  assert.deepEqual(lineDiff('', 'x'), [{ op: '+', text: 'x' }]);
  assert.equal(fileChange('Bash', { command: 'ls' }), null);
  assert.equal(fileChange('MultiEdit', { file_path: 'f', edits: [{ old_string: 'a', new_string: 'b' }, {}] }).hunks.length, 2);
});

test('only http(s) and mailto links survive', () => {
  assert.equal(safeUrl('https://example.com/x'), 'https://example.com/x');
  assert.equal(safeUrl('mailto:a@b.c'), 'mailto:a@b.c');
  for (const bad of ['javascript:alert(1)', 'JaVaScRiPt:alert(1)', 'java\tscript:alert(1)', ' javascript:x', 'data:text/html,x', 'vbscript:x', '//evil.example', '/relative']) {
    assert.equal(safeUrl(bad), null, bad);
  }
});

test('assistant lines match streamed text blocks even when other blocks (thinking) have no line', () => {
  const log = new SessionLog('s');
  const ev = (event) => ({ type: 'stream_event', api_message_id: 'm', event });
  let seq = 0;
  const put = (e) => assert.equal(log.apply(++seq, e), 'applied');
  put(ev({ type: 'content_block_start', index: 0, content_block: { type: 'thinking', thinking: '' } }));
  put(ev({ type: 'content_block_start', index: 1, content_block: { type: 'text', text: '' } }));
  put(ev({ type: 'content_block_delta', index: 1, delta: { type: 'text_delta', text: 'Hel' } }));
  put({ type: 'assistant', message: { id: 'm', content: [{ type: 'text', text: 'Hello' }] } });
  put(ev({ type: 'content_block_start', index: 2, content_block: { type: 'tool_use', id: 'tu', name: 'Bash', input: {} } }));
  put({ type: 'assistant', message: { id: 'm', content: [{ type: 'tool_use', id: 'tu', name: 'Bash', input: { command: 'ls' } }] } });
  put(ev({ type: 'content_block_start', index: 3, content_block: { type: 'text', text: '' } }));
  put(ev({ type: 'content_block_delta', index: 3, delta: { type: 'text_delta', text: 'Done' } }));
  put({ type: 'assistant', message: { id: 'm', content: [{ type: 'text', text: 'Done.' }] } });
  const texts = log.model.items.filter((i) => i.kind === 'text').map((i) => i.text);
  assert.deepEqual(texts, ['Hello', 'Done.']);
  assert.equal(log.model.items.filter((i) => i.kind === 'tool').length, 1);
  // Without partial messages: one item per text line.
  const plain = new SessionLog('p');
  plain.apply(1, { type: 'assistant', message: { id: 'x', content: [{ type: 'text', text: 'A' }] } });
  plain.apply(2, { type: 'assistant', message: { id: 'x', content: [{ type: 'text', text: 'B' }] } });
  assert.deepEqual(plain.model.items.map((i) => i.text), ['A', 'B']);
});

test('the origin a client binds is its WebSocket URL serialized as a browser serializes an origin', () => {
  assert.equal(bindingOrigin('ws://127.0.0.1:7878/v1/ws'), 'ws://127.0.0.1:7878');
  assert.equal(bindingOrigin('WSS://Relay.Example:443/v1/ws'), 'wss://relay.example', 'lower case, default port left out');
  assert.equal(bindingOrigin('ws://relay.example:80/v1/ws'), 'ws://relay.example');
  assert.equal(bindingOrigin('wss://relay.example:80/v1/ws'), 'wss://relay.example:80', 'only the scheme’s own default is left out');
  assert.equal(bindingOrigin('wss://[FD7A:0:0:0:0:0:0:1]:8443/v1/ws'), 'wss://[fd7a::1]:8443', 'IPv6 in brackets, RFC 5952');
  assert.equal(bindingOrigin('wss://Bücher.example/v1/ws'), 'wss://xn--bcher-kva.example', 'IDNA');
  assert.equal(bindingOrigin(wsUrl({ protocol: 'https:', host: 'relay.example' })), 'wss://relay.example');
  assert.equal(bindingOrigin(wsUrl({ protocol: 'http:', host: '127.0.0.1:7878' })), 'ws://127.0.0.1:7878');
  assert.equal(boundText('ccrelay-auth-v1:id:nonce', 'ws://127.0.0.1:7878'), 'ccrelay-auth-v1:id:nonce:origin:ws://127.0.0.1:7878');
});
