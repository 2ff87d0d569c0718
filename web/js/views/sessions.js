// sessions.js — the sessions screen (docs/protocol.md §4): one item per session the server
// has (title, a state dot, last activity, an unread marker, a "needs an answer" badge),
// and for owners the new-session form: a working directory (typed, picked from the
// server's directories — `dirs.list` — or from recent ones), an optional name, a new git
// worktree on a branch, or a past conversation of that directory to resume
// (`conversations.list`). On a phone it covers the page; a tap on an item goes to that
// session. The one `session-new` button sits in the sessions screen's head while it is
// open and in the session strip otherwise, so it is one tap away from either. The strip
// (SessionHead) also renames the session in place (`session.rename`). Must not: know about
// sockets (requests go through `actions`) or hold events.

import { actionRow, el } from './dom.js';
import { TITLE_MAX, childDir, cleanTitle, parentDir, relativeTime } from '../directory.js';
import { newKey } from '../protocol.js';

/** The branch of a worktree session's entry, or ''. */
export function worktreeBranch(entry) {
  const w = entry && entry.worktree;
  return w && typeof w.branch === 'string' ? w.branch : '';
}

const STATE_WORDS = {
  starting: 'starting',
  idle: 'ready',
  busy: 'working',
  awaiting_permission: 'needs approval',
  restarting: 'restarting',
  failed: 'failed',
  stopped: 'stopped',
  asleep: 'asleep',
};

/** Wait this long after the last keystroke in the directory field before listing its conversations. */
const WORKDIR_SETTLE_MS = 400;

export class SessionsScreen {
  /**
   * @param {object} o
   * @param {Record<string, HTMLElement>} o.ui  the elements of index.html's sessions screen
   * @param {import('../directory.js').Directory} o.directory
   * @param {object} o.actions  select(name), create(opts, key) → reply, dirs(path) → reply,
   *   conversations(workdir) → reply, created(reply, workdir), isOwner(), current()
   */
  constructor({ ui, directory, actions }) {
    this.ui = ui;
    this.directory = directory;
    this.actions = actions;
    this.createKey = newKey();
    this.pickerPath = null;
    this.workdirTimer = null;
    this.listedFor = null;
    ui.open.addEventListener('click', () => this.open());
    ui.close.addEventListener('click', () => this.close());
    ui.backdrop.addEventListener('click', () => this.close());
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.isOpen()) this.close();
    });
    ui.newBtn.addEventListener('click', () => {
      if (!this.isOpen()) this.open();
      this.openForm();
    });
    this.placeNewButton();
    ui.cancel.addEventListener('click', () => this.closeForm());
    ui.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    ui.browse.addEventListener('click', () => {
      if (ui.picker.hidden) this.browse(ui.workdir.value.trim() || null);
      else ui.picker.hidden = true;
    });
    ui.pickerUp.addEventListener('click', () => {
      if (this.pickerPath) this.browse(parentDir(this.pickerPath));
    });
    ui.pickerRoots.addEventListener('click', () => this.browse(null));
    ui.workdir.addEventListener('input', () => {
      clearTimeout(this.workdirTimer);
      this.workdirTimer = setTimeout(() => this.listConversations(), WORKDIR_SETTLE_MS);
    });
    ui.branch.addEventListener('input', () => {
      if (ui.branch.value.trim()) ui.worktree.checked = true;
    });
    // Anything typed is a new request: a new retry key, and the last refusal is old news.
    ui.form.addEventListener('input', () => {
      this.createKey = newKey();
      ui.error.textContent = '';
    });
  }

  isOpen() {
    return !this.ui.screen.hidden;
  }

  /**
   * The new-session button goes where it can be tapped: the sessions screen's head while
   * it is open, else the session strip (`ui.newAway`). Viewers have none.
   */
  placeNewButton() {
    const ui = this.ui;
    if (!this.actions.isOwner()) {
      ui.newBtn.remove();
      return;
    }
    if (this.isOpen()) {
      ui.newBtn.textContent = 'New session';
      ui.newBtn.classList.add('primary');
      ui.newBtn.removeAttribute('aria-label');
      if (ui.newBtn.parentElement !== ui.newHome) ui.newHome.insertBefore(ui.newBtn, ui.close);
    } else {
      // In the strip it is one tool among others (Rename, Close), not the page's main action.
      ui.newBtn.textContent = '+ New';
      ui.newBtn.classList.remove('primary');
      ui.newBtn.setAttribute('aria-label', 'New session');
      if (ui.newBtn.parentElement !== ui.newAway) ui.newAway.insertBefore(ui.newBtn, ui.newAway.querySelector('.danger'));
    }
  }

  open() {
    this.ui.screen.hidden = false;
    this.ui.backdrop.hidden = false;
    document.body.classList.add('sessions-open');
    this.ui.open.setAttribute('aria-expanded', 'true');
    this.placeNewButton();
    this.render();
    this.ui.close.focus();
  }

  close() {
    if (!this.isOpen()) return;
    this.ui.screen.hidden = true;
    this.ui.backdrop.hidden = true;
    document.body.classList.remove('sessions-open');
    this.ui.open.setAttribute('aria-expanded', 'false');
    this.closeForm();
    this.placeNewButton();
  }

  /** The header button: how many requests wait elsewhere, and whether anything is unread. */
  renderButton() {
    const current = this.actions.current();
    const waiting = this.directory.pendingElsewhere(current).length;
    const unread = this.directory.sorted().some((e) => e.session !== current && this.directory.unread(e.session) > 0);
    this.ui.openBadge.textContent = waiting > 0 ? String(waiting) : '';
    this.ui.openBadge.hidden = waiting === 0;
    this.ui.open.dataset.pending = String(waiting);
    this.ui.open.dataset.unread = String(unread);
    this.ui.open.title = waiting > 0 ? `Sessions: ${waiting} waiting for an answer` : 'Sessions';
  }

  render() {
    this.renderButton();
    if (!this.isOpen()) return;
    const owner = this.actions.isOwner();
    const current = this.actions.current();
    if (!owner) {
      this.ui.newBtn.remove();
      this.ui.form.remove();
    }
    const now = Date.now();
    const items = this.directory.sorted().map((e) => {
      const li = el('li', 'session-item');
      li.setAttribute('data-testid', 'session-item');
      li.dataset.session = e.session;
      li.dataset.state = e.state;
      li.dataset.title = e.title;
      if (e.session === current) li.setAttribute('aria-current', 'true');
      const btn = el('button', 'session-open');
      btn.type = 'button';
      const dot = el('span', 'state-dot');
      dot.dataset.state = e.state;
      dot.setAttribute('aria-hidden', 'true');
      const title = el('span', 'session-title', e.title);
      const line = el('span', 'session-meta');
      const when = relativeTime(e.lastActivity, now);
      const branch = worktreeBranch(e);
      const words = [STATE_WORDS[e.state] || e.state, branch && `⎇ ${branch}`, when && (when === 'now' ? 'active now' : `${when} ago`)].filter(Boolean);
      if (e.title !== e.session) words.unshift(e.session);
      line.textContent = words.join(' · ');
      const text = el('span', 'session-text');
      text.append(title, line);
      btn.append(dot, text);
      const unread = this.directory.unread(e.session);
      if (unread > 0 && e.session !== current) {
        const u = el('span', 'unread', '');
        u.setAttribute('data-testid', 'session-unread');
        u.title = 'New since you last looked';
        u.append(el('span', 'sr-only', 'new events'));
        btn.append(u);
      }
      if (e.pending.length > 0) {
        const b = el('span', 'needs', String(e.pending.length));
        b.setAttribute('data-testid', 'session-pending');
        b.title = `${e.pending.length} waiting for an answer`;
        b.append(el('span', 'sr-only', ' waiting for an answer'));
        btn.append(b);
      }
      btn.setAttribute('aria-label', `${e.title}, ${words.join(', ')}${e.pending.length ? `, ${e.pending.length} waiting for an answer` : ''}`);
      btn.addEventListener('click', () => {
        this.close();
        this.actions.select(e.session);
      });
      li.append(btn);
      return li;
    });
    this.ui.list.replaceChildren(...items);
    this.ui.empty.hidden = items.length > 0;
  }

  // ---- the new-session form ------------------------------------------------

  openForm() {
    if (!this.actions.isOwner()) return;
    this.ui.form.hidden = false;
    this.ui.listBox.hidden = true;
    this.ui.newBtn.hidden = true;
    this.ui.error.textContent = '';
    this.renderRecent();
    this.ui.workdir.focus();
    if (this.ui.workdir.value.trim()) this.listConversations();
  }

  closeForm() {
    this.ui.form.hidden = true;
    this.ui.listBox.hidden = false;
    this.ui.newBtn.hidden = false;
    this.ui.picker.hidden = true;
  }

  renderRecent() {
    const dirs = this.directory.recentDirs();
    this.ui.recentBox.hidden = dirs.length === 0;
    this.ui.recent.replaceChildren(...dirs.map((d) => {
      const b = el('button', 'chip', d);
      b.type = 'button';
      b.setAttribute('data-testid', 'recent-dir');
      b.title = d;
      b.addEventListener('click', () => this.setWorkdir(d));
      return b;
    }));
  }

  setWorkdir(dir) {
    this.ui.workdir.value = dir;
    this.ui.error.textContent = '';
    this.createKey = newKey();
    this.listConversations();
  }

  /** Show the directory picker at `path` (null: the roots). */
  async browse(path) {
    const ui = this.ui;
    ui.picker.hidden = false;
    ui.pickerMsg.textContent = 'Loading…';
    let reply;
    try {
      reply = await this.actions.dirs(path);
    } catch (e) {
      if (path !== null && (e.code === 'outside_roots' || e.code === 'not_found')) {
        // Above the roots (or a typed path that is not there): start from the roots.
        this.browse(null);
        return;
      }
      ui.pickerMsg.textContent = `Cannot list: ${e.message}`;
      return;
    }
    // Without a path the server may answer the roots as `roots` (paths) instead of `dirs`.
    const here = typeof reply.path === 'string' && reply.path ? reply.path : null;
    this.pickerPath = here;
    const entries = [];
    if (Array.isArray(reply.roots)) {
      for (const r of reply.roots) {
        const p = typeof r === 'string' ? r : r && typeof r.path === 'string' ? r.path : '';
        if (p) entries.push({ label: p, path: p, git: !!(r && r.git) });
      }
    }
    if (Array.isArray(reply.dirs)) {
      for (const d of reply.dirs) {
        if (!d || typeof d.name !== 'string') continue;
        entries.push({ label: d.name, path: here ? childDir(here, d.name) : d.name, git: d.git === true });
      }
    }
    ui.pickerPath.textContent = here || 'Allowed directories';
    ui.pickerUp.disabled = here === null;
    ui.pickerMsg.textContent = entries.length === 0 ? 'No directories here.' : reply.truncated ? 'Only the first directories are shown.' : '';
    ui.pickerList.replaceChildren(...entries.map((d) => {
      const li = el('li');
      const b = el('button', 'dir-entry');
      b.type = 'button';
      b.setAttribute('data-testid', 'dir-entry');
      b.dataset.path = d.path;
      b.append(el('span', 'dir-name', d.label));
      if (d.git) b.append(el('span', 'tag', 'git'));
      b.addEventListener('click', () => {
        this.setWorkdir(d.path);
        this.browse(d.path);
      });
      li.append(b);
      return li;
    }));
    if (here) {
      ui.workdir.value = here;
    }
  }

  async listConversations() {
    const dir = this.ui.workdir.value.trim();
    const box = this.ui.conversations;
    if (!dir) {
      this.ui.convBox.hidden = true;
      return;
    }
    this.listedFor = dir;
    let reply;
    try {
      reply = await this.actions.conversations(dir);
    } catch (e) {
      if (this.listedFor !== dir) return;
      // A server that cannot list conversations: nothing to offer, nothing to say.
      this.ui.convBox.hidden = e.code === 'unknown_type';
      box.replaceChildren(el('li', 'muted small', e.code === 'outside_roots' ? 'This directory is outside the allowed roots.' : e.code === 'not_found' ? 'No such directory.' : `No conversations: ${e.message}`));
      return;
    }
    if (this.listedFor !== dir) return; // the field changed meanwhile
    const list = Array.isArray(reply.conversations) ? reply.conversations : [];
    this.ui.convBox.hidden = false;
    if (list.length === 0) {
      box.replaceChildren(el('li', 'muted small', 'No earlier conversations in this directory.'));
      return;
    }
    const now = Date.now();
    box.replaceChildren(...list.filter((c) => c && typeof c.conversation === 'string').map((c) => {
      const li = el('li', 'conversation');
      li.setAttribute('data-testid', 'conversation-item');
      li.dataset.conversation = c.conversation;
      const text = el('span', 'conv-text');
      text.append(el('span', 'conv-title', typeof c.title === 'string' && c.title ? c.title : c.conversation));
      const when = relativeTime(c.updated_at, now);
      const meta = [when && (when === 'now' ? 'just now' : `${when} ago`), c.in_use_by ? `open in ${c.in_use_by}` : ''].filter(Boolean).join(' · ');
      if (meta) text.append(el('span', 'conv-meta muted small', meta));
      const b = el('button', '', c.in_use_by ? 'Open' : 'Resume');
      b.type = 'button';
      b.setAttribute('data-testid', 'conversation-resume');
      if (c.in_use_by) {
        // Running in a session already: go there instead of a second agent on it.
        b.addEventListener('click', () => {
          this.close();
          this.actions.select(String(c.in_use_by));
        });
      } else {
        b.addEventListener('click', () => this.submit(c.conversation));
      }
      li.append(text, b);
      return li;
    }));
  }

  /** The form's `session.create` fields; `resume` a conversation id or undefined. */
  request(resume) {
    const ui = this.ui;
    const opts = { workdir: ui.workdir.value.trim() };
    const name = ui.name.value.trim();
    if (name) opts.name = name;
    const branch = ui.branch.value.trim();
    // A resumed conversation runs in its own directory: the CLI finds it there.
    if (!resume && (ui.worktree.checked || branch)) opts.worktree = branch ? { branch } : {};
    if (resume) opts.resume = resume;
    return opts;
  }

  async submit(resume) {
    const ui = this.ui;
    const opts = this.request(resume);
    if (!opts.workdir) {
      ui.error.textContent = 'Choose a working directory.';
      ui.workdir.focus();
      return;
    }
    const key = resume ? `${this.createKey}-r` : this.createKey;
    ui.error.textContent = '';
    ui.submit.disabled = true;
    ui.status.textContent = 'Starting…';
    try {
      const reply = await this.actions.create(opts, key);
      this.directory.rememberDir(opts.workdir);
      this.createKey = newKey();
      ui.name.value = '';
      ui.branch.value = '';
      ui.worktree.checked = false;
      ui.status.textContent = '';
      this.close();
      this.actions.created(reply, opts.workdir);
    } catch (e) {
      ui.status.textContent = '';
      // The server's own words (e.g. outside the allowed roots), same key on a retry.
      ui.error.textContent = e.message || e.code || 'The session could not be created.';
      ui.error.dataset.code = e.code || '';
    } finally {
      ui.submit.disabled = false;
    }
  }
}

/**
 * The strip above the stream for the visible session: its title and directory, for
 * owners Rename (the title becomes a field, in place), "Continue in a terminal"
 * (`claude --resume <conversation>`, with Copy) and Close (with an in-page confirmation).
 */
export class SessionHead {
  /**
   * @param {Record<string, HTMLElement>} ui
   * @param {{close(session: string, removeWorktree: boolean): Promise<void>, rename(session: string, title: string): Promise<void>, toast(text: string): void}} actions
   */
  constructor(ui, actions) {
    this.ui = ui;
    this.actions = actions;
    this.session = null;
    this.shown = '';
    this.hasWorktree = false;
    this.editor = null; // the rename form while it is open
    // Owners only, and only once there is something to show: out of the page until then.
    ui.closeBtn.remove();
    ui.renameBtn.remove();
    ui.command.remove();
    ui.copy.addEventListener('click', () => this.copy());
    ui.closeBtn.addEventListener('click', () => this.confirm(true));
    ui.renameBtn.addEventListener('click', () => this.startRename());
  }

  /** `entry`: the directory entry (null when unknown); `owner`: this page's role; `command`: the resume command or ''. */
  render(session, entry, owner, command) {
    const ui = this.ui;
    const branch = entry ? worktreeBranch(entry) : '';
    const key = JSON.stringify([session, entry && entry.title, entry && entry.workdir, branch, entry && entry.closable, owner, command]);
    if (key === this.shown) return;
    if (session !== this.session) {
      this.confirm(false);
      this.stopRename();
    }
    this.shown = key;
    this.session = session;
    ui.root.hidden = !entry;
    if (!entry) return;
    ui.title.textContent = entry.title;
    ui.where.textContent = owner && entry.workdir ? entry.workdir : entry.title !== session ? session : '';
    // A worktree session names its branch (owners only know it).
    ui.branch.hidden = !branch;
    ui.branch.textContent = branch ? `⎇ ${branch}` : '';
    ui.branch.title = branch ? `Worktree on branch ${branch}` : '';
    if (owner && command) {
      ui.resumeBox.hidden = false;
      ui.command.textContent = command;
      if (!ui.command.isConnected) ui.copy.before(ui.command);
    } else {
      ui.resumeBox.hidden = true;
      ui.command.remove(); // viewers and unknown conversations: no hook at all
    }
    if (owner && !ui.renameBtn.isConnected) ui.tools.prepend(ui.renameBtn);
    if (!owner) {
      ui.renameBtn.remove();
      this.stopRename();
    }
    const closable = owner && entry.closable;
    if (closable && !ui.closeBtn.isConnected) ui.tools.append(ui.closeBtn);
    if (!closable) {
      ui.closeBtn.remove();
      this.confirm(false);
    }
    this.hasWorktree = !!(entry.worktree && entry.worktree.path);
    // Only a title (the header button shows it already) and nothing to do with it: no strip.
    ui.root.hidden = !(owner || ui.where.textContent || closable);
  }

  /** Turn the title into a field (Enter or Save sends `session.rename`, Escape cancels). */
  startRename() {
    const ui = this.ui;
    if (this.editor || !this.session) return;
    const session = this.session;
    const form = el('form', 'rename-form');
    form.setAttribute('data-testid', 'session-rename-form');
    const row = el('div', 'rename-row');
    const input = el('input');
    input.type = 'text';
    input.maxLength = TITLE_MAX;
    input.value = ui.title.textContent;
    input.spellcheck = false;
    input.setAttribute('aria-label', 'Session title');
    input.setAttribute('data-testid', 'session-rename-input');
    const save = el('button', 'primary', 'Save');
    save.type = 'submit';
    save.setAttribute('data-testid', 'session-rename-save');
    const cancel = el('button', '', 'Cancel');
    cancel.type = 'button';
    cancel.setAttribute('data-testid', 'session-rename-cancel');
    const error = el('p', 'form-error');
    error.setAttribute('role', 'alert');
    error.setAttribute('data-testid', 'session-rename-error');
    row.append(input, save, cancel);
    form.append(row, error);
    cancel.addEventListener('click', () => this.stopRename());
    input.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        e.preventDefault();
        e.stopPropagation();
        this.stopRename();
      }
    });
    input.addEventListener('input', () => {
      error.textContent = '';
    });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const title = cleanTitle(input.value);
      if (!title) {
        error.textContent = 'A title cannot be empty.';
        return;
      }
      save.disabled = true;
      try {
        await this.actions.rename(session, title);
        if (this.editor === form) this.stopRename();
      } catch (err) {
        // The server's own words (not an owner, no such session, …).
        error.textContent = err.message || err.code || 'The session could not be renamed.';
        error.dataset.code = err.code || '';
      } finally {
        save.disabled = false;
      }
    });
    this.editor = form;
    ui.title.hidden = true;
    ui.tools.hidden = true;
    ui.title.after(form);
    input.focus();
    input.select();
  }

  stopRename() {
    if (!this.editor) return;
    const hadFocus = this.editor.contains(document.activeElement);
    this.editor.remove();
    this.editor = null;
    this.ui.title.hidden = false;
    this.ui.tools.hidden = false;
    if (hadFocus && this.ui.renameBtn.isConnected) this.ui.renameBtn.focus();
  }

  async copy() {
    const text = this.ui.command.textContent;
    try {
      await navigator.clipboard.writeText(text);
      this.actions.toast('Copied. Close the session here before continuing it in a terminal.');
    } catch {
      // No clipboard (an insecure origin, a denied permission): select it for a manual copy.
      const range = document.createRange();
      range.selectNodeContents(this.ui.command);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      this.actions.toast('Selected: copy it with your device’s copy command.');
    }
  }

  /** Show (true) or hide the in-page confirmation of Close. */
  confirm(show) {
    const ui = this.ui;
    if (!show) {
      ui.confirmBox.hidden = true;
      ui.confirmBox.replaceChildren();
      return;
    }
    const session = this.session;
    const q = el('p', 'confirm-q', `Close “${ui.title.textContent}”? Its agent stops; queued prompts are dropped.`);
    const { row, add } = actionRow();
    const removeLabel = el('label', 'check small');
    const remove = el('input');
    remove.type = 'checkbox';
    removeLabel.append(remove, ' Also remove its worktree');
    add('Close session', 'session-close-confirm', 'danger', async () => {
      try {
        await this.actions.close(session, this.hasWorktree && remove.checked);
        this.confirm(false);
      } catch (e) {
        this.actions.toast(`Could not close: ${e.message}`);
      }
    });
    add('Cancel', 'session-close-cancel', '', () => this.confirm(false));
    ui.confirmBox.replaceChildren(q, ...(this.hasWorktree ? [removeLabel] : []), row);
    ui.confirmBox.hidden = false;
    row.querySelector('button')?.focus();
  }
}
