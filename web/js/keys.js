// keys.js — this browser's identity: one Ed25519 key pair made by WebCrypto with a
// non-extractable private key, kept in IndexedDB (CryptoKey objects are structured-
// cloneable, so the private key never exists as bytes outside the browser's key store).
// Also asks for persistent storage so the browser does not evict the key.
// Owns: the `ccrelay` IndexedDB database. Must not: touch the network or the DOM.

import { openStore } from './idb.js';
import { fingerprint, publicKeyLine, sign } from './sshsig.js';

const DB = 'ccrelay';
const STORE = 'keys';
const ID = 'device-key';

const openDb = () => openStore(DB, STORE);

function tx(db, mode, fn) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, mode);
    const req = fn(t.objectStore(STORE));
    t.oncomplete = () => resolve(req.result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

/** Stores `candidate` unless a key is already there; resolves to the key that is kept. */
function keepFirst(db, candidate) {
  return new Promise((resolve, reject) => {
    const t = db.transaction(STORE, 'readwrite');
    const store = t.objectStore(STORE);
    let kept = candidate;
    const existing = store.get(ID);
    existing.onsuccess = () => {
      if (existing.result) kept = existing.result;
      else store.add(candidate, ID);
    };
    t.oncomplete = () => resolve(kept);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error);
  });
}

/** The device identity: sign(text) → armored SSHSIG, plus its public line and fingerprint. */
export class DeviceKey {
  constructor(pair, raw) {
    this.pair = pair;
    this.raw = raw;
    this.fingerprint = '';
  }

  /**
   * This browser's key: the stored one, or a new one stored first. Two pages opened at
   * once (or the app and a caller in the same page) must end up with the same key, so a
   * new pair is only a candidate: one readwrite transaction keeps whichever was stored
   * first, and transactions on a store run one at a time across tabs.
   */
  static async loadOrCreate() {
    const db = await openDb();
    try {
      let pair = await tx(db, 'readonly', (s) => s.get(ID));
      if (!pair) {
        const candidate = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
        pair = await keepFirst(db, candidate);
      }
      const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
      const key = new DeviceKey(pair, raw);
      key.fingerprint = await fingerprint(raw);
      return key;
    } finally {
      db.close();
    }
  }

  publicLine(comment) {
    return publicKeyLine(this.raw, comment);
  }

  sign(text) {
    return sign(this.pair.privateKey, this.raw, 'ccrelay-auth', text);
  }
}

/** Ask the browser to keep our storage (and so the key); resolves to whether it will. */
export async function persistStorage() {
  try {
    if (navigator.storage && navigator.storage.persist) {
      if (await navigator.storage.persisted()) return true;
      return await navigator.storage.persist();
    }
  } catch {
    // Not granted or not supported: the key still works until the browser evicts it.
  }
  return false;
}
