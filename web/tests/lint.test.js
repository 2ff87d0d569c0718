// ESLint over the page's modules, the service worker and the tests (no innerHTML,
// no eval, no unused code).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('eslint finds no problems in web/', async () => {
  const eslint = new ESLint({ cwd: web, overrideConfigFile: path.join(web, 'tests', 'eslint.config.js') });
  const results = await eslint.lintFiles(['js', 'sw.js', 'tests/*.js', 'tests/tools/*.js']);
  const problems = results.flatMap((r) => r.messages.map((m) => `${path.relative(web, r.filePath)}:${m.line}:${m.column} ${m.message} (${m.ruleId})`));
  assert.ok(results.length >= 15, `linted ${results.length} files`);
  assert.deepEqual(problems, []);
});
