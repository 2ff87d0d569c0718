// controls.js (view) — the session's controls around the prompt box (docs/protocol.md
// §10): the permission mode (`mode-select`) and model (`model-select`) of the visible
// session, from `session.catalog` and kept to the settings in effect (`relay.settings`
// from any device, `session.changed` `settings`, the `session.set` reply; a refused
// change goes back and says why); the context and cost (`usage`, from `session.usage`
// asked on attach and after each turn, and the session list's `cost_usd`), led by a
// reached usage limit's reset time until it lifts; the slash
// menu (`slash-menu`) while the box starts with `/`; "Steer" (`prompt-steer`) while a
// turn runs; "Later" (`prompt-later`, an extension) to schedule the prompt for a time
// picked in `schedule-at`; and the prompts waiting in the session's queue
// (`queued-prompt` with `queued-cancel`, scheduled ones saying when). Owners only,
// except `usage`. Must not: know about sockets (requests
// go through the callbacks) or interpret events (the model does).

import { el, svgIcon } from './dom.js';
import { FALLBACK_MODES, limitedUntil, slashMatches, tokens } from '../controls.js';

/** A clock face and its hands. */
const ICON_CLOCK = 'M12 3a9 9 0 1 0 0.01 0 M12 7v5l3.5 2';

const MODE_TEXT = {
  default: 'Ask first',
  acceptEdits: 'Auto-edit',
  plan: 'Plan',
  bypassPermissions: 'Bypass',
  dontAsk: 'Don’t ask',
  auto: 'Auto',
};

export class SessionControls {
  /**
   * @param {object} o
   * @param {HTMLElement} o.bar  the controls row (mode, model, usage, pickers)
   * @param {HTMLTextAreaElement} o.input  the prompt box
   * @param {HTMLElement} o.form  the prompt form (the slash menu opens above it)
   * @param {HTMLElement} o.actionsBox  the prompt box's buttons (Steer goes there)
   * @param {HTMLElement} o.queueBox  where the queued prompts are listed
   * @param {object} o.actions  {set(session, settings), catalog(session), usage(session), cancel(session, promptId), steer(), schedule(isoTime), toast(text)}
   */
  constructor({ bar, input, form, actionsBox, queueBox, actions }) {
    this.input = input;
    this.queueBox = queueBox;
    this.queueKey = '';
    this.actions = actions;
    this.session = '';
    this.owner = true;
    this.catalogs = new Map(); // session → catalog reply
    this.usages = new Map(); // session → session.usage reply
    this.settings = new Map(); // session → settings in effect
    this.settingsRev = new Map(); // session → model.settingsRev last taken
    this.results = new Map(); // session → the model's last result seen (usage is asked again after it)
    this.inFlight = 0;

    this.mode = el('select', 'ctl mode');
    this.mode.setAttribute('data-testid', 'mode-select');
    this.mode.setAttribute('aria-label', 'Permission mode');
    this.mode.addEventListener('change', () => this.change('permission_mode', this.mode.value));
    this.model = el('select', 'ctl model');
    this.model.setAttribute('data-testid', 'model-select');
    this.model.setAttribute('aria-label', 'Model');
    this.model.addEventListener('change', () => this.change('model', this.model.value || null));
    this.usage = el('span', 'usage');
    this.usage.setAttribute('data-testid', 'usage');
    this.usage.dataset.contextUsed = '';
    this.usage.dataset.contextMax = '';
    this.usage.dataset.cost = '';
    this.usage.dataset.rateLimit = '';
    this.usage.dataset.resetsAt = '';
    this.meter = el('span', 'meter');
    this.meter.setAttribute('aria-hidden', 'true');
    this.meterFill = el('span', 'meter-fill');
    this.meter.append(this.meterFill);
    this.usageText = el('span', 'usage-text');
    this.usage.append(this.meter, this.usageText);
    bar.append(this.mode, this.model, this.usage);

    this.steerBtn = el('button', 'steer', 'Steer');
    this.steerBtn.type = 'button';
    this.steerBtn.title = 'Send now, into the running turn';
    this.steerBtn.setAttribute('data-testid', 'prompt-steer');
    this.steerBtn.hidden = true;
    this.steerBtn.addEventListener('click', () => this.actions.steer());
    actionsBox.prepend(this.steerBtn);

    // "Later": the prompt is scheduled (docs/protocol.md §10) for a time picked here.
    // An icon in the controls row, beside the pickers: the prompt box keeps its width.
    this.laterBtn = el('button', 'icon-btn attach-btn later');
    this.laterBtn.type = 'button';
    this.laterBtn.title = 'Send later';
    this.laterBtn.setAttribute('aria-label', 'Send later');
    this.laterBtn.setAttribute('aria-expanded', 'false');
    this.laterBtn.setAttribute('data-testid', 'prompt-later');
    this.laterBtn.append(svgIcon(ICON_CLOCK));
    this.laterBtn.addEventListener('click', () => this.toggleLater());
    bar.append(this.laterBtn);
    this.later = el('div', 'later-sheet');
    this.later.setAttribute('data-testid', 'schedule-sheet');
    this.later.hidden = true;
    const label = el('label', 'later-label', 'Send at');
    this.laterAt = el('input', 'later-at');
    this.laterAt.type = 'datetime-local';
    this.laterAt.id = 'schedule-at';
    this.laterAt.setAttribute('data-testid', 'schedule-at');
    label.htmlFor = this.laterAt.id;
    const go = el('button', 'primary', 'Schedule');
    go.type = 'button';
    go.setAttribute('data-testid', 'schedule-send');
    go.addEventListener('click', () => this.scheduleNow());
    const close = el('button', 'link-btn', 'Close');
    close.type = 'button';
    close.addEventListener('click', () => this.toggleLater(false));
    this.later.append(label, this.laterAt, go, close);
    form.prepend(this.later);

    this.menu = el('ul', 'slash-menu');
    this.menu.setAttribute('data-testid', 'slash-menu');
    this.menu.setAttribute('role', 'listbox');
    this.menu.id = 'slash-menu';
    this.menu.hidden = true;
    this.menuItems = [];
    this.menuIndex = 0;
    form.prepend(this.menu);
    input.setAttribute('aria-controls', 'slash-menu');
    input.addEventListener('input', () => this.updateMenu());
    // Capture on the form: the menu takes the arrows and Enter before the composer does.
    form.addEventListener('keydown', (e) => this.menuKey(e), true);
    // Closed once focus has really left the box: a blur that focus comes back from
    // within the delay (the page re-rendering around it) leaves the menu open.
    input.addEventListener('blur', () => setTimeout(() => {
      if (document.activeElement !== this.input) this.closeMenu();
    }, 150));
  }

  /** The role of this page: a viewer gets the usage only. */
  setRole(owner) {
    this.owner = owner;
    if (!owner) {
      this.mode.remove();
      this.model.remove();
      this.steerBtn.remove();
      this.laterBtn.remove();
      this.later.remove();
      this.closeMenu();
    }
  }

  /** The page attached `session` (or attached it again): ask its catalog and usage. */
  attached(session) {
    this.actions.catalog(session).then((r) => this.setCatalog(session, r), () => {});
    this.refreshUsage(session);
  }

  refreshUsage(session) {
    this.actions.usage(session).then((r) => {
      this.usages.set(session, r);
      this.draw();
    }, () => {});
  }

  /** A frame nobody asked for: a new catalog, or a session's changed settings. */
  frame(m) {
    if (m.type === 'session.catalog' && typeof m.session === 'string') this.setCatalog(m.session, m);
    else if (m.type === 'session.changed' && m.entry && m.entry.settings && typeof m.entry.settings === 'object') this.setSettings(m.session, m.entry.settings);
  }

  setCatalog(session, r) {
    if (!r || typeof r !== 'object') return;
    this.catalogs.set(session, r);
    this.draw();
  }

  setSettings(session, settings) {
    if (!settings || typeof settings !== 'object') return;
    this.settings.set(session, { ...(this.settings.get(session) || {}), ...settings });
    this.draw();
  }

  /**
   * The visible session now: `model` its model (session.js), `entry` its session list
   * entry (directory.js, may be null), `busy` whether a turn runs.
   */
  render(session, model, entry, busy) {
    this.session = session;
    if (entry && entry.settings && !this.settings.has(session)) this.settings.set(session, { ...entry.settings });
    if (model.settings && this.settingsRev.get(session) !== model.settingsRev) {
      this.settingsRev.set(session, model.settingsRev);
      this.setSettings(session, model.settings);
    }
    // A turn ended since the last look: ask the usage again (the first look is the
    // baseline; attaching asked already). A fresh session's first result counts too.
    const last = model.lastResult || null;
    if (!this.results.has(session)) this.results.set(session, last);
    else if (this.results.get(session) !== last) {
      this.results.set(session, last);
      if (last) this.refreshUsage(session);
    }
    this.entry = entry;
    this.busy = busy;
    this.draw();
    // The queue is redrawn only when it changes, so a tap on Cancel never meets a replaced button.
    const waiting = model.items.filter((x) => x.kind === 'prompt' && x.phase === 'accepted' && x.queued && !x.steer);
    const key = `${session}\u0000${this.owner}\u0000${waiting.map((p) => p.promptId).join(',')}`;
    if (key !== this.queueKey) {
      this.queueKey = key;
      this.queueBox.replaceChildren(...this.queued(waiting, session));
    }
  }

  draw() {
    const session = this.session;
    const catalog = this.catalogs.get(session) || {};
    const settings = this.settings.get(session) || {};
    if (this.inFlight === 0) {
      const modes = Array.isArray(catalog.permission_modes) && catalog.permission_modes.length ? catalog.permission_modes.filter((x) => typeof x === 'string') : FALLBACK_MODES;
      const mode = typeof settings.permission_mode === 'string' ? settings.permission_mode : 'default';
      fill(this.mode, [...new Set([...modes, mode])].map((v) => ({ value: v, text: MODE_TEXT[v] || v })), mode);
      const models = (Array.isArray(catalog.models) ? catalog.models : []).filter((m) => m && typeof m.value === 'string');
      const want = typeof settings.model === 'string' ? settings.model : '';
      const options = [{ value: '', text: 'Default' }, ...models.map((m) => ({ value: m.value, text: m.display_name || m.value, title: m.description || '' }))];
      if (want && !options.some((o) => o.value === want)) options.push({ value: want, text: want });
      fill(this.model, options, want);
      this.model.title = typeof settings.model_in_effect === 'string' ? `In effect: ${settings.model_in_effect}` : 'Model';
    }
    this.mode.dataset.mode = this.mode.value;
    // Usage: the context from session.usage, the cost from it or the session list.
    const u = this.usages.get(session);
    const ctx = u && u.context && typeof u.context === 'object' ? u.context : null;
    const used = ctx && Number.isFinite(ctx.used_tokens) ? ctx.used_tokens : null;
    const max = ctx && Number.isFinite(ctx.max_tokens) && ctx.max_tokens > 0 ? ctx.max_tokens : null;
    const cost = u && typeof u.cost_usd === 'number' ? u.cost_usd : this.entry && typeof this.entry.cost === 'number' ? this.entry.cost : null;
    this.usage.dataset.contextUsed = used === null ? '' : String(used);
    this.usage.dataset.contextMax = max === null ? '' : String(max);
    this.usage.dataset.cost = cost === null ? '' : String(cost);
    const pct = used !== null && max !== null ? Math.min(100, Math.round((used / max) * 100)) : null;
    this.meter.hidden = pct === null;
    this.meterFill.dataset.level = pct === null ? '' : pct >= 90 ? 'high' : pct >= 70 ? 'mid' : 'low';
    this.meterFill.style.width = `${pct || 0}%`;
    // A reached usage limit leads until it lifts; a timer redraws at that moment.
    const until = limitedUntil(u);
    const limited = until !== null && until > Date.now();
    clearTimeout(this.limitTimer);
    if (limited) this.limitTimer = setTimeout(() => this.draw(), Math.min(until - Date.now() + 100, 2 ** 31 - 1));
    this.usage.dataset.rateLimit = limited ? 'rejected' : '';
    this.usage.dataset.resetsAt = limited ? new Date(until).toISOString() : '';
    this.usage.classList.toggle('limited', limited);
    const resets = limited ? new Date(until) : null;
    const parts = [];
    // The row has no room for more on a phone: while limited, the reset alone (the rest in the title).
    if (resets) parts.push(`limit · ${resets.toLocaleTimeString([], { hour: 'numeric', minute: '2-digit' })}`);
    else {
      if (pct !== null) parts.push(`${tokens(used)}/${tokens(max)}`);
      if (cost !== null) parts.push(`$${cost.toFixed(2)}`);
    }
    this.usageText.textContent = parts.join(' · ');
    this.usage.title = [
      resets ? `Usage limit reached: resets ${resets.toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' })}` : '',
      pct !== null ? `Context: ${used} of ${max} tokens (${pct}%)` : 'Context: unknown',
      cost !== null ? `Cost so far: $${cost.toFixed(4)}` : '',
    ].filter(Boolean).join('\n');
    this.usage.hidden = parts.length === 0;
    this.steerBtn.hidden = !(this.owner && this.busy);
  }

  /** Open (or close) the "Send at" row; it opens an hour ahead, on the quarter hour. */
  toggleLater(open = this.later.hidden) {
    this.later.hidden = !open;
    this.laterBtn.setAttribute('aria-expanded', String(open));
    if (!open) return;
    const now = Date.now();
    this.laterAt.min = localInput(new Date(now));
    this.laterAt.max = localInput(new Date(now + MAX_AHEAD_MS));
    if (!this.laterAt.value || new Date(this.laterAt.value).getTime() <= now) {
      const d = new Date(now + 3600 * 1000);
      d.setMinutes(Math.ceil(d.getMinutes() / 15) * 15, 0, 0);
      this.laterAt.value = localInput(d);
    }
    this.laterAt.focus();
  }

  /** "Schedule": the box goes out with `at`, the picked local time as UTC. */
  scheduleNow() {
    const at = new Date(this.laterAt.value);
    const ms = at.getTime();
    if (!Number.isFinite(ms) || ms <= Date.now()) {
      this.actions.toast('Pick a time in the future.');
      return;
    }
    if (ms > Date.now() + MAX_AHEAD_MS) {
      this.actions.toast('A prompt can be scheduled at most 30 days ahead.');
      return;
    }
    if (!this.input.value.trim()) {
      this.actions.toast('Write the prompt first.');
      return;
    }
    this.actions.schedule(at.toISOString());
    this.toggleLater(false);
  }

  /** A select changed: `session.set`, then what the agent says is in effect; a refusal goes back. */
  async change(key, value) {
    const session = this.session;
    this.inFlight += 1;
    this.mode.disabled = true;
    this.model.disabled = true;
    try {
      const reply = await this.actions.set(session, { [key]: value });
      if (reply && reply.settings) this.setSettings(session, reply.settings);
      if (reply && Array.isArray(reply.pending_start) && reply.pending_start.length) this.actions.toast(`Applies from the agent's next start: ${reply.pending_start.join(', ')}`);
    } catch (e) {
      this.actions.toast(`Could not change the ${key === 'model' ? 'model' : 'mode'}: ${e.message || e.code || e}`);
    } finally {
      this.inFlight -= 1;
      this.mode.disabled = false;
      this.model.disabled = false;
      this.draw();
    }
  }

  // ---- slash menu -----------------------------------------------------------

  updateMenu() {
    if (!this.owner) return;
    const catalog = this.catalogs.get(this.session) || {};
    const found = slashMatches(catalog.commands, this.input.value);
    if (found.length === 0) {
      this.closeMenu();
      return;
    }
    const names = found.map((c) => c.name).join('\n');
    if (names !== this.menuNames) this.menuIndex = 0;
    this.menuNames = names;
    this.menuItems = found;
    this.menu.replaceChildren(...found.map((c, i) => {
      const li = el('li', 'slash-item');
      li.setAttribute('data-testid', 'slash-item');
      li.setAttribute('role', 'option');
      li.id = `slash-${i}`;
      li.dataset.command = c.name;
      li.setAttribute('aria-selected', String(i === this.menuIndex));
      li.append(el('span', 'slash-name', `/${c.name}`));
      if (typeof c.argument_hint === 'string' && c.argument_hint) li.append(el('span', 'slash-hint', ` ${c.argument_hint}`));
      if (typeof c.description === 'string' && c.description) li.append(el('span', 'slash-desc', c.description));
      // mousedown: before the box loses focus (which closes the menu).
      li.addEventListener('mousedown', (e) => e.preventDefault());
      li.addEventListener('click', () => this.choose(c.name));
      return li;
    }));
    this.menu.hidden = false;
    this.input.setAttribute('aria-activedescendant', `slash-${this.menuIndex}`);
  }

  closeMenu() {
    this.menu.hidden = true;
    this.menuItems = [];
    this.menuNames = '';
    this.input.removeAttribute('aria-activedescendant');
  }

  choose(name) {
    this.input.value = `/${name} `;
    this.closeMenu();
    this.input.focus();
    this.input.setSelectionRange(this.input.value.length, this.input.value.length);
    this.input.dispatchEvent(new Event('input'));
  }

  menuKey(e) {
    if (this.menu.hidden || this.menuItems.length === 0 || e.isComposing) return;
    const n = this.menuItems.length;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      this.menuIndex = (this.menuIndex + (e.key === 'ArrowDown' ? 1 : n - 1)) % n;
    } else if ((e.key === 'Enter' && !e.shiftKey) || e.key === 'Tab') {
      this.choose(this.menuItems[this.menuIndex].name);
    } else if (e.key === 'Escape') {
      this.closeMenu();
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
    if (!this.menu.hidden) {
      for (const [i, li] of [...this.menu.children].entries()) li.setAttribute('aria-selected', String(i === this.menuIndex));
      this.menu.children[this.menuIndex]?.scrollIntoView({ block: 'nearest' });
      this.input.setAttribute('aria-activedescendant', `slash-${this.menuIndex}`);
    }
  }

  // ---- the session's queue ----------------------------------------------------

  /** One `queued-prompt` per prompt accepted and not started yet (scheduled ones too). */
  queued(waiting, session) {
    // Behind an auto_continue the queue waits for the usage limit's reset (docs/protocol.md §10).
    const held = waiting.some((p) => p.autoContinue && p.scheduledAt);
    const queuedText = held ? 'queued: runs after “continue”, at the reset' : 'queued: runs after the current turn';
    return waiting.map((p) => {
      const d = el('div', 'msg user pending queued');
      d.setAttribute('data-testid', 'queued-prompt');
      d.dataset.promptId = p.promptId;
      const meta = el('div', 'meta');
      meta.append(el('span', 'tag', p.scheduledAt ? `scheduled for ${new Date(p.scheduledAt).toLocaleString()}` : queuedText));
      if (this.owner) {
        const x = el('button', 'link-btn', 'Cancel');
        x.type = 'button';
        x.setAttribute('data-testid', 'queued-cancel');
        x.addEventListener('click', async () => {
          x.disabled = true;
          try {
            await this.actions.cancel(session, p.promptId);
          } catch (e) {
            this.actions.toast(e.code === 'not_pending' ? 'Too late: that prompt has started.' : `Could not cancel: ${e.message || e.code}`);
            x.disabled = false;
          }
        });
        meta.append(x);
      }
      d.append(meta, el('div', 'body plain', p.text + (p.images ? ` [${p.images} image${p.images === 1 ? '' : 's'}]` : '')));
      return d;
    });
  }
}

/** Replace a select's options (only when they differ) and set its value. */
function fill(select, options, value) {
  const key = options.map((o) => `${o.value}\u0000${o.text}`).join('\u0001');
  if (select.dataset.options !== key) {
    select.replaceChildren(...options.map((o) => {
      const opt = el('option', '', o.text);
      opt.value = o.value;
      if (o.title) opt.title = o.title;
      return opt;
    }));
    select.dataset.options = key;
  }
  if (select.value !== value) select.value = value;
}

/** How far ahead the server accepts a scheduled prompt (docs/protocol.md §10). */
const MAX_AHEAD_MS = 30 * 24 * 3600 * 1000;

/** `d` as a `datetime-local` value (the page's local time, to the minute). */
function localInput(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
