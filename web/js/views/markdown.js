// markdown.js — a small, safe Markdown renderer for agent text. It builds DOM nodes
// with createElement/textContent only (never innerHTML), so no agent text can become
// markup; links are kept only for http:, https: and mailto: URLs (anything else,
// `javascript:` included, stays plain text). Supports what Claude Code writes: fenced
// code blocks (highlighted by a tiny tokenizer, with a copy button), headings, GFM
// tables, lists, quotes, rules, paragraphs, and inline code, bold, italic, links.

const SAFE_URL = /^(https?:\/\/|mailto:)/i;

/** A URL we will put in href, or null. */
export function safeUrl(url) {
  const u = String(url).trim();
  // Reject control characters and whitespace that browsers strip inside schemes
  // (`java\tscript:` is `javascript:` to a URL parser).
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f\s]/.test(u)) return null;
  return SAFE_URL.test(u) ? u : null;
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- inline --------------------------------------------------------------

const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([\s\S]+?)\*\*|(?<![A-Za-z0-9_])__([\s\S]+?)__(?![A-Za-z0-9_])|\*([^*\s][\s\S]*?)\*|(?<![A-Za-z0-9_])_([^_\s][\s\S]*?)_(?![A-Za-z0-9_])|\[([^\]\n]+)\]\(([^)\s]+)(?:\s+"[^"]*")?\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/;

/** Append inline Markdown of `text` to `parent`. */
export function renderInline(parent, text, depth = 0) {
  let rest = text;
  while (rest.length > 0) {
    const m = depth < 4 ? INLINE.exec(rest) : null;
    if (!m) {
      parent.append(document.createTextNode(rest));
      return;
    }
    if (m.index > 0) parent.append(document.createTextNode(rest.slice(0, m.index)));
    if (m[1]) {
      parent.append(el('code', 'inline', m[2].replace(/^ (.*) $/, '$1')));
    } else if (m[3] !== undefined || m[4] !== undefined) {
      const s = el('strong');
      renderInline(s, m[3] ?? m[4], depth + 1);
      parent.append(s);
    } else if (m[5] !== undefined || m[6] !== undefined) {
      const s = el('em');
      renderInline(s, m[5] ?? m[6], depth + 1);
      parent.append(s);
    } else if (m[7] !== undefined) {
      const href = safeUrl(m[8]);
      if (href) {
        const a = el('a');
        a.href = href;
        a.rel = 'noopener noreferrer nofollow';
        a.target = '_blank';
        renderInline(a, m[7], depth + 1);
        parent.append(a);
      } else {
        // Not a link we allow: show what was written, inert.
        parent.append(document.createTextNode(m[0]));
      }
    } else if (m[9] !== undefined) {
      const a = el('a', '', m[9]);
      a.href = m[9];
      a.rel = 'noopener noreferrer nofollow';
      a.target = '_blank';
      parent.append(a);
    }
    rest = rest.slice(m.index + m[0].length);
  }
}

// ---- code highlighting ----------------------------------------------------

const KEYWORDS = new Set(
  ('as async await break case catch class const continue def default defer del do elif else enum export extends false fn for from func function go if impl import in interface let loop match mod module mut new nil None null package pass pub raise return self Self static struct super switch then throw trait true True False try type typeof use var void where while with yield local end').split(' '),
);

const TOKEN = /(\/\/[^\n]*|#[^\n]*|\/\*[\s\S]*?\*\/|--[^\n]*)|("(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|`(?:[^`\\]|\\.)*`?)|(\b\d[\d_]*(?:\.\d+)?(?:e[+-]?\d+)?\b|\b0x[0-9a-f]+\b)|([A-Za-z_$][\w$]*)/gi;

/** Comment markers that make sense per language (so `#` is not a comment in Rust/JS). */
function commentStyle(lang) {
  const l = (lang || '').toLowerCase();
  if (['py', 'python', 'sh', 'bash', 'shell', 'zsh', 'ruby', 'rb', 'yaml', 'yml', 'toml', 'perl', 'r', 'dockerfile', 'make', 'makefile', 'ini', 'conf'].includes(l)) return 'hash';
  if (['sql', 'lua', 'haskell', 'hs'].includes(l)) return 'dash';
  if (l === '' || l === 'text' || l === 'txt' || l === 'diff' || l === 'md' || l === 'markdown') return 'none';
  return 'slash';
}

/** Append `code` to `parent` as highlighted spans (text nodes only). */
export function highlight(parent, code, lang) {
  const style = commentStyle(lang);
  if (style === 'none' && (lang || '').toLowerCase() === 'diff') {
    for (const line of code.split('\n')) {
      const cls = line.startsWith('+') ? 'tok-add' : line.startsWith('-') ? 'tok-del' : line.startsWith('@@') ? 'tok-meta' : '';
      parent.append(cls ? el('span', cls, `${line}\n`) : document.createTextNode(`${line}\n`));
    }
    return;
  }
  let last = 0;
  TOKEN.lastIndex = 0;
  let m;
  while ((m = TOKEN.exec(code)) !== null) {
    let cls = '';
    if (m[1]) {
      const c = m[1];
      const ok = (style === 'slash' && (c.startsWith('//') || c.startsWith('/*'))) || (style === 'hash' && c.startsWith('#')) || (style === 'dash' && c.startsWith('--'));
      if (!ok) {
        // Not a comment in this language: move on one character so the rest is tokenized.
        TOKEN.lastIndex = m.index + 1;
        continue;
      }
      cls = 'tok-com';
    } else if (m[2]) cls = style === 'none' ? '' : 'tok-str';
    else if (m[3]) cls = style === 'none' ? '' : 'tok-num';
    else if (m[4]) cls = style !== 'none' && KEYWORDS.has(m[4]) ? 'tok-kw' : '';
    if (!cls) continue;
    if (m.index > last) parent.append(document.createTextNode(code.slice(last, m.index)));
    parent.append(el('span', cls, m[0]));
    last = m.index + m[0].length;
  }
  if (last < code.length) parent.append(document.createTextNode(code.slice(last)));
}

export function codeBlock(code, lang) {
  const pre = el('pre', 'code');
  const c = el('code');
  if (lang) pre.dataset.lang = lang;
  highlight(c, code, lang);
  pre.append(c);
  const wrap = el('div', 'code-wrap');
  const copy = el('button', 'copy', 'Copy');
  copy.type = 'button';
  copy.setAttribute('aria-label', lang ? `Copy the ${lang} code` : 'Copy the code');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(code);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Copy failed';
    }
    setTimeout(() => {
      copy.textContent = 'Copy';
    }, 2000);
  });
  wrap.append(pre, copy);
  return wrap;
}

// ---- tables (GFM) -------------------------------------------------------------

const TABLE_DELIMITER = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

/** The cells of a table row (`| a | b |` or `a | b`), with `\|` kept as a character. */
function tableCells(line) {
  let t = line.trim();
  if (t.startsWith('|')) t = t.slice(1);
  if (t.endsWith('|') && !t.endsWith('\\|')) t = t.slice(0, -1);
  return t.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

/** Whether lines[i] starts a table: a row with a pipe, then a delimiter row of as many cells. */
function tableAt(lines, i) {
  if (i + 1 >= lines.length || !lines[i].includes('|') || !TABLE_DELIMITER.test(lines[i + 1])) return false;
  return tableCells(lines[i]).length === tableCells(lines[i + 1]).length;
}

function table(lines, i) {
  const head = tableCells(lines[i]);
  const align = tableCells(lines[i + 1]).map((d) => (d.startsWith(':') && d.endsWith(':') ? 'center' : d.endsWith(':') ? 'right' : ''));
  const t = el('table');
  const thead = el('thead');
  const hr = el('tr');
  head.forEach((text, k) => {
    const th = el('th');
    if (align[k]) th.dataset.align = align[k];
    renderInline(th, text);
    hr.append(th);
  });
  thead.append(hr);
  const tbody = el('tbody');
  let j = i + 2;
  while (j < lines.length && lines[j].includes('|') && lines[j].trim() !== '') {
    const cells = tableCells(lines[j]);
    const tr = el('tr');
    for (let k = 0; k < head.length; k++) {
      const td = el('td');
      if (align[k]) td.dataset.align = align[k];
      renderInline(td, cells[k] || '');
      tr.append(td);
    }
    tbody.append(tr);
    j += 1;
  }
  t.append(thead, tbody);
  const wrap = el('div', 'table-wrap');
  wrap.append(t);
  return { node: wrap, next: j };
}

// ---- blocks -----------------------------------------------------------------

/** Render Markdown `text` into a new fragment. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) {
      const p = el('p');
      para.forEach((l, k) => {
        if (k > 0) p.append(el('br'));
        renderInline(p, l);
      });
      frag.append(p);
      para = [];
    }
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/.exec(line);
    if (fence) {
      flush();
      const close = fence[1];
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trimStart().startsWith(close)) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1; // the closing fence (or the end of a still-streaming block)
      frag.append(codeBlock(body.join('\n'), fence[2]));
      continue;
    }
    if (tableAt(lines, i)) {
      flush();
      const t = table(lines, i);
      frag.append(t.node);
      i = t.next;
      continue;
    }
    const heading = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/.exec(line);
    if (heading) {
      flush();
      const h = el(`h${Math.min(6, heading[1].length + 2)}`);
      renderInline(h, heading[2]);
      frag.append(h);
      i += 1;
      continue;
    }
    if (/^ {0,3}([-*_])(\s*\1){2,}\s*$/.test(line)) {
      flush();
      frag.append(el('hr'));
      i += 1;
      continue;
    }
    if (/^ {0,3}>/.test(line)) {
      flush();
      const body = [];
      while (i < lines.length && /^ {0,3}>/.test(lines[i])) {
        body.push(lines[i].replace(/^ {0,3}> ?/, ''));
        i += 1;
      }
      const q = el('blockquote');
      q.append(renderMarkdown(body.join('\n')));
      frag.append(q);
      continue;
    }
    const bullet = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(line);
    if (bullet) {
      flush();
      const ordered = /\d/.test(bullet[2]);
      const list = el(ordered ? 'ol' : 'ul');
      if (ordered) {
        const start = parseInt(bullet[2], 10);
        if (start !== 1) list.start = start;
      }
      while (i < lines.length) {
        const b = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/.exec(lines[i]);
        if (!b || /\d/.test(b[2]) !== ordered) break;
        const li = el('li');
        const parts = [b[3]];
        i += 1;
        // Continuation lines (indented, not a new item).
        while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !/^(\s*)([-*+]|\d{1,9}[.)])\s+/.test(lines[i])) {
          parts.push(lines[i].trim());
          i += 1;
        }
        renderInline(li, parts.join(' '));
        list.append(li);
      }
      frag.append(list);
      continue;
    }
    if (line.trim() === '') {
      flush();
      i += 1;
      continue;
    }
    para.push(line);
    i += 1;
  }
  flush();
  return frag;
}
