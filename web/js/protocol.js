// protocol.js — the wire messages of docs/protocol.md (protocol version 1) the page sends, in one place,
// and small readers for what it receives. Pure: no socket, no DOM.

export const PROTOCOL_VERSION = 1;
export const NAMESPACE = 'ccrelay-auth';

/** Close codes with a meaning for the page (docs/protocol.md §2.3). */
export const CLOSE = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  SHED: 1013,
  LAGGING: 4008,
};

/** The WebSocket URL of the server that served this page (same origin). */
export function wsUrl(loc) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/v1/ws`;
}

/**
 * The origin a client binds its signature to (docs/protocol.md, "Origin binding"):
 * the scheme, host and port of the WebSocket URL it dialed, serialized the way a
 * browser serializes an origin (the URL parser lower-cases the host, converts IDNA,
 * keeps IPv6 brackets and drops the scheme's default port): `ws://127.0.0.1:7878`.
 */
export function bindingOrigin(url) {
  const u = new URL(url);
  return `${u.protocol.slice(0, -1)}://${u.host}`;
}

/** The text an `auth.response` or `pair.request` signs: the challenge's `sign` bound to `origin`. */
export function boundText(sign, origin) {
  return `${sign}:origin:${origin}`;
}

export const msg = {
  /** `origin`: what the signature is bound to (`bindingOrigin`). */
  authResponse: (signature, publicKey, device, origin) => ({ type: 'auth.response', signature, public_key: publicKey, device, origin }),
  pairRequest: (signature, publicKey, device, origin) => ({ type: 'pair.request', signature, public_key: publicKey, device, origin }),
  pairRespond: (id, pairId, allow, role = 'owner', block = false) => ({
    type: 'pair.respond', id, pair_id: pairId, allow, role, ...(block ? { block: true } : {}),
  }),
  /** An invite a device in the owner's hand pairs with at once (docs/protocol.md, "Pairing invites"). */
  pairInvite: (id, role = 'owner') => ({ type: 'pair.invite', id, role }),
  ping: (id) => ({ type: 'ping', id }),
  sessionList: (id) => ({ type: 'session.list', id }),
  /**
   * `since` (resume) or `tail` (join a long session), never both; `uid` (docs/protocol.md §4)
   * makes the server refuse a name that now belongs to another session.
   */
  attach: (id, session, { since, tail, uid } = {}) => {
    const m = { type: 'attach', id, session };
    if (uid) m.uid = uid;
    if (tail !== undefined) m.tail = tail;
    else if (since) m.since = since;
    return m;
  },
  detach: (id, session) => ({ type: 'detach', id, session }),
  /** `extra`: `{steer: true}` or `{at: "<RFC 3339>"}` (docs/protocol.md §10). */
  prompt: (id, session, content, key, extra = {}) => ({ type: 'prompt', id, session, content, key, ...extra }),
  respond: (id, session, requestId, response) => ({ type: 'respond', id, session, request_id: requestId, response }),
  interrupt: (id, session) => ({ type: 'interrupt', id, session }),
  history: (id, session, before, limit) => ({ type: 'history', id, session, before, limit }),
  /** Session lifecycle (docs/protocol.md §4, owners): `opts` holds `workdir` and optional `name`, `worktree`, `resume`. */
  sessionCreate: (id, opts, key) => ({ type: 'session.create', id, ...opts, key }),
  sessionRename: (id, session, title) => ({ type: 'session.rename', id, session, title }),
  sessionClose: (id, session, removeWorktree = false) => ({ type: 'session.close', id, session, remove_worktree: removeWorktree }),
  /** `before`: the last `updated_at` of the previous page. */
  conversationsList: (id, workdir, limit = 50, before = undefined) => ({ type: 'conversations.list', id, workdir, limit, before }),
  /** Without `path`: the roots. */
  dirsList: (id, path) => (path ? { type: 'dirs.list', id, path } : { type: 'dirs.list', id }),
  /** The workspace view (docs/protocol.md §11); paths are relative to the workdir. `base`: `HEAD` or `turn:<prompt_id>`. */
  filesStatus: (id, session) => ({ type: 'files.status', id, session }),
  filesDiff: (id, session, path, base) => ({ type: 'files.diff', id, session, path, base }),
  filesList: (id, session, path) => ({ type: 'files.list', id, session, path }),
  filesRead: (id, session, path, offset = 0, maxBytes = 262144) => ({ type: 'files.read', id, session, path, offset, max_bytes: maxBytes }),
  /** Session settings and the agent's controls (docs/protocol.md §10): `settings` is any subset. */
  sessionSet: (id, session, settings) => ({ type: 'session.set', id, session, settings }),
  sessionCatalog: (id, session) => ({ type: 'session.catalog', id, session }),
  sessionUsage: (id, session) => ({ type: 'session.usage', id, session }),
  /** Withdraw a prompt still waiting in the relay's queue (owners). */
  promptCancel: (id, session, promptId) => ({ type: 'prompt.cancel', id, session, prompt_id: promptId }),
  /** `data`: the file's bytes in base64; the reply's `path` is relative to the workdir. */
  fileUpload: (id, session, name, data) => ({ type: 'file.upload', id, session, name, data }),
  /** Notifications (docs/protocol.md §9.1.2). `subscription` is `{endpoint, keys: {p256dh, auth}}`. */
  visible: (id, visible) => ({ type: 'client.visible', id, visible }),
  pushSubscribe: (id, subscription) => ({ type: 'push.subscribe', id, subscription }),
  pushUnsubscribe: (id, endpoint) => ({ type: 'push.unsubscribe', id, endpoint }),
  /** The "Devices" extension (docs/protocol.md §3.13): owners only. */
  keysList: (id) => ({ type: 'keys.list', id }),
  keysRename: (id, fingerprint, device) => ({ type: 'keys.rename', id, fingerprint, device }),
  keysRevoke: (id, fingerprint) => ({ type: 'keys.revoke', id, fingerprint }),
};

/** Permission answers (docs/protocol.md §4.5, §6.1). */
export const answer = {
  allow: () => ({ behavior: 'allow' }),
  always: (suggestions) => ({ behavior: 'allow', updatedPermissions: suggestions }),
  deny: (message) => (message ? { behavior: 'deny', message } : { behavior: 'deny' }),
};

/** A prompt key: unique per prompt, at most 64 characters. */
export function newKey() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return `web-${Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')}`;
}

/** The text of a prompt's content (a string or content blocks). */
export function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .filter((b) => b && b.type === 'text' && typeof b.text === 'string')
      .map((b) => b.text)
      .join('\n');
  }
  return '';
}

/**
 * What the page shows of an agent's control request (a `control_request` event, or an
 * entry of `attached`'s `pending`): its id, kind, tool, input and the agent's words.
 */
export function requestFields(ev) {
  const req = ev && ev.request && typeof ev.request === 'object' ? ev.request : {};
  return {
    requestId: ev ? ev.request_id : undefined,
    subtype: req.subtype || '',
    tool: req.tool_name || req.display_name || req.subtype || 'request',
    input: req.input && typeof req.input === 'object' ? req.input : {},
    description: typeof req.description === 'string' ? req.description : '',
    reason: typeof req.decision_reason === 'string' ? req.decision_reason : '',
    suggestions: Array.isArray(req.permission_suggestions) ? req.permission_suggestions : [],
    toolUseId: typeof req.tool_use_id === 'string' ? req.tool_use_id : '',
  };
}
