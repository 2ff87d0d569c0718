// drafts.js — what the person typed survives a reload: the prompt box's draft per
// session, and prompts handed to the outbox that the server has not acknowledged.
// Kept in IndexedDB (its own database, so the key store's schema is not touched).
// On restore, an unsent prompt younger than RESEND_WINDOW_MS is queued again under
// its own `key` (the server answers `duplicate` if it had accepted it); an older one
// is past the server's key window, so it comes back as a draft to send by hand.
// Each open page keeps its unsent prompts under a key of its own and holds a Web Lock
// named after it while it lives: two tabs never overwrite each other's prompts, and a
// page restoring takes over the lists of pages that are gone (their lock is free), never
// those of pages still open (they send their own).
// Owns: the `ccrelay-drafts` IndexedDB database. Must not: touch the socket or the DOM.

import { openStore } from './idb.js';

const DB = 'ccrelay-drafts';
const STORE = 'drafts';
/** Beyond this a prompt's key may be forgotten by the server: never resend by itself. */
export const RESEND_WINDOW_MS = 10 * 60 * 1000;

const openDb = () => openStore(DB, STORE);
/** A page's unsent prompts are kept under `unsent:<page id>` (`unsent` alone: before page ids). */
const UNSENT = 'unsent';
/** The Web Lock a page holds while it lives, + its id. */
const PAGE_LOCK = 'ccrelay-page:';

export class Drafts {
  constructor() {
    this.db = openDb().catch(() => null);
    this.writes = Promise.resolve();
    this.page = crypto.randomUUID();
    /** Keys of gone pages' lists this page took over: deleted when it next saves its own. */
    this.adopted = [];
    this.holdPageLock();
  }

  /**
   * Hold this page's lock while it is shown. The browser frees it when the page goes;
   * letting go at `pagehide` already makes that certain before a reload's new page looks.
   */
  holdPageLock() {
    if (!navigator.locks) return;
    let release = () => {};
    const hold = () => navigator.locks.request(`${PAGE_LOCK}${this.page}`, () => new Promise((r) => { release = r; })).catch(() => {});
    hold();
    addEventListener('pagehide', () => release());
    addEventListener('pageshow', (e) => {
      if (e.persisted) hold();
    });
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

  /** Change the store in one transaction (in call order; a failed write is dropped, the page goes on). */
  write(change) {
    this.writes = this.writes.then(async () => {
      const db = await this.db;
      if (!db) return;
      await new Promise((resolve) => {
        const t = db.transaction(STORE, 'readwrite');
        change(t.objectStore(STORE));
        t.oncomplete = resolve;
        t.onerror = resolve;
        t.onabort = resolve;
      });
    });
    return this.writes;
  }

  put(name, value) {
    return this.write((store) => store.put(value, name));
  }

  draft(session) {
    return this.get(`draft:${session}`).then((v) => (typeof v === 'string' ? v : ''));
  }

  saveDraft(session, text) {
    return this.put(`draft:${session}`, text);
  }

  /**
   * Unsent prompts of pages that are gone: [{key, session, content, at?, created}]. Their
   * lists are this page's from now on (the next `saveUnsent` drops them).
   */
  async unsent() {
    const db = await this.db;
    if (!db) return [];
    const lists = await new Promise((resolve) => {
      const found = [];
      const req = db.transaction(STORE, 'readonly').objectStore(STORE).openCursor(IDBKeyRange.bound(UNSENT, `${UNSENT}:\uffff`));
      req.onsuccess = () => {
        const cursor = req.result;
        if (!cursor) return resolve(found);
        if (cursor.key === UNSENT || String(cursor.key).startsWith(`${UNSENT}:`)) found.push([String(cursor.key), cursor.value]);
        cursor.continue();
      };
      req.onerror = () => resolve(found);
    });
    const open = await openPages();
    const prompts = [];
    for (const [key, value] of lists) {
      const page = key.slice(UNSENT.length + 1);
      if (page === this.page || (open && open.has(page))) continue;
      this.adopted.push(key);
      if (Array.isArray(value)) prompts.push(...value);
    }
    return prompts;
  }

  /** This page's outbox, replacing what it saved before (and the lists it took over). */
  saveUnsent(list) {
    const dropped = this.adopted.splice(0);
    const own = `${UNSENT}:${this.page}`;
    return this.write((store) => {
      if (list.length > 0) store.put(list, own);
      else store.delete(own);
      for (const key of dropped) store.delete(key);
    });
  }
}

/** The ids of the pages open now (their locks are held), or null when the browser cannot tell. */
async function openPages() {
  if (!navigator.locks) return null;
  try {
    const { held = [] } = await navigator.locks.query();
    return new Set(held.map((l) => l.name).filter((n) => typeof n === 'string' && n.startsWith(PAGE_LOCK)).map((n) => n.slice(PAGE_LOCK.length)));
  } catch {
    return null;
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
