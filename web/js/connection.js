// connection.js — the only code that touches the WebSocket. Owns: authentication
// (auth.response or pair.request, signed by the device key over the challenge bound
// to the origin the socket dialed), the application-level
// ping (`{"type":"ping"}`), reconnecting with backoff and re-attaching with
// `since` = the last applied seq, re-attaching on a gap, waking up on
// `visibilitychange` / `online` / `pageshow` (mobile browsers kill sockets silently),
// and the prompt outbox: a prompt stays there until its `ok` arrives, and after a
// reconnect it is sent again with the same `key` unless the replay already holds
// that key's `relay.prompt`. Only the sessions kept attached have their events
// applied; another session's open requests are fetched whole by a brief attach
// (`peekPending`). It reports the page's visibility (`client.visible`,
// docs/protocol.md §9.2.1) after every authentication and on every `visibilitychange`. Events go
// into the Store (session.js); other frames go to `onframe`. Must not: render anything.

import { CLOSE, bindingOrigin, boundText, msg, newKey } from './protocol.js';

const PING_EVERY_MS = 15000;
const DEAD_AFTER_MS = 40000;
const WAKE_PROBE_MS = 4000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;

export class Connection {
  /**
   * @param {object} o
   * @param {string} o.url  ws(s) URL
   * @param {import('./keys.js').DeviceKey} o.key
   * @param {() => string} o.device  the device name
   * @param {import('./session.js').Store} o.store
   */
  constructor({ url, key, device, store }) {
    this.url = url;
    this.key = key;
    this.device = device;
    this.store = store;
    this.ws = null;
    this.mode = 'auth';
    this.state = 'connecting';
    this.authed = false;
    this.nextId = 1;
    this.waiting = new Map(); // id → {resolve, reject}
    this.sessions = new Set(); // sessions to keep attached
    this.attaching = new Map(); // session → attach id in flight
    this.outbox = []; // {key, session, content, sentId, state}
    this.backoff = BACKOFF_MIN_MS;
    this.retryTimer = null;
    this.pingTimer = null;
    this.wakeTimer = null;
    this.lastRx = 0;
    this.stopped = false;
    this.challenge = null;
    this.authOk = null;
    this.invite = null; // a pairing invite's token, sent with the next pair.request
    // Callbacks set by the app.
    this.onstate = () => {};
    this.onauth = () => {};
    this.onframe = () => {};
    this.onchange = () => {}; // store or outbox changed
    this.onpair = () => {};
    this.onrefused = () => {};
    this.onattachfailed = () => {}; // (session, error frame): an attach was refused
    this.installWakeups();
  }

  setState(state, detail = '') {
    this.state = state;
    this.onstate(state, detail);
  }

  /** Open (or reopen) the socket; `mode` is 'auth' or 'pair'. */
  open(mode = this.mode) {
    this.mode = mode;
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.drop();
    this.setState(this.authOk ? 'reconnecting' : mode === 'pair' ? 'pairing' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this.scheduleRetry(String(e));
      return;
    }
    this.ws = ws;
    ws.onmessage = (e) => {
      if (this.ws !== ws) return;
      this.lastRx = Date.now();
      clearTimeout(this.wakeTimer);
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m && typeof m === 'object') this.frame(m);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.closed(e.code, e.reason);
    };
  }

  /** Stop for good (the page decides what happens next). */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.drop();
  }

  drop() {
    clearInterval(this.pingTimer);
    clearTimeout(this.wakeTimer);
    this.pingTimer = null;
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onmessage = null;
      ws.onclose = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
    }
    this.authed = false;
    this.attaching.clear();
    for (const [, w] of this.waiting) w.reject(new Error('disconnected'));
    this.waiting.clear();
    for (const p of this.outbox) if (p.state === 'sent') p.state = 'unsent';
  }

  closed(code, reason) {
    const wasAuthed = this.authed;
    this.drop();
    this.onchange();
    if (this.stopped) return;
    if (code === CLOSE.POLICY && !wasAuthed) {
      // Refused before authentication: the page decides (pairing or refused).
      return;
    }
    this.scheduleRetry(reason || `closed (${code})`);
  }

  scheduleRetry(detail) {
    if (this.stopped) return;
    this.setState(navigator.onLine === false ? 'offline' : 'reconnecting', detail);
    clearTimeout(this.retryTimer);
    const wait = this.backoff * (0.75 + Math.random() * 0.5);
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.retryTimer = setTimeout(() => this.open(), wait);
  }

  send(m) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(m));
    return true;
  }

  /** Send a request with an id; resolves with the direct reply (an `error` rejects). */
  request(build) {
    const id = this.nextId++;
    const m = build(id);
    return new Promise((resolve, reject) => {
      if (!this.authed || !this.send(m)) {
        reject(new Error('not connected'));
        return;
      }
      this.waiting.set(id, { resolve, reject });
    });
  }

  async frame(m) {
    if (!this.authed) {
      await this.preAuth(m);
      return;
    }
    if (m.id !== undefined && this.waiting.has(m.id)) {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      if (m.type === 'error') {
        const err = new Error(m.message || m.code);
        err.code = m.code;
        w.reject(err);
      } else {
        w.resolve(m);
      }
      return;
    }
    switch (m.type) {
      case 'event':
        this.event(m);
        return;
      case 'attached':
        this.attached(m);
        return;
      case 'ok':
      case 'error':
        this.reply(m);
        return;
      case 'pong':
        return;
      case 'presence':
        // Only for sessions kept attached (a peek's own presence is no news: `peekPending`).
        if (this.sessions.has(m.session)) this.onframe(m);
        return;
      default:
        this.onframe(m);
    }
  }

  async preAuth(m) {
    if (m.type === 'auth.challenge') {
      this.challenge = m;
      const device = this.device();
      const publicKey = this.key.publicLine(device);
      try {
        // Always bound to the origin this socket dialed, never the bare `sign`: a
        // signature relayed to another server names this one, and that server refuses it.
        const origin = bindingOrigin(this.url);
        const signature = await this.key.sign(boundText(m.sign, origin));
        const build = this.mode === 'pair' ? msg.pairRequest : msg.authResponse;
        const answer = build(signature, publicKey, device, origin);
        if (this.mode === 'pair' && this.invite) answer.invite = this.invite;
        this.send(answer);
      } catch (e) {
        this.setState('refused', `cannot sign: ${e}`);
        this.stop();
      }
    } else if (m.type === 'pair.pending') {
      this.onpair(m, this.challenge);
    } else if (m.type === 'auth.ok') {
      this.invite = null; // used up
      this.authed = true;
      this.authOk = m;
      this.backoff = BACKOFF_MIN_MS;
      this.mode = 'auth';
      this.setState('connected');
      this.pingTimer = setInterval(() => this.heartbeat(), PING_EVERY_MS);
      for (const s of this.sessions) this.attach(s);
      this.sendVisible();
      this.onauth(m);
    } else if (m.type === 'error') {
      // auth_failed, not_authenticated (no pairing on this server), rate_limited, overloaded...
      this.stopped = true;
      clearTimeout(this.retryTimer);
      const invited = this.invite !== null;
      this.invite = null; // refused: unknown, used or expired
      this.onrefused(m, this.mode, invited);
    }
  }

  heartbeat() {
    if (Date.now() - this.lastRx > DEAD_AFTER_MS) {
      this.scheduleRetry('no answer from the server');
      this.drop();
      return;
    }
    this.send(msg.ping(this.nextId++));
  }

  /** The page became visible / the network came back: make sure the socket is alive. */
  wake() {
    if (this.stopped) return;
    if (!this.ws || this.ws.readyState > WebSocket.OPEN) {
      this.backoff = BACKOFF_MIN_MS;
      this.open();
      return;
    }
    if (!this.authed) return;
    const before = this.lastRx;
    this.send(msg.ping(this.nextId++));
    clearTimeout(this.wakeTimer);
    this.wakeTimer = setTimeout(() => {
      if (this.lastRx === before && !this.stopped) {
        this.backoff = BACKOFF_MIN_MS;
        this.open();
      }
    }, WAKE_PROBE_MS);
  }

  installWakeups() {
    if (typeof window === 'undefined') return;
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.wake();
      this.sendVisible();
    });
    window.addEventListener('online', () => this.wake());
    window.addEventListener('offline', () => {
      if (this.state !== 'connected') this.setState('offline');
    });
    window.addEventListener('pageshow', (e) => {
      if (e.persisted) this.wake();
    });
  }

  /**
   * Tell the server whether this page is visible (it does not push to a visible,
   * attached device). The reply is `ok`; a server without notifications answers
   * `unknown_type`, and a dropped connection rejects: neither is worth a word.
   */
  sendVisible() {
    if (!this.authed || typeof document === 'undefined') return;
    this.request((id) => msg.visible(id, document.visibilityState === 'visible')).catch(() => {});
  }

  // ---- sessions ----------------------------------------------------------

  /** Keep `session` attached (now and after every reconnect). */
  keepAttached(session) {
    this.sessions.add(session);
    if (this.authed) this.attach(session);
  }

  release(session) {
    this.sessions.delete(session);
    if (this.authed) this.send(msg.detach(this.nextId++, session));
  }

  /**
   * The open requests of `session` exactly as the agent sent them (`attached`'s
   * `pending`, docs/protocol.md §4), without showing that session: an attach with
   * `tail: 0` (and its `uid`: never another session that reused the name), then at once
   * a detach — unless the page has meanwhile come to keep that session attached. Its
   * events in between are not applied (`event`), so its log and `since` stay as they were.
   */
  async peekPending(session, uid) {
    const reply = await this.request((id) => msg.attach(id, session, { tail: 0, uid: uid || undefined }));
    if (!this.sessions.has(session)) this.request((id) => msg.detach(id, session)).catch(() => {});
    return Array.isArray(reply.pending) ? reply.pending : [];
  }

  attach(session, { tail } = {}) {
    const log = this.store.log(session);
    const id = this.nextId++;
    this.attaching.set(session, id);
    const first = log.head === 0 && log.events.length === 0;
    // With the uid the log was built from: a name reused by a new session is refused
    // (`no_such_session`), never replayed into this log (docs/protocol.md §4).
    const at = first && tail !== undefined ? { tail } : { since: log.head };
    this.send(msg.attach(id, session, { ...at, uid: log.uid || undefined }));
  }

  attached(m) {
    const log = this.store.log(m.session);
    if (typeof m.uid === 'string' && !log.uid) log.uid = m.uid;
    if (m.truncated) {
      // The server no longer has what follows our head (or never had it): rebuild from what it sends.
      log.reset(Math.max(0, (m.replay_from || 1) - 1));
      log.truncatedStart = true;
    } else if (log.head === 0 && log.events.length === 0 && m.replay_from > 1) {
      // A tail attach: the log starts where the replay starts.
      log.reset(m.replay_from - 1);
    }
    log.serverHead = Math.max(log.serverHead, m.head || 0);
    if (m.state) log.model.state = m.state;
    log.setPending(m.pending);
    log.clients = Array.isArray(m.clients) ? m.clients : [];
    log.clientsTotal = m.clients_total || log.clients.length;
    log.replayUntil = m.head || 0;
    this.attaching.delete(m.session);
    this.onframe(m);
    this.replayProgress(m.session);
    this.onchange();
  }

  event(m) {
    // A session this page does not keep attached (just released, or peeked at for its
    // requests): its log keeps its own `since`; the next attach replays what it missed.
    if (!this.sessions.has(m.session)) return;
    const log = this.store.log(m.session);
    const r = log.apply(m.seq, m.event, m.ts);
    if (r === 'gap' && !this.attaching.has(m.session)) {
      // Never skip: ask again from the last applied seq (re-attaching replays as asked).
      this.attach(m.session);
    }
    if (r === 'applied') {
      this.replayProgress(m.session);
      this.onchange();
    }
  }

  /** Once the replay after an attach is applied, send what the outbox still holds. */
  replayProgress(session) {
    const log = this.store.log(session);
    if (log.replayUntil === undefined || log.head < log.replayUntil || this.attaching.has(session)) return;
    log.replayUntil = undefined;
    for (const p of this.outbox) {
      if (p.session !== session || p.state !== 'unsent') continue;
      if (log.hasPromptKey(p.key)) {
        // The server accepted it before the connection dropped; its ok was lost.
        this.settle(p);
        continue;
      }
      this.sendPrompt(p);
    }
  }

  /**
   * An `error` answering an attach in flight: that session is no longer kept attached
   * and the page is told (it drops a view of a session that is gone). True when handled.
   */
  attachFailed(m) {
    for (const [session, id] of this.attaching) {
      if (id !== m.id) continue;
      this.attaching.delete(session);
      this.sessions.delete(session);
      this.onattachfailed(session, m);
      return true;
    }
    return false;
  }

  // ---- prompts and answers ----------------------------------------------

  /**
   * Queue a prompt; it is sent now if possible, else after the next attach. Returns its
   * key. `key` is given for a prompt restored after a reload (sent again under its key).
   */
  prompt(session, content, key = newKey(), extra = {}) {
    const p = { key, session, content, extra, sentId: null, state: 'unsent', queued: false };
    this.outbox.push(p);
    const log = this.store.log(session);
    if (this.authed && !this.attaching.has(session) && log.replayUntil === undefined) this.sendPrompt(p);
    this.onchange();
    return p.key;
  }

  sendPrompt(p) {
    const id = this.nextId++;
    if (this.send(msg.prompt(id, p.session, p.content, p.key, p.extra || {}))) {
      p.sentId = id;
      p.state = 'sent';
    }
  }

  settle(p) {
    this.outbox = this.outbox.filter((x) => x !== p);
    this.onchange();
  }

  reply(m) {
    if (m.type === 'error' && this.attachFailed(m)) return;
    const p = this.outbox.find((x) => x.sentId === m.id && x.state === 'sent');
    if (!p) {
      this.onframe(m);
      return;
    }
    if (m.type === 'ok') {
      // Accepted (or `duplicate`: accepted earlier under the same key). Either way: once.
      p.queued = !!m.queued;
      this.settle(p);
      this.onframe({ type: 'prompt.ok', key: p.key, ...m });
    } else if (m.code === 'rate_limited') {
      p.state = 'unsent';
      setTimeout(() => this.authed && p.state === 'unsent' && this.sendPrompt(p), 1000);
    } else {
      this.settle(p);
      this.onframe({ type: 'prompt.failed', key: p.key, code: m.code, message: m.message });
    }
  }

  respond(session, requestId, response) {
    return this.request((id) => msg.respond(id, session, requestId, response));
  }

  /** Answer a pair request; `block` (with a denial) refuses its address's requests for an hour. */
  pairRespond(pairId, allow, block = false) {
    return this.request((id) => msg.pairRespond(id, pairId, allow, 'owner', block));
  }

  pairInvite(role = 'owner') {
    return this.request((id) => msg.pairInvite(id, role));
  }

  interrupt(session) {
    return this.request((id) => msg.interrupt(id, session));
  }

  history(session, before, limit) {
    return this.request((id) => msg.history(id, session, before, limit));
  }

  sessionList() {
    return this.request((id) => msg.sessionList(id));
  }

  /** `session.create`; the same `key` on a retry answers the first create (docs/protocol.md §4). */
  sessionCreate(opts, key) {
    return this.request((id) => msg.sessionCreate(id, opts, key));
  }

  sessionRename(session, title) {
    return this.request((id) => msg.sessionRename(id, session, title));
  }

  sessionClose(session, removeWorktree = false) {
    return this.request((id) => msg.sessionClose(id, session, removeWorktree));
  }

  conversationsList(workdir) {
    return this.request((id) => msg.conversationsList(id, workdir));
  }

  dirsList(path) {
    return this.request((id) => msg.dirsList(id, path));
  }

  // ---- settings and agent controls (docs/protocol.md §10) ------------------

  sessionSet(session, settings) {
    return this.request((id) => msg.sessionSet(id, session, settings));
  }

  sessionCatalog(session) {
    return this.request((id) => msg.sessionCatalog(id, session));
  }

  sessionUsage(session) {
    return this.request((id) => msg.sessionUsage(id, session));
  }

  promptCancel(session, promptId) {
    return this.request((id) => msg.promptCancel(id, session, promptId));
  }

  fileUpload(session, name, data) {
    return this.request((id) => msg.fileUpload(id, session, name, data));
  }

  pushSubscribe(subscription) {
    return this.request((id) => msg.pushSubscribe(id, subscription));
  }

  pushUnsubscribe(endpoint) {
    return this.request((id) => msg.pushUnsubscribe(id, endpoint));
  }

  keysList() {
    return this.request((id) => msg.keysList(id));
  }

  keysRename(fingerprint, device) {
    return this.request((id) => msg.keysRename(id, fingerprint, device));
  }

  keysRevoke(fingerprint) {
    return this.request((id) => msg.keysRevoke(id, fingerprint));
  }
}
