// peek.js — the complete requests waiting in other sessions. A `session.list` entry's
// `pending` (docs/protocol.md §4) names only a request's tool and a short summary, and
// the approval sheet offers Allow only for an input it shows whole; so the page fetches
// a session's open requests exactly as the agent sent them (`fetch`: an attach with
// `tail: 0` and an immediate detach, connection.js `peekPending`) once per request, and
// keeps each while it is pending elsewhere. Pure: no socket, no DOM.

/** After a failed fetch, a session is not asked again for this long. */
export const PEEK_RETRY_MS = 10000;

const keyOf = (session, requestId) => `${session}\n${requestId}`;

export class OtherRequests {
  /**
   * @param {(session: string, uid: string) => Promise<object[]>} fetch  the session's open requests (raw `control_request`s)
   * @param {() => void} changed  a fetch ended (the sheet may now show more)
   * @param {() => number} now
   */
  constructor(fetch, changed, now = () => Date.now()) {
    this.fetch = fetch;
    this.changed = changed;
    this.now = now;
    this.known = new Map(); // key → raw control_request
    this.missing = new Set(); // keys a fetch did not return (answered or cancelled meanwhile)
    this.inFlight = new Map(); // session → keys wanted when its fetch started
    this.failedAt = new Map(); // session → time of its last failed fetch
  }

  /**
   * The request `req` ({session, uid, requestId}) as the agent sent it, or null while it
   * is not known (a fetch then starts, unless one is running or failed just now).
   */
  get(req) {
    const key = keyOf(req.session, req.requestId);
    if (this.known.has(key)) return this.known.get(key);
    if (this.missing.has(key)) return null;
    const wanted = this.inFlight.get(req.session);
    if (wanted) {
      wanted.add(key);
      return null;
    }
    const failed = this.failedAt.get(req.session);
    if (failed !== undefined && this.now() - failed < PEEK_RETRY_MS) return null;
    this.load(req.session, req.uid || '', key);
    return null;
  }

  /** Whether a fetch for `req` is running or may still start (the sheet says "loading"). */
  loading(req) {
    const key = keyOf(req.session, req.requestId);
    return !this.known.has(key) && !this.missing.has(key) && !this.failedAt.has(req.session);
  }

  async load(session, uid, key) {
    const wanted = new Set([key]);
    this.inFlight.set(session, wanted);
    try {
      const list = await this.fetch(session, uid);
      this.failedAt.delete(session);
      for (const raw of Array.isArray(list) ? list : []) {
        if (raw && raw.type === 'control_request' && typeof raw.request_id === 'string') this.known.set(keyOf(session, raw.request_id), raw);
      }
      for (const k of wanted) if (!this.known.has(k)) this.missing.add(k);
    } catch {
      this.failedAt.set(session, this.now());
    } finally {
      this.inFlight.delete(session);
      this.changed();
    }
  }

  /** Forget what is no longer pending elsewhere (`pending`: [{session, requestId}]). */
  retain(pending) {
    const live = new Set(pending.map((p) => keyOf(p.session, p.requestId)));
    for (const k of this.known.keys()) if (!live.has(k)) this.known.delete(k);
    for (const k of this.missing) if (!live.has(k)) this.missing.delete(k);
  }
}
