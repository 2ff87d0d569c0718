// sheet.js — the approval sheet: a request waiting for an answer cannot be missed.
// While a permission request of the attached session is pending and its card is not
// on screen, a sheet above the prompt box names the tool and what it will do, with
// Allow (only when the sheet shows the input complete: a short command, a path, a
// query — never a diff it would have to cut), Deny, and "Show" that scrolls to the
// card. A request of another session (docs/protocol.md §4 `pending`) first shows its tool
// and short summary with Deny and "Go to it"; once the page has fetched the request as
// the agent sent it (peek.js), the sheet shows its whole input the way the permission
// card does (a diff, a command, the JSON) and offers Allow too. Must not: know about
// sockets (answers go through `respond` / `respondOther`).

import { inputBody, toolSummary } from './stream.js';
import { requestFields } from '../protocol.js';
import { actionRow, el } from './dom.js';

/** An input shown whole in the sheet: a single summary line of at most this length. */
const COMPLETE_MAX = 240;

/**
 * The text that shows `input` complete, or '' when the sheet cannot show all of it
 * (then it offers only "Show" and Deny).
 */
export function completeSummary(tool, input, cwd) {
  if (!input || typeof input !== 'object') return '';
  const keys = Object.keys(input).filter((k) => input[k] !== undefined && input[k] !== '');
  const summary = toolSummary(tool, input, cwd);
  if (!summary || summary.length > COMPLETE_MAX || summary.includes('\n')) return '';
  // The summary is one field; any other field (a file's content, an edit) is not shown.
  const shown = ['command', 'file_path', 'notebook_path', 'path', 'pattern', 'url', 'query'].find((k) => typeof input[k] === 'string' && input[k]);
  const rest = keys.filter((k) => k !== shown && k !== 'description' && k !== 'timeout');
  return rest.length === 0 ? summary : '';
}

export class ApprovalSheet {
  /**
   * @param {HTMLElement} root
   * @param {{respond: (item: object, response: object) => Promise<void>, show: (item: object) => void, canAnswer: () => boolean}} actions
   */
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
    this.shownId = null;
  }

  /**
   * Show `req` ({session, title, requestId, tool, summary}), a request pending in
   * another session; `count`: how many wait in other sessions; `full`: the request as
   * the agent sent it (an `attached` `pending` entry) once fetched, else null, with
   * `loading` true while the fetch may still bring it; `cwd`: that session's directory.
   */
  updateOther(req, count, { full = null, loading = false, cwd = '' } = {}) {
    const it = full ? requestFields(full) : null;
    // Allow only for a permission whose input is shown here whole; a question needs its answers.
    const answerable = it !== null && it.subtype === 'can_use_tool' && it.tool !== 'AskUserQuestion';
    const key = `other:${req.session}:${req.requestId}:${count}:${answerable}:${loading}`;
    if (key === this.shownId && !this.root.hidden) return;
    this.shownId = key;
    this.root.dataset.requestId = req.requestId;
    this.root.dataset.session = req.session;
    this.root.dataset.other = 'true';
    delete this.root.dataset.complete;
    const head = el('p', 'sheet-head', `${req.title || req.session} needs approval: ${it ? it.tool : req.tool}${count > 1 ? ` (1 of ${count})` : ''}`);
    const parts = [head];
    if (answerable) {
      this.root.dataset.complete = 'true';
      if (it.description) parts.push(el('p', 'sheet-desc', it.description));
      const body = el('div', 'sheet-input');
      body.setAttribute('data-testid', 'sheet-input');
      body.append(inputBody(it.tool, it.input, cwd));
      parts.push(body);
      if (it.reason) parts.push(el('p', 'muted small', it.reason));
    } else {
      parts.push(el('p', 'summary', req.summary || req.tool));
      if (loading) parts.push(el('p', 'muted small', 'Loading the whole request…'));
    }
    const { row, add: button } = actionRow();
    if (this.actions.canAnswer()) {
      if (answerable) button('Allow', 'sheet-allow', 'primary', () => this.actions.respondOther(req, { behavior: 'allow' }));
      button('Deny', 'sheet-deny', 'danger', () => this.actions.respondOther(req, { behavior: 'deny' }));
    }
    button('Go to it', 'sheet-show', '', () => this.actions.goTo(req));
    parts.push(row);
    this.root.replaceChildren(...parts);
    this.root.hidden = false;
  }

  /** Show `item` (a pending permission item of `session`), or hide the sheet (null). */
  update(item, session, cwd, pendingCount) {
    if (!item) {
      if (!this.root.hidden) {
        this.root.hidden = true;
        this.root.replaceChildren();
      }
      this.shownId = null;
      return;
    }
    const key = `${session}:${item.requestId}:${pendingCount}`;
    if (key === this.shownId && !this.root.hidden) return;
    this.shownId = key;
    this.root.dataset.requestId = item.requestId;
    this.root.dataset.session = session;
    delete this.root.dataset.other;
    delete this.root.dataset.complete;
    const head = el('p', 'sheet-head', `Needs approval: ${item.tool}${pendingCount > 1 ? ` (1 of ${pendingCount})` : ''}`);
    const complete = completeSummary(item.tool, item.input, cwd);
    const summary = el('p', 'summary', complete || item.description || toolSummary(item.tool, item.input, cwd) || item.tool);
    const { row, add: button } = actionRow();
    if (this.actions.canAnswer()) {
      if (complete) button('Allow', 'sheet-allow', 'primary', () => this.actions.respond(item, { behavior: 'allow' }));
      button('Deny', 'sheet-deny', 'danger', () => this.actions.respond(item, { behavior: 'deny' }));
    }
    button(complete ? 'Show' : 'Show the request', 'sheet-show', '', () => this.actions.show(item));
    this.root.replaceChildren(head, summary, row);
    this.root.hidden = false;
  }
}
