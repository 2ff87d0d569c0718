// stream.js — renders a session's model (session.js) into the stream: prompts with
// their device, assistant text as Markdown, tool cards (collapsible output; Edit /
// Write / MultiEdit as diffs), permission cards with their answers, turn results and
// notices. One DOM element per model item, updated in place when the item changes,
// so re-rendering is idempotent. Reads only the model; user actions go to callbacks.

import { renderMarkdown } from './markdown.js';
import { fileChange, renderDiff } from './diff.js';

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function short(text, n) {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}

/** A one-line summary of a tool input (the command, the file, the pattern...). */
export function toolSummary(name, input) {
  if (!input || typeof input !== 'object') return '';
  const pick = ['command', 'file_path', 'notebook_path', 'path', 'pattern', 'url', 'query', 'description', 'prompt'];
  for (const k of pick) if (typeof input[k] === 'string' && input[k]) return input[k];
  const s = JSON.stringify(input);
  return s === '{}' ? '' : s;
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
function inputBody(name, input) {
  const change = fileChange(name, input);
  if (change) return renderDiff(change);
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
   * @param {object} actions  {respond(item, response), who()}
   */
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
    this.nodes = new Map(); // item id → {el, rev}
    this.model = null;
  }

  /** Render `model`: all of it when it is new (rebuilt), else only changed items. */
  render(model) {
    if (model !== this.model) {
      this.model = model;
      this.nodes.clear();
      this.root.replaceChildren();
      model.changed.clear();
      for (const it of model.items) this.place(it);
      return;
    }
    if (model.changed.size === 0) return;
    const ids = [...model.changed];
    model.changed.clear();
    for (const id of ids) {
      const it = model.get(id);
      if (it) this.place(it);
    }
  }

  place(it) {
    const have = this.nodes.get(it.id);
    if (have && have.rev === it.rev) return;
    const node = this.build(it);
    if (!node) return;
    if (have) {
      // Keep a tool card's open/closed output as the person left it.
      const oldDetails = have.el.querySelector('details');
      const newDetails = node.querySelector('details');
      if (oldDetails && newDetails) newDetails.open = oldDetails.open;
      have.el.replaceWith(node);
    } else {
      this.root.append(node);
    }
    this.nodes.set(it.id, { el: node, rev: it.rev });
  }

  build(it) {
    switch (it.kind) {
      case 'prompt':
        return this.prompt(it);
      case 'text':
        return this.text(it);
      case 'tool':
        return this.tool(it);
      case 'permission':
        return this.permission(it);
      case 'result':
        return this.result(it);
      case 'notice':
        return el('div', 'notice', it.text);
      default:
        return null;
    }
  }

  prompt(it) {
    const box = el('article', 'msg user');
    box.setAttribute('data-testid', 'user-prompt');
    box.dataset.promptId = it.promptId;
    box.dataset.device = it.device || '';
    box.setAttribute('aria-label', `Prompt from ${it.device || it.fingerprint || 'a client'}`);
    const meta = el('div', 'meta');
    meta.append(el('span', 'who', it.device || short(it.fingerprint, 20) || 'client'));
    if (it.phase === 'accepted' && it.queued) meta.append(el('span', 'tag', 'queued'));
    else if (it.phase === 'aborted') meta.append(el('span', 'tag warn', `aborted${it.phaseDetail ? `: ${it.phaseDetail}` : ''}`));
    box.append(meta);
    box.append(el('div', 'body plain', it.text));
    return box;
  }

  text(it) {
    const box = el('div', 'msg assistant md');
    box.setAttribute('data-testid', 'assistant-text');
    box.append(renderMarkdown(it.text));
    return box;
  }

  tool(it) {
    const box = el('article', 'card tool');
    box.setAttribute('data-testid', 'tool-use');
    box.dataset.tool = it.name;
    let input = it.input;
    if (!input && it.inputJson) input = parseJson(it.inputJson);
    const head = el('div', 'card-head');
    head.append(el('span', 'tool-name', it.name || 'tool'));
    head.append(el('span', 'summary', short(toolSummary(it.name, input || {}), 160)));
    const perm = this.model ? this.model.permissionFor(it.toolId) : null;
    if (it.output !== null) head.append(el('span', it.isError ? 'tag warn' : 'tag ok', it.isError ? 'error' : 'done'));
    else if (perm && !perm.resolved) head.append(el('span', 'tag warn', 'needs permission'));
    else head.append(el('span', 'tag', 'running'));
    box.append(head);
    if (!perm && input && fileChange(it.name, input)) box.append(inputBody(it.name, input));
    if (it.output !== null) {
      const d = el('details', 'output');
      const n = it.output.split('\n').length;
      d.append(el('summary', '', `Output (${n} line${n === 1 ? '' : 's'})`));
      const pre = el('pre', 'code');
      pre.append(el('code', '', it.output));
      d.append(pre);
      box.append(d);
    }
    return box;
  }

  permission(it) {
    const box = el('article', 'card perm');
    box.setAttribute('data-testid', 'permission-card');
    box.dataset.requestId = it.requestId;
    box.dataset.tool = it.tool;
    if (it.resolved) {
      box.dataset.resolved = it.resolved;
      box.dataset.by = it.by || '';
      box.classList.add(`is-${it.resolved}`);
    }
    box.setAttribute('role', 'group');
    box.setAttribute('aria-label', `Permission request: ${it.tool}`);
    const head = el('div', 'card-head');
    head.append(el('span', 'perm-icon', '⚠'));
    head.append(el('span', 'tool-name', it.subtype === 'can_use_tool' ? `Allow ${it.tool}?` : `Agent request: ${it.subtype}`));
    box.append(head);
    const summary = it.description || toolSummary(it.tool, it.input);
    if (summary) box.append(el('p', 'summary', summary));
    if (it.subtype === 'can_use_tool') box.append(inputBody(it.tool, it.input));
    if (it.reason) box.append(el('p', 'muted small', it.reason));
    if (it.resolved) {
      const label = it.resolved === 'cancelled'
        ? `Cancelled${it.by === 'agent' ? ' by the agent' : it.message ? ` (${it.message.replace(/_/g, ' ')})` : ''}`
        : `${it.resolved === 'allow' ? 'Allowed' : 'Denied'} by ${it.by || 'another client'}${it.message && it.resolved === 'deny' ? `: ${it.message}` : ''}`;
      box.append(el('p', 'resolution', label));
      return box;
    }
    if (it.subtype !== 'can_use_tool') {
      box.append(el('p', 'muted small', 'This kind of request can be answered from a terminal client (ccrelay attach).'));
      return box;
    }
    const row = el('div', 'actions');
    const btn = (label, testid, cls, fn) => {
      const b = el('button', cls, label);
      b.type = 'button';
      if (testid) b.setAttribute('data-testid', testid);
      b.addEventListener('click', () => {
        for (const x of row.querySelectorAll('button')) x.disabled = true;
        Promise.resolve(fn()).finally(() => {
          for (const x of row.querySelectorAll('button')) x.disabled = false;
        });
      });
      row.append(b);
      return b;
    };
    btn('Allow', 'permission-allow', 'primary', () => this.actions.respond(it, { behavior: 'allow' }));
    if (it.suggestions.length > 0) {
      btn('Always allow', 'permission-always', '', () => this.actions.respond(it, { behavior: 'allow', updatedPermissions: it.suggestions }));
    }
    btn('Deny', 'permission-deny', 'danger', () => this.actions.respond(it, { behavior: 'deny' }));
    box.append(row);
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

  result(it) {
    const box = el('div', it.isError ? 'turn-end warn' : 'turn-end');
    const parts = [];
    parts.push(it.isError ? `Turn ended: ${it.subtype.replace(/_/g, ' ') || 'error'}` : 'Turn done');
    if (it.duration !== null) parts.push(`${(it.duration / 1000).toFixed(1)} s`);
    if (it.cost !== null) parts.push(`$${it.cost.toFixed(4)}`);
    box.textContent = parts.join(' · ');
    return box;
  }
}
