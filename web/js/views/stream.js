// stream.js — renders a session's model (session.js) into the stream: prompts with
// their device, assistant text as Markdown (streamed incrementally: text.js), tool
// cards (collapsible output; Edit / Write / MultiEdit as diffs), permission cards
// with their answers (an answered one merges with its tool card: "Bash · allowed
// by iPhone · done"), turn results and notices. One DOM element per model item,
// updated in place when the item changes, so re-rendering is idempotent. Only the
// last KEEP_TURNS turns are in the DOM; the older ones are one line that shows
// them on demand, so a long session keeps a bounded page. Reads only the model;
// user actions go to callbacks.

import { fileChange, renderDiff } from './diff.js';
import { changeSummary } from '../workspace.js';
import { TextView } from './text.js';
import { actionRow, el } from './dom.js';
import { planCard, questionCard } from './cards.js';

/** Turns rendered in full; older ones collapse into one "earlier turns" line. */
export const KEEP_TURNS = 50;

function short(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

/** `path` relative to the working directory `cwd` when it is inside it. */
export function relativePath(path, cwd) {
  if (!cwd || typeof path !== 'string') return path;
  const base = cwd.endsWith('/') ? cwd : `${cwd}/`;
  return path.startsWith(base) ? path.slice(base.length) || '.' : path;
}

/** A one-line summary of a tool input (the command, the file, the pattern...). */
export function toolSummary(name, input, cwd = '') {
  if (!input || typeof input !== 'object') return '';
  const pick = ['command', 'file_path', 'notebook_path', 'path', 'pattern', 'url', 'query', 'description', 'prompt'];
  for (const k of pick) {
    if (typeof input[k] === 'string' && input[k]) return ['file_path', 'notebook_path', 'path'].includes(k) ? relativePath(input[k], cwd) : input[k];
  }
  const s = JSON.stringify(input);
  return s === '{}' ? '' : s;
}

const DESTINATION = {
  localSettings: 'for this project on this machine (.claude/settings.local.json)',
  projectSettings: 'for this project, shared with its repository (.claude/settings.json)',
  userSettings: 'for all your projects (~/.claude/settings.json)',
  session: 'for the rest of this session',
  cliArg: 'for the rest of this session',
};

/** What "Always allow" grants, in words, from a request's `permission_suggestions`. */
export function grantText(suggestions) {
  const parts = [];
  for (const sug of suggestions) {
    if (!sug || typeof sug !== 'object') continue;
    const where = DESTINATION[sug.destination] || (sug.destination ? `(${sug.destination})` : '');
    if ((sug.type === 'addRules' || sug.type === 'replaceRules') && Array.isArray(sug.rules)) {
      const rules = sug.rules.map((r) => (r && r.ruleContent ? `${r.toolName}(${r.ruleContent})` : `every ${r && r.toolName} call`));
      parts.push(`${sug.behavior === 'deny' ? 'deny' : 'allow'} ${rules.join(', ')} ${where}`.trim());
    } else if (sug.type === 'setMode' && typeof sug.mode === 'string') {
      parts.push(sug.mode === 'acceptEdits' ? `accept file edits without asking ${where}`.trim() : `switch to ${sug.mode} mode ${where}`.trim());
    } else if (sug.type === 'addDirectories' && Array.isArray(sug.directories)) {
      parts.push(`access to ${sug.directories.join(', ')} ${where}`.trim());
    }
  }
  return parts.join('; ');
}

function parseJson(text) {
  try {
    const v = JSON.parse(text);
    return v && typeof v === 'object' ? v : null;
  } catch {
    return null;
  }
}

/** The input body of a tool card or permission card: a diff, a command, or JSON. */
export function inputBody(name, input, cwd) {
  const change = fileChange(name, input);
  if (change) return renderDiff({ ...change, path: relativePath(change.path, cwd) });
  if (name === 'Bash' && typeof input.command === 'string') {
    const pre = el('pre', 'code cmd');
    pre.append(el('code', '', `$ ${input.command}`));
    return pre;
  }
  const pre = el('pre', 'code json');
  pre.append(el('code', '', JSON.stringify(input, null, 2)));
  return pre;
}

export class StreamView {
  /**
   * @param {HTMLElement} root  the stream container
   * @param {object} actions  {respond(item, response), canAnswer()}
   */
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
    this.model = null;
    this.extraTurns = 0; // turns the reader asked to see beyond KEEP_TURNS
    // Permission cards that show their file's whole current diff (a request opened
    // from a notification): request id → {path, node} (node null while loading).
    this.fullDiffs = new Map();
    this.questionState = new Map(); // request id → the answers picked so far (views/cards.js)
    this.clear();
  }

  /**
   * Show the whole current diff of the file a pending Edit / Write / MultiEdit request
   * changes inside its card (`actions.fullDiff(path)` resolves to the nodes to show).
   */
  showFullDiff(it, loaded = null) {
    const path = this.fileOf(it);
    if (!path || !this.actions.fullDiff || this.fullDiffs.has(it.requestId)) return;
    const entry = { path, node: null };
    this.fullDiffs.set(it.requestId, entry);
    const redraw = () => {
      const n = this.nodes.get(it.id);
      if (n) {
        n.rev = -1;
        this.place(it);
      }
    };
    redraw();
    Promise.resolve(this.actions.fullDiff(path)).then((node) => {
      entry.node = node;
    }, (e) => {
      entry.node = el('p', 'muted small', `The file's diff could not be loaded: ${(e && e.message) || e}`);
    }).finally(() => {
      redraw();
      if (loaded) loaded();
    });
  }

  /** The workdir-relative file of a file-changing request, or ''. */
  fileOf(it) {
    const path = it && it.input && typeof it.input.file_path === 'string' ? it.input.file_path : '';
    if (!path || !['Edit', 'Write', 'MultiEdit'].includes(it.tool)) return '';
    const rel = relativePath(path, this.model ? this.model.cwd : '');
    return rel.startsWith('/') ? '' : rel;
  }

  clear() {
    this.nodes = new Map(); // item id → {el, rev, view?}
    this.turnBoxes = new Map(); // turn → <div class="turn">
    this.hiddenUpTo = -1; // turns at or below this are not in the DOM
    this.collapsedRow = null;
    this.root.replaceChildren();
  }

  /** Render `model`: all of it when it is new (rebuilt), else only changed items. */
  render(model) {
    if (model !== this.model) {
      this.model = model;
      this.clear();
      model.changed.clear();
      this.hiddenUpTo = this.limit();
      for (const it of model.items) this.place(it);
      this.updateCollapsedRow();
      return;
    }
    if (model.changed.size === 0) return;
    const ids = [...model.changed];
    model.changed.clear();
    for (const id of ids) {
      const it = model.get(id);
      if (it) this.place(it);
    }
    this.collapseOld();
  }

  /** The highest turn that stays out of the DOM. */
  limit() {
    return this.model.turns - KEEP_TURNS - this.extraTurns;
  }

  /** Turns that fell out of the last KEEP_TURNS leave the DOM. */
  collapseOld() {
    const limit = this.limit();
    if (limit <= this.hiddenUpTo) return;
    for (let t = this.hiddenUpTo + 1; t <= limit; t++) {
      const box = this.turnBoxes.get(t);
      if (!box) continue;
      box.remove();
      this.turnBoxes.delete(t);
    }
    for (const [id, n] of this.nodes) if (n.turn <= limit) this.nodes.delete(id);
    this.hiddenUpTo = limit;
    this.updateCollapsedRow();
  }

  updateCollapsedRow() {
    const hidden = Math.max(1, this.hiddenUpTo);
    if (this.hiddenUpTo < 0) {
      this.collapsedRow?.remove();
      this.collapsedRow = null;
      return;
    }
    if (!this.collapsedRow) {
      this.collapsedRow = el('div', 'turn-collapsed');
      const b = el('button', 'turn-open');
      b.type = 'button';
      b.addEventListener('click', () => this.showEarlier());
      this.collapsedRow.append(b);
      this.root.prepend(this.collapsedRow);
    }
    this.collapsedRow.firstChild.textContent = `Show ${hidden} earlier turn${hidden === 1 ? '' : 's'}`;
  }

  /** The reader opened the collapsed line: the previous KEEP_TURNS turns come back. */
  showEarlier() {
    this.extraTurns += KEEP_TURNS;
    const model = this.model;
    this.model = null;
    this.render(model);
  }

  turnBox(turn) {
    let box = this.turnBoxes.get(turn);
    if (box) return box;
    box = el('div', 'turn');
    box.dataset.turn = String(turn);
    // Turns are created in order, except when an earlier one is shown again.
    let next = null;
    for (const [t, b] of this.turnBoxes) if (t > turn && (!next || t < Number(next.dataset.turn))) next = b;
    if (next) this.root.insertBefore(box, next);
    else this.root.append(box);
    this.turnBoxes.set(turn, box);
    return box;
  }

  place(it) {
    if (it.turn <= this.hiddenUpTo) return;
    const have = this.nodes.get(it.id);
    if (have && have.rev === it.rev) return;
    if (it.kind === 'text') {
      const view = have ? have.view : new TextView();
      view.el.dataset.item = it.id;
      view.update(it);
      if (!have) this.turnBox(it.turn).append(view.el);
      this.nodes.set(it.id, { el: view.el, rev: it.rev, view, turn: it.turn });
      return;
    }
    const node = this.build(it);
    if (!node) return;
    node.dataset.item = it.id;
    if (have) {
      // Keep a tool card's open/closed output as the person left it.
      const oldDetails = have.el.querySelector('details');
      const newDetails = node.querySelector('details');
      if (oldDetails && newDetails) newDetails.open = oldDetails.open;
      have.el.replaceWith(node);
    } else {
      this.turnBox(it.turn).append(node);
    }
    this.nodes.set(it.id, { el: node, rev: it.rev, turn: it.turn });
    // An answered permission card shows its tool's progress: redraw it with the tool.
    if (it.kind === 'tool') {
      const perm = this.model.permissionFor(it.toolId);
      const pn = perm ? this.nodes.get(perm.id) : null;
      if (pn && perm.resolved) {
        pn.rev = -1;
        this.place(perm);
      }
    }
  }

  build(it) {
    switch (it.kind) {
      case 'prompt':
        return this.prompt(it);
      case 'tool':
        return this.tool(it);
      case 'permission':
        return this.permission(it);
      case 'result':
        return this.result(it);
      case 'notice':
        return el('div', it.interrupt ? 'notice interrupted' : 'notice', it.text);
      case 'changes':
        return this.changes(it);
      default:
        return null;
    }
  }

  /** What a turn changed (`relay.changes`, docs/protocol.md §11): a tap opens that turn's diff. */
  changes(it) {
    const box = el('button', 'turn-changes');
    box.type = 'button';
    box.setAttribute('data-testid', 'turn-changes');
    box.dataset.promptId = it.promptId;
    box.append(el('span', 'tc-icon', '±'), el('span', 'tc-text', `${changeSummary(it.files)}${it.truncated ? ' (list cut short)' : ''}`));
    const names = it.files.slice(0, 3).map((f) => f.path.split('/').pop()).join(', ');
    if (names) box.append(el('span', 'tc-files muted', `${names}${it.files.length > 3 ? ', …' : ''}`));
    box.title = 'Show the diff of this turn';
    if (this.actions.openTurn) box.addEventListener('click', () => this.actions.openTurn(it.promptId));
    else box.disabled = true;
    return box;
  }

  /** A link from a file change's card to the file's whole current diff (the workspace view). */
  fullDiffLink(it) {
    const rel = this.fileOf(it);
    if (!rel || !this.actions.openFile) return null;
    const b = el('button', 'link-btn full-diff', 'Full diff of this file');
    b.type = 'button';
    b.setAttribute('data-testid', 'permission-full-diff');
    b.addEventListener('click', () => this.actions.openFile(rel));
    return b;
  }

  prompt(it) {
    const box = el('article', 'msg user');
    box.setAttribute('data-testid', 'user-prompt');
    box.dataset.promptId = it.promptId;
    box.dataset.device = it.device || '';
    // The relay's own `continue` after a usage limit (auto_continue) names itself, not a key.
    const who = it.autoContinue ? 'Auto-continue' : it.device || short(it.fingerprint, 20) || 'client';
    box.setAttribute('aria-label', `Prompt from ${it.autoContinue ? 'auto-continue' : it.device || it.fingerprint || 'a client'}`);
    const meta = el('div', 'meta');
    meta.append(el('span', 'who', who));
    if (it.ts) meta.append(timeOf(it.ts));
    if (it.phase === 'accepted' && it.queued) meta.append(el('span', 'tag', it.scheduledAt ? 'scheduled' : 'queued'));
    else if (it.phase === 'aborted') meta.append(el('span', 'tag warn', `aborted${it.phaseDetail ? `: ${it.phaseDetail}` : ''}`));
    box.append(meta);
    box.append(el('div', 'body plain', it.text));
    if (it.images) box.append(el('div', 'muted small', `${it.images} image${it.images === 1 ? '' : 's'} attached`));
    if (it.steer) meta.append(el('span', 'tag', 'steering'));
    return box;
  }

  tool(it) {
    const box = el('article', 'card tool');
    box.setAttribute('data-testid', 'tool-use');
    box.dataset.tool = it.name;
    let input = it.input;
    if (!input && it.inputJson) input = parseJson(it.inputJson);
    const cwd = this.model ? this.model.cwd : '';
    const perm = this.model ? this.model.permissionFor(it.toolId) : null;
    // Answered: the permission card shows this tool's progress and output instead.
    if (perm && (perm.resolved === 'allow' || perm.resolved === 'deny')) box.classList.add('merged');
    const head = el('div', 'card-head');
    head.append(el('span', 'tool-name', it.name || 'tool'));
    head.append(el('span', 'summary', short(toolSummary(it.name, input || {}, cwd), 160)));
    head.append(toolStatus(it, perm));
    box.append(head);
    if (!perm && input && fileChange(it.name, input)) box.append(inputBody(it.name, input, cwd));
    if (it.output !== null) box.append(outputDetails(it.output));
    return box;
  }

  permission(it) {
    if (it.subtype === 'can_use_tool' && (it.tool === 'ExitPlanMode' || it.tool === 'AskUserQuestion')) return this.planOrQuestion(it);
    const box = requestCard(it, 'card perm', `Permission request: ${it.tool}`);
    const cwd = this.model ? this.model.cwd : '';
    const tool = it.toolUseId && this.model ? this.model.get(`tool:${it.toolUseId}`) : null;
    if (tool && (it.resolved === 'allow' || it.resolved === 'deny')) {
      // Merged with its tool card: "Bash · allowed by iPhone · done", the input, the output.
      box.classList.add('merged-card');
      const head = el('div', 'card-head');
      head.append(el('span', 'tool-name', it.tool));
      head.append(el('span', 'resolution', resolutionText(it, 'allowed', 'denied')));
      if (it.resolved === 'allow') head.append(toolStatus(tool, it));
      box.append(head);
      const summary = toolSummary(it.tool, it.input, cwd);
      if (summary) box.append(el('p', 'summary', short(summary, 300)));
      const change = fileChange(it.tool, it.input);
      if (change) {
        const d = el('details', 'input');
        d.append(el('summary', '', 'Change'), inputBody(it.tool, it.input, cwd));
        box.append(d);
        const full = this.fullDiffLink(it);
        if (full) box.append(full);
      }
      if (tool.output !== null) box.append(outputDetails(tool.output));
      return box;
    }
    const head = el('div', 'card-head');
    head.append(el('span', 'perm-icon', '⚠'));
    head.append(el('span', 'tool-name', it.subtype === 'can_use_tool' ? `Allow ${it.tool}?` : `Agent request: ${it.subtype}`));
    box.append(head);
    const summary = it.description || toolSummary(it.tool, it.input, cwd);
    if (summary) box.append(el('p', 'summary', summary));
    if (it.subtype === 'can_use_tool') box.append(inputBody(it.tool, it.input, cwd));
    const full = this.fullDiffLink(it);
    if (full) box.append(full);
    const shown = this.fullDiffs.get(it.requestId);
    if (shown && !it.resolved) {
      const d = el('details', 'full-diff-inline');
      d.open = true;
      d.setAttribute('data-testid', 'permission-file-diff');
      d.append(el('summary', '', `${shown.path}: the whole file's changes now (against HEAD)`), shown.node || el('p', 'muted small', 'Loading the diff…'));
      box.append(d);
    }
    if (it.reason) box.append(el('p', 'muted small', it.reason));
    if (it.resolved) {
      box.append(el('p', 'resolution', resolutionText(it, 'Allowed', 'Denied')));
      return box;
    }
    if (it.subtype !== 'can_use_tool') {
      box.append(el('p', 'muted small', 'This kind of request can be answered from a terminal client (ccrelay attach).'));
      return box;
    }
    if (!this.actions.canAnswer()) {
      box.append(el('p', 'muted small', 'Waiting for an owner to answer (this device is view only).'));
      return box;
    }
    const { row, add: btn } = actionRow();
    btn('Allow', 'permission-allow', 'primary', () => this.actions.respond(it, { behavior: 'allow' }));
    if (it.suggestions.length > 0) {
      btn('Always allow', 'permission-always', '', () => this.actions.respond(it, { behavior: 'allow', updatedPermissions: it.suggestions }));
    }
    btn('Deny', 'permission-deny', 'danger', () => this.actions.respond(it, { behavior: 'deny' }));
    box.append(row);
    const grants = grantText(it.suggestions);
    if (grants) box.append(el('p', 'grant', `“Always allow” will ${grants}.`));
    const why = el('form', 'deny-why');
    const inputId = `why-${it.requestId}`;
    const label = el('label', 'sr-only', 'Reason for denying');
    label.htmlFor = inputId;
    const input = el('input');
    input.id = inputId;
    input.type = 'text';
    input.placeholder = 'Reason…';
    input.maxLength = 2000;
    const send = el('button', 'danger', 'Deny with message');
    send.type = 'submit';
    why.append(label, input, send);
    why.addEventListener('submit', (e) => {
      e.preventDefault();
      const message = input.value.trim();
      if (message) this.actions.respond(it, { behavior: 'deny', message });
    });
    box.append(why);
    return box;
  }

  /**
   * An ExitPlanMode or AskUserQuestion request: its permission card holds a plan card
   * or a question card (views/cards.js) instead of the tool's input.
   */
  planOrQuestion(it) {
    const box = requestCard(it, 'card perm special', it.tool === 'ExitPlanMode' ? 'Plan waiting for approval' : 'Questions from Claude');
    const respond = (x, response) => this.actions.respond(x, response);
    const canAnswer = () => this.actions.canAnswer();
    if (it.tool === 'ExitPlanMode') {
      box.append(planCard(it, { respond, canAnswer, setMode: (mode) => this.actions.setMode?.(mode), plan: this.model ? this.model.plans.get(it.requestId) || '' : '' }));
    } else {
      if (!this.questionState.has(it.requestId)) this.questionState.set(it.requestId, { chosen: new Map(), other: new Map() });
      box.append(questionCard(it, { respond, canAnswer, state: this.questionState.get(it.requestId) }));
    }
    if (it.resolved) {
      const plan = it.tool === 'ExitPlanMode';
      box.append(el('p', 'resolution', resolutionText(it, plan ? 'Approved' : 'Answered', plan ? 'Sent back' : 'Skipped')));
    }
    return box;
  }

  result(it) {
    const box = el('div', it.isError ? 'turn-end warn' : 'turn-end');
    if (it.interrupted) box.className = 'turn-end';
    const parts = [];
    parts.push(it.interrupted ? 'Interrupted' : it.isError ? `Turn ended: ${(it.subtype !== 'success' && it.subtype.replace(/_/g, ' ')) || 'error'}` : 'Turn done');
    if (it.duration !== null) parts.push(`${(it.duration / 1000).toFixed(1)} s`);
    if (it.cost !== null) parts.push(`$${it.cost.toFixed(4)}`);
    box.textContent = parts.join(' · ');
    if (it.ts) box.append(' · ', timeOf(it.ts));
    return box;
  }
}

/**
 * A `<time>` for an event's server time: the local hour and minute, with the date too
 * when it is not today; the full local date and time on hover and for screen readers.
 */
export function timeOf(ts) {
  const d = new Date(ts);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  const text = sameDay
    ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
    : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
  const t = el('time', 'when', text);
  t.dateTime = d.toISOString();
  t.title = d.toLocaleString();
  return t;
}

/** The status tag of a tool call: running, waiting for permission, done or error. */
/** The opening every request card shares: its test id, data-* state and group role. */
function requestCard(it, classes, label) {
  const box = el('article', classes);
  box.setAttribute('data-testid', 'permission-card');
  box.dataset.requestId = it.requestId;
  box.dataset.tool = it.tool;
  if (it.resolved) {
    box.dataset.resolved = it.resolved;
    box.dataset.by = it.by || '';
    box.classList.add(`is-${it.resolved}`);
  }
  box.setAttribute('role', 'group');
  box.setAttribute('aria-label', label);
  return box;
}

/** How a request ended, in the card's words for allow and deny: "Allowed by iPhone". */
function resolutionText(it, allowed, denied) {
  if (it.resolved === 'cancelled') {
    return `Cancelled${it.by === 'agent' ? ' by the agent' : it.message ? ` (${it.message.replace(/_/g, ' ')})` : ''}`;
  }
  const why = it.message && it.resolved === 'deny' ? `: ${it.message}` : '';
  return `${it.resolved === 'allow' ? allowed : denied} by ${it.by || 'another client'}${why}`;
}

function toolStatus(tool, perm) {
  if (tool.output !== null) return el('span', tool.isError ? 'tag warn' : 'tag ok', tool.isError ? 'error' : 'done');
  if (perm && !perm.resolved) return el('span', 'tag warn', 'needs approval');
  if (perm && perm.resolved === 'deny') return el('span', 'tag', 'not run');
  return el('span', 'tag', 'running');
}

function outputDetails(output) {
  const d = el('details', 'output');
  const n = output.split('\n').length;
  d.append(el('summary', '', `Output (${n} line${n === 1 ? '' : 's'})`));
  const pre = el('pre', 'code');
  pre.append(el('code', '', output));
  d.append(pre);
  return d;
}
