// workspace.js — the pure parts of the workspace view (docs/protocol.md §11): a unified
// diff (`files.diff`'s `diff`) parsed into files, hunks and numbered lines; those lines
// paired for a side-by-side view; the summary line of a set of changed files.
// Must not: touch the socket or the DOM.

/**
 * Files of a unified diff (git's format): `[{path, from, binary, hunks: [{header,
 * lines: [{kind: 'add'|'del'|'ctx', text, old, new}]}]}]`. `old`/`new` are line
 * numbers (null on the side a line is not on). "\ No newline at end of file" marks
 * are dropped; anything unreadable is skipped, never thrown on.
 */
export function parseDiff(text) {
  const files = [];
  let file = null;
  let hunk = null;
  let oldNo = 0;
  let newNo = 0;
  const start = (path) => {
    file = { path, from: '', binary: false, hunks: [] };
    files.push(file);
    hunk = null;
  };
  for (const line of String(text || '').split('\n')) {
    const git = /^diff --git a\/(.*) b\/(.*)$/.exec(line);
    if (git) {
      start(git[2]);
      continue;
    }
    if (hunk && (line.startsWith('+') || line.startsWith('-') || line.startsWith(' ') || line === '')) {
      // Inside a hunk (until its line counts are used up), `---`/`+++` are lines, not headers.
      const kind = line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : 'ctx';
      if (kind === 'add') {
        hunk.lines.push({ kind, text: line.slice(1), old: null, new: newNo++ });
        hunk.right -= 1;
      } else if (kind === 'del') {
        hunk.lines.push({ kind, text: line.slice(1), old: oldNo++, new: null });
        hunk.left -= 1;
      } else {
        hunk.lines.push({ kind, text: line.slice(1), old: oldNo++, new: newNo++ });
        hunk.left -= 1;
        hunk.right -= 1;
      }
      if (hunk.left <= 0 && hunk.right <= 0) hunk = null;
      continue;
    }
    const h = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$/.exec(line);
    if (h) {
      if (!file) start('');
      oldNo = Number(h[1]);
      newNo = Number(h[3]);
      hunk = { header: line, context: h[5].trim(), left: h[2] === undefined ? 1 : Number(h[2]), right: h[4] === undefined ? 1 : Number(h[4]), lines: [] };
      file.hunks.push(hunk);
      continue;
    }
    if (!file) {
      if (line.startsWith('--- ')) start('');
      else continue;
    }
    if (line.startsWith('rename from ')) file.from = line.slice(12);
    else if (line.startsWith('rename to ')) file.path = line.slice(10);
    else if (line.startsWith('Binary files ') || line === 'GIT binary patch') file.binary = true;
    else if (line.startsWith('+++ ') && line !== '+++ /dev/null') file.path = line.slice(4).replace(/^b\//, '');
    else if (line.startsWith('--- ') && !file.path && line !== '--- /dev/null') file.path = line.slice(4).replace(/^a\//, '');
  }
  for (const f of files) {
    for (const hk of f.hunks) {
      delete hk.left;
      delete hk.right;
    }
  }
  return files;
}

/** Every line of every hunk of a parsed file, in order. */
export function diffLines(file) {
  return file ? file.hunks.flatMap((h) => h.lines) : [];
}

/**
 * Lines of one hunk paired for two columns: `[{left, right}]` where a context line is
 * on both sides, and a run of removals is set beside the run of additions after it
 * (the k-th removed line with the k-th added line; the longer run's rest beside nothing).
 */
export function sideBySide(lines) {
  const rows = [];
  let i = 0;
  while (i < lines.length) {
    const l = lines[i];
    if (l.kind === 'ctx') {
      rows.push({ left: l, right: l });
      i += 1;
      continue;
    }
    const dels = [];
    const adds = [];
    while (i < lines.length && lines[i].kind === 'del') dels.push(lines[i++]);
    while (i < lines.length && lines[i].kind === 'add') adds.push(lines[i++]);
    for (let k = 0; k < Math.max(dels.length, adds.length); k++) rows.push({ left: dels[k] || null, right: adds[k] || null });
  }
  return rows;
}

/** "3 files changed, +40 −12" for `[{insertions, deletions}]` (binary files count, without lines). */
export function changeSummary(files) {
  const list = Array.isArray(files) ? files : [];
  let ins = 0;
  let del = 0;
  for (const f of list) {
    if (Number.isSafeInteger(f && f.insertions)) ins += f.insertions;
    if (Number.isSafeInteger(f && f.deletions)) del += f.deletions;
  }
  return `${list.length} file${list.length === 1 ? '' : 's'} changed, +${ins} −${del}`;
}

/** The parent of a workdir-relative path ('' for the workdir itself). */
export function parentPath(path) {
  const p = String(path || '').replace(/\/+$/, '');
  const k = p.lastIndexOf('/');
  return k < 0 ? '' : p.slice(0, k);
}

/** `dir` and `name` joined as a workdir-relative path. */
export function joinPath(dir, name) {
  return dir ? `${dir}/${name}` : name;
}

/** Bytes as people read them. */
export function sizeText(n) {
  if (!Number.isFinite(n)) return '';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(n < 10240 ? 1 : 0)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}
