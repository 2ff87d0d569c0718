// text.js — one assistant text block, rendered as it streams without re-parsing it.
// The text is cut into Markdown blocks at blank lines outside code fences; a block
// is rendered once, when the line after it shows it is complete, and never again.
// The open last block is shown as plain text in blocks of about CHUNK characters
// (appended to, never rewritten), and rendered as Markdown when the text is final.
// The cut points depend on the text only, so a page that saw the deltas one by one
// and a page that got the whole text at once show the same thing. The model says
// when text was replaced rather than extended (`resets`): then it is drawn anew.

import { renderMarkdown } from './markdown.js';

/** Plain-text chunk size while streaming: appends touch one small text node. */
const CHUNK = 4096;
/** An open block longer than this stays plain text when final (Markdown of it would be one long task). */
const MAX_MARKDOWN_BLOCK = 32768;

const FENCE = /^ {0,3}(`{3,}|~{3,})/;

export class TextView {
  constructor() {
    this.el = document.createElement('div');
    this.el.className = 'msg assistant md';
    this.el.setAttribute('data-testid', 'assistant-text');
    this.reset();
  }

  reset() {
    this.el.replaceChildren();
    this.resets = -1;
    this.len = 0; // characters of the text taken in
    this.blockStart = 0; // where the open block starts
    this.lineStart = 0; // where the incomplete last line starts
    this.fence = ''; // the open code fence's marker, if inside one
    this.blockHasText = false;
    this.tail = null; // the open block's plain-text element
    this.chunk = null; // its last text node
    this.finalDone = false;
  }

  /** Bring the view up to `item` ({text, final, resets}). */
  update(item) {
    const text = item.text;
    const extendsShown = item.resets === this.resets && text.length >= this.len && !(this.finalDone && text.length !== this.len);
    if (!extendsShown) {
      this.reset();
      this.resets = item.resets;
    }
    if (text.length > this.len) this.take(text);
    if (item.final && !this.finalDone) this.finish(text);
  }

  /** Take in text[len..]: complete blocks rendered, the rest appended to the tail. */
  take(text) {
    let closedAny = false;
    let nl = text.indexOf('\n', Math.max(this.lineStart, this.len));
    while (nl !== -1) {
      const line = text.slice(this.lineStart, nl);
      const lineEnd = nl + 1;
      const fence = FENCE.exec(line);
      if (this.fence) {
        if (line.trimStart().startsWith(this.fence)) this.fence = '';
        this.blockHasText = true;
      } else if (fence) {
        this.fence = fence[1];
        this.blockHasText = true;
      } else if (line.trim() === '') {
        if (this.blockHasText) {
          this.closeBlock(text.slice(this.blockStart, this.lineStart));
          closedAny = true;
        }
        this.blockStart = lineEnd;
        this.blockHasText = false;
      } else {
        this.blockHasText = true;
      }
      this.lineStart = lineEnd;
      nl = text.indexOf('\n', lineEnd);
    }
    if (closedAny) {
      // The tail now starts later: redraw it (it is only what follows the last blank line).
      this.dropTail();
      this.appendTail(text.slice(this.blockStart));
    } else {
      this.appendTail(text.slice(Math.max(this.len, this.blockStart)));
    }
    this.len = text.length;
  }

  closeBlock(block) {
    const frag = renderMarkdown(block);
    if (this.tail) this.el.insertBefore(frag, this.tail);
    else this.el.append(frag);
  }

  dropTail() {
    if (this.tail) this.tail.remove();
    this.tail = null;
    this.chunk = null;
  }

  appendTail(s) {
    if (!s) return;
    if (!this.tail) {
      this.tail = document.createElement('div');
      this.tail.className = 'stream-tail';
      this.el.append(this.tail);
    }
    let rest = s;
    while (rest.length > 0) {
      if (!this.chunk) {
        // Each chunk is a block of its own, so laying out an append touches the last one only.
        this.chunk = document.createTextNode('');
        const block = document.createElement('div');
        block.append(this.chunk);
        this.tail.append(block);
      }
      // A chunk ends at the first white space after CHUNK characters: where it ends
      // depends on the text alone, not on how the deltas were cut.
      const room = CHUNK - this.chunk.length;
      let take = rest.length;
      let full = false;
      if (rest.length > room) {
        const ws = rest.slice(Math.max(0, room)).search(/\s/);
        if (ws !== -1) {
          take = Math.max(0, room) + ws + 1;
          full = true;
        }
      }
      this.chunk.appendData(rest.slice(0, take));
      rest = rest.slice(take);
      if (full) this.chunk = null;
    }
  }

  /** The text is final: the open block becomes Markdown (unless it is very long). */
  finish(text) {
    this.finalDone = true;
    const open = text.slice(this.blockStart);
    if (open.trim() === '' || open.length > MAX_MARKDOWN_BLOCK) {
      if (open.trim() === '') this.dropTail();
      return;
    }
    this.dropTail();
    this.el.append(renderMarkdown(open));
  }
}
