#!/usr/bin/env node
// A small, complete ccrelay client for Node.js, written from docs/protocol.md alone.
//
// It authenticates with an SSH key (signed by `ssh-keygen -Y sign`), attaches to
// the `default` session, sends one prompt, answers the permission prompt that
// prompt causes, disconnects on purpose after the answer and resumes on a new
// connection with `since` = the last seq it saw, until the turn has ended.
//
//   node ccrelay-client.mjs ws://127.0.0.1:7878/v1/ws --key ~/.ssh/id_ed25519
//   node ccrelay-client.mjs URL --key KEY --prompt 'please run-bash echo hi' --deny
//   node ccrelay-client.mjs URL --key KEY --bad-signature   # a deliberately wrong signature
//
// Origin binding: the signed text is `<sign>:origin:<origin>`, the challenge bound to
// the origin this client dialed (`ws://127.0.0.1:7878` for the URL above), never the
// bare challenge; `origin` goes along in `auth.response`. A server reached under a name
// it does not know (a forwarded port, a proxy's name) refuses it until it is started
// with `--server-name HOST:PORT` naming that address.
//
// Needs: Node 18+, `npm ci` here (the `ws` package), OpenSSH's ssh-keygen.
// Exit status: 0 the turn ended; 2 usage; 3 authentication refused; 1 other errors.

import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';

const NAMESPACE = 'ccrelay-auth';
// Event frames can carry an agent line of up to 32 MiB: accept 64 MiB frames.
const MAX_FRAME = 64 * 1024 * 1024;

const out = (line) => process.stdout.write(line + '\n');

class Refused extends Error {}

/**
 * The origin a signature is bound to: the scheme, host and port of the URL this client
 * dials, serialized as a browser serializes an origin. WHATWG URL parsing (ws and wss
 * are special schemes) lower-cases the host, converts IDNA, writes IPv6 in brackets
 * in RFC 5952 form and drops the scheme's default port: `ws://127.0.0.1:7878`.
 */
function dialedOrigin(url) {
  const u = new URL(url);
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new Error(`not a ws:// or wss:// URL: ${url}`);
  return `${u.protocol.slice(0, -1)}://${u.host}`;
}

/** `printf '%s' "$TEXT" | ssh-keygen -Y sign -n ccrelay-auth -f KEY` */
function sign(keyPath, text) {
  return execFileSync('ssh-keygen', ['-q', '-Y', 'sign', '-n', NAMESPACE, '-f', keyPath], {
    input: Buffer.from(text, 'utf8'), // exactly these bytes, no trailing newline
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

/** A WebSocket whose text frames are read one at a time with `await next()`. */
class Connection {
  constructor(url) {
    this.ws = new WebSocket(url, { maxPayload: MAX_FRAME });
    this.queue = [];
    this.waiters = [];
    this.closed = null;
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      this.push({ frame: JSON.parse(data.toString('utf8')) });
    });
    this.ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.push({ closed: this.closed });
    });
    this.ws.on('error', (err) => this.push({ error: err }));
  }

  push(item) {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.queue.push(item);
  }

  /** The next frame; throws with the close code when the connection closed. */
  async next() {
    const item = this.queue.length
      ? this.queue.shift()
      : await new Promise((resolve) => this.waiters.push(resolve));
    if (item.error) throw item.error;
    if (item.closed) {
      const err = new Error(`connection closed ${item.closed.code} ${item.closed.reason}`);
      err.closeCode = item.closed.code;
      // Later reads see the close again.
      this.queue.unshift(item);
      throw err;
    }
    return item.frame;
  }

  send(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  async close() {
    if (this.closed) return;
    const done = new Promise((resolve) => this.ws.once('close', resolve));
    this.ws.close(1000);
    await done;
  }
}

class PromptRun {
  constructor(opts) {
    this.opts = opts;
    this.requestNo = 0;
    this.lastSeq = 0;
    this.promptId = null;
    this.answered = false;
    this.turnOver = false;
  }

  async connect() {
    const conn = new Connection(this.opts.url);
    const challenge = await conn.next();
    if (challenge.type !== 'auth.challenge') throw new Error(`expected auth.challenge, got ${challenge.type}`);
    const origin = dialedOrigin(this.opts.url);
    let text = `${challenge.sign}:origin:${origin}`;
    if (this.opts.badSignature) text += ':not-the-challenge'; // a valid SSHSIG over the wrong bytes
    conn.send({ type: 'auth.response', signature: sign(this.opts.key, text), origin, device: this.opts.device });
    const answer = await conn.next().catch((e) => {
      throw new Refused(`closed ${e.closeCode}`);
    });
    if (answer.type !== 'auth.ok') {
      const close = await conn.next().then(
        () => null,
        (e) => e.closeCode,
      );
      throw new Refused(`${answer.code} close ${close}`);
    }
    out(`authenticated role=${answer.role} fingerprint=${answer.fingerprint}`);
    return conn;
  }

  /** Send a request with a fresh id; return its direct reply, handling frames that come first. */
  async request(conn, frame) {
    const id = ++this.requestNo;
    conn.send({ ...frame, id });
    for (;;) {
      const reply = await conn.next();
      if (reply.id === id) return reply;
      await this.onFrame(conn, reply);
    }
  }

  async onFrame(conn, frame) {
    if (frame.type !== 'event') return;
    const { seq, event } = frame;
    if (this.lastSeq && seq !== this.lastSeq + 1) throw new Error(`gap: seq ${seq} after ${this.lastSeq}`);
    this.lastSeq = seq;
    if (event.type === 'control_request') {
      await this.answer(conn, event);
    } else if (event.type === 'user') {
      for (const block of event.message?.content ?? []) {
        if (block?.type !== 'tool_result') continue;
        const content = Array.isArray(block.content)
          ? block.content.map((c) => c.text ?? '').join('')
          : String(block.content);
        out(`tool result: ${content.trim()}`);
      }
    } else if (event.type === 'result') {
      out(`result: ${event.subtype} ${String(event.result ?? '').trim()}`);
    } else if (event.type === 'relay.turn' && event.prompt_id === this.promptId) {
      if (event.phase === 'ended' || event.phase === 'aborted') {
        out(`turn ${event.phase} at seq ${seq}`);
        this.turnOver = true;
      }
    }
  }

  /** Answer a permission prompt (other control requests are left to other clients). */
  async answer(conn, controlRequest) {
    const request = controlRequest.request ?? {};
    if (request.subtype !== 'can_use_tool') return;
    out(`permission asked: ${request.tool_name} ${JSON.stringify(request.input)}`);
    const behavior = this.opts.deny ? 'deny' : 'allow';
    const reply = await this.request(conn, {
      type: 'respond',
      session: 'default',
      request_id: controlRequest.request_id,
      response: { behavior },
    });
    if (reply.type === 'ok') {
      out(`permission answered: ${behavior}`);
      // Only a prompt our own prompt caused ends the first connection.
      this.answered ||= this.promptId !== null;
    } else {
      out(`permission answer refused: ${reply.code}`); // another device was first
    }
  }

  async readUntil(conn, done) {
    while (!done()) await this.onFrame(conn, await conn.next());
  }

  async run() {
    let conn = await this.connect();
    let attached = await this.request(conn, { type: 'attach', session: 'default', tail: 0 });
    out(`attached head=${attached.head} state=${attached.state}`);
    this.lastSeq = attached.head;
    // Requests opened before we came (by another client's prompt) are listed in
    // `pending`; a device shows them like any other, and may answer them.
    for (const pending of attached.pending) await this.answer(conn, pending);
    const ok = await this.request(conn, {
      type: 'prompt',
      session: 'default',
      content: this.opts.prompt,
      key: randomUUID(),
    });
    if (ok.type !== 'ok') throw new Error(`prompt refused: ${JSON.stringify(ok)}`);
    this.promptId = ok.prompt_id;
    out(`prompt accepted prompt_id=${this.promptId}`);
    // Follow the turn until the permission prompt was answered, then drop the connection on purpose.
    await this.readUntil(conn, () => this.answered || this.turnOver);
    await conn.close();
    out(`disconnected after seq ${this.lastSeq}`);
    if (this.turnOver) return;
    // Resume: a new connection (a new client_id), attach with since = the last seq seen.
    conn = await this.connect();
    attached = await this.request(conn, { type: 'attach', session: 'default', since: this.lastSeq });
    out(
      `resumed since=${this.lastSeq} replay_from=${attached.replay_from} head=${attached.head} truncated=${attached.truncated}`,
    );
    if (attached.truncated) throw new Error('the server no longer has the events we missed');
    await this.readUntil(conn, () => this.turnOver);
    await conn.close();
  }
}

function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        key: { type: 'string' },
        prompt: { type: 'string', default: 'please run-bash echo hello-from-node' },
        device: { type: 'string', default: 'node-example' },
        deny: { type: 'boolean', default: false },
        'bad-signature': { type: 'boolean', default: false },
      },
    });
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1 || !values.key) {
    process.stderr.write('usage: ccrelay-client.mjs ws://HOST:PORT/v1/ws --key KEYFILE [--prompt TEXT] [--deny] [--bad-signature]\n');
    process.exit(2);
  }
  const run = new PromptRun({
    url: positionals[0],
    key: values.key,
    prompt: values.prompt,
    device: values.device,
    deny: values.deny,
    badSignature: values['bad-signature'],
  });
  run.run().then(
    () => process.exit(0),
    (e) => {
      if (e instanceof Refused) {
        out(`authentication refused: ${e.message}`);
        process.exit(3);
      }
      out(`error: ${e.message}`);
      process.exit(1);
    },
  );
}

main();
