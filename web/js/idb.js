// idb.js — opening one IndexedDB database with one object store, the way the page
// keeps its device key (keys.js) and its drafts (drafts.js). Must not: know what is
// stored.

/** Open database `name` (version 1), creating its single object store `store` on first use. */
export function openStore(name, store) {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(name, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(store);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}
