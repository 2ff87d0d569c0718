// push.js — "Notify this device" (Web Push, docs/protocol.md §9.1), for owners only: asks the
// Notification permission from the person's click, subscribes the service worker's
// PushManager with the server's VAPID key (`GET /v1/push/key`), registers the
// subscription over the WebSocket (`push.subscribe`), and turning it off sends
// `push.unsubscribe` and unsubscribes in the browser. After every (re)authentication
// `sync()` re-sends the subscription when the browser's differs from the one the
// server last accepted (or the browser dropped it), and the service worker's
// `pushsubscriptionchange` asks the page to do the same.
// Owns: the control in the side panel and the record of what the server accepted
// (localStorage, per server id). Must not: touch the WebSocket itself (the page
// passes `subscribe` / `unsubscribe`), or run for viewers (the page calls `viewer()` instead).

const RECORD = 'ccrelay.push.';
const READY_TIMEOUT_MS = 10000;

/** The control's states (attribute `data-state` of `push-control`). */
export const STATES = ['unsupported', 'unavailable', 'blocked', 'off', 'working', 'on', 'error'];

const TEXT = {
  unsupported: 'This browser cannot receive push notifications from this page.',
  unavailable: 'This server does not send push notifications.',
  blocked: 'Notifications are blocked for this site in the browser’s settings.',
  off: 'Permission requests and long turns are not pushed to this device.',
  working: 'Working…',
  on: 'This device gets a notification when a permission request waits, a long turn ends or the agent fails.',
  error: 'Could not turn notifications on.',
};

/** Why this page cannot use Web Push here, or '' when it can. */
export function pushUnsupportedReason(win) {
  if (!win.isSecureContext) return 'Push notifications need a secure context (https:// or localhost).';
  if (!('serviceWorker' in win.navigator)) return 'This browser has no service workers here (a private window?).';
  if (!('PushManager' in win)) return 'This browser has no Push API here (on iPhone and iPad: add the page to the home screen first).';
  if (!('Notification' in win)) return 'This browser cannot show notifications.';
  return '';
}

/** base64url (no padding) → bytes. */
export function fromBase64Url(s) {
  const b64 = String(s).replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** bytes (ArrayBuffer or view) → base64url without padding. */
export function toBase64Url(buf) {
  const bytes = buf instanceof ArrayBuffer ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The §9 `subscription` object of a browser PushSubscription: endpoint and keys only. */
export function subscriptionJson(sub) {
  const j = sub.toJSON();
  return { endpoint: j.endpoint, keys: { p256dh: j.keys.p256dh, auth: j.keys.auth } };
}

function sameSubscription(a, b) {
  return !!a && !!b && a.endpoint === b.endpoint && a.keys.p256dh === b.keys.p256dh && a.keys.auth === b.keys.auth;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

export class PushControl {
  /**
   * @param {HTMLElement} root the control's container (`push-control`)
   * @param {{subscribe: (sub: object) => Promise<object>, unsubscribe: (endpoint: string) => Promise<object>,
   *          serverId: () => string, connected: () => boolean}} api  `subscribe` and
   *   `unsubscribe` send `push.subscribe` / `push.unsubscribe` and resolve with the
   *   reply (an `error` rejects with `.code`)
   */
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.state = 'off';
    this.detail = '';
    this.owner = false;
    this.busy = null; // the running operation (one at a time)
    this.status = el('p', 'small muted');
    this.status.setAttribute('data-testid', 'push-status');
    this.status.setAttribute('role', 'status');
    this.button = el('button', '', 'Notify this device');
    this.button.type = 'button';
    this.button.setAttribute('data-testid', 'push-toggle');
    this.button.addEventListener('click', () => this.toggle());
    root.setAttribute('data-testid', 'push-control');
    root.replaceChildren(this.button, this.status);
    this.unsupported = pushUnsupportedReason(window);
    root.hidden = true;
    if (!this.unsupported && navigator.serviceWorker) {
      navigator.serviceWorker.addEventListener('message', (e) => {
        if (e.data && e.data.type === 'ccrelay.pushsubscriptionchange') this.sync();
      });
    }
    this.set(this.unsupported ? 'unsupported' : 'off');
  }

  set(state, detail = '') {
    this.state = state;
    this.detail = detail;
    this.render();
  }

  render() {
    this.root.dataset.state = this.state;
    this.status.textContent = this.detail || (this.state === 'unsupported' ? this.unsupported : TEXT[this.state]);
    this.button.textContent = this.state === 'on' ? 'Stop notifying this device' : 'Notify this device';
    this.button.setAttribute('aria-pressed', String(this.state === 'on'));
    const usable = ['off', 'on', 'error'].includes(this.state) && this.api.connected();
    this.button.disabled = !usable || this.busy !== null;
  }

  /** A viewer's page: no control at all (viewers cannot subscribe). */
  viewer() {
    this.owner = false;
    this.root.hidden = true;
  }

  /** An owner's page after (re)authentication: show the control and re-sync. */
  owned() {
    this.owner = true;
    this.root.hidden = false;
    return this.sync();
  }

  /** The connection changed: only the button's enabled state depends on it. */
  connectionChanged() {
    this.render();
  }

  recordKey() {
    return RECORD + (this.api.serverId() || 'server');
  }

  record() {
    try {
      const r = JSON.parse(localStorage.getItem(this.recordKey()) || 'null');
      return r && typeof r.endpoint === 'string' && r.keys ? r : null;
    } catch {
      return null;
    }
  }

  setRecord(sub) {
    if (sub) localStorage.setItem(this.recordKey(), JSON.stringify(sub));
    else localStorage.removeItem(this.recordKey());
  }

  /** Run one operation at a time; the control shows `working` meanwhile. */
  async exclusive(fn) {
    if (this.busy) return this.busy;
    const previous = this.state;
    this.busy = (async () => {
      this.set('working');
      try {
        await fn(previous);
      } catch (e) {
        this.set('error', `Could not change notifications: ${e.message || e}`);
      } finally {
        this.busy = null;
        this.render();
      }
    })();
    return this.busy;
  }

  toggle() {
    if (this.state === 'on') return this.exclusive(() => this.turnOff());
    // The permission prompt must come from the click itself: ask before any await.
    const asked = Notification.permission === 'default' ? Notification.requestPermission() : Promise.resolve(Notification.permission);
    return this.exclusive(() => this.turnOn(asked));
  }

  async serverKey() {
    let res;
    try {
      res = await fetch('/v1/push/key', { cache: 'no-store', credentials: 'omit' });
    } catch {
      return null;
    }
    if (!res.ok) return null;
    const body = await res.json().catch(() => null);
    return body && typeof body.vapid_public_key === 'string' ? fromBase64Url(body.vapid_public_key) : null;
  }

  async registration() {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('the service worker did not start')), READY_TIMEOUT_MS);
    });
    try {
      return await Promise.race([navigator.serviceWorker.ready, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The browser's subscription for `key`, made if missing (or made for another key). */
  async browserSubscription(reg, key) {
    let sub = await reg.pushManager.getSubscription();
    const subKey = sub && sub.options && sub.options.applicationServerKey;
    if (sub && subKey && toBase64Url(subKey) !== toBase64Url(key)) {
      // Made for another VAPID key (the server's data dir was reset): replace it.
      await sub.unsubscribe().catch(() => false);
      sub = null;
    }
    return sub || reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
  }

  async turnOn(asked) {
    const permission = await asked;
    if (permission === 'denied') {
      this.set('blocked');
      return;
    }
    if (permission !== 'granted') {
      this.set('off', 'Notifications were not allowed (the browser asked, nobody said yes).');
      return;
    }
    const key = await this.serverKey();
    if (!key) {
      this.set('unavailable');
      return;
    }
    const reg = await this.registration();
    const sub = subscriptionJson(await this.browserSubscription(reg, key));
    await this.register(sub, reg);
  }

  /** Send `push.subscribe`; on `ok` remember what the server holds. */
  async register(sub, reg) {
    try {
      await this.api.subscribe(sub);
    } catch (e) {
      if (e.code === 'unknown_type') {
        // A server without Web Push: leave nothing subscribed behind.
        const made = await reg.pushManager.getSubscription();
        if (made) await made.unsubscribe().catch(() => false);
        this.setRecord(null);
        this.set('unavailable', 'This server does not accept push subscriptions.');
        return;
      }
      if (e.code === 'forbidden') {
        this.set('error', 'Only owners can get notifications.');
        return;
      }
      this.set('error', `The server refused the subscription: ${e.message || e.code}`);
      return;
    }
    this.setRecord(sub);
    this.set('on');
  }

  async turnOff() {
    const rec = this.record();
    let sub = null;
    if (!this.unsupported) {
      const reg = await this.registration().catch(() => null);
      sub = reg ? await reg.pushManager.getSubscription() : null;
    }
    const endpoints = new Set([rec && rec.endpoint, sub && sub.endpoint].filter(Boolean));
    for (const endpoint of endpoints) {
      // The server forgets it first (while the endpoint is known); a failure here is
      // healed by the push service's 404/410 once the browser has unsubscribed.
      await this.api.unsubscribe(endpoint).catch(() => null);
    }
    if (sub) await sub.unsubscribe().catch(() => false);
    this.setRecord(null);
    this.set('off');
  }

  /**
   * After each authentication (and when the worker reports a changed subscription):
   * work out the state, and re-send the subscription if the browser's changed.
   */
  sync() {
    if (!this.owner) return Promise.resolve();
    if (this.unsupported) {
      this.set('unsupported');
      return Promise.resolve();
    }
    return this.exclusive(async () => {
      const rec = this.record();
      if (Notification.permission === 'denied') {
        if (rec) {
          await this.api.unsubscribe(rec.endpoint).catch(() => null);
          this.setRecord(null);
        }
        this.set('blocked');
        return;
      }
      if (!rec) {
        this.set('off');
        return;
      }
      if (Notification.permission !== 'granted') {
        this.set('off');
        return;
      }
      const reg = await this.registration();
      let sub = await reg.pushManager.getSubscription();
      if (sub) {
        const now = subscriptionJson(sub);
        if (sameSubscription(now, rec)) {
          this.set('on');
          return;
        }
      }
      // The browser's subscription changed or is gone: register the current one.
      const key = await this.serverKey();
      if (!key) {
        this.set('unavailable');
        return;
      }
      sub = subscriptionJson(await this.browserSubscription(reg, key));
      if (rec.endpoint !== sub.endpoint) {
        await this.api.unsubscribe(rec.endpoint).catch(() => null);
      }
      await this.register(sub, reg);
    });
  }
}
