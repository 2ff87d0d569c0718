// sw.js — the service worker: keeps the page's shell and this build's assets so the
// page opens (and shows its connection state) without a network, and shows the
// server's push notifications (docs/protocol.md §9.2): a permission request with Allow / Deny
// actions that answer it through `POST /v1/push/respond` (the token in the payload
// names the request), replaced under the same tag by "Answered" when the request is
// resolved elsewhere (`dismiss`), and turns ended / agent failures. Build __VERSION__.
// Allow is offered only for a request the notification shows whole (`complete:true`,
// checked again here); any other is deny-only, and a click on it opens the page at
// that request (`#request=<id>&session=<name>`, js/deeplink.js) to be read first.
// Never caches /v1/ (the WebSocket and API) or touches other origins.
// The notification logic is in `ccrelayNotify` (also reachable as `self.ccrelayNotify`,
// so browser tests call the very functions the event listeners call).

const VERSION = '__VERSION__';
const CACHE = `ccrelay-${VERSION}`;
const SHELL = [
  '/',
  '/manifest.webmanifest',
  '/icons/icon.svg',
  '/icons/icon-192.png',
  `/v/${VERSION}/app.css`,
  `/v/${VERSION}/js/app.js`,
  `/v/${VERSION}/js/connection.js`,
  `/v/${VERSION}/js/deeplink.js`,
  `/v/${VERSION}/js/directory.js`,
  `/v/${VERSION}/js/drafts.js`,
  `/v/${VERSION}/js/idb.js`,
  `/v/${VERSION}/js/keys.js`,
  `/v/${VERSION}/js/peek.js`,
  `/v/${VERSION}/js/protocol.js`,
  `/v/${VERSION}/js/push.js`,
  `/v/${VERSION}/js/qr.js`,
  `/v/${VERSION}/js/session.js`,
  `/v/${VERSION}/js/sshsig.js`,
  `/v/${VERSION}/js/vendor/qrcode.js`,
  `/v/${VERSION}/js/views/composer.js`,
  `/v/${VERSION}/js/views/devices.js`,
  `/v/${VERSION}/js/views/diff.js`,
  `/v/${VERSION}/js/views/dom.js`,
  `/v/${VERSION}/js/views/markdown.js`,
  `/v/${VERSION}/js/views/panel.js`,
  `/v/${VERSION}/js/views/sessions.js`,
  `/v/${VERSION}/js/views/sheet.js`,
  `/v/${VERSION}/js/views/stream.js`,
  `/v/${VERSION}/js/views/text.js`,
];

self.addEventListener('install', (e) => {
  e.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (e) => {
  e.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('ccrelay-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.startsWith('/v1/')) return;
  if (e.request.mode === 'navigate') {
    // Network first: the shell is no-cache, so a new build shows at once when online.
    e.respondWith(fetch(e.request).catch(() => caches.match('/')));
    return;
  }
  if (url.pathname.startsWith(`/v/${VERSION}/`) || url.pathname.startsWith('/icons/')) {
    e.respondWith(caches.match(e.request).then((hit) => hit || fetch(e.request)));
  }
});

// ---- notifications (docs/protocol.md §9.2) ------------------------------------------

const ICON = '/icons/icon-192.png';
const RESPOND_TIMEOUT_MS = 10000;

/** A short text for a notification: one line, at most `max` characters. */
function clip(s, max = 160) {
  const t = String(s == null ? '' : s).replace(/\s+/g, ' ').trim();
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

/** Longest summary a `complete` request may have (docs/protocol.md §9.2.6). */
const COMPLETE_MAX_CHARS = 150;
/** Characters that do not show as themselves: controls, format and bidi characters,
 * line/paragraph separators, spaces other than U+0020, fillers... */
const HIDDEN = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\u115f\u1160\u180e\u2800\u3164\uffa0]/u;
/** ...and the invisible combining marks: grapheme joiner, variation selectors. */
const HIDDEN_MARKS = [[0x034f, 0x034f], [0x17b4, 0x17b5], [0x180b, 0x180d], [0x180f, 0x180f], [0xfe00, 0xfe0f], [0xe0100, 0xe01ef]];

function hides(s) {
  if (HIDDEN.test(s)) return true;
  for (const c of s) {
    const cp = c.codePointAt(0);
    if (HIDDEN_MARKS.some(([lo, hi]) => cp >= lo && cp <= hi)) return true;
  }
  return false;
}

/** The server says the summary shows the whole request, and it can be shown as it is. */
function shownWhole(p) {
  const s = p && p.summary;
  return p.complete === true && typeof s === 'string' && s.trim() !== '' && [...s].length <= COMPLETE_MAX_CHARS && !hides(s);
}

/** Where a click on a notification about `session` (and `requestId`) opens the page. */
function pageTarget(session, requestId) {
  const params = new URLSearchParams();
  if (requestId) params.set('request', String(requestId));
  if (session) params.set('session', session);
  const hash = params.toString();
  return hash ? `#${hash}` : '';
}

function duration(ms) {
  const s = Math.round(Number(ms) / 1000);
  if (!Number.isFinite(s) || s < 0) return '';
  return s < 120 ? `${s} s` : `${Math.round(s / 60)} min`;
}

const ccrelayNotify = {
  /**
   * The notification for a §9 payload: `{title, options}`. `previous` is the data of
   * the notification currently shown under the same tag, if any (a `dismiss` names
   * the tool and command from it).
   */
  notificationFor(p, previous) {
    const session = clip(p && p.session, 64) || 'default';
    const base = { icon: ICON, badge: ICON, timestamp: Date.now() };
    switch (p && p.kind) {
      case 'permission': {
        const tool = clip(p.tool, 64) || 'A tool';
        // Allow only for a request shown whole: its summary exactly as sent.
        const complete = shownWhole(p);
        const tokens = {};
        for (const a of Array.isArray(p.actions) ? p.actions : []) {
          if (a && (a.action === 'deny' || (a.action === 'allow' && complete)) && typeof a.token === 'string') tokens[a.action] = a.token;
        }
        const actions = [];
        if (tokens.allow) actions.push({ action: 'allow', title: 'Allow' });
        if (tokens.deny) actions.push({ action: 'deny', title: 'Deny' });
        const summary = complete ? p.summary : clip(p.summary, 300);
        const review = !complete && tokens.deny ? '\nOpen to see the whole request before allowing it.' : '';
        return {
          // Questions the agent asks come without actions: they are answered in the page.
          title: actions.length ? `${tool} needs permission (${session})` : `${tool} needs an answer (${session})`,
          options: {
            ...base,
            body: `${summary || `${tool} wants to run.`}${review}`,
            tag: `${session}/${p.request_id}`,
            requireInteraction: true,
            renotify: true,
            actions,
            data: { kind: 'permission', session, request_id: p.request_id, tool, summary, complete, tokens },
          },
        };
      }
      case 'dismiss': {
        const by = clip(p.by || p.device, 64);
        const what = previous && previous.kind === 'permission' ? `${previous.tool}${previous.summary ? `: ${previous.summary}` : ''}` : '';
        return {
          // No `by`: the request was cancelled; `relay`: denied by --permission-timeout.
          title: by === 'relay' ? 'Denied after the timeout' : by ? `Answered by ${by}` : 'Answered or withdrawn',
          options: {
            ...base,
            body: what || `A permission request in ${session} was answered or withdrawn.`,
            tag: `${session}/${p.request_id}`,
            renotify: false,
            silent: true,
            data: { kind: 'dismiss', session, request_id: p.request_id, by },
          },
        };
      }
      case 'turn_ended': {
        const parts = [duration(p.duration_ms)];
        if (typeof p.cost_usd === 'number') parts.push(`$${p.cost_usd.toFixed(2)}`);
        return {
          title: `Turn finished (${session})`,
          options: {
            ...base,
            body: `The agent is done${parts[0] ? ` after ${parts.filter(Boolean).join(', ')}` : ''}.`,
            tag: `${session}/${p.prompt_id}`,
            data: { kind: 'turn_ended', session, prompt_id: p.prompt_id },
          },
        };
      }
      case 'agent_failed':
        return {
          title: `The agent failed (${session})`,
          options: {
            ...base,
            body: clip(p.detail, 300) || 'The session needs a restart.',
            tag: `${session}/failed`,
            data: { kind: 'agent_failed', session },
          },
        };
      default:
        // Something this build does not know: still show it (a push must be visible).
        return { title: 'ccrelay', options: { ...base, body: 'Something needs your attention.', tag: 'ccrelay/other', data: { kind: 'other' } } };
    }
  },

  /** The notification currently shown under `tag`, if any. */
  async shown(tag) {
    const list = await self.registration.getNotifications({ tag });
    return list.length ? list[list.length - 1] : null;
  },

  /** A push arrived: `payload` is the parsed JSON (or null when it was not JSON). */
  async onPush(payload) {
    const tag = payload && payload.kind === 'dismiss' ? `${clip(payload.session, 64) || 'default'}/${payload.request_id}` : null;
    const prev = tag ? await ccrelayNotify.shown(tag) : null;
    if (prev && prev.data && prev.data.outcome) {
      // This device answered from the notification: its outcome says more than "Answered".
      return self.registration.showNotification(prev.title, { body: prev.body, tag, icon: ICON, silent: true, renotify: false, data: prev.data });
    }
    const { title, options } = ccrelayNotify.notificationFor(payload, prev ? prev.data : null);
    return self.registration.showNotification(title, options);
  },

  /** POST the token to this origin's `/v1/push/respond`: `{status}` or `{error}`. */
  async respond(token, timeoutMs = RESPOND_TIMEOUT_MS) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    try {
      const res = await fetch(new URL('/v1/push/respond', self.location.origin), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token }),
        credentials: 'omit',
        cache: 'no-store',
        signal: ctl.signal,
      });
      return { status: res.status };
    } catch (e) {
      return { error: ctl.signal.aborted ? 'timeout' : String(e && e.message ? e.message : e) };
    } finally {
      clearTimeout(timer);
    }
  },

  /** The outcome notification's title and body for a respond result. */
  outcomeText(action, result, data) {
    const what = `${data.tool}${data.summary ? `: ${data.summary}` : ''}`;
    if (result.status === 200) return { outcome: action, title: action === 'allow' ? 'Allowed' : 'Denied', body: what };
    if (result.status === 409) return { outcome: 'not_pending', title: 'Already answered', body: what };
    if (result.status === 403) return { outcome: 'invalid_token', title: 'Expired', body: `This notification can no longer answer (expired or used). ${what}` };
    return null;
  },

  /**
   * A click on a notification: Allow / Deny answer the request with its token and
   * replace the notification with the outcome; a click on the body opens the page.
   */
  async onClick(notification, action) {
    const data = notification.data || {};
    const answerable = action === 'deny' || (action === 'allow' && data.complete === true);
    if (answerable && data.kind === 'permission' && data.tokens && data.tokens[action]) {
      const result = await ccrelayNotify.respond(data.tokens[action]);
      const out = ccrelayNotify.outcomeText(action, result, data);
      if (out) {
        return self.registration.showNotification(out.title, {
          body: out.body,
          tag: notification.tag,
          icon: ICON,
          silent: true,
          renotify: false,
          data: { ...data, tokens: {}, outcome: out.outcome },
        });
      }
      // Not answered (no network, server error): keep the actions for another try.
      const why = result.error === 'timeout' ? 'the server did not answer in time' : result.error ? 'the server could not be reached' : `the server answered ${result.status}`;
      return self.registration.showNotification(notification.title, {
        body: `Not answered: ${why}. ${data.summary || ''}`.trim(),
        tag: notification.tag,
        icon: ICON,
        requireInteraction: true,
        renotify: false,
        actions: [
          ...(data.tokens.allow && data.complete === true ? [{ action: 'allow', title: 'Allow' }] : []),
          ...(data.tokens.deny ? [{ action: 'deny', title: 'Deny' }] : []),
        ],
        data,
      });
    }
    notification.close();
    // A permission opens the page at its card (the whole request, with its diff).
    const requestId = data.kind === 'permission' ? data.request_id : null;
    return ccrelayNotify.openPage(data.session ? pageTarget(data.session, requestId) : '');
  },

  /**
   * Focus a window of this page and tell it where to go (`hash`, e.g.
   * `#request=r1&session=default`: js/deeplink.js), else open one there.
   */
  async openPage(hash = '') {
    const wins = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const w of wins) {
      if (new URL(w.url).origin === self.location.origin && 'focus' in w) {
        if (hash) w.postMessage({ type: 'ccrelay.open', hash });
        // Focusing needs the click's user activation; without it the page still moved.
        return w.focus().catch(() => w);
      }
    }
    return self.clients.openWindow(`/${hash}`);
  },

  /** The page target of a notification click (for tests and the click handler). */
  pageTarget,

  /**
   * The push service replaced or dropped the subscription: subscribe again with the
   * same server key when the browser did not, then ask open pages to register it
   * (the page holds the signing key; the worker never speaks the WebSocket).
   */
  async onSubscriptionChange(oldSub, newSub) {
    let sub = newSub;
    const key = oldSub && oldSub.options ? oldSub.options.applicationServerKey : null;
    if (!sub && key) {
      sub = await self.registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }).catch(() => null);
    }
    const wins = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const w of wins) w.postMessage({ type: 'ccrelay.pushsubscriptionchange' });
    return sub;
  },
};
self.ccrelayNotify = ccrelayNotify;

self.addEventListener('push', (e) => {
  let payload;
  try {
    payload = e.data ? e.data.json() : null;
  } catch {
    payload = null; // not JSON: a generic notification still shows
  }
  e.waitUntil(ccrelayNotify.onPush(payload));
});

self.addEventListener('notificationclick', (e) => {
  e.waitUntil(ccrelayNotify.onClick(e.notification, e.action));
});

self.addEventListener('pushsubscriptionchange', (e) => {
  e.waitUntil(ccrelayNotify.onSubscriptionChange(e.oldSubscription, e.newSubscription));
});
