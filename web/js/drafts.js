// drafts.js — what the person typed survives a reload: the prompt box's draft per
// session, and prompts handed to the outbox that the server has not acknowledged.
// Kept in IndexedDB (its own database, so the key store's schema is not touched).
// On restore, an unsent prompt younger than RESEND_WINDOW_MS is queued again under
// its own `key` (the server answers `duplicate` if it had accepted it); an older one
// is past the server's key window, so it comes back as a draft to send by hand.
// Owns: the `ccrelay-drafts` IndexedDB database. Must not: touch the socket or the DOM.

import { openStore } from './idb.js';

const DB = 'ccrelay-drafts';
const STORE = 'drafts';
/** Beyond this a prompt's key may be forgotten by the server: never resend by itself. */
export const RESEND_WINDOW_MS = 10 * 60 * 1000;

const openDb = () => openStore(DB, STORE);

export class Drafts {
  constructor() {
    this.db = openDb().catch(() => null);
    this.writes = Promise.resolve();
  }

  async get(name) {
    const db = await this.db;
    if (!db) return undefined;
    return new Promise((resolve) => {
      const req = db.transaction(STORE, 'readonly').objectStore(STORE).get(name);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => resolve(undefined);
    });
  }

  /** Write `value` under `name` (in call order; a failed write is dropped, the page goes on). */
  put(name, value) {
    this.writes = this.writes.then(async () => {
      const db = await this.db;
      if (!db) return;
      await new Promise((resolve) => {
        const t = db.transaction(STORE, 'readwrite');
        t.objectStore(STORE).put(value, name);
        t.oncomplete = resolve;
        t.onerror = resolve;
        t.onabort = resolve;
      });
    });
    return this.writes;
  }

  draft(session) {
    return this.get(`draft:${session}`).then((v) => (typeof v === 'string' ? v : ''));
  }

  saveDraft(session, text) {
    return this.put(`draft:${session}`, text);
  }

  /** Unsent prompts: [{key, session, content, created}]. */
  unsent() {
    return this.get('unsent').then((v) => (Array.isArray(v) ? v : []));
  }

  saveUnsent(list) {
    return this.put('unsent', list);
  }
}

/** Split restored prompts into those to queue again and those that become drafts. */
export function triage(list, now = Date.now()) {
  const resend = [];
  const redraft = [];
  for (const p of list) {
    if (!p || typeof p.key !== 'string' || typeof p.session !== 'string') continue;
    if (typeof p.created === 'number' && now - p.created < RESEND_WINDOW_MS) resend.push(p);
    else redraft.push(p);
  }
  return { resend, redraft };
}
