// workspace.js (view) — the workspace view of docs/protocol.md §11: a full-screen
// sheet over the session with two tabs. "Changes": the session's changed files
// (`files.status`) with status and +/−; a tap shows that file's diff (`files.diff`
// against HEAD), unified on a phone and side by side from 1024 px, lines wrapped or
// scrolled by a toggle, syntax coloured (highlight.js). A turn's changes (the stream's
// `turn-changes` cards) show every file of `files.diff` with `base: "turn:<id>"`.
// "Files": a read-only browser (`files.list`, into directories and up) and a viewer
// (`files.read`: numbered, coloured lines; images previewed; "Load more" while the
// file was cut short). Everything from the server is drawn with textContent only.
// Must not: touch the socket (requests go through `api`) or the session model.

import { el } from './dom.js';
import { langOf, tokenizeLine } from '../highlight.js';
import { changeSummary, joinPath, parentPath, parseDiff, sideBySide, sizeText } from '../workspace.js';

const WIDE = '(min-width: 1024px)';
const WRAP_KEY = 'ccrelay.diff-wrap';
const IMAGE = /^image\/(png|jpeg|gif|webp|avif|bmp|x-icon|vnd\.microsoft\.icon)$/;

const STATUS_MARK = { modified: 'M', added: 'A', deleted: 'D', renamed: 'R', untracked: 'U', conflicted: '!' };

/** Tokens of a line as spans inside `parent`. */
function paint(parent, tokens) {
  for (const t of tokens) parent.append(t.cls ? el('span', `hl-${t.cls}`, t.text) : document.createTextNode(t.text));
}

/** Bytes of a UTF-8 string (the unit of `files.read`'s `offset`). */
function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

export class WorkspaceView {
  /**
   * `ui`: {root, open, close, tabs: {changes, files}, body, title, back, wrap, note};
   * `api`: {status(), diff(path, base), list(path), read(path, offset)} → promises of replies;
   * `session()`: the session shown.
   */
  constructor(ui, api, session) {
    this.ui = ui;
    this.api = api;
    this.session = session;
    this.wide = window.matchMedia(WIDE);
    this.wrap = localStorage.getItem(WRAP_KEY) !== 'scroll';
    this.refused = false; // files.* answered `forbidden` (a viewer on a server without --viewer-files)
    this.stack = []; // what "Back" returns to: functions that redraw an earlier screen
    this.current = null; // the redraw function of what is shown
    this.dir = '';
    ui.open.addEventListener('click', () => this.showChanges());
    ui.close.addEventListener('click', () => this.close());
    ui.back.addEventListener('click', () => this.back());
    ui.tabs.changes.addEventListener('click', () => this.showChanges(true));
    ui.tabs.files.addEventListener('click', () => this.showFiles(this.dir, true));
    ui.wrap.checked = this.wrap;
    ui.root.classList.toggle('nowrap', !this.wrap);
    ui.wrap.addEventListener('change', () => {
      this.wrap = ui.wrap.checked;
      localStorage.setItem(WRAP_KEY, this.wrap ? 'wrap' : 'scroll');
      ui.root.classList.toggle('nowrap', !this.wrap);
    });
    // Unified ⇄ side by side when the window crosses 1024 px: draw again.
    this.wide.addEventListener('change', () => {
      if (!ui.root.hidden && this.current) this.current();
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !ui.root.hidden) this.close();
    });
  }

  /** Whether the workspace view is offered (viewers lose it once the server refuses). */
  setAvailable(available, note = '') {
    this.ui.open.hidden = !available;
    this.ui.note.textContent = note;
    this.ui.note.hidden = !note;
    if (!available) this.close();
  }

  close() {
    if (this.ui.root.hidden) return;
    this.ui.root.hidden = true;
    this.ui.open.setAttribute('aria-expanded', 'false');
    document.body.classList.remove('ws-open');
    // Back where the reader was (the button, a card), when it is still there.
    if (this.opener && this.opener.isConnected) this.opener.focus();
    this.opener = null;
  }

  reveal() {
    if (!this.ui.root.hidden) return;
    this.opener = document.activeElement;
    this.ui.root.hidden = false;
    this.ui.open.setAttribute('aria-expanded', 'true');
    document.body.classList.add('ws-open');
    this.ui.close.focus();
  }

  /** Show `draw` (a function that fills the body), remembering what was shown for Back. */
  go(draw, { root = false, tab = 'changes', title = '' } = {}) {
    if (root) this.stack = [];
    else if (this.current && !this.ui.root.hidden) this.stack.push(this.current);
    const shown = () => {
      this.ui.tabs.changes.setAttribute('aria-selected', String(tab === 'changes'));
      this.ui.tabs.files.setAttribute('aria-selected', String(tab === 'files'));
      this.ui.title.textContent = title;
      this.ui.back.hidden = this.stack.length === 0;
      this.ui.root.dataset.tab = tab;
      return draw();
    };
    this.current = shown;
    this.reveal();
    return shown();
  }

  back() {
    const prev = this.stack.pop();
    if (!prev) return;
    this.current = prev;
    prev();
  }

  /** Replace the body with `nodes`. */
  fill(...nodes) {
    this.ui.body.replaceChildren(...nodes);
    this.ui.body.scrollTop = 0;
  }

  loading(text) {
    this.fill(el('p', 'muted ws-loading', text));
  }

  failed(e) {
    if (e && e.code === 'forbidden' && !this.refused) {
      this.refused = true;
      this.fill(el('p', 'ws-error', 'This server does not show files to this device (viewers need the server’s --viewer-files).'));
      return;
    }
    const text = e && e.code === 'not_a_repository' ? 'The working directory is not a git repository: no changes to show.'
      : e && e.code === 'not_found' ? 'Not found: it may have been moved or deleted.'
        : `Could not load: ${(e && e.message) || e}`;
    this.fill(el('p', 'ws-error', text));
  }

  // ---- Changes -------------------------------------------------------------

  showChanges(root = true) {
    return this.go(() => this.drawChanges(), { root, tab: 'changes', title: 'Changes' });
  }

  async drawChanges() {
    this.loading('Loading changes…');
    let r;
    try {
      r = await this.api.status();
    } catch (e) {
      this.failed(e);
      return;
    }
    if (!r.git) {
      this.fill(el('p', 'muted', 'The working directory is not a git repository: there are no changes to show. The Files tab shows its files.'));
      return;
    }
    const head = el('div', 'ws-head');
    const files = Array.isArray(r.files) ? r.files : [];
    head.append(el('strong', '', r.branch ? `On ${r.branch}` : 'Detached HEAD'));
    if (typeof r.head === 'string') head.append(el('code', 'muted small', ` ${r.head.slice(0, 8)}`));
    if (r.upstream && typeof r.upstream.name === 'string') {
      head.append(el('span', 'muted small', ` · ${r.upstream.name} ↑${r.upstream.ahead || 0} ↓${r.upstream.behind || 0}`));
    }
    head.append(el('p', 'muted small', files.length ? changeSummary(files) : 'No changes against HEAD.'));
    const list = el('ul', 'changes-list');
    list.setAttribute('data-testid', 'changes-list');
    for (const f of files) list.append(this.changeItem(f, () => this.openFile(f.path, f)));
    const nodes = [head, list];
    if (r.truncated) nodes.push(el('p', 'ws-note', 'More files changed than the server lists (2,000).'));
    this.fill(...nodes);
  }

  changeItem(f, onClick) {
    const li = el('li');
    const b = el('button', 'change-item');
    b.type = 'button';
    b.setAttribute('data-testid', 'change-item');
    b.dataset.path = f.path;
    b.dataset.status = f.status || '';
    b.dataset.insertions = String(Number.isSafeInteger(f.insertions) ? f.insertions : 0);
    b.dataset.deletions = String(Number.isSafeInteger(f.deletions) ? f.deletions : 0);
    const mark = el('span', `st st-${f.status || 'modified'}`, STATUS_MARK[f.status] || '?');
    mark.title = f.status || '';
    const name = el('span', 'ci-path');
    const dir = parentPath(f.path);
    if (dir) name.append(el('span', 'muted', `${dir}/`));
    name.append(f.path.slice(dir ? dir.length + 1 : 0));
    if (f.from) name.append(el('span', 'muted small', ` ← ${f.from}`));
    const counts = el('span', 'ci-counts');
    if (f.binary) counts.append(el('span', 'muted', 'binary'));
    else counts.append(el('span', 'ins', `+${f.insertions || 0}`), ' ', el('span', 'dels', `−${f.deletions || 0}`));
    b.append(mark, name, counts);
    b.setAttribute('aria-label', `${f.path}, ${f.status}${f.binary ? ', binary' : `, ${f.insertions || 0} added, ${f.deletions || 0} removed`}. Show the diff.`);
    b.addEventListener('click', onClick);
    li.append(b);
    return li;
  }

  /** One file's diff against HEAD (from the list, or from a permission card). */
  openFile(path, entry = null, { root = false } = {}) {
    return this.go(() => this.drawDiff({ path, base: 'HEAD', entry }), { root, tab: 'changes', title: path });
  }

  /** Everything a turn changed (a `turn-changes` card). */
  openTurn(promptId) {
    return this.go(() => this.drawDiff({ path: undefined, base: `turn:${promptId}` }), { root: true, tab: 'changes', title: 'Changes of this turn' });
  }

  async drawDiff({ path, base, entry }) {
    this.loading('Loading the diff…');
    let r;
    try {
      r = await this.api.diff(path, base);
    } catch (e) {
      this.failed(e);
      return;
    }
    const files = parseDiff(typeof r.diff === 'string' ? r.diff : '');
    const nodes = [];
    if (path !== undefined && files.length === 0) {
      // Nothing textual: binary, or no change (any more).
      const box = this.fileDiffBox(path, null, r.binary === true || (entry && entry.binary));
      nodes.push(box);
    }
    for (const f of files) nodes.push(this.fileDiffBox(f.path || path || '', f, f.binary || (path !== undefined && r.binary === true)));
    if (path === undefined && files.length === 0) nodes.push(el('p', 'muted', 'No changes.'));
    if (r.truncated) nodes.push(el('p', 'ws-note', 'The diff is cut short: it is over 1 MiB.'));
    this.fill(...nodes);
  }

  /** One file's current diff against HEAD as a `file-diff` box (for a permission card). */
  async diffNode(path) {
    const r = await this.api.diff(path, 'HEAD');
    const file = parseDiff(typeof r.diff === 'string' ? r.diff : '')[0] || null;
    const box = this.fileDiffBox(path, file, r.binary === true || (file && file.binary));
    if (r.truncated) box.append(el('p', 'ws-note', 'The diff is cut short: it is over 1 MiB.'));
    return box;
  }

  fileDiffBox(path, file, binary) {
    const box = el('section', 'file-diff');
    box.setAttribute('data-testid', 'file-diff');
    box.dataset.path = path;
    const head = el('div', 'fd-head');
    head.append(el('span', 'fd-path', path));
    if (file && file.from) head.append(el('span', 'muted small', ` ← ${file.from}`));
    if (file && file.hunks.length) {
      let ins = 0;
      let del = 0;
      for (const h of file.hunks) for (const l of h.lines) if (l.kind === 'add') ins++; else if (l.kind === 'del') del++;
      head.append(el('span', 'ins', ` +${ins}`), el('span', 'dels', ` −${del}`));
    }
    box.append(head);
    if (binary) {
      box.dataset.binary = 'true';
      box.append(el('p', 'ws-note', 'Binary file: no text diff to show.'));
      return box;
    }
    if (!file || file.hunks.length === 0) {
      box.append(el('p', 'muted small', file ? 'No line changes (mode or name only).' : 'No changes against HEAD.'));
      return box;
    }
    const lang = langOf(path);
    const split = this.wide.matches;
    box.classList.toggle('split', split);
    for (const h of file.hunks) {
      box.append(el('div', 'hunk-head', h.header));
      box.append(split ? this.splitHunk(h, lang) : this.unifiedHunk(h, lang));
    }
    return box;
  }

  unifiedHunk(h, lang) {
    const body = el('div', 'hunk');
    let oldState = {};
    let newState = {};
    for (const l of h.lines) {
      const row = el('div', `dl dl-${l.kind}`);
      row.setAttribute('data-testid', 'diff-line');
      row.dataset.kind = l.kind;
      row.append(el('span', 'ln', l.old === null ? '' : String(l.old)), el('span', 'ln', l.new === null ? '' : String(l.new)));
      row.append(el('span', 'sign', l.kind === 'add' ? '+' : l.kind === 'del' ? '−' : ' '));
      const code = el('span', 'code');
      const r = tokenizeLine(l.text, lang, l.kind === 'add' ? newState : oldState);
      if (l.kind !== 'add') oldState = r.state;
      if (l.kind !== 'del') newState = r.state;
      paint(code, r.tokens);
      row.append(code);
      body.append(row);
    }
    return body;
  }

  splitHunk(h, lang) {
    const body = el('div', 'hunk sbs');
    let oldState = {};
    let newState = {};
    const cell = (l, side) => {
      const c = el('div', `cell ${l ? `dl-${l.kind}` : 'empty'}`);
      if (!l) return c;
      c.append(el('span', 'ln', String(side === 'left' ? l.old : l.new)));
      const code = el('span', 'code');
      const r = tokenizeLine(l.text, lang, side === 'left' ? oldState : newState);
      if (side === 'left') oldState = r.state;
      else newState = r.state;
      paint(code, r.tokens);
      c.append(code);
      return c;
    };
    for (const { left, right } of sideBySide(h.lines)) {
      const row = el('div', 'sbs-row');
      const a = cell(left, 'left');
      const b = cell(right, 'right');
      if (left && left === right) {
        // A context line: one line of the diff, shown on both sides.
        row.setAttribute('data-testid', 'diff-line');
        row.dataset.kind = 'ctx';
      } else {
        for (const [c, l] of [[a, left], [b, right]]) {
          if (!l) continue;
          c.setAttribute('data-testid', 'diff-line');
          c.dataset.kind = l.kind;
        }
      }
      row.append(a, b);
      body.append(row);
    }
    return body;
  }

  // ---- Files ---------------------------------------------------------------

  showFiles(dir = '', root = true) {
    this.dir = dir;
    return this.go(() => this.drawDir(dir), { root, tab: 'files', title: dir || 'Files' });
  }

  async drawDir(dir) {
    this.loading('Loading…');
    let r;
    try {
      r = await this.api.list(dir);
    } catch (e) {
      this.failed(e);
      return;
    }
    this.dir = dir;
    const box = el('div', 'file-browser');
    box.setAttribute('data-testid', 'file-browser');
    box.dataset.path = dir;
    const bar = el('div', 'fb-bar');
    const up = el('button', 'fb-up', '↑ Up');
    up.type = 'button';
    up.setAttribute('data-testid', 'file-up');
    up.disabled = dir === '';
    up.addEventListener('click', () => this.showFiles(parentPath(dir), true));
    bar.append(up, el('code', 'fb-where', `/${dir}`));
    const list = el('ul', 'fb-list');
    const entries = Array.isArray(r.entries) ? r.entries.slice() : [];
    // Directories first, then by name.
    entries.sort((a, b) => (a.kind === 'dir') !== (b.kind === 'dir') ? (a.kind === 'dir' ? -1 : 1) : String(a.name).localeCompare(String(b.name)));
    for (const e of entries) {
      if (typeof e.name !== 'string') continue;
      const path = joinPath(dir, e.name);
      const li = el('li');
      const b = el('button', `file-entry fe-${e.kind}`);
      b.type = 'button';
      b.setAttribute('data-testid', 'file-entry');
      b.dataset.path = path;
      b.dataset.kind = e.kind === 'dir' ? 'dir' : e.kind === 'file' ? 'file' : e.kind || 'other';
      b.append(el('span', 'fe-icon', e.kind === 'dir' ? '▸' : e.kind === 'file' ? '·' : '?'), el('span', 'fe-name', e.kind === 'dir' ? `${e.name}/` : e.name));
      if (e.kind === 'file') b.append(el('span', 'muted small fe-size', sizeText(e.size)));
      if (e.kind === 'dir') b.addEventListener('click', () => this.showFiles(path, true));
      else if (e.kind === 'file') b.addEventListener('click', () => this.openView(path));
      else b.disabled = true;
      li.append(b);
      list.append(li);
    }
    box.append(bar, list);
    if (entries.length === 0) box.append(el('p', 'muted', 'Empty directory.'));
    if (r.truncated) box.append(el('p', 'ws-note', 'More entries than the server lists (2,000).'));
    this.fill(box);
  }

  openView(path) {
    return this.go(() => this.drawFile(path), { tab: 'files', title: path });
  }

  async drawFile(path) {
    this.loading('Loading…');
    let r;
    try {
      r = await this.api.read(path, 0);
    } catch (e) {
      this.failed(e);
      return;
    }
    const box = el('section', 'file-view');
    box.setAttribute('data-testid', 'file-view');
    box.dataset.path = path;
    const head = el('div', 'fd-head');
    head.append(el('span', 'fd-path', path), el('span', 'muted small', ` ${sizeText(r.size)}${r.mime ? ` · ${r.mime}` : ''}`));
    box.append(head);
    if (r.encoding === 'base64') {
      if (IMAGE.test(r.mime || '') && !r.truncated) box.append(this.image(r));
      else box.append(el('p', 'ws-note', r.truncated && IMAGE.test(r.mime || '') ? 'Image too large to preview (over 1 MiB).' : 'Binary file: not shown.'));
      this.fill(box);
      return;
    }
    const lang = langOf(path);
    const pre = el('div', 'fv-lines');
    box.append(pre);
    const state = { tokens: {}, line: 1, partial: '', offset: 0 };
    const more = el('button', 'fv-more', 'Load more');
    more.type = 'button';
    more.setAttribute('data-testid', 'file-more');
    const note = el('p', 'ws-note fv-cut');
    const append = (reply, last) => {
      // A chunk may end inside a line: keep the tail for the next chunk.
      const text = state.partial + (typeof reply.data === 'string' ? reply.data : '');
      const lines = text.split('\n');
      state.partial = last ? '' : lines.pop();
      if (last && lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
      for (const line of lines) {
        const row = el('div', 'fl');
        row.append(el('span', 'ln', String(state.line++)));
        const code = el('span', 'code');
        const t = tokenizeLine(line, lang, state.tokens);
        state.tokens = t.state;
        paint(code, t.tokens);
        row.append(code);
        pre.append(row);
      }
      state.offset += utf8Length(typeof reply.data === 'string' ? reply.data : '');
      box.dataset.truncated = String(!last);
      note.textContent = last ? '' : `Showing ${sizeText(state.offset)} of ${sizeText(r.size)}.`;
      note.hidden = last;
      more.hidden = last;
    };
    more.addEventListener('click', async () => {
      more.disabled = true;
      try {
        const next = await this.api.read(path, state.offset);
        append(next, next.truncated !== true);
      } catch (e) {
        note.textContent = `Could not load more: ${e.message || e}`;
      } finally {
        more.disabled = false;
      }
    });
    append(r, r.truncated !== true);
    box.append(note, more);
    this.fill(box);
  }

  image(r) {
    const fig = el('figure', 'fv-image');
    try {
      const bytes = Uint8Array.from(atob(r.data), (c) => c.charCodeAt(0));
      const url = URL.createObjectURL(new Blob([bytes], { type: r.mime }));
      const img = el('img');
      img.alt = 'Preview';
      img.src = url;
      img.setAttribute('data-testid', 'file-image');
      img.addEventListener('load', () => URL.revokeObjectURL(url), { once: true });
      fig.append(img);
    } catch {
      fig.append(el('p', 'ws-note', 'The image could not be decoded.'));
    }
    return fig;
  }
}
