// Unit tests of the workspace view's pure parts (docs/protocol.md §11): a git diff
// parsed into files, hunks and numbered lines; side-by-side pairing; the highlighter's
// tokens per language (and that they always join back to the line); the summary of a
// turn's changes and the `relay.changes` item in the session model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { changeSummary, diffLines, parentPath, parseDiff, sideBySide } from '../js/workspace.js';
import { langOf, tokenize, tokenizeLine } from '../js/highlight.js';
import { SessionLog } from '../js/session.js';

const DIFF = [
  'diff --git a/src/app.js b/src/app.js',
  'index 1111111..2222222 100644',
  '--- a/src/app.js',
  '+++ b/src/app.js',
  '@@ -1,4 +1,5 @@ function main() {',
  ' const a = 1;',
  '--- not a header: a removed line',
  '+++ not a header: an added line',
  '+const b = 2;',
  ' // end',
  '',
  '\\ No newline at end of file',
  'diff --git a/logo.png b/logo.png',
  'new file mode 100644',
  'index 0000000..3333333',
  'Binary files /dev/null and b/logo.png differ',
  'diff --git a/old.txt b/new.txt',
  'similarity index 90%',
  'rename from old.txt',
  'rename to new.txt',
  '@@ -3 +3 @@',
  '-x',
  '+y',
  'diff --git a/gone.py b/gone.py',
  'deleted file mode 100644',
  '--- a/gone.py',
  '+++ /dev/null',
  '@@ -1,2 +0,0 @@',
  '-import os',
  '-',
  '',
].join('\n');

test('a git diff parses into files, hunks and numbered lines; ---/+++ inside a hunk are lines', () => {
  const files = parseDiff(DIFF);
  assert.deepEqual(files.map((f) => f.path), ['src/app.js', 'logo.png', 'new.txt', 'gone.py']);
  const [js, png, ren, gone] = files;
  assert.equal(js.hunks.length, 1);
  assert.equal(js.hunks[0].context, 'function main() {');
  assert.deepEqual(diffLines(js).map((l) => [l.kind, l.text, l.old, l.new]), [
    ['ctx', 'const a = 1;', 1, 1],
    ['del', '-- not a header: a removed line', 2, null],
    ['add', '++ not a header: an added line', null, 2],
    ['add', 'const b = 2;', null, 3],
    ['ctx', '// end', 3, 4],
    ['ctx', '', 4, 5],
  ]);
  assert.equal(png.binary, true);
  assert.equal(png.hunks.length, 0);
  assert.equal(ren.from, 'old.txt');
  assert.deepEqual(diffLines(ren).map((l) => [l.kind, l.text, l.old, l.new]), [['del', 'x', 3, null], ['add', 'y', null, 3]]);
  assert.equal(gone.path, 'gone.py', '+++ /dev/null keeps the name');
  assert.deepEqual(diffLines(gone).map((l) => l.kind), ['del', 'del']);
  assert.deepEqual(parseDiff(''), []);
  assert.deepEqual(parseDiff('garbage\n@@ nonsense @@\n+x'), [], 'unreadable input is skipped, not thrown on');
});

test('side by side: context on both sides, removals beside the additions after them', () => {
  const L = (kind, text) => ({ kind, text });
  const lines = [L('ctx', 'a'), L('del', 'b'), L('del', 'c'), L('add', 'B'), L('ctx', 'd'), L('add', 'e'), L('del', 'f')];
  const rows = sideBySide(lines);
  const show = (l) => (l ? `${l.kind}:${l.text}` : '-');
  assert.deepEqual(rows.map((r) => [show(r.left), show(r.right)]), [
    ['ctx:a', 'ctx:a'],
    ['del:b', 'add:B'],
    ['del:c', '-'],
    ['ctx:d', 'ctx:d'],
    ['-', 'add:e'],
    ['del:f', '-'],
  ]);
  // Every line appears exactly once as a changed cell or once as a context row.
  const seen = rows.flatMap((r) => (r.left === r.right ? [r.left] : [r.left, r.right].filter(Boolean)));
  assert.deepEqual(seen, [lines[0], lines[1], lines[3], lines[2], lines[4], lines[5], lines[6]]);
});

const cls = (line, lang, state) => tokenizeLine(line, lang, state).tokens.filter((t) => t.cls).map((t) => `${t.cls}:${t.text}`);

test('the highlighter marks keywords, strings, numbers and comments per language', () => {
  assert.deepEqual(cls('const x = "a // b"; // note', 'js'), ['kw:const', 'str:"a // b"', 'com:// note']);
  assert.deepEqual(cls('let n: u32 = 0x1F; # not a comment', 'rust'), ['kw:let', 'num:0x1F']);
  assert.deepEqual(cls("def f(x): return 'y'  # c", 'python'), ['kw:def', 'kw:return', "str:'y'", 'com:# c']);
  assert.deepEqual(cls('func main() { return nil }', 'go'), ['kw:func', 'kw:return', 'kw:nil']);
  assert.deepEqual(cls('{"key": 12, "v": true}', 'json'), ['key:"key"', 'num:12', 'key:"v"', 'kw:true']);
  assert.deepEqual(cls('a { color: red; } /* c */', 'css'), ['key:color', 'com:/* c */']);
  assert.deepEqual(cls('<a href="x">hi</a>', 'html'), ['tag:<a', 'attr:href', 'str:"x"', 'tag:>', 'tag:</a', 'tag:>']);
  assert.deepEqual(cls('echo "$HOME" # done; a#b', 'shell'), ['kw:echo', 'str:"$HOME"', 'com:# done; a#b']);
  assert.deepEqual(cls('## Title', 'markdown'), ['kw:## Title']);
  assert.deepEqual(cls('- item with `code`', 'markdown'), ['meta:- ']);
  assert.deepEqual(cls('plain `code` here', 'markdown'), ['str:`code`']);
  assert.deepEqual(cls('if x == 1', ''), [], 'unknown language: plain text');
});

test('state carries over lines: block comments, triple-quoted strings, HTML comments, code fences', () => {
  const js = tokenize('a /* one\ntwo */ b = 1', 'js');
  assert.deepEqual(js[1].map((t) => [t.cls, t.text]), [['com', 'two */'], ['', ' b = '], ['num', '1']]);
  const py = tokenize('x = """doc\nstill doc\n"""\ny = 2', 'python');
  assert.equal(py[1][0].cls, 'str');
  assert.deepEqual(py[3].filter((t) => t.cls).map((t) => t.cls), ['num']);
  const html = tokenize('<!-- a\nb --> <p>', 'html');
  assert.equal(html[1][0].cls, 'com');
  assert.equal(html[1].at(-1).cls, 'tag');
  const md = tokenize('```js\nconst x\n```\n# h', 'markdown');
  assert.equal(md[1][0].cls, 'str');
  assert.equal(md[3][0].cls, 'kw');
});

test('tokens always join back to the line, for every language, on hostile input', () => {
  const samples = [readFileSync(new URL('../js/highlight.js', import.meta.url), 'utf8'), '"unterminated \\" string', "'a\\", '/* open', '<a b="c', '``` ', '0x 1e 1.2.3 $x _y', '\\'];
  for (const lang of ['js', 'rust', 'python', 'go', 'json', 'css', 'html', 'shell', 'markdown', 'toml', '']) {
    for (const s of samples) {
      const lines = s.split('\n');
      tokenize(s, lang).forEach((toks, k) => assert.equal(toks.map((t) => t.text).join(''), lines[k], `${lang}: ${lines[k]}`));
    }
  }
});

test('languages by file name', () => {
  assert.deepEqual(['a.ts', 'b.rs', 'c.py', 'd.go', 'e.json', 'f.css', 'g.html', 'h.sh', 'README.md', 'Makefile', 'x.bin', 'noext'].map(langOf),
    ['js', 'rust', 'python', 'go', 'json', 'css', 'html', 'shell', 'markdown', 'shell', '', '']);
});

test('a turn\'s summary, paths, and relay.changes as one card item in the model', () => {
  assert.equal(changeSummary([{ insertions: 30, deletions: 2 }, { insertions: 10, deletions: 10 }, { binary: true }]), '3 files changed, +40 −12');
  assert.equal(changeSummary([{ insertions: 1, deletions: 0 }]), '1 file changed, +1 −0');
  assert.equal(parentPath('a/b/c.txt'), 'a/b');
  assert.equal(parentPath('c.txt'), '');
  const log = new SessionLog('s');
  log.apply(1, { type: 'relay.prompt', prompt_id: 'p1', content: 'x' });
  log.apply(2, { type: 'relay.changes', prompt_id: 'p1', files: [{ path: 'a.txt', status: 'modified', insertions: 2, deletions: 1 }, null, { nope: 1 }] });
  const items = log.model.items.filter((x) => x.kind === 'changes');
  assert.equal(items.length, 1);
  assert.equal(items[0].promptId, 'p1');
  assert.deepEqual(items[0].files.map((f) => f.path), ['a.txt'], 'entries without a path are dropped');
  assert.equal(log.apply(2, { type: 'relay.changes', prompt_id: 'p1', files: [] }), 'duplicate');
  assert.equal(log.model.items.filter((x) => x.kind === 'changes').length, 1);
});
