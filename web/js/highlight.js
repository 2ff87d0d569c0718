// highlight.js — a small syntax highlighter for the workspace view (views/workspace.js):
// a file's language from its name, and one line at a time into tokens
// `{cls, text}` (cls '' for plain text, else kw, str, num, com, tag, attr, key, meta).
// Line by line, with a state carried from one line to the next (an open block comment
// or a Python triple-quoted string), so a diff's lines and a file's lines tokenize the
// same way. Pure: no DOM, no network; the tokens' texts always join to the line.

/** Language by file name (extension, or a well-known name). '' means plain text. */
export function langOf(path) {
  const name = String(path || '').split('/').pop().toLowerCase();
  if (name === 'makefile' || name === 'dockerfile') return 'shell';
  if (name === '.bashrc' || name === '.profile' || name === '.zshrc') return 'shell';
  const ext = name.includes('.') ? name.split('.').pop() : '';
  return EXT[ext] || '';
}

const EXT = {
  js: 'js', mjs: 'js', cjs: 'js', jsx: 'js', ts: 'js', tsx: 'js', mts: 'js', cts: 'js',
  rs: 'rust', py: 'python', pyi: 'python', go: 'go', json: 'json', jsonl: 'json', webmanifest: 'json',
  css: 'css', scss: 'css', html: 'html', htm: 'html', xml: 'html', svg: 'html',
  sh: 'shell', bash: 'shell', zsh: 'shell', md: 'markdown', markdown: 'markdown',
  toml: 'toml', yaml: 'toml', yml: 'toml',
};

const words = (s) => new Set(s.split(/\s+/).filter(Boolean));

const KEYWORDS = {
  js: words(`async await break case catch class const continue debugger default delete do else enum export extends
    false finally for from function if implements import in instanceof interface let new null of private protected
    public readonly return static super switch this throw true try type typeof undefined var void while with yield as`),
  rust: words(`as async await break const continue crate dyn else enum extern false fn for if impl in let loop match mod
    move mut pub ref return self Self static struct super trait true type unsafe use where while Some None Ok Err`),
  python: words(`and as assert async await break class continue def del elif else except False finally for from global
    if import in is lambda None nonlocal not or pass raise return True try while with yield self`),
  go: words(`break case chan const continue default defer else fallthrough for func go goto if import interface map
    package range return select struct switch type var nil true false`),
  shell: words(`if then else elif fi for while until do done case esac in function return local export set unset
    readonly shift exit echo cd`),
  json: words('true false null'),
  toml: words('true false null'),
  css: words('important inherit initial unset none auto'),
};

/** How a language writes comments and strings. */
const SYNTAX = {
  js: { line: '//', block: ['/*', '*/'], quotes: '"\'`' },
  rust: { line: '//', block: ['/*', '*/'], quotes: '"' },
  go: { line: '//', block: ['/*', '*/'], quotes: '"`' },
  python: { line: '#', block: null, quotes: '"\'' },
  shell: { line: '#', block: null, quotes: '"\'' },
  toml: { line: '#', block: null, quotes: '"\'' },
  json: { line: null, block: null, quotes: '"' },
  css: { line: null, block: ['/*', '*/'], quotes: '"\'' },
};

const NUMBER = /^(?:0x[0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)/;
const WORD = /^[A-Za-z_$][\w$]*/;

/**
 * Tokens of one line in `lang`; `state` is what the previous line left open
 * (`{}` at the start of a file). Returns `{tokens, state}`.
 */
export function tokenizeLine(line, lang, state = {}) {
  const text = String(line);
  if (lang === 'markdown') return { tokens: markdownLine(text, state), state: markdownState(text, state) };
  if (lang === 'html') return htmlLine(text, state);
  const syn = SYNTAX[lang];
  if (!syn) return { tokens: text ? [{ cls: '', text }] : [], state: {} };
  const kw = KEYWORDS[lang] || new Set();
  const out = [];
  const push = (cls, t) => {
    if (!t) return;
    const last = out[out.length - 1];
    if (last && last.cls === cls) last.text += t;
    else out.push({ cls, text: t });
  };
  let i = 0;
  let open = state.open || null; // the closing mark of a comment or string left open
  let openCls = state.openCls || '';
  while (i < text.length) {
    if (open) {
      const end = text.indexOf(open, i);
      if (end < 0) {
        push(openCls, text.slice(i));
        break;
      }
      push(openCls, text.slice(i, end + open.length));
      i = end + open.length;
      open = null;
      continue;
    }
    const rest = text.slice(i);
    if (syn.line && rest.startsWith(syn.line) && !(lang === 'shell' && i > 0 && /[\w$}]/.test(text[i - 1]))) {
      push('com', rest);
      break;
    }
    if (syn.block && rest.startsWith(syn.block[0])) {
      open = syn.block[1];
      openCls = 'com';
      push('com', syn.block[0]);
      i += syn.block[0].length;
      continue;
    }
    if (lang === 'python' && (rest.startsWith('"""') || rest.startsWith("'''"))) {
      open = rest.slice(0, 3);
      openCls = 'str';
      push('str', open);
      i += 3;
      continue;
    }
    const ch = text[i];
    if (syn.quotes.includes(ch) && !(lang === 'rust' && ch === "'")) {
      let j = i + 1;
      while (j < text.length && text[j] !== ch) j += text[j] === '\\' ? 2 : 1;
      const s = text.slice(i, Math.min(j + 1, text.length));
      // A JSON object key reads differently from a value.
      const isKey = lang === 'json' && /^\s*:/.test(text.slice(i + s.length));
      push(isKey ? 'key' : 'str', s);
      i += s.length;
      continue;
    }
    const num = NUMBER.exec(rest);
    if (num && !(i > 0 && /[\w$]/.test(text[i - 1]))) {
      push('num', num[0]);
      i += num[0].length;
      continue;
    }
    const w = WORD.exec(rest);
    if (w) {
      push(kw.has(w[0]) ? 'kw' : lang === 'css' && /^\s*:/.test(text.slice(i + w[0].length)) ? 'key' : '', w[0]);
      i += w[0].length;
      continue;
    }
    push('', ch);
    i += 1;
  }
  return { tokens: out, state: open ? { open, openCls } : {} };
}

function markdownState(text, state) {
  return /^\s*(```|~~~)/.test(text) ? { fence: !state.fence } : { fence: !!state.fence };
}

function markdownLine(text, state) {
  if (!text) return [];
  if (/^\s*(```|~~~)/.test(text) || state.fence) return [{ cls: 'str', text }];
  if (/^#{1,6}\s/.test(text)) return [{ cls: 'kw', text }];
  const m = /^(\s*(?:[-*+]|\d+[.)])\s)(.*)$/.exec(text);
  if (m) return [{ cls: 'meta', text: m[1] }, ...(m[2] ? [{ cls: '', text: m[2] }] : [])];
  if (/^\s*>/.test(text)) return [{ cls: 'com', text }];
  // Inline code spans.
  const out = [];
  let rest = text;
  let k;
  while ((k = /`[^`]*`/.exec(rest)) !== null) {
    if (k.index > 0) out.push({ cls: '', text: rest.slice(0, k.index) });
    out.push({ cls: 'str', text: k[0] });
    rest = rest.slice(k.index + k[0].length);
  }
  if (rest) out.push({ cls: '', text: rest });
  return out;
}

/** HTML/XML: tags, attribute names, attribute values and comments. */
function htmlLine(text, state) {
  const out = [];
  let i = 0;
  let inComment = !!state.comment;
  let inTag = !!state.tag;
  while (i < text.length) {
    if (inComment) {
      const end = text.indexOf('-->', i);
      const stop = end < 0 ? text.length : end + 3;
      out.push({ cls: 'com', text: text.slice(i, stop) });
      i = stop;
      if (end >= 0) inComment = false;
      continue;
    }
    if (inTag) {
      const m = /^(\s+|\/?>|[^\s=>"']+(?==)|=|"[^"]*"?|'[^']*'?|[^\s>]+)/.exec(text.slice(i));
      const t = m[0];
      if (t.endsWith('>') && /^\/?>$/.test(t)) {
        out.push({ cls: 'tag', text: t });
        inTag = false;
      } else if (t.startsWith('"') || t.startsWith("'")) out.push({ cls: 'str', text: t });
      else if (/^\s+$/.test(t) || t === '=') out.push({ cls: '', text: t });
      else out.push({ cls: 'attr', text: t });
      i += t.length;
      continue;
    }
    if (text.startsWith('<!--', i)) {
      inComment = true;
      continue;
    }
    const tag = /^<\/?[A-Za-z!?][\w:.-]*/.exec(text.slice(i));
    if (tag) {
      out.push({ cls: 'tag', text: tag[0] });
      i += tag[0].length;
      inTag = true;
      continue;
    }
    const next = text.indexOf('<', i + 1);
    const stop = next < 0 ? text.length : next;
    out.push({ cls: '', text: text.slice(i, stop) });
    i = stop;
  }
  return { tokens: out, state: { comment: inComment, tag: inTag } };
}

/** Every line of `text` in `lang`: an array of token arrays. */
export function tokenize(text, lang) {
  let state = {};
  return String(text).split('\n').map((line) => {
    const r = tokenizeLine(line, lang, state);
    state = r.state;
    return r.tokens;
  });
}
