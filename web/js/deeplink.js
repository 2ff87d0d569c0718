// deeplink.js — "show me that request": a notification the page cannot let anyone
// allow from the lock screen (its summary does not show the whole request, docs/protocol.md
// §9.2.6 `complete`) opens the page at `/#request=<id>&session=<name>` (or, when the page
// is already open, the service worker posts `{type:'ccrelay.open', hash}` to it).
// This module reads that target, has the page attach to the session, and once the
// request's permission card is rendered scrolls it into view and marks it
// (`data-focused="true"`), so the whole request with its diff is seen before Allow.
// It only reads the rendered stream; the page owns sessions and rendering.

/** `{session, requestId}` from a location hash such as `#request=r1&session=default`, else null. */
export function parseTarget(hash) {
  const params = new URLSearchParams(String(hash || '').replace(/^#/, ''));
  const requestId = params.get('request');
  const session = params.get('session');
  if (!requestId && !session) return null;
  return { session: session || null, requestId: requestId || null };
}

/** The hash keys this module owns: a hash with only these is removed once handled. */
const KEYS = new Set(['request', 'session']);

export class RequestFocus {
  /**
   * @param {HTMLElement} stream  where permission cards are rendered
   * @param {object} page  {current(): session name, switchTo(name): true once the page shows that session,
   *   focused(requestId): optional, called once the card is shown (the page adds the file's whole diff)}
   */
  constructor(stream, page) {
    this.stream = stream;
    this.page = page;
    this.target = null; // waiting to be shown
    this.focused = null; // {session, requestId} shown; re-marked after each render
  }

  /** Go to `target` (from parseTarget); null does nothing. */
  set(target) {
    if (!target) return;
    this.target = target;
    this.apply();
  }

  /** Call after each render: switches session, then finds and shows the card. */
  apply() {
    const t = this.target;
    if (t) {
      if (t.session && t.session !== this.page.current() && !this.page.switchTo(t.session)) return;
      if (!t.requestId) {
        this.target = null;
      } else {
        const card = this.card(t.requestId);
        if (card) {
          this.target = null;
          this.focused = { session: t.session || this.page.current(), requestId: t.requestId };
          card.scrollIntoView({ block: 'center' });
          if (this.page.focused) this.page.focused(t.requestId);
          this.clearHash();
        }
      }
    }
    this.mark();
  }

  /** Bring the card of `requestId` into view again (after it grew). */
  reveal(requestId) {
    const card = this.card(requestId);
    if (card) card.scrollIntoView({ block: 'center' });
  }

  card(requestId) {
    for (const el of this.stream.querySelectorAll('[data-testid="permission-card"]')) {
      if (el.dataset.requestId === requestId) return el;
    }
    return null;
  }

  /** Keep the mark on the focused card (a re-render replaces the element). */
  mark() {
    const f = this.focused;
    const card = f && f.session === this.page.current() ? this.card(f.requestId) : null;
    for (const el of this.stream.querySelectorAll('[data-focused="true"]')) {
      if (el !== card) el.removeAttribute('data-focused');
    }
    if (card && card.dataset.focused !== 'true') card.dataset.focused = 'true';
  }

  clearHash() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ''));
    if ([...params.keys()].every((k) => KEYS.has(k)) && location.hash) {
      history.replaceState(null, '', location.pathname + location.search);
    }
  }
}
