// The page's protocol against the Rust types, through shared fixtures
// (fixtures/protocol/: one request per file in client/, one server frame per file
// in server/, one relay event per file in event/). tests/it/protocol_fixtures.rs reads
// every fixture into the server's own types and fails on an unknown type or a field
// too many or too few; this file checks that the page's builders produce exactly
// those fixtures and that every type the page sends or switches on has one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { msg, answer } from '../js/protocol.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const web = path.resolve(here, '..');
const fixtureDir = path.join(here, 'fixtures', 'protocol');

function fixtures(kind) {
  const dir = path.join(fixtureDir, kind);
  const out = new Map();
  for (const name of fs.readdirSync(dir).filter((n) => n.endsWith('.json'))) {
    const value = JSON.parse(fs.readFileSync(path.join(dir, name), 'utf8'));
    assert.equal(`${value.type}.json`, name, `${kind}/${name}: \`type\` and file name differ`);
    out.set(value.type, value);
  }
  return out;
}

const client = fixtures('client');
const server = fixtures('server');
const events = fixtures('event');

// How each builder of `msg` is called to produce its fixture. A builder added to
// protocol.js without a line here (and so without a fixture) fails the test.
const calls = {
  authResponse: (f) => [f.signature, f.public_key, f.device, f.origin],
  pairRequest: (f) => [f.signature, f.public_key, f.device, f.origin],
  pairRespond: (f) => [f.id, f.pair_id, f.allow, f.role, f.block],
  pairInvite: (f) => [f.id, f.role],
  ping: (f) => [f.id],
  sessionList: (f) => [f.id],
  attach: (f) => [f.id, f.session, { since: f.since, tail: f.tail }],
  detach: (f) => [f.id, f.session],
  prompt: (f) => [f.id, f.session, f.content, f.key],
  respond: (f) => [f.id, f.session, f.request_id, answer.always(f.response.updatedPermissions)],
  interrupt: (f) => [f.id, f.session],
  history: (f) => [f.id, f.session, f.before, f.limit],
  visible: (f) => [f.id, f.visible],
  pushSubscribe: (f) => [f.id, f.subscription],
  pushUnsubscribe: (f) => [f.id, f.endpoint],
  keysList: (f) => [f.id],
  keysRename: (f) => [f.id, f.fingerprint, f.device],
  keysRevoke: (f) => [f.id, f.fingerprint],
  sessionCreate: (f) => [f.id, { workdir: f.workdir, name: f.name, worktree: f.worktree, resume: f.resume, settings: f.settings }, f.key],
  sessionClose: (f) => [f.id, f.session, f.remove_worktree],
  sessionRename: (f) => [f.id, f.session, f.title],
  conversationsList: (f) => [f.id, f.workdir, f.limit, f.before],
  dirsList: (f) => [f.id, f.path],
  filesStatus: (f) => [f.id, f.session],
  filesDiff: (f) => [f.id, f.session, f.path, f.base],
  filesList: (f) => [f.id, f.session, f.path],
  filesRead: (f) => [f.id, f.session, f.path, f.offset, f.max_bytes],
  sessionSet: (f) => [f.id, f.session, f.settings],
  sessionCatalog: (f) => [f.id, f.session],
  sessionUsage: (f) => [f.id, f.session],
  promptCancel: (f) => [f.id, f.session, f.prompt_id],
  fileUpload: (f) => [f.id, f.session, f.name, f.data],
};

// Requests the server takes that the page has no use for.
const notSentByPage = new Set(['session.restart']);

test('every request the page builds is exactly its fixture', () => {
  assert.deepEqual(Object.keys(msg).sort(), Object.keys(calls).sort(), 'builders in protocol.js vs this table');
  const built = new Set();
  for (const [name, build] of Object.entries(msg)) {
    // The builder's type, from a call with the fixture it names.
    const probe = build(...calls[name]({ response: {} }));
    const fixture = client.get(probe.type);
    assert.ok(fixture, `msg.${name} sends \`${probe.type}\`, which has no fixture in fixtures/protocol/client/`);
    const m = JSON.parse(JSON.stringify(build(...calls[name](fixture))));
    assert.deepEqual(m, fixture, `msg.${name} builds a different field set than client/${probe.type}.json`);
    built.add(probe.type);
  }
  for (const type of client.keys()) {
    assert.ok(built.has(type) || notSentByPage.has(type), `the server takes \`${type}\` but the page has no builder for it`);
  }
});

test('permission answers are the fixture shapes the server takes', () => {
  assert.deepEqual(answer.allow(), { behavior: 'allow' });
  assert.deepEqual(answer.always(client.get('respond').response.updatedPermissions), client.get('respond').response);
  assert.deepEqual(answer.deny('no'), { behavior: 'deny', message: 'no' });
  assert.deepEqual(answer.deny(), { behavior: 'deny' });
});

// The agent's own stream-json events (relayed untyped) and the page's internal
// frames (made by connection.js for app.js): not wire types of the relay.
const agentEvents = new Set(['stream_event', 'assistant', 'user', 'system', 'result', 'control_request', 'control_cancel_request']);
const pageInternal = new Set(['prompt.ok', 'prompt.failed']);

/** The types a module switches on: `case '<type>':` and `m.type === '<type>'`. */
function handledTypes(file) {
  const text = fs.readFileSync(path.join(web, 'js', file), 'utf8');
  const found = new Set();
  for (const re of [/case '([a-z_.]+)':/g, /\bm\.type === '([a-z_.]+)'/g]) {
    for (const hit of text.matchAll(re)) found.add(hit[1]);
  }
  return found;
}

test('every frame and event the page handles has a fixture', () => {
  const handled = new Set([...handledTypes('connection.js'), ...handledTypes('app.js'), ...handledTypes('session.js')]);
  assert.ok(handled.has('auth.challenge') && handled.has('relay.turn'), `the scan found ${[...handled]}`);
  const missing = [...handled].filter((t) => !agentEvents.has(t) && !pageInternal.has(t) && !server.has(t) && !events.has(t));
  assert.deepEqual(missing, [], 'handled by the page, but no fixture in fixtures/protocol/server or event/');
  for (const type of events.keys()) {
    assert.ok(handled.has(type), `the relay writes \`${type}\` events but the page never handles them`);
  }
});
