// diff.js — file changes of Edit / Write / MultiEdit tool inputs as line diffs.
// Pure text → rows; rendering with textContent only.

const MAX_CELLS = 250000; // LCS table bound; bigger changes show as remove-all / add-all

/** Line diff of two texts: [{op:' '|'-'|'+', text}]. */
export function lineDiff(a, b) {
  // A text's final newline ends its last line; it does not start an empty one.
  const lines = (t) => (t === '' ? [] : t.replace(/\n$/, '').split('\n'));
  const x = lines(a);
  const y = lines(b);
  // Trim the common prefix and suffix, then LCS on the middle.
  let p = 0;
  while (p < x.length && p < y.length && x[p] === y[p]) p++;
  let s = 0;
  while (s < x.length - p && s < y.length - p && x[x.length - 1 - s] === y[y.length - 1 - s]) s++;
  const xm = x.slice(p, x.length - s);
  const ym = y.slice(p, y.length - s);
  const rows = x.slice(0, p).map((t) => ({ op: ' ', text: t }));
  if (xm.length * ym.length > MAX_CELLS) {
    for (const t of xm) rows.push({ op: '-', text: t });
    for (const t of ym) rows.push({ op: '+', text: t });
  } else {
    const n = xm.length;
    const m = ym.length;
    const L = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        L[i][j] = xm[i] === ym[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
      }
    }
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && xm[i] === ym[j]) {
        rows.push({ op: ' ', text: xm[i] });
        i++;
        j++;
      } else if (i < n && (j >= m || L[i + 1][j] >= L[i][j + 1])) {
        // Removals first, as diffs are read.
        rows.push({ op: '-', text: xm[i] });
        i++;
      } else {
        rows.push({ op: '+', text: ym[j] });
        j++;
      }
    }
  }
  for (const t of x.slice(x.length - s)) rows.push({ op: ' ', text: t });
  return rows;
}

/** The hunks a tool input describes, or null when it is not a file change. */
export function fileChange(tool, input) {
  if (!input || typeof input !== 'object') return null;
  const path = typeof input.file_path === 'string' ? input.file_path : typeof input.notebook_path === 'string' ? input.notebook_path : '';
  const str = (v) => (typeof v === 'string' ? v : '');
  if (tool === 'Write') return { path, hunks: [lineDiff('', str(input.content))] };
  if (tool === 'Edit') return { path, hunks: [lineDiff(str(input.old_string), str(input.new_string))] };
  if (tool === 'MultiEdit' && Array.isArray(input.edits)) {
    return { path, hunks: input.edits.map((e) => lineDiff(str(e && e.old_string), str(e && e.new_string))) };
  }
  return null;
}

/** A <div class="diff"> for a file change. */
export function renderDiff(change) {
  const box = document.createElement('div');
  box.className = 'diff';
  const head = document.createElement('div');
  head.className = 'diff-path';
  head.textContent = change.path || '(file)';
  box.append(head);
  change.hunks.forEach((rows, k) => {
    if (k > 0) {
      const sep = document.createElement('div');
      sep.className = 'diff-sep';
      sep.textContent = '⋯';
      box.append(sep);
    }
    const pre = document.createElement('pre');
    pre.className = 'diff-body';
    for (const r of rows) {
      const line = document.createElement('span');
      line.className = r.op === '+' ? 'add' : r.op === '-' ? 'del' : 'ctx';
      line.textContent = `${r.op} ${r.text}\n`;
      pre.append(line);
    }
    box.append(pre);
  });
  return box;
}
