// app.js — the page: wires the device key, the connection, the session store and
// the views together, and owns the screens (insecure / wrong name / pairing / session), the
// header (connection state, time since the last frame, the sessions button, state,
// presence), the prompt box, pair requests shown to owners, and the devices list
// (attached clients, and for owners the keys the server accepts: views/devices.js,
// and "Notify this device": push.js).
// Phone-first pieces live in views/: the prompt box (composer.js), the side panel
// (panel.js), the approval sheet (sheet.js); this module places them: it keeps a
// reader who scrolled up where they are ("Jump to latest" counts what arrived),
// shows viewers a read-only page, counts what waits for an answer in the tab title
// and the app badge, and offers owners a pairing invite as a QR code (qr.js).
// Sessions (docs/protocol.md §4): the sessions screen and new-session form
// (views/sessions.js) over the directory of sessions (directory.js). Only the visible
// session is attached: switching detaches the one left, whose log stays in the store, and
// attaches the next with its own `since` (and `uid`), so neither loses nor repeats an event.
// A request waiting in another session is fetched whole (peek.js) so the approval sheet
// can show its input and offer Allow there.
// Views render from the store only; this module never interprets events itself.

import { DeviceKey, persistStorage } from './keys.js';
import { pairCode } from './sshsig.js';
import { Connection } from './connection.js';
import { Store } from './session.js';
import { bindingOrigin, contentText, msg, wsUrl } from './protocol.js';
import { StreamView } from './views/stream.js';
import { DevicesView } from './views/devices.js';
import { PushControl } from './push.js';
import { RequestFocus, parseTarget } from './deeplink.js';
import { Composer } from './views/composer.js';
import { Panel } from './views/panel.js';
import { ApprovalSheet } from './views/sheet.js';
import { Drafts, triage } from './drafts.js';
import { qrSvg } from './qr.js';
import { Directory, normalizeEntry, resumeCommand } from './directory.js';
import { SessionHead, SessionsScreen } from './views/sessions.js';
import { SessionControls } from './views/controls.js';
import { Attachments } from './views/attach.js';
import { limitsFrom, promptContent } from './controls.js';
import { OtherRequests } from './peek.js';
import { WorkspaceView } from './views/workspace.js';

const $ = (id) => document.getElementById(id);
const TAIL = 200;
const HISTORY_PAGE = 200;

const STATE_TEXT = {
  connecting: 'Connecting…',
  pairing: 'Not paired',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline — will send when back',
  refused: 'Refused',
  insecure: 'Not secure',
};

/** The session states (`relay.state`) as people read them. */
const SESSION_STATE_TEXT = {
  starting: 'Starting',
  idle: 'Ready',
  busy: 'Working',
  awaiting_permission: 'Needs approval',
  restarting: 'Restarting',
  failed: 'Failed',
  stopped: 'Stopped',
  asleep: 'Asleep',
};

/** Within this many pixels of the bottom, the reader is "at the latest". */
const AT_BOTTOM_PX = 80;
const BASE_TITLE = document.title;
const WORKSPACE_REFUSED = 'Changes and files are not shown to viewers on this server (it runs without --viewer-files).';

const ui = {
  conn: $('conn'),
  connText: $('conn-text'),
  retryNow: $('retry-now'),
  sessionLabel: $('session-label'),
  empty: $('empty'),
  dock: $('dock'),
  jump: $('jump-latest'),
  sheet: $('approval-sheet'),
  viewOnly: $('view-only'),
  inviteBox: $('invite-box'),
  invite: $('pair-invite'),
  inviteQr: $('pair-invite-qr'),
  inviteNote: $('invite-note'),
  since: $('since'),
  sessionsLabel: $('sessions-label'),
  sessionState: $('session-state'),
  presence: $('presence'),
  presenceN: $('presence-n'),
  insecure: $('insecure'),
  wrongName: $('wrong-name'),
  pairing: $('pairing'),
  session: $('session'),
  view: $('session-view'),
  stream: $('stream'),
  outbox: $('outbox'),
  earlier: $('load-earlier'),
  earlierMsg: $('earlier-msg'),
  input: $('prompt-input'),
  form: $('prompt-form'),
  interrupt: $('interrupt'),
  deviceName: $('device-name'),
  publicKey: $('public-key'),
  pairStart: $('pair-start'),
  retryAuth: $('retry-auth'),
  pairCodeBox: $('pair-code-box'),
  pairCode: $('pair-code'),
  pairMsg: $('pair-msg'),
  pairRequests: $('pair-requests'),
  devices: $('devices'),
  deviceKeys: $('device-keys'),
  deviceKeysNote: $('device-keys-note'),
  side: $('side'),
  panelToggle: $('panel-toggle'),
  toast: $('toast'),
};

let toastTimer = null;
function toast(text) {
  ui.toast.textContent = text;
  ui.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    ui.toast.hidden = true;
  }, 6000);
}

let connRaw = 'connecting';
let connDetail = '';
/**
 * Show the connection state. The browser's own `offline` wins at once over a socket
 * that still looks open (it may not notice the network is gone for a long time).
 */
function setConnState(state, detail) {
  connRaw = state;
  connDetail = detail || '';
  const shown = navigator.onLine === false && ['connected', 'reconnecting', 'connecting'].includes(state) ? 'offline' : state;
  ui.conn.dataset.state = shown;
  ui.connText.textContent = STATE_TEXT[shown] || shown;
  ui.conn.title = connDetail;
  ui.retryNow.hidden = !(shown === 'offline' || shown === 'reconnecting');
  document.body.dataset.conn = shown;
}
window.addEventListener('offline', () => setConnState(connRaw, connDetail));
window.addEventListener('online', () => setConnState(connRaw, connDetail));

function show(screen) {
  ui.insecure.hidden = screen !== 'insecure';
  ui.wrongName.hidden = screen !== 'wrong-name';
  ui.pairing.hidden = screen !== 'pairing';
  ui.session.hidden = screen !== 'session';
  document.body.dataset.screen = screen;
}

// ---- device name ------------------------------------------------------------

function defaultDeviceName() {
  const ua = navigator.userAgent;
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Mac/.test(ua) ? 'Mac' : /Windows/.test(ua) ? 'Windows' : /Linux/.test(ua) ? 'Linux' : 'device';
  const br = /Firefox/.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chrome' : /Safari/.test(ua) ? 'Safari' : 'Browser';
  return `${br} on ${os}`;
}

/** 1–64 scalar values, no control, format or bidi characters (docs/protocol.md §3.9). */
function cleanDeviceName(s) {
  const cleaned = Array.from(String(s).replace(/[\p{Cc}\p{Cf}\u2028\u2029]/gu, '').trim()).slice(0, 64).join('');
  return cleaned || defaultDeviceName();
}

function initialDeviceName() {
  const fromUrl = new URLSearchParams(location.search).get('device');
  if (fromUrl) return cleanDeviceName(fromUrl);
  return cleanDeviceName(localStorage.getItem('ccrelay.device') || defaultDeviceName());
}

// ---- pairing invites ---------------------------------------------------------

/** The token of a `#invite=<token>` fragment, removed from the address bar
 * (it is single use, and must not stay in history or bookmarks); else null. */
function takeInvite() {
  const m = /^#invite=([A-Za-z0-9_-]{16,256})$/.exec(location.hash);
  if (location.hash.startsWith('#invite=')) {
    history.replaceState(null, '', location.pathname + location.search);
  }
  return m ? m[1] : null;
}

// ---- accepted-before memory (refused vs. pairing) ---------------------------

function acceptedBefore(serverId) {
  try {
    return JSON.parse(localStorage.getItem('ccrelay.accepted') || '{}')[serverId] === true;
  } catch {
    return false;
  }
}

function rememberAccepted(serverId) {
  let all;
  try {
    all = JSON.parse(localStorage.getItem('ccrelay.accepted') || '{}');
  } catch {
    all = {};
  }
  all[serverId] = true;
  localStorage.setItem('ccrelay.accepted', JSON.stringify(all));
}

// ---- this server's names ----------------------------------------------------

/**
 * Asks the server whether a signature bound to `origin` would be accepted here, i.e.
 * whether the host this page was opened at is one of the server's names
 * (docs/protocol.md, "This server's names"). Resolves to `{accepted, suggest}`, or to
 * null when the server cannot tell (a server without the endpoint, no network): the
 * page then signs in as usual and the server stays the judge.
 */
async function checkOrigin(origin) {
  try {
    const r = await fetch(`/v1/origin?origin=${encodeURIComponent(origin)}`, { cache: 'no-store' });
    if (!r.ok) return null;
    const body = await r.json();
    return body && typeof body.accepted === 'boolean' ? body : null;
  } catch {
    return null;
  }
}

/** A page URL the server suggested, if it is a plain http(s) URL (never another scheme in an href). */
function safePageUrl(text) {
  try {
    const u = new URL(text);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
  } catch {
    return null;
  }
}

/** The screen for a page opened at a name the server does not accept as its own. */
function showWrongName(check) {
  setConnState('refused', `${location.host} is not one of this server's names`);
  $('wrong-name-here').textContent = location.host;
  const link = $('wrong-name-link');
  const target = typeof check.suggest === 'string' ? safePageUrl(check.suggest) : null;
  $('wrong-name-go').hidden = target === null;
  if (target !== null) {
    link.href = target;
    link.textContent = target;
  }
  show('wrong-name');
}

// ---- "Add to Home Screen" (iOS Safari) -------------------------------------------

/** Once, in iOS Safari outside a home-screen app: how to install, and that its storage is separate. */
function installHint() {
  const ios = /iPhone|iPad|iPod/.test(navigator.userAgent) || (navigator.platform === 'MacIntel' && navigator.maxTouchPoints > 1);
  const standalone = navigator.standalone === true || window.matchMedia('(display-mode: standalone)').matches;
  if (!ios || standalone || localStorage.getItem('ccrelay.install-hint') === 'seen') return;
  const hint = $('ios-hint');
  hint.hidden = false;
  $('ios-hint-close').addEventListener('click', () => {
    localStorage.setItem('ccrelay.install-hint', 'seen');
    hint.hidden = true;
  });
}

// ---- main -------------------------------------------------------------------

async function main() {
  new Panel({ panel: ui.side, toggle: ui.panelToggle, close: $('panel-close'), backdrop: $('backdrop') });
  installHint();

  if (!window.isSecureContext || !crypto.subtle) {
    setConnState('insecure');
    show('insecure');
    return;
  }

  // A key made at a name the server refuses would be useless (the browser keeps keys per
  // origin, and the server refuses signatures bound to that name): say where to go instead.
  const check = await checkOrigin(bindingOrigin(wsUrl(location)));
  if (check && !check.accepted) {
    showWrongName(check);
    return;
  }

  let device = initialDeviceName();
  ui.deviceName.value = device;

  let key;
  try {
    key = await DeviceKey.loadOrCreate();
  } catch (e) {
    setConnState('insecure', String(e));
    show('insecure');
    $('insecure-title').textContent = 'This browser cannot keep a signing key here';
    return;
  }
  const showKey = () => {
    ui.publicKey.textContent = key.publicLine(device);
    $('me-name').textContent = device;
    $('me-fp').textContent = key.fingerprint;
  };
  showKey();
  ui.deviceName.addEventListener('input', () => {
    device = cleanDeviceName(ui.deviceName.value);
    localStorage.setItem('ccrelay.device', device);
    showKey();
  });
  persistStorage().then((kept) => {
    $('persist-note').textContent = kept
      ? 'Persistent storage: granted. The browser keeps this device key.'
      : 'Persistent storage: not granted. The browser may clear this device key (and drafts) when space runs low, or with the site data.';
  });

  const store = new Store();
  const conn = new Connection({ url: wsUrl(location), key, device: () => device, store });
  const presence = new Map(); // session → {count, clients: Map}
  const pairReqs = new Map(); // pair_id → element
  let current = localStorage.getItem('ccrelay.session') || 'default';
  const directory = new Directory(localStorage);
  let role = 'owner';
  let lastFrame = 0;

  const devices = new DevicesView(ui.deviceKeys, ui.deviceKeysNote, {
    list: () => conn.keysList(),
    rename: async (fingerprint, name) => {
      const reply = await conn.keysRename(fingerprint, name);
      // The attached list shows the new name at once (it names the same key).
      for (const p of presence.values()) {
        for (const c of p.clients.values()) if (c.fingerprint === fingerprint) c.device = name;
      }
      renderPresence();
      return reply;
    },
    revoke: (fingerprint) => conn.keysRevoke(fingerprint),
    self: () => (conn.authOk ? conn.authOk.fingerprint : ''),
  });
  const push = new PushControl($('push-control'), {
    subscribe: (sub) => conn.pushSubscribe(sub),
    unsubscribe: (endpoint) => conn.pushUnsubscribe(endpoint),
    serverId: () => (conn.challenge ? conn.challenge.server_id : ''),
    connected: () => conn.authed,
  });
  const refreshDevices = () => {
    if (role === 'owner') devices.refresh();
    else devices.viewerOnly();
  };

  // A notification click lands on a session and one request's card (deeplink.js).
  const requestFocus = new RequestFocus(ui.stream, {
    current: () => current,
    focused: (requestId) => {
      const it = store.log(current).model.get(`perm:${requestId}`);
      // The card grows by the diff: show it again once the diff is in.
      if (it && !workspace.refused) stream.showFullDiff(it, () => requestFocus.reveal(requestId));
    },
    switchTo: (name) => {
      if (!directory.get(name)) return false;
      switchSession(name);
      return true;
    },
  });

  /** Answer a request of the visible session; true when the server took the answer. */
  const respond = async (it, response) => {
    try {
      await conn.respond(current, it.requestId, response);
      return true;
    } catch (e) {
      if (e.code !== 'not_pending') toast(`Could not answer: ${e.message}`);
      return false;
    }
  };
  // The workspace view (docs/protocol.md §11): the visible session's changes and files.
  const workspace = new WorkspaceView({
    root: $('workspace'),
    open: $('workspace-open'),
    close: $('ws-close'),
    back: $('ws-back'),
    tabs: { changes: $('ws-tab-changes'), files: $('ws-tab-files') },
    body: $('ws-body'),
    title: $('ws-title'),
    wrap: $('ws-wrap'),
    note: $('ws-note'),
  }, {
    status: () => conn.request((id) => msg.filesStatus(id, current)),
    diff: (path, base) => conn.request((id) => msg.filesDiff(id, current, path, base)),
    list: (path) => conn.request((id) => msg.filesList(id, current, path)),
    read: (path, offset) => conn.request((id) => msg.filesRead(id, current, path, offset)),
  });
  const stream = new StreamView(ui.stream, {
    respond,
    canAnswer: () => role === 'owner',
    openTurn: (promptId) => (workspace.refused ? toast(WORKSPACE_REFUSED) : workspace.openTurn(promptId)),
    openFile: (path) => (workspace.refused ? toast(WORKSPACE_REFUSED) : workspace.openFile(path, null, { root: true })),
    // Drawn into the card once loaded; the render after it keeps the card's focus mark.
    fullDiff: (path) => workspace.diffNode(path).finally(() => scheduleRender()),
    // "Approve, accept edits" on a plan card (docs/protocol.md §10).
    setMode: (mode) => conn.sessionSet(current, { permission_mode: mode }).then(
      (r) => controls.setSettings(current, r.settings),
      (e) => toast(`Approved, but the mode stayed: ${e.message}`),
    ),
  });
  const sheet = new ApprovalSheet(ui.sheet, {
    respond,
    respondOther: (req, response) => respondElsewhere(req, response),
    goTo: (req) => requestFocus.set({ session: req.session, requestId: req.requestId }),
    canAnswer: () => role === 'owner',
    show: (it) => {
      const n = stream.nodes.get(it.id);
      if (n) n.el.scrollIntoView({ block: 'center' });
      else toast('The request is in an earlier turn: use “Show earlier turns” at the top.');
    },
  });
  const sessions = new SessionsScreen({
    ui: {
      screen: $('sessions-screen'),
      backdrop: $('sessions-backdrop'),
      open: $('sessions-open'),
      openBadge: $('sessions-badge'),
      close: $('sessions-close'),
      list: $('session-list'),
      listBox: $('sessions-list-box'),
      empty: $('sessions-empty'),
      newBtn: $('session-new'),
      newHome: document.querySelector('#sessions-screen .side-head'),
      newAway: $('session-tools'),
      form: $('session-new-form'),
      workdir: $('session-new-workdir'),
      name: $('session-new-name'),
      worktree: $('session-new-worktree'),
      branch: $('session-new-branch'),
      error: $('session-new-error'),
      status: $('session-new-status'),
      submit: $('session-new-submit'),
      cancel: $('session-new-cancel'),
      browse: $('dir-browse'),
      picker: $('dir-picker'),
      pickerUp: $('dir-up'),
      pickerRoots: $('dir-roots'),
      pickerPath: $('dir-path'),
      pickerList: $('dir-list'),
      pickerMsg: $('dir-msg'),
      recentBox: $('recent-box'),
      recent: $('recent-dirs'),
      convBox: $('conv-box'),
      conversations: $('conversation-list'),
    },
    directory,
    actions: {
      select: (name) => switchSession(name),
      create: (opts, key) => conn.sessionCreate(opts, key),
      dirs: (path) => conn.dirsList(path),
      conversations: (workdir) => conn.conversationsList(workdir),
      created: (reply) => {
        if (typeof reply.session !== 'string') return;
        // The server's `session.changed` may come after the reply: know the session now.
        if (!directory.get(reply.session)) directory.put(normalizeEntry({ session: reply.session, uid: reply.uid, state: 'starting', workdir: reply.workdir, worktree: reply.worktree }));
        refreshSessionsButton();
        switchSession(reply.session);
      },
      isOwner: () => role === 'owner',
      current: () => current,
    },
  });
  const sessionHead = new SessionHead({
    root: $('session-head'),
    title: $('session-title'),
    where: $('session-where'),
    branch: $('session-branch'),
    tools: $('session-tools'),
    closeBtn: $('session-close'),
    renameBtn: $('session-rename'),
    resumeBox: $('resume-box'),
    command: $('resume-command'),
    copy: $('resume-copy'),
    confirmBox: $('close-confirm'),
  }, {
    close: (session, removeWorktree) => conn.sessionClose(session, removeWorktree),
    rename: async (session, title) => {
      await conn.sessionRename(session, title);
      // Shown at once; the server's `session.changed` (renamed) confirms it to every device.
      const entry = directory.get(session);
      if (entry) entry.title = title;
      scheduleRender();
    },
    toast,
  });
  const respondElsewhere = async (req, response) => {
    try {
      // Owners answer another session's request without attaching it (docs/protocol.md §4).
      await conn.respond(req.session, req.requestId, response);
    } catch (e) {
      if (e.code !== 'not_pending') toast(`Could not answer: ${e.message}`);
    }
  };
  // Another session's open requests, fetched whole for the sheet (peek.js).
  const others = new OtherRequests((session, uid) => conn.peekPending(session, uid), () => scheduleSheet());
  const drafts = new Drafts();
  const composer = new Composer({
    form: ui.form,
    input: ui.input,
    dock: ui.dock,
    send: () => sendPrompt(),
    saveDraft: (text) => drafts.saveDraft(current, text),
  });
  // Session controls and attachments (docs/protocol.md §10): a row above the prompt box.
  const extras = document.createElement('div');
  extras.className = 'composer-extras';
  const chips = document.createElement('div');
  chips.className = 'chips attachments';
  chips.hidden = true;
  const bar = document.createElement('div');
  bar.className = 'controls';
  const pickers = document.createElement('span');
  pickers.className = 'pickers';
  extras.append(chips, bar);
  ui.dock.insertBefore(extras, ui.form);
  const queueBox = document.createElement('div');
  queueBox.className = 'queue';
  ui.outbox.before(queueBox);
  const controls = new SessionControls({
    bar,
    queueBox,
    input: ui.input,
    form: ui.form,
    actionsBox: ui.form.querySelector('.prompt-actions'),
    actions: {
      set: (session, settings) => conn.sessionSet(session, settings),
      catalog: (session) => conn.sessionCatalog(session),
      usage: (session) => conn.sessionUsage(session),
      cancel: (session, promptId) => conn.promptCancel(session, promptId),
      steer: () => sendPrompt({ steer: true }),
      schedule: (at) => sendPrompt({ at }),
      toast,
    },
  });
  bar.append(pickers);
  const attachments = new Attachments({
    bar: pickers,
    chips,
    input: ui.input,
    limits: () => limitsFrom(conn.authOk),
    upload: (name, data) => conn.fileUpload(current, name, data),
    toast,
    changed: () => composer.reserve(),
  });

  // --- scrolling: a reader who scrolled up stays where they are
  // The browser's own network events: the header and presence say so at once.
  window.addEventListener('offline', () => scheduleRender());
  window.addEventListener('online', () => scheduleRender());
  let atLatest = true;
  let leftAt = 0; // model items when the reader left the latest
  let leftModel = null;
  const distanceFromBottom = () => document.documentElement.scrollHeight - (window.scrollY + window.innerHeight);
  const toLatest = () => {
    window.scrollTo(0, document.documentElement.scrollHeight);
    atLatest = true;
  };
  /**
   * Where the reader is now: at the latest, or scrolled up (then remember what the
   * stream held when they left). Called on every scroll event and at the start of
   * every render, before the render adds anything: a scroll whose event has not
   * been dispatched yet (a fling in progress, a programmatic jump) still counts, so
   * a render never pulls a reader who just scrolled up back down.
   */
  const noteReaderPosition = () => {
    const was = atLatest;
    atLatest = distanceFromBottom() <= AT_BOTTOM_PX;
    if (was && !atLatest) {
      const model = store.log(current).model;
      leftModel = model;
      leftAt = model.items.length;
    }
    if (!was && atLatest) ui.jump.hidden = true;
  };
  window.addEventListener('scroll', () => {
    noteReaderPosition();
    scheduleSheet();
  }, { passive: true });
  ui.jump.addEventListener('click', () => {
    toLatest();
    ui.jump.hidden = true;
  });
  let sheetFrame = 0;
  const scheduleSheet = () => {
    if (!sheetFrame) {
      sheetFrame = requestAnimationFrame(() => {
        sheetFrame = 0;
        updateSheet();
      });
    }
  };

  /** Whether `elem` is at least partly visible between the header and the dock. */
  function onScreen(elem) {
    const r = elem.getBoundingClientRect();
    const top = document.querySelector('.bar').getBoundingClientRect().bottom;
    const bottom = ui.dock.getBoundingClientRect().top + (ui.sheet.hidden ? 0 : ui.sheet.getBoundingClientRect().height);
    return r.height > 0 && r.bottom > top + 24 && r.top < bottom - 24;
  }

  function pendingRequests(model) {
    return model.items.filter((x) => x.kind === 'permission' && !x.resolved && x.subtype === 'can_use_tool');
  }

  function updateSheet() {
    if (document.body.dataset.screen !== 'session') {
      sheet.update(null);
      return;
    }
    const model = store.log(current).model;
    const pending = pendingRequests(model);
    const first = pending.find((x) => {
      const n = stream.nodes.get(x.id);
      return !n || !onScreen(n.el);
    });
    // This session's requests first; else one waiting in another session.
    const elsewhere = directory.pendingElsewhere(current);
    others.retain(elsewhere);
    if (first || elsewhere.length === 0) {
      sheet.update(first || null, current, model.cwd, pending.length);
    } else {
      const req = elsewhere[0];
      // Owners only: a viewer cannot answer, and the whole request would change nothing.
      const full = role === 'owner' && conn.authed ? others.get(req) : null;
      const entry = directory.get(req.session);
      sheet.updateOther(req, elsewhere.length, { full, loading: role === 'owner' && others.loading(req), cwd: entry ? entry.workdir : '' });
    }
    updateCounts(pending.length + elsewhere.length);
  }

  /** What waits for this person: in the tab title and, where there is one, the app badge. */
  let lastCount = -1;
  function updateCounts(approvals) {
    const pairs = role === 'owner' ? [...pairReqs.values()].filter((c) => !c.dataset.resolved).length : 0;
    const n = (role === 'owner' ? approvals : 0) + pairs;
    if (n === lastCount) return;
    lastCount = n;
    document.title = n > 0 ? `(${n}) ${BASE_TITLE}` : BASE_TITLE;
    if (navigator.setAppBadge) {
      (n > 0 ? navigator.setAppBadge(n) : navigator.clearAppBadge()).catch(() => {});
    }
  }

  // --- rendering (batched: one pass per burst of frames)
  let renderTimer = null;
  const scheduleRender = () => {
    if (renderTimer === null) renderTimer = setTimeout(render, 16);
  };
  function render() {
    renderTimer = null;
    noteReaderPosition();
    const log = store.log(current);
    const before = stream.model;
    stream.render(log.model);
    ui.view.dataset.session = current;
    ui.view.dataset.head = String(log.head);
    ui.view.dataset.base = String(log.base); // seqs up to base are not loaded (tail attach)
    // The hook keeps the state's name; people read a label.
    ui.sessionState.textContent = log.model.state || '…';
    ui.sessionState.dataset.state = log.model.state || '';
    ui.sessionLabel.textContent = SESSION_STATE_TEXT[log.model.state] || (log.model.state ? log.model.state.replace(/_/g, ' ') : '');
    ui.sessionLabel.dataset.state = log.model.state || '';
    ui.sessionLabel.title = log.model.detail || 'Session state';
    const busy = ['busy', 'awaiting_permission'].includes(log.model.state);
    // Screen readers announce a streamed answer once it is complete, not every delta.
    ui.stream.setAttribute('aria-busy', String(log.model.state === 'busy'));
    ui.interrupt.disabled = role !== 'owner' || !busy;
    controls.render(current, log.model, directory.get(current), busy);
    ui.earlier.hidden = !(log.base > 0);
    renderOutbox();
    renderPresence();
    const outboxHere = conn.outbox.some((p) => p.session === current);
    ui.empty.hidden = !(log.model.items.length === 0 && log.base === 0 && !outboxHere && log.head === log.serverHead && conn.authed);
    if (log.model !== before) {
      leftModel = log.model;
      leftAt = log.model.items.length;
    }
    if (atLatest) {
      toLatest();
    } else if (leftModel === log.model) {
      const arrived = log.model.items.slice(leftAt).filter((x) => ['prompt', 'text', 'tool', 'permission'].includes(x.kind)).length;
      ui.jump.dataset.new = String(arrived);
      ui.jump.textContent = arrived > 0 ? `Jump to latest (${arrived} new)` : 'Jump to latest';
      ui.jump.hidden = arrived === 0;
    }
    updateSheet();
    directory.markSeen(current, log.head);
    const entry = directory.get(current);
    sessionHead.render(current, entry, role === 'owner', entry ? resumeCommand(entry.conversation) : '');
    refreshSessionsButton();
    sessions.render();
    requestFocus.apply();
  }

  function renderOutbox() {
    const items = conn.outbox.filter((p) => p.session === current);
    ui.outbox.replaceChildren(
      ...items.map((p) => {
        const d = document.createElement('div');
        d.className = 'msg user pending';
        d.setAttribute('data-testid', 'queued-prompt');
        d.dataset.key = p.key;
        const meta = document.createElement('div');
        meta.className = 'meta';
        const tag = document.createElement('span');
        tag.className = 'tag';
        const sending = conn.authed && navigator.onLine !== false ? 'sending…' : 'waiting for the connection: sent when it is back';
        const at = p.extra && typeof p.extra.at === 'string' ? new Date(p.extra.at) : null;
        tag.textContent = at ? `for ${at.toLocaleString()}: ${sending}` : sending;
        meta.append(tag);
        const body = document.createElement('div');
        body.className = 'body plain';
        body.textContent = contentText(p.content);
        d.append(meta, body);
        return d;
      }),
    );
  }

  function renderPresence() {
    const p = presence.get(current);
    const count = p ? p.count : 0;
    ui.presence.dataset.count = String(count);
    // While disconnected the count is old news: greyed, and not claimed as "online".
    const live = conn.authed && navigator.onLine !== false;
    ui.presence.dataset.live = String(live);
    ui.presenceN.textContent = live ? String(count) : '–';
    ui.presence.title = live ? 'Clients attached to this session' : 'Not connected: who is attached is unknown';
    const clients = p ? [...p.clients.values()] : [];
    ui.devices.replaceChildren(
      ...clients.map((c) => {
        const li = document.createElement('li');
        const name = document.createElement('strong');
        name.textContent = c.device || c.comment || 'client';
        const fp = document.createElement('code');
        fp.className = 'muted';
        fp.textContent = ` ${c.fingerprint || ''}`;
        const r = document.createElement('span');
        r.className = 'pill';
        r.textContent = c.role || '';
        li.append(name, fp, ' ', r);
        if (conn.authOk && c.client_id === conn.authOk.client_id) li.append(' (this page)');
        return li;
      }),
    );
    if (p && p.count > clients.length) {
      const li = document.createElement('li');
      li.className = 'muted';
      li.textContent = `${p.count - clients.length} more`;
      ui.devices.append(li);
    }
  }

  function setPresence(session, m) {
    let p = presence.get(session);
    if (!p) {
      p = { count: 0, clients: new Map() };
      presence.set(session, p);
    }
    if (Array.isArray(m.clients)) {
      p.clients = new Map(m.clients.map((c) => [c.client_id, c]));
    } else {
      for (const c of m.joined || []) p.clients.set(c.client_id, c);
      for (const id of m.left || []) p.clients.delete(id);
    }
    p.count = typeof m.count === 'number' ? m.count : typeof m.clients_total === 'number' ? m.clients_total : p.clients.size;
  }

  // --- sessions
  function setSessions(list) {
    directory.setList(list);
    // A cached view of a name that now belongs to another session is stale.
    for (const e of directory.entries.values()) {
      if (e.uid && store.logs.has(e.session) && store.logs.get(e.session).uid && store.logs.get(e.session).uid !== e.uid && !conn.sessions.has(e.session)) store.drop(e.session);
    }
    const names = [...directory.entries.keys()];
    if (!names.includes(current)) {
      const gone = current;
      current = names.includes('default') ? 'default' : names[0] || 'default';
      if (conn.sessions.has(gone)) conn.release(gone);
      store.drop(gone);
      attachCurrent();
    }
    refreshSessionsButton();
  }

  function refreshSessionsButton() {
    // The header button names the visible session; a tap lists them all.
    const entry = directory.get(current);
    ui.sessionsLabel.textContent = entry ? entry.title : current;
  }

  /** A `session.changed` frame (docs/protocol.md §4). */
  function sessionChanged(m) {
    const { closed, replaced } = directory.changed(m);
    if (replaced && replaced !== current) store.drop(replaced);
    if (closed) {
      if (closed === current && conn.sessions.has(closed)) {
        // Attached: the page leaves once the server detaches it (after `relay.closed`).
      } else if (closed === current) {
        leaveClosed(closed);
      } else {
        store.drop(closed);
      }
    }
    refreshSessionsButton();
  }

  /** The visible session was closed: forget it and show the sessions screen. */
  function leaveClosed(name) {
    conn.sessions.delete(name);
    store.drop(name);
    directory.remove(name);
    refreshSessionsButton();
    if (name === current) {
      const rest = directory.sorted().map((e) => e.session);
      current = rest.includes('default') ? 'default' : rest[0] || 'default';
      localStorage.setItem('ccrelay.session', current);
      refreshSessionsButton();
      attachCurrent();
      sessions.open();
    }
    scheduleRender();
  }

  function switchSession(next) {
    if (next === current) return;
    conn.release(current);
    composer.flushDraft();
    workspace.close();
    current = next;
    refreshSessionsButton();
    localStorage.setItem('ccrelay.session', current);
    // Each session keeps its own draft.
    drafts.draft(current).then((text) => {
      if (current === next) {
        ui.input.value = text;
        composer.grow();
      }
    });
    attachCurrent();
    scheduleRender();
  }


  function attachCurrent() {
    if (conn.sessions.has(current)) return;
    const entry = directory.get(current);
    const log = store.logFor(current, entry ? entry.uid : '');
    conn.sessions.add(current);
    if (conn.authed) conn.attach(current, log.head === 0 ? { tail: TAIL } : {});
  }

  // --- pair requests (shown to owners)
  function pairRequested(m) {
    if (pairReqs.has(m.pair_id)) return;
    const card = document.createElement('article');
    card.className = 'card pair-req';
    card.setAttribute('data-testid', 'pair-request');
    card.dataset.pairId = m.pair_id;
    card.dataset.code = m.code;
    card.setAttribute('role', 'group');
    card.setAttribute('aria-label', `Pair request from ${m.device}`);
    const h = document.createElement('p');
    h.className = 'card-head';
    h.textContent = `“${m.device}” asks to be paired`;
    const code = document.createElement('p');
    code.append('Code ');
    const c = document.createElement('strong');
    c.className = 'pcode';
    c.textContent = m.code;
    code.append(c, ' — approve only if that device shows the same code.');
    const meta = document.createElement('p');
    meta.className = 'muted small';
    meta.textContent = `${m.key_type || ''} ${m.fingerprint || ''}${m.peer ? ` from ${m.peer}` : ''}`;
    const extra = [];
    if (m.denied_recently === true) {
      const note = document.createElement('p');
      note.className = 'muted small';
      note.setAttribute('data-testid', 'pair-denied-recently');
      note.textContent = 'A request from this address was denied in the last hour.';
      extra.push(note);
    }
    const row = document.createElement('div');
    row.className = 'actions';
    const mk = (label, testid, cls, allow, block = false) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = cls;
      b.textContent = label;
      b.setAttribute('data-testid', testid);
      b.disabled = role !== 'owner';
      b.addEventListener('click', async () => {
        for (const x of row.querySelectorAll('button')) x.disabled = true;
        try {
          await conn.pairRespond(m.pair_id, allow, block);
        } catch (e) {
          toast(`Pair answer failed: ${e.message}`);
          for (const x of row.querySelectorAll('button')) x.disabled = false;
        }
      });
      row.append(b);
    };
    mk('Allow', 'pair-allow', 'primary', true);
    mk('Deny', 'pair-deny', 'danger', false);
    mk('Deny and block', 'pair-deny-block', 'danger', false, true);
    card.append(h, code, meta, ...extra, row);
    ui.pairRequests.append(card);
    ui.pairRequests.hidden = false;
    pairReqs.set(m.pair_id, card);
    updateSheet();
  }

  function pairResolved(m) {
    const card = pairReqs.get(m.pair_id);
    if (!card) return;
    card.dataset.resolved = m.allow ? 'allow' : 'deny';
    card.querySelector('.actions')?.remove();
    updateSheet();
    const p = document.createElement('p');
    p.className = 'resolution';
    p.textContent = m.allow ? `Paired (${m.role || 'owner'})` : m.by === 'relay' ? 'Expired or withdrawn' : 'Denied';
    card.append(p);
    setTimeout(() => {
      card.remove();
      pairReqs.delete(m.pair_id);
      if (pairReqs.size === 0) ui.pairRequests.hidden = true;
    }, 15000);
  }

  // --- connection callbacks
  conn.onstate = (state, detail) => {
    setConnState(state, detail);
    push.connectionChanged();
    scheduleRender();
  };
  conn.onauth = (ok) => {
    lastFrame = Date.now();
    role = ok.role || 'owner';
    $('me-role').textContent = role;
    if (conn.challenge) rememberAccepted(conn.challenge.server_id);
    ui.deviceName.readOnly = true;
    show('session');
    if (!directory.known) setSessions(Array.isArray(ok.sessions) ? ok.sessions : [{ session: 'default' }]);
    attachCurrent();
    // The full entries (uid, title, pending, …): on every connect, since the list may
    // have changed while this page was away.
    conn.sessionList().then((r) => {
      if (Array.isArray(r.sessions)) {
        setSessions(r.sessions);
        scheduleRender();
      }
    }).catch(() => {});
    applyRole();
    checkWorkspace();
    refreshDevices();
    if (role === 'owner') push.owned();
    else push.viewer();
    scheduleRender();
  };
  let outboxSize = 0;
  conn.onchange = () => {
    lastFrame = Date.now();
    if (conn.outbox.length !== outboxSize) {
      outboxSize = conn.outbox.length;
      restoring.then(saveUnsent);
    }
    scheduleRender();
  };
  conn.onframe = (m) => {
    lastFrame = Date.now();
    switch (m.type) {
      case 'attached':
        setPresence(m.session, m);
        if (m.session === current) controls.attached(m.session);
        break;
      case 'session.catalog':
        controls.frame(m);
        break;
      case 'presence':
        setPresence(m.session, m);
        break;
      case 'pair.requested':
        pairRequested(m);
        break;
      case 'pair.resolved':
        pairResolved(m);
        if (m.allow) refreshDevices();
        break;
      case 'session.list':
        if (Array.isArray(m.sessions)) setSessions(m.sessions);
        break;
      case 'session.changed':
        controls.frame(m);
        sessionChanged(m);
        break;
      case 'detached':
        // Not asked for (no id) while kept attached: the session was closed (docs/protocol.md §4).
        if (m.id === undefined && conn.sessions.has(m.session)) leaveClosed(m.session);
        break;
      case 'prompt.failed':
        toast(`Prompt not accepted: ${m.message || m.code}`);
        break;
      default:
        break;
    }
    scheduleRender();
  };
  conn.onattachfailed = (session, m) => {
    // The name is gone, or belongs to another session now (`uid`): drop this view.
    store.drop(session);
    if (m.code === 'no_such_session') directory.remove(session);
    if (session === current) {
      toast(m.code === 'no_such_session' ? `The session “${session}” is gone.` : `Could not open “${session}”: ${m.message || m.code}`);
      leaveClosed(session);
    }
    conn.sessionList().then((r) => Array.isArray(r.sessions) && setSessions(r.sessions)).catch(() => {});
  };
  conn.onpair = async (pending, challenge) => {
    setConnState('pairing', 'waiting for an owner to approve');
    ui.connText.textContent = 'Awaiting approval';
    const mine = await pairCode(challenge.nonce, key.fingerprint);
    if (mine === pending.code) {
      ui.pairCode.textContent = mine;
      ui.pairCodeBox.hidden = false;
      ui.pairMsg.textContent = 'Waiting for an owner to approve this device…';
    } else {
      ui.pairCodeBox.hidden = true;
      ui.pairMsg.textContent = 'The server’s pairing code does not match the one this device computed. Do not approve this request: someone may be in the middle.';
    }
  };
  conn.onrefused = (m, mode, invited) => {
    const serverId = conn.challenge ? conn.challenge.server_id : '';
    ui.pairCodeBox.hidden = true;
    ui.pairStart.disabled = false;
    show('pairing');
    if (invited && m.code === 'auth_failed') {
      setConnState('refused', 'the invite was not accepted');
      ui.pairMsg.textContent = 'The invite was not accepted: it was used already or expired, or this browser is paired already (“Try signing in again”). Ask for a new invite.';
      return;
    }
    if (m.code === 'rate_limited') {
      setConnState(mode === 'pair' ? 'pairing' : 'refused', m.message);
      ui.pairMsg.textContent = mode === 'pair'
        ? 'Another pair request from this address is already waiting, or an owner blocked pair requests from it for an hour. Try again later.'
        : 'Too many failed sign-ins from this address. Wait a minute, then try again.';
      return;
    }
    if (m.code === 'overloaded') {
      setConnState('pairing', m.message);
      ui.pairMsg.textContent = 'The server has too many pair requests waiting. Try again later.';
      return;
    }
    if (mode === 'pair') {
      if (m.code === 'auth_failed') {
        setConnState('refused', 'pairing denied or expired');
        ui.pairMsg.textContent = 'The pair request was denied, or nobody answered in time.';
      } else {
        setConnState('pairing', m.message);
        ui.pairMsg.textContent = 'This server does not accept pair requests. An owner can add the key above with `ccrelay keys add`, then “Try signing in again”.';
      }
      return;
    }
    if (acceptedBefore(serverId)) {
      setConnState('refused', 'this key is no longer accepted');
      ui.pairMsg.textContent = 'This server accepted this browser before but refuses it now: its key was probably removed. Ask to pair again.';
    } else {
      setConnState('pairing');
      ui.pairMsg.textContent = '';
    }
  };

  ui.pairStart.addEventListener('click', () => {
    device = cleanDeviceName(ui.deviceName.value);
    showKey();
    ui.pairStart.disabled = true;
    ui.pairMsg.textContent = 'Asking the server…';
    conn.open('pair');
  });
  ui.retryNow.addEventListener('click', () => {
    ui.retryNow.disabled = true;
    setTimeout(() => {
      ui.retryNow.disabled = false;
    }, 1000);
    conn.open();
  });
  ui.retryAuth.addEventListener('click', () => {
    ui.pairMsg.textContent = '';
    conn.open('auth');
  });

  /**
   * Viewers see the workspace only when the server runs with --viewer-files: ask once
   * per sign-in, and hide the view with a short note when refused (docs/protocol.md §11).
   */
  function checkWorkspace() {
    workspace.refused = false;
    if (role === 'owner') {
      workspace.setAvailable(true);
      return;
    }
    conn.request((id) => msg.filesStatus(id, current)).then(() => workspace.setAvailable(true)).catch((e) => {
      if (e.code !== 'forbidden') return;
      workspace.refused = true;
      workspace.setAvailable(false, WORKSPACE_REFUSED);
    });
  }

  // --- roles: a viewer's page has nothing to send or answer with
  function applyRole() {
    const viewer = role !== 'owner';
    ui.viewOnly.hidden = !viewer;
    ui.inviteBox.hidden = viewer;
    controls.setRole(!viewer);
    if (viewer) {
      pickers.remove();
      chips.remove();
      ui.form.remove();
      // Nothing a viewer cannot use: no new-session button or form (sessions.js), no rename, no close, no resume command.
      $('session-new')?.remove();
      $('session-rename')?.remove();
      $('session-new-form')?.remove();
    }
    else if (!ui.form.isConnected) ui.dock.append(ui.form);
    composer.reserve();
    stream.model = null; // permission cards are drawn for this role
  }

  // --- prompt box
  const created = new Map(); // outbox key → when it was written (for the resend window)
  /** Send the box (and the attached images); `extra` `{steer: true}` for "Steer", `{at}` for "Later". */
  function sendPrompt(extra = {}) {
    const text = ui.input.value;
    if ((!text.trim() && attachments.images.length === 0) || role !== 'owner') return;
    if (attachments.busy) {
      toast('An attachment is still being prepared.');
      return;
    }
    const key = conn.prompt(current, promptContent(text, attachments.take()), undefined, extra);
    created.set(key, Date.now());
    ui.input.value = '';
    composer.grow();
    composer.flushDraft();
    saveUnsent();
    ui.input.focus();
    // Their own send takes the reader to the latest.
    toLatest();
  }
  /** Prompts not acknowledged yet, for a reload (drafts.js). */
  function saveUnsent() {
    // A scheduled prompt keeps its time: resent after a reload, it must not run at once.
    drafts.saveUnsent(conn.outbox.map((p) => ({ key: p.key, session: p.session, content: p.content, at: p.extra && typeof p.extra.at === 'string' ? p.extra.at : undefined, created: created.get(p.key) || Date.now() })));
  }
  ui.form.addEventListener('submit', (e) => {
    e.preventDefault();
    sendPrompt();
  });
  for (const b of document.querySelectorAll('.example')) {
    b.addEventListener('click', () => {
      ui.input.value = b.textContent;
      composer.grow();
      ui.input.focus();
    });
  }
  // Restore what a reload interrupted: the draft, and prompts never acknowledged.
  const restoring = (async () => {
    const draft = await drafts.draft(current);
    if (draft && !ui.input.value) {
      ui.input.value = draft;
      composer.grow();
    }
    const { resend, redraft } = triage(await drafts.unsent());
    for (const p of resend) {
      created.set(p.key, p.created);
      conn.prompt(p.session, p.content, p.key, typeof p.at === 'string' ? { at: p.at } : {});
    }
    const back = redraft.filter((p) => p.session === current && typeof p.content === 'string').map((p) => p.content);
    if (back.length) {
      ui.input.value = [...back, ui.input.value].filter(Boolean).join('\n\n');
      composer.grow();
      composer.flushDraft();
      toast('A prompt from before the reload was not sent in time: it is back in the prompt box.');
    }
    saveUnsent();
  })();
  ui.interrupt.addEventListener('click', async () => {
    try {
      await conn.interrupt(current);
    } catch (e) {
      toast(`Interrupt failed: ${e.message}`);
    }
  });

  // --- load earlier (history)
  ui.earlier.addEventListener('click', async () => {
    const log = store.log(current);
    if (log.base <= 0) return;
    ui.earlier.disabled = true;
    ui.earlierMsg.textContent = '';
    try {
      const reply = await conn.history(current, log.base + 1, HISTORY_PAGE);
      // Keep the first item on screen where it is while the earlier ones go in above it.
      const anchor = firstVisibleItem();
      const added = log.prepend(Array.isArray(reply.events) ? reply.events : []);
      if (added > 0) {
        clearTimeout(renderTimer);
        render();
        if (anchor) {
          const n = stream.nodes.get(anchor.id);
          if (n) window.scrollBy(0, n.el.getBoundingClientRect().top - anchor.top);
        }
      }
      if (reply.truncated && added === 0) ui.earlierMsg.textContent = 'Earlier events are no longer kept by the server.';
      else if (added === 0) ui.earlierMsg.textContent = 'Nothing earlier.';
      scheduleRender();
    } catch (e) {
      ui.earlierMsg.textContent = e.code === 'unknown_type' ? 'This server cannot send earlier events.' : `Could not load: ${e.message}`;
    } finally {
      ui.earlier.disabled = false;
    }
  });

  /** The first stream item whose box shows below the header: its id and screen position. */
  function firstVisibleItem() {
    const top = document.querySelector('.bar').getBoundingClientRect().bottom;
    for (const [id, n] of stream.nodes) {
      const r = n.el.getBoundingClientRect();
      if (r.height > 0 && r.bottom > top) return { id, top: r.top };
    }
    return null;
  }

  // --- pairing invites (owners): a QR code of this page's URL with `#invite=`
  ui.invite.addEventListener('click', async () => {
    ui.invite.disabled = true;
    ui.inviteNote.textContent = 'Asking the server for an invite…';
    try {
      const reply = await conn.pairInvite('owner');
      if (typeof reply.invite !== 'string' || !/^[A-Za-z0-9_-]{16,200}$/.test(reply.invite)) throw new Error('the server sent no usable invite');
      const url = `${location.origin}${location.pathname}#invite=${reply.invite}`;
      ui.inviteQr.dataset.url = url;
      const link = document.createElement('code');
      link.className = 'keyline small';
      link.textContent = url;
      ui.inviteQr.replaceChildren(qrSvg(url, 'QR code of a one-time pairing link'), link);
      ui.inviteQr.hidden = false;
      const minutes = Math.max(1, Math.round((Number(reply.expires_in_ms) || 600000) / 60000));
      ui.inviteNote.textContent = `Scan it with the phone's camera. It works once, within ${minutes} minute${minutes === 1 ? '' : 's'}, and pairs that device as an owner.`;
    } catch (e) {
      ui.inviteQr.hidden = true;
      ui.inviteNote.textContent = e.code === 'unknown_type'
        ? 'This server cannot make invites (it is older than this page). Pair the other way: “Ask to pair” on the new device.'
        : `No invite: ${e.message}`;
    } finally {
      ui.invite.disabled = false;
    }
  });

  // --- "last frame" ticker
  setInterval(() => {
    if (!lastFrame || !conn.authed || navigator.onLine === false) {
      // Not connected: nothing is live, and an old "N s ago" would suggest it is.
      ui.since.textContent = '';
      return;
    }
    // Relative times ("5 min ago") in the sessions screen age by themselves.
    if (Date.now() % 30000 < 1000) sessions.render();
    const s = Math.round((Date.now() - lastFrame) / 1000);
    ui.since.textContent = s < 2 ? 'live' : s < 120 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
  }, 1000);

  // --- go
  show('');
  setConnState('connecting');
  const invite = takeInvite();
  if (invite) {
    // Opened from an invite (`#invite=<token>`): pair with it, no code to compare.
    conn.invite = invite;
    conn.open('pair');
  } else {
    conn.open('auth');
  }

  requestFocus.set(parseTarget(location.hash));
  window.addEventListener('hashchange', () => requestFocus.set(parseTarget(location.hash)));
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => {
      // The page works without it (no offline shell).
    });
    // A notification clicked while this page is open (sw.js openPage).
    navigator.serviceWorker.addEventListener('message', (e) => {
      if (e.data && e.data.type === 'ccrelay.open') requestFocus.set(parseTarget(e.data.hash));
    });
  }
}

main().catch((e) => {
  setConnState('refused', String(e));
  toast(`The page failed to start: ${e.message || e}`);
});
