// directory.js — the sessions the server has (docs/protocol.md §4 `session.list`, kept
// current from `session.changed`), what this browser has seen of each (for the unread
// marker), the requests waiting in them, and the recent working directories offered by
// the new-session form. Pure: no socket, no DOM; `storage` is a localStorage-like object.
// Must not: hold any session's events (session.js does).

/** localStorage keys. */
const SEEN_KEY = 'ccrelay.seen';
const RECENT_KEY = 'ccrelay.recent-dirs';
/** At most this many uids remembered as seen, and this many recent directories. */
const SEEN_MAX = 200;
const RECENT_MAX = 12;

function readJson(storage, key, fallback) {
  try {
    const v = JSON.parse(storage.getItem(key) || 'null');
    return v == null ? fallback : v;
  } catch {
    return fallback;
  }
}

function writeJson(storage, key, value) {
  try {
    storage.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the page works without the memory.
  }
}

/** A `session.list` entry as the page uses it (missing fields get safe defaults). */
export function normalizeEntry(e) {
  return {
    session: String(e.session),
    uid: typeof e.uid === 'string' ? e.uid : '',
    title: typeof e.title === 'string' && e.title ? e.title : String(e.session),
    state: typeof e.state === 'string' ? e.state : '',
    head: Number.isSafeInteger(e.head) ? e.head : 0,
    clients: Number.isSafeInteger(e.clients) ? e.clients : 0,
    created: typeof e.created === 'string' ? e.created : '',
    lastActivity: typeof e.last_activity === 'string' ? e.last_activity : '',
    cost: typeof e.cost_usd === 'number' ? e.cost_usd : null,
    settings: e.settings && typeof e.settings === 'object' ? e.settings : null,
    closable: e.closable === true,
    pending: Array.isArray(e.pending) ? e.pending.filter((p) => p && typeof p.request_id === 'string') : [],
    workdir: typeof e.workdir === 'string' ? e.workdir : '',
    worktree: e.worktree && typeof e.worktree === 'object' ? e.worktree : null,
    conversation: typeof e.conversation === 'string' ? e.conversation : '',
  };
}

export class Directory {
  /** @param {{getItem(k: string): string|null, setItem(k: string, v: string): void}} storage */
  constructor(storage) {
    this.storage = storage;
    this.entries = new Map(); // name → normalized entry
    this.seen = readJson(storage, SEEN_KEY, {}); // uid → highest head viewed in this browser
    if (typeof this.seen !== 'object' || Array.isArray(this.seen)) this.seen = {};
    this.known = false; // a full list has arrived
  }

  /** A full `session.list` (or `auth.ok`'s `sessions`): replaces what was known. */
  setList(list) {
    this.entries = new Map();
    for (const raw of list) {
      if (!raw || typeof raw.session !== 'string') continue;
      this.put(normalizeEntry(raw));
    }
    this.known = true;
    this.pruneSeen();
  }

  /**
   * A `session.changed` frame. Returns what the page must react to:
   * `{closed: name|null, replaced: name|null}` (`replaced`: the name now belongs to a
   * session with another uid, so any cached view of that name is stale).
   */
  changed(m) {
    const out = { closed: null, replaced: null };
    if (!m || typeof m.session !== 'string') return out;
    const have = this.entries.get(m.session);
    if (m.change === 'closed') {
      // A late "closed" of an older session must not remove its successor.
      if (have && (!m.uid || !have.uid || have.uid === m.uid)) {
        this.entries.delete(m.session);
        out.closed = m.session;
      }
      return out;
    }
    if (!m.entry || typeof m.entry !== 'object') return out;
    const next = normalizeEntry({ ...m.entry, session: m.session, uid: m.uid ?? m.entry.uid });
    if (have && have.uid && next.uid && have.uid !== next.uid) out.replaced = m.session;
    // Frames of one session come in order, but a `session.list` reply may cross them:
    // the head never goes back.
    if (have && have.uid === next.uid && have.head > next.head) next.head = have.head;
    this.put(next);
    return out;
  }

  put(entry) {
    if (entry.uid && !(entry.uid in this.seen)) {
      // First sight in this browser: nothing of it counts as new until something arrives.
      this.seen[entry.uid] = entry.head;
      writeJson(this.storage, SEEN_KEY, this.seen);
    }
    this.entries.set(entry.session, entry);
  }

  remove(name) {
    this.entries.delete(name);
  }

  get(name) {
    return this.entries.get(name) || null;
  }

  /** Entries for the list: the most recently active first, then by name. */
  sorted() {
    return [...this.entries.values()].sort((a, b) => (b.lastActivity > a.lastActivity ? 1 : b.lastActivity < a.lastActivity ? -1 : a.session.localeCompare(b.session)));
  }

  /** The page showed `name` up to `head`: those events are no longer unread. */
  markSeen(name, head) {
    const e = this.entries.get(name);
    if (!e) return;
    if (head > e.head) e.head = head; // the page may be ahead of the last list
    if (!e.uid) return;
    if ((this.seen[e.uid] ?? -1) >= head) return;
    this.seen[e.uid] = head;
    writeJson(this.storage, SEEN_KEY, this.seen);
  }

  /** How many events of `name` arrived that this browser has not shown. */
  unread(name) {
    const e = this.entries.get(name);
    if (!e || !e.uid) return 0;
    return Math.max(0, e.head - (this.seen[e.uid] ?? e.head));
  }

  /** Requests waiting for an answer in sessions other than `current`, oldest session order kept. */
  pendingElsewhere(current) {
    const out = [];
    for (const e of this.sorted()) {
      if (e.session === current) continue;
      for (const p of e.pending) out.push({ session: e.session, uid: e.uid, title: e.title, requestId: p.request_id, tool: typeof p.tool === 'string' ? p.tool : 'request', summary: typeof p.summary === 'string' ? p.summary : '' });
    }
    return out;
  }

  /** Forget seen marks of sessions the server no longer has (bounded memory). */
  pruneSeen() {
    const live = new Set([...this.entries.values()].map((e) => e.uid).filter(Boolean));
    const keys = Object.keys(this.seen);
    if (keys.length <= SEEN_MAX) return;
    const kept = {};
    for (const k of keys) if (live.has(k)) kept[k] = this.seen[k];
    this.seen = kept;
    writeJson(this.storage, SEEN_KEY, this.seen);
  }

  /** Directories to offer: ones created from this browser first, then current sessions' workdirs. */
  recentDirs() {
    const mine = readJson(this.storage, RECENT_KEY, []);
    const all = [...(Array.isArray(mine) ? mine : []), ...this.sorted().map((e) => e.workdir)];
    const out = [];
    for (const d of all) if (typeof d === 'string' && d && !out.includes(d)) out.push(d);
    return out.slice(0, RECENT_MAX);
  }

  /** Remember a directory a session was created in from this browser. */
  rememberDir(dir) {
    if (typeof dir !== 'string' || !dir) return;
    const mine = readJson(this.storage, RECENT_KEY, []);
    const next = [dir, ...(Array.isArray(mine) ? mine : []).filter((d) => d !== dir)].slice(0, RECENT_MAX);
    writeJson(this.storage, RECENT_KEY, next);
  }
}

/** "now", "5 min", "3 h", "2 d" since an RFC 3339 time; '' when unknown. */
export function relativeTime(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return 'now';
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86400)} d`;
}

/** The parent of an absolute path ('/' stays '/'). */
export function parentDir(path) {
  const p = String(path).replace(/\/+$/, '');
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

/** `dir/name` without a doubled slash. */
export function childDir(dir, name) {
  return `${String(dir).replace(/\/+$/, '')}/${name}`;
}

/** The command that continues a session's conversation in a terminal, or '' when unknown. */
export function resumeCommand(conversation) {
  return typeof conversation === 'string' && /^[A-Za-z0-9_-]{1,128}$/.test(conversation) ? `claude --resume ${conversation}` : '';
}

/** The longest title the page sends with `session.rename` (the length of the server's own titles). */
export const TITLE_MAX = 80;

/**
 * A title as typed, made fit to send: line breaks and other control characters as
 * spaces, no format or bidi characters, runs of white space as one space, trimmed, at
 * most TITLE_MAX characters; '' when nothing is left.
 */
export function cleanTitle(text) {
  const flat = String(text).replace(/[\p{Cc}\u2028\u2029]/gu, ' ').replace(/\p{Cf}/gu, '').replace(/\s+/g, ' ').trim();
  return Array.from(flat).slice(0, TITLE_MAX).join('').trim();
}
