// Unit tests of the sessions pieces that need no browser: the directory of sessions
// (session.list + session.changed merging, unread marks, requests elsewhere, recent
// directories), a log per session kept apart by uid, the resume command, and another
// session's requests fetched whole once each (peek.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Directory, relativeTime, parentDir, childDir, resumeCommand, cleanTitle, TITLE_MAX } from '../js/directory.js';
import { Store } from '../js/session.js';
import { OtherRequests, PEEK_RETRY_MS } from '../js/peek.js';

/** An in-memory localStorage. */
function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => (m.has(k) ? m.get(k) : null), setItem: (k, v) => m.set(k, String(v)), map: m };
}

const entry = (session, uid, fields = {}) => ({ session, uid, state: 'idle', head: 0, clients: 0, title: session, last_activity: '2026-01-01T10:00:00Z', closable: true, pending: [], ...fields });

test('session.changed adds, updates and removes entries; a late "closed" of an old uid keeps the successor', () => {
  const d = new Directory(memoryStorage());
  d.setList([entry('default', 'u0', { closable: false }), entry('api', 'u1', { head: 4 })]);
  assert.deepEqual(d.sorted().map((e) => e.session).sort(), ['api', 'default']);
  // A new session.
  let r = d.changed({ type: 'session.changed', session: 'web', uid: 'u2', change: 'created', entry: entry('web', 'u2', { title: 'Web UI' }) });
  assert.deepEqual(r, { closed: null, replaced: null });
  assert.equal(d.get('web').title, 'Web UI');
  // A state change carries the whole entry.
  d.changed({ type: 'session.changed', session: 'api', uid: 'u1', change: 'state', entry: entry('api', 'u1', { state: 'busy', head: 9 }) });
  assert.equal(d.get('api').state, 'busy');
  assert.equal(d.get('api').head, 9);
  // An older entry crossing a newer one never moves the head back.
  d.changed({ type: 'session.changed', session: 'api', uid: 'u1', change: 'pending', entry: entry('api', 'u1', { state: 'busy', head: 7 }) });
  assert.equal(d.get('api').head, 9);
  // Closed, then the name reused by a new session: the stale "closed" of u1 removes nothing.
  r = d.changed({ type: 'session.changed', session: 'api', uid: 'u1', change: 'closed', entry: entry('api', 'u1') });
  assert.equal(r.closed, 'api');
  assert.equal(d.get('api'), null);
  d.changed({ type: 'session.changed', session: 'api', uid: 'u3', change: 'created', entry: entry('api', 'u3') });
  r = d.changed({ type: 'session.changed', session: 'api', uid: 'u1', change: 'closed', entry: entry('api', 'u1') });
  assert.equal(r.closed, null);
  assert.equal(d.get('api').uid, 'u3');
  // A name that changed hands without a "closed" seen (a missed frame): reported as replaced.
  r = d.changed({ type: 'session.changed', session: 'api', uid: 'u4', change: 'created', entry: entry('api', 'u4') });
  assert.equal(r.replaced, 'api');
});

test('unread: events that arrived after the page last showed a session; seen marks survive a reload', () => {
  const storage = memoryStorage();
  const d = new Directory(storage);
  d.setList([entry('a', 'ua', { head: 10 }), entry('b', 'ub', { head: 3 })]);
  // First sight: nothing counts as new.
  assert.equal(d.unread('a'), 0);
  d.changed({ session: 'a', uid: 'ua', change: 'state', entry: entry('a', 'ua', { head: 15 }) });
  assert.equal(d.unread('a'), 5);
  d.markSeen('a', 12);
  assert.equal(d.unread('a'), 3);
  d.markSeen('a', 15);
  assert.equal(d.unread('a'), 0);
  // The page may be ahead of the list (it applied events the list has not reported yet).
  d.markSeen('b', 8);
  assert.equal(d.get('b').head, 8);
  assert.equal(d.unread('b'), 0);
  // Another page of this browser, later: same marks.
  const again = new Directory(storage);
  again.setList([entry('a', 'ua', { head: 20 }), entry('b', 'ub', { head: 8 })]);
  assert.equal(again.unread('a'), 5);
  assert.equal(again.unread('b'), 0);
  // A session without uid (an older server) is never "unread".
  again.setList([{ session: 'old', head: 50 }]);
  assert.equal(again.unread('old'), 0);
});

test('requests waiting elsewhere come from the entries’ pending lists, not the visible session', () => {
  const d = new Directory(memoryStorage());
  d.setList([
    entry('a', 'ua', { pending: [{ request_id: 'r1', tool: 'Bash', summary: 'ls' }] }),
    entry('b', 'ub', { title: 'Bee', pending: [{ request_id: 'r2', tool: 'Write', summary: 'x.txt' }, { bogus: true }] }),
  ]);
  assert.deepEqual(d.pendingElsewhere('a').map((p) => [p.session, p.requestId, p.tool, p.title]), [['b', 'r2', 'Write', 'Bee']]);
  assert.equal(d.pendingElsewhere('none').length, 2);
  d.changed({ session: 'b', uid: 'ub', change: 'pending', entry: entry('b', 'ub', { pending: [] }) });
  assert.equal(d.pendingElsewhere('a').length, 0);
});

test('recent directories: created from this browser first, then current sessions’ workdirs, no repeats', () => {
  const d = new Directory(memoryStorage());
  d.setList([entry('a', 'ua', { workdir: '/w/a' }), entry('b', 'ub', { workdir: '/w/b' })]);
  d.rememberDir('/w/b');
  d.rememberDir('/w/new');
  assert.deepEqual(d.recentDirs(), ['/w/new', '/w/b', '/w/a']);
  for (let i = 0; i < 30; i += 1) d.rememberDir(`/w/${i}`);
  assert.equal(d.recentDirs().length, 12, 'bounded');
});

test('a log per session: another uid under the same name starts a fresh log, never the old events', () => {
  const store = new Store();
  const a = store.logFor('api', 'u1');
  a.apply(1, { type: 'relay.state', state: 'idle' });
  a.apply(2, { type: 'relay.state', state: 'busy' });
  assert.equal(store.logFor('api', 'u1').head, 2, 'the same session keeps its since');
  assert.equal(store.logFor('api', '').head, 2, 'an unknown uid does not drop it');
  const b = store.logFor('api', 'u2');
  assert.notEqual(b, a);
  assert.equal(b.head, 0);
  assert.equal(b.uid, 'u2');
  // Two sessions' heads advance independently; a repeat or a gap is refused per session.
  const other = store.logFor('web', 'w1');
  assert.equal(other.apply(1, { type: 'relay.state', state: 'idle' }), 'applied');
  assert.equal(b.apply(2, {}), 'gap');
  assert.equal(other.apply(1, {}), 'duplicate');
  store.drop('web');
  assert.equal(store.log('web').head, 0);
});

test('relay.closed marks the model closed and leaves a notice', () => {
  const store = new Store();
  const l = store.log('api');
  l.apply(1, { type: 'relay.closed', by: 'c1', device: 'phone' });
  assert.deepEqual(l.model.closed, { by: 'phone' });
  assert.match(l.model.items[0].text, /closed by phone/);
});

test('small helpers: relative time, parent and child paths, the resume command', () => {
  const now = Date.parse('2026-01-01T12:00:00Z');
  assert.equal(relativeTime('2026-01-01T11:59:30Z', now), 'now');
  assert.equal(relativeTime('2026-01-01T11:55:00Z', now), '5 min');
  assert.equal(relativeTime('2026-01-01T09:00:00Z', now), '3 h');
  assert.equal(relativeTime('2025-12-29T12:00:00Z', now), '3 d');
  assert.equal(relativeTime('garbage', now), '');
  assert.equal(parentDir('/home/u/src/'), '/home/u');
  assert.equal(parentDir('/home'), '/');
  assert.equal(childDir('/home/u/', 'api'), '/home/u/api');
  assert.equal(resumeCommand('0b5c1a2e-7f3d-4c1b-9a8e-1234567890ab'), 'claude --resume 0b5c1a2e-7f3d-4c1b-9a8e-1234567890ab');
  assert.equal(resumeCommand('x; rm -rf /'), '', 'never a command built from odd text');
  assert.equal(resumeCommand(undefined), '');
});

test('another session\'s requests: fetched once per request, kept while pending, not asked again at once after a failure', async () => {
  const calls = [];
  let answer = [];
  let fail = false;
  let now = 1000;
  let changed = 0;
  const others = new OtherRequests(async (session, uid) => {
    calls.push([session, uid]);
    if (fail) throw new Error('no_such_session');
    return answer;
  }, () => changed++, () => now);
  const raw = (id, tool) => ({ type: 'control_request', request_id: id, request: { subtype: 'can_use_tool', tool_name: tool, input: { command: 'ls' } } });
  const r1 = { session: 'api', uid: 'u1', requestId: 'r1' };
  const r2 = { session: 'api', uid: 'u1', requestId: 'r2' };
  answer = [raw('r1', 'Bash'), raw('r2', 'Edit'), { type: 'other' }, null];
  assert.equal(others.get(r1), null, 'unknown at first: a fetch starts');
  assert.equal(others.loading(r1), true);
  assert.equal(others.get(r1), null, 'a second call while it runs asks nothing more');
  await Promise.resolve();
  await Promise.resolve();
  assert.deepEqual(calls, [['api', 'u1']]);
  assert.equal(changed, 1);
  assert.equal(others.get(r1).request.tool_name, 'Bash');
  assert.equal(others.get(r2).request.tool_name, 'Edit', 'one fetch brings every open request of the session');
  assert.equal(calls.length, 1);
  // A request the fetch did not list (answered meanwhile) is not asked for again.
  const r3 = { session: 'web', uid: 'u2', requestId: 'r3' };
  answer = [];
  others.get(r3);
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(others.get(r3), null);
  assert.equal(others.loading(r3), false);
  assert.equal(calls.length, 2);
  // Only what is still pending elsewhere is kept.
  others.retain([r2]);
  assert.equal(others.get(r2).request_id, 'r2');
  assert.equal(others.known.size, 1);
  assert.equal(others.missing.size, 0);
  // A failed fetch: not asked again within PEEK_RETRY_MS, then asked again.
  fail = true;
  const r4 = { session: 'gone', uid: 'u9', requestId: 'r4' };
  others.get(r4);
  await Promise.resolve();
  await Promise.resolve();
  assert.equal(calls.length, 3);
  others.get(r4);
  assert.equal(calls.length, 3);
  now += PEEK_RETRY_MS;
  others.get(r4);
  assert.equal(calls.length, 4);
});

test('a typed title is cleaned before session.rename', () => {
  assert.equal(cleanTitle('  Login \n\t bug  '), 'Login bug');
  assert.equal(cleanTitle('a\u202eb\u200bc'), 'abc', 'no bidi overrides or zero-width characters');
  assert.equal(cleanTitle(' \u0000 \n '), '');
  assert.equal(cleanTitle('é'.repeat(200)), 'é'.repeat(TITLE_MAX));
  assert.equal(Array.from(cleanTitle('😀'.repeat(100))).length, TITLE_MAX, 'counted in characters, never splitting one');
});
